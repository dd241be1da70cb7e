"""The command line at its edges: refusals in the user's own words before any computation, output folders that
cannot be mistaken (refusal of non-empty folders, --overwrite removing only the tool's own earlier files, atomic
writes), and provenance that identifies the run (command line, input checksums, version, source revision)."""
from __future__ import annotations

import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest

import QSMLogic
import QSMLogic.pipeline
from QSMLogic.cli import in_cli_words, main
from QSMLogic.io.outputs import atomic_path

TINY = ["--shape", "40", "40", "32", "--voxel-size", "4", "4", "4", "--te-ms", "4", "8", "12", "--inversion", "tkd"]


@pytest.fixture()
def no_compute(monkeypatch):
    """Any call of the pipeline fails the test: the refusals must come before the computation."""
    def forbidden(*a, **k):
        raise AssertionError("the pipeline ran before the input was refused")

    monkeypatch.setattr(QSMLogic.pipeline, "run_pipeline", forbidden)


@pytest.fixture()
def files(tmp_path):
    """A small 4D magnitude/phase pair (radians, 3 echoes) without sidecars, and a 2D (single-slice) pair."""
    rng = np.random.default_rng(0)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    out = {}
    for name, shape in (("", (16, 16, 12, 3)), ("flat_", (16, 16, 1, 3))):
        mag = rng.uniform(1, 2, shape).astype(np.float32)
        ph = rng.uniform(-np.pi, np.pi, shape).astype(np.float32)
        for kind, arr in (("mag", mag), ("phase", ph)):
            p = tmp_path / f"{name}{kind}.nii.gz"
            nib.save(nib.Nifti1Image(arr, aff), p)
            out[f"{name}{kind}"] = str(p)
    return out


