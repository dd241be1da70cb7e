"""The command line: simulate → files → run from files, and the phantom main job, checked on their outputs."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from QSMLogic.cli import main
from shared_data import REAL_GRE_SMALL

SMALL = ["--shape", "64", "72", "48", "--voxel-size", "2.5", "2.5", "2.5"]


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["run", "--phantom", *SMALL, "--out", str(out)]) == 0
    return out


def test_main_job_writes_maps_table_and_preview(phantom_run):
    out = phantom_run
    chi = nib.load(out / "chi_ppm.nii.gz")
    assert chi.shape == (64, 72, 48)
    np.testing.assert_allclose(chi.header.get_zooms(), (2.5, 2.5, 2.5))
    side = json.loads((out / "chi_ppm.json").read_text())
    assert side["pipeline"]["susceptibility_reference"]["reference"]
    rows = list(csv.DictReader((out / "roi_susceptibility.csv").open()))
    names = " ".join(r["name"].lower() for r in rows)
    for nucleus in ("putamen", "caudate", "pallidus", "thalamus", "nigra", "red nucleus"):
        assert nucleus in names
    # the paramagnetic iron-rich nuclei come out positive relative to the brain mean
    gp = [float(r["mean"]) for r in rows if "pallidus" in r["name"].lower()]
    assert gp and min(gp) > 0.03
    assert (out / "preview.png").stat().st_size > 10_000


def test_simulate_then_run_from_files(tmp_path):
    sim = tmp_path / "sim"
    assert main(["simulate", *SMALL, "--te-ms", "5", "10", "15", "--out", str(sim)]) == 0
    side = json.loads((sim / "phantom_phase.json").read_text())
    assert side["EchoTime"] == pytest.approx([0.005, 0.010, 0.015]) and side["MagneticFieldStrength"] == 3.0
    out = tmp_path / "out"
    rc = main(["run", "--magnitude", str(sim / "phantom_mag.nii.gz"), "--phase", str(sim / "phantom_phase.nii.gz"),
               "--inversion", "tkd", "--disable", "swi", "--out", str(out)])
    assert rc == 0
    chi = nib.load(out / "chi_ppm.nii.gz")
    np.testing.assert_allclose(chi.affine, nib.load(sim / "phantom_mag.nii.gz").affine)
    assert not (out / "swi.nii.gz").exists()


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path)]) == 2
    assert "give --phantom" in capsys.readouterr().err
    assert main(["run", "--phantom", *SMALL, "--set", "background.nonsense=1", "--out", str(tmp_path)]) == 2
    assert "no parameter 'nonsense'" in capsys.readouterr().err


def test_params_lists_every_stage(capsys):
    assert main(["params", "--markdown"]) == 0
    text = capsys.readouterr().out
    for stage in ("coil_combination", "unwrap", "background", "inversion", "swi"):
        assert f"(`{stage}`" in text


def test_parameter_docs_are_generated_from_the_declarations(capsys):
    """docs/parameters.md must be regenerated when a declaration changes (`susceptibility-mri params --markdown`)."""
    from pathlib import Path

    assert main(["params", "--markdown"]) == 0
    generated = capsys.readouterr().out.strip()
    doc = (Path(__file__).resolve().parents[1] / "docs" / "parameters.md").read_text()
    assert generated in doc, "docs/parameters.md is stale: regenerate it with `susceptibility-mri params --markdown`"


def test_each_map_states_its_stage_method_and_reference(phantom_run):
    chi = json.loads((phantom_run / "chi_ppm.json").read_text())
    assert chi["stage"] == "reference" and chi["reference_region"] == chi["method"] == "whole_brain"
    assert chi["units"] == "ppm"
    r2 = json.loads((phantom_run / "r2star_hz.json").read_text())
    assert r2["stage"] == "r2star" and r2["method"] == "arlo" and r2["units"] == "1/s"
    assert "max_r2star_hz" in r2["parameters"] and "Pei" in r2["method_reference"]
    local = json.loads((phantom_run / "local_field_ppm.json").read_text())
    assert local["stage"] == "background" and local["method"] == "pdf"
    swi = json.loads((phantom_run / "swi.json").read_text())
    assert swi["stage"] == "swi"


REAL = REAL_GRE_SMALL


@pytest.mark.skipif(not __import__("os").path.isdir(REAL), reason="real sample not available")
def test_phase_only_with_nans_and_a_mask_file(tmp_path, capsys):
    """The real phase volume with 1,280 NaN values (no magnitude): an error naming the file by default; with
    --nan-policy mask and a user mask the NaN voxels leave the mask and the chain runs (no R2* without magnitude)."""
    src = f"{REAL}/phase_with_nan.nii.gz"
    img = nib.load(src)
    # the file is a 5-slice slab, refused as too thin for QSM: mirrored to 10 slices for the NaN handling
    args = ["run", "--phase", src, "--te-ms-in", "4", "8", "--b0-in", "3", "--nan-policy", "mask", "--phase-rule",
            "range", "--mask-file", src, "--out", str(tmp_path / "thin")]
    assert main(args) == 2
    assert "only 5 voxels (5 mm) along array axis 3" in capsys.readouterr().err
    raw = np.asarray(img.dataobj)
    raw = np.concatenate([raw, raw[:, :, ::-1]], axis=2)
    ph = str(tmp_path / "phase_with_nan_10.nii.gz")
    nib.save(nib.Nifti1Image(raw, img.affine), ph)
    m = np.zeros(raw.shape[:3], np.uint8)
    m[:-10, 10:-10, :] = 1
    nib.save(nib.Nifti1Image(m, img.affine), tmp_path / "mask.nii.gz")
    args = ["run", "--phase", ph, "--te-ms-in", "4", "8", "--b0-in", "3", "--phase-rule", "range", "--disable", "swi"]
    assert main([*args, "--mask-file", str(tmp_path / "mask.nii.gz"), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "phase_with_nan_10.nii.gz" in err and "pass --nan-policy mask to set them to 0" in err
    assert main([*args, "--nan-policy", "mask", "--out", str(tmp_path / "b")]) == 2
    assert "--mask-file" in capsys.readouterr().err
    out = tmp_path / "c"
    assert main([*args, "--nan-policy", "mask", "--mask-file", str(tmp_path / "mask.nii.gz"), "--out", str(out)]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    nan_vox = np.isnan(raw).any(axis=-1)
    assert prov["input"]["invalid_voxels_removed"] == int((nan_vox & (m > 0)).sum()) > 0
    qsm_mask = np.asarray(nib.load(out / "qsm_mask.nii.gz").dataobj) > 0
    assert not qsm_mask[nan_vox].any()
    assert np.isfinite(np.asarray(nib.load(out / "chi_ppm.nii.gz").dataobj)).all()
    assert not (out / "r2star_hz.nii.gz").exists()
    np.testing.assert_array_equal(np.isnan(np.asarray(nib.load(ph).dataobj)), np.isnan(raw))  # input untouched
