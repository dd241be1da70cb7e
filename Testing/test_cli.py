"""The command line: simulate → files → run from files, and the phantom main job, checked on their outputs."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from QSMLogic.cli import main

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