def _write_truncated_dicom(path) -> None:
    """A one-slice MR phase image whose file is cut short in its pixel data."""
    from dicom_helpers import dicom_dataset

    ds = dicom_dataset()
    ds.Modality, ds.ImageType, ds.EchoTime = "MR", ["ORIGINAL", "PRIMARY", "P"], "4"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 32, 32, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.PixelData = np.arange(32 * 32, dtype=np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    data = open(path, "rb").read()
    open(path, "wb").write(data[:-1000])


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_refusals_name_the_flags_before_any_computation(tmp_path, files, capsys, no_compute):
    ins = ["--magnitude", files["mag"], "--phase", files["phase"]]
    out = str(tmp_path / "out")
    cases = [
        # echo times in seconds given to a millisecond flag: refused at input with the corrected command
        ([*ins, "--te-ms-in", "0.004", "0.008", "0.012", "--b0-in", "3"],
         ["--te-ms-in 0.004 0.008 0.012", "did you give seconds?", "--te-ms-in 4 8 12"]),
        ([*ins, "--te-ms-in", "4000", "8000", "12000", "--b0-in", "3"], ["did you give microseconds?"]),
        ([*ins, "--te-ms-in", "8", "4", "12", "--b0-in", "3"], ["strictly increasing"]),
        ([*ins, "--te-ms-in", "4", "8", "12", "--b0-in", "3000"], ["--b0-in 3000", "tesla"]),
        # phantom-only flags with files, files with --phantom
        ([*ins, "--te-ms", "4", "8", "12", "--b0", "3"], ["--te-ms, --b0 only apply to --phantom", "--te-ms-in"]),
        ([*ins, "--snr", "50"], ["--snr only apply to --phantom"]),
        (["--phantom", "--phase", files["phase"]], ["--phantom simulates its own data: --phase"]),
        (["--phantom", "--te-ms", "0.004", "0.008"], ["--te-ms 0.004 0.008", "did you give seconds?"]),
        # parameter overrides in the words of --set
        ([*ins, "--te-ms-in", "4", "8", "12", "--b0-in", "3", "--set", "mask.separation_mm=-1"],
         ["--set mask.separation_mm=-1:", "separation_mm"]),
        ([*ins, "--te-ms-in", "4", "8", "12", "--b0-in", "3", "--set", "bogus.x=1"], ["--set bogus.x=1: no stage"]),
        # missing echo times: the flag to give, not a Python name
        ([*ins, "--b0-in", "3"], ["give --te-ms-in (milliseconds)"]),
        # a single-slice acquisition is refused with the reason (never an exit-0 map of ±1e-6 ppm)
        (["--magnitude", files["flat_mag"], "--phase", files["flat_phase"], "--te-ms-in", "4", "8", "12",
          "--b0-in", "3"], ["--phase is 2D (a single slice along array axis 3", "QSM needs a 3D volume"]),
        (["--phantom", "--shape", "40", "40", "4"], ["--shape has only 4 voxels"]),
    ]
    for argv, expected in cases:
        assert main(["run", *argv, "--out", out]) == 2, argv
        err = _err(capsys)
        for text in expected:
            assert text in err, (argv, err)
        for python_name in ("te_s", "b0_tesla", "nan_policy=", "phase_rule"):
            assert python_name not in err, (argv, err)
    # --out a file, and --out the inputs' own folder: refused before reading or computing
    (tmp_path / "a_file").write_text("x")
    assert main(["run", *ins, "--te-ms-in", "4", "8", "12", "--b0-in", "3", "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file, not a folder" in _err(capsys)
    assert main(["run", *ins, "--te-ms-in", "4", "8", "12", "--b0-in", "3", "--out", str(tmp_path)]) == 2
    assert "holds the input" in _err(capsys)
    # a corrupt DICOM file is named as corrupt
    dcm = tmp_path / "dicom"
    dcm.mkdir()
    _write_truncated_dicom(dcm / "IM0001")
    assert main(["run", "--magnitude", str(dcm), "--phase", str(dcm), "--out", out]) == 2
    assert f"DICOM file {str(dcm / 'IM0001')!r} is corrupt" in _err(capsys)


def test_library_words_become_flags():
    assert in_cli_words("pass nan_policy='mask' to set them to 0") == "pass --nan-policy mask to set them to 0"
    assert in_cli_words("echo times are missing: give te_s (seconds) or a sidecar") == (
        "echo times are missing: give --te-ms-in (milliseconds) or a sidecar")
    assert in_cli_words("b0_tesla=300 is implausible") == "--b0-in 300 is implausible"
    assert in_cli_words("several echoes need te_s") == "several echoes need --te-ms-in"
    assert in_cli_words("the te_s_list stays") == "the te_s_list stays"
    assert in_cli_words("the brain vanished when eroded by separation_mm=5.0: ...") == (
        "the brain vanished when eroded by --set mask.separation_mm=5.0: ...")
    assert in_cli_words("--set mask.separation_mm=-1: bad") == "--set mask.separation_mm=-1: bad"


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "map.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(str(target)) as tmp:
            assert tmp.endswith(".nii.gz") and os.path.dirname(tmp) == str(tmp_path)
            open(tmp, "wb").write(b"half")
            raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []
    with atomic_path(str(target)) as tmp:
        open(tmp, "wb").write(b"whole")
    assert os.listdir(tmp_path) == ["map.nii.gz"] and target.read_bytes() == b"whole"


def test_overwrite_replaces_only_this_tools_earlier_outputs(tmp_path, capsys):
    """A phantom run, then a run on files into the same folder: refused without --overwrite; with it, the phantom's
    roi_susceptibility.csv and SWI maps are gone, the user's own file stays, and the manifest lists what is there.
    The provenance names the command line, the inputs' SHA-256, the version and the source revision."""
    sim, out = tmp_path / "sim", tmp_path / "out"
    assert main(["simulate", *TINY[:-2], "--out", str(sim)]) == 0
    assert main(["run", "--phantom", *TINY, "--out", str(out)]) == 0
    assert (out / "roi_susceptibility.csv").exists() and (out / "swi.nii.gz").exists()
    (out / "my_notes.txt").write_text("keep me")
    mag, ph = str(sim / "phantom_mag.nii.gz"), str(sim / "phantom_phase.nii.gz")
    argv = ["run", "--magnitude", mag, "--phase", ph, "--inversion", "tkd", "--disable", "swi", "--out", str(out)]
    capsys.readouterr()
    assert main(argv) == 2
    err = _err(capsys)
    assert "is not empty" in err and "--overwrite" in err
    assert main([*argv, "--overwrite"]) == 0
    log = capsys.readouterr().out
    present = set(os.listdir(out))
    assert "roi_susceptibility.csv" not in present and "swi.nii.gz" not in present and "mip.json" not in present
    assert "my_notes.txt" in present and "left 1 file(s) this tool did not write: my_notes.txt" in log
    assert not [n for n in present if ".partial-" in n]
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["outputs"]) | {"my_notes.txt"} == present
    run = prov["run"]
    assert run["command_line"].startswith("susceptibility-mri run --magnitude") and "--overwrite" in run["command_line"]
    for p in (mag, ph):
        assert run["input_sha256"][p] == hashlib.sha256(open(p, "rb").read()).hexdigest()
    assert run["version"] == QSMLogic.__version__ and run["source_revision"]
    side = json.loads((out / "chi_ppm.json").read_text())
    assert side["pipeline"]["run"]["input_sha256"] == run["input_sha256"]
    # progress into a log (not a terminal): one line per stage, each stage once
    stage_lines = [ln for ln in log.splitlines() if ln.startswith("[")]
    assert len(stage_lines) == len(set(stage_lines)) == len(prov["stages"]) and "\r" not in log
    assert "phase scaling: auto-detected rule 'radians'" in log


def test_version_and_description(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert QSMLogic.__version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "computes quantitative susceptibility maps" in capsys.readouterr().out


def test_preview_orientation_positions_and_size(tmp_path):
    """A bright voxel in an x-flipped, anisotropic volume lands where the RAS letters say, the slice positions are
    the affine's world coordinates, and the panels are large enough to read."""
    from QSMLogic.preview import _world_mm, canonical_index, save_preview, to_ras_canonical

    aff = np.array([[-2.0, 0, 0, 40], [0, 1.5, 0, -30], [0, 0, 3.0, 10], [0, 0, 0, 1]])
    vol = np.zeros((20, 24, 12), np.float32)
    vol[3, 5, 7] = 1.0
    canon = to_ras_canonical(vol, aff)
    ci = canonical_index((3, 5, 7), vol.shape, aff)
    assert ci == (16, 5, 7) and canon[ci] == 1.0  # x flipped: array index 3 is canonical index 20 - 1 - 3
    world = aff @ np.array([3, 5, 7, 1.0])
    for ax in range(3):
        assert _world_mm(ci, vol.shape, aff, ax) == pytest.approx(world[ax])
    png = save_preview({"map": (vol, (0.0, 1.0)), "mIP": (vol, (0.0, 1.0), ("axial",))}, aff, tmp_path / "p.png",
                       title="test", center_index=(3, 5, 7))
    import matplotlib.image as mpimg

    h, w = mpimg.imread(png).shape[:2]
    assert w >= 1000 and h >= 600
