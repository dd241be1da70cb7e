"""Cohort processing (``susceptibility-mri batch``, issue 15): discovery of BIDS runs, a LocalCluster of two worker
processes over three phantom subjects (one broken on purpose), resume, a killed run, the group table."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from QSMLogic.batch.cohort import plan_local
from QSMLogic.batch.discovery import discover_runs
from QSMLogic.batch.run import WORK_FOLDER, BatchConfig, completed, marker_path
from QSMLogic.bench.batch import write_phantom_bids
from QSMLogic.cli import main
from QSMLogic.errors import QSMInputError
from QSMLogic.phantom import make_head_model

REPO = Path(__file__).resolve().parents[1]
SHAPE, VOXEL_MM, TE_MS = (48, 48, 32), (3.0, 3.0, 3.0), (4.0, 10.0, 16.0)
FLAGS = ["--affine-only", "--no-dashboard"]
CONFIG = BatchConfig(roi_deformable=False)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three phantom subjects (sub-03's second phase echo truncated) through a LocalCluster of 2 processes."""
    root = tmp_path_factory.mktemp("batch")
    bids = root / "bids"
    files = write_phantom_bids(str(bids), ["01", "02", "03"], SHAPE, VOXEL_MM, TE_MS)
    broken = Path(files["03"][3])
    assert broken.name == "sub-03_echo-2_part-phase_MEGRE.nii.gz"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    out = root / "derivatives"
    rc = main(["batch", str(bids), "--out", str(out), "--workers", "2", *FLAGS])
    return bids, out, rc


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_discovery_finds_bids_variants_and_flags_incomplete_runs(tmp_path):
    a = tmp_path / "sub-a" / "anat"
    for e in (1, 2, 3):  # BIDS 1.9 per-echo files, two runs
        for part in ("mag", "phase"):
            _touch(a / f"sub-a_run-1_echo-{e}_part-{part}_MEGRE.nii.gz")
            _touch(a / f"sub-a_run-2_echo-{e}_part-{part}_MEGRE.nii")
    _touch(a / "sub-a_T1w.nii.gz")
    b = tmp_path / "sub-b" / "ses-pre" / "anat"  # one 4D file per part, legacy suffixes in another session
    _touch(b / "sub-b_ses-pre_part-mag_GRE.nii.gz")
    _touch(b / "sub-b_ses-pre_part-phase_GRE.nii.gz")
    c = tmp_path / "sub-b" / "ses-post" / "swi"
    for e in (1, 2):
        _touch(c / f"sub-b_ses-post_echo-{e}_magnitude.nii.gz")
        _touch(c / f"sub-b_ses-post_echo-{e}_phase.nii.gz")
    d = tmp_path / "sub-c" / "anat"  # echo 2 of the phase missing
    for e in (1, 2, 3):
        _touch(d / f"sub-c_echo-{e}_part-mag_MEGRE.nii.gz")
        if e != 2:
            _touch(d / f"sub-c_echo-{e}_part-phase_MEGRE.nii.gz")
    _touch(tmp_path / "sub-d" / "DICOM" / "series1" / "IM0001")
    runs = {r.stem: r for r in discover_runs(str(tmp_path))}
    assert sorted(runs) == ["sub-a_run-1", "sub-a_run-2", "sub-b_ses-post", "sub-b_ses-pre", "sub-c",
                            "sub-d_acq-dicom"]
    assert [Path(p).name for p in runs["sub-a_run-1"].phase] == [
        f"sub-a_run-1_echo-{e}_part-phase_MEGRE.nii.gz" for e in (1, 2, 3)]
    assert runs["sub-a_run-2"].problem is None and len(runs["sub-a_run-2"].magnitude) == 3
    assert len(runs["sub-b_ses-pre"].phase) == 1 and runs["sub-b_ses-pre"].session == "pre"
    assert len(runs["sub-b_ses-post"].magnitude) == 2 and runs["sub-b_ses-post"].problem is None
    assert "echo numbers [1, 3]" in runs["sub-c"].problem
    assert runs["sub-d_acq-dicom"].kind == "dicom"
    assert runs["sub-b_ses-pre"].derivative_folder("/o") == "/o/sub-b/ses-pre/anat"
    assert [r.stem for r in discover_runs(str(tmp_path), ["sub-c"])] == ["sub-c"]
    with pytest.raises(QSMInputError, match="--participant-label zz: no such subject"):
        discover_runs(str(tmp_path), ["zz"])
    with pytest.raises(QSMInputError, match="no sub-\\* folder"):
        discover_runs(str(a))


def test_workers_follow_the_measured_run_memory():
    # 2 cores, 24 GiB: a full-size run (256x256x160, 5 echoes: ~1.8 GB) fits twice -> one worker per core
    full = plan_local(550.0 + 256 * 256 * 160 * 5 * 25.0 / 2 ** 20, n_runs=10, available_mb=24 * 1024, cores=2)
    assert full.workers == 2 and full.numba_threads == 1
    # 4 GiB available: 0.8 * 4096 / (250 + 1600) MB -> one run at a time, and the plan says why
    small = plan_local(1600.0, n_runs=10, available_mb=4096, cores=2)
    assert small.workers == 1 and small.numba_threads == 2 and "memory allows 1 run" in small.notes[0]
    with pytest.raises(QSMInputError, match="only 1.0 GiB of memory is available"):
        plan_local(1600.0, n_runs=1, available_mb=1024, cores=2)


def test_existing_scheduler_by_address(cohort, tmp_path, capsys):
    """--scheduler: the runs go to a running cluster; workers declaring MEMORY_MB get tasks that ask for it."""
    from distributed import LocalCluster

    bids, _, _ = cohort
    args = ["batch", str(bids), "--out", str(tmp_path / "d"), "--participant-label", "03", "--scheduler"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"MEMORY_MB": 100},
                      dashboard_address=":0") as cluster:
        assert main([*args, cluster.scheduler_address]) == 2
        assert "every worker declares less MEMORY_MB (at most 100)" in capsys.readouterr().err
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, resources={"MEMORY_MB": 4000},
                      dashboard_address=":0") as cluster:
        assert main([*args, cluster.scheduler_address]) == 1
        text = capsys.readouterr().out
    assert f"on {cluster.scheduler_address}" in text and "Dask dashboard: http" in text
    assert "FAILED sub-03: QSMInputError: cannot read NIfTI file" in text


def _read_csv(path: Path, delimiter: str = ","):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def test_cohort_gives_two_results_and_one_recorded_failure(cohort):
    bids, out, rc = cohort
    assert rc == 1  # a failed run makes the exit status 1
    runs = discover_runs(str(bids))
    records = {}
    for spec in runs[:2]:
        done, why = completed(spec, str(out), CONFIG)
        assert done, why
        records[spec.subject] = json.loads(Path(marker_path(spec, str(out))).read_text())
        chi = nib.load(out / f"sub-{spec.subject}" / "anat" / f"sub-{spec.subject}_Chimap.nii.gz")
        assert chi.shape == SHAPE and np.allclose(np.abs(np.diag(chi.affine))[:3], VOXEL_MM)
    assert not completed(runs[2], str(out), CONFIG)[0]
    assert not (out / "sub-03").exists()
    err = json.loads((out / "logs" / "sub-03_error.json").read_text())
    assert err["status"] == "failed" and "sub-03_echo-2_part-phase_MEGRE.nii.gz" in err["error"]
    # QC: the brain mask against the phantom's intracranial volume, a small field-fit residual, no failed echo
    truth_ml = make_head_model(SHAPE, VOXEL_MM).brain_mask.sum() * np.prod(VOXEL_MM) / 1000.0
    for rec in records.values():
        qc = rec["qc"]
        assert abs(qc["mask_volume_ml"] - truth_ml) < 0.1 * truth_ml
        assert qc["field_fit_residual_rad"] < 0.05 and qc["unwrap_failed_echoes"] == []
        assert 0 < rec["memory_increase_mb"] < 3000 and rec["peak_memory_mb"] > rec["memory_increase_mb"]
        assert rec["invocation"]["command_line"].startswith("susceptibility-mri batch ")
    # the two subjects differ only by noise: putamen χ within 0.01 ppm
    means = [{r["region"]: float(r["mean_ppm"]) for r in _read_csv(out / f"sub-{s}" / "anat" / f"sub-{s}_roi.csv")
              if r["mean_ppm"]} for s in ("01", "02")]
    assert abs(means[0]["L Putamen"] - means[1]["L Putamen"]) < 0.01
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "SusceptibilityMRI"
    assert not any((out / WORK_FOLDER).iterdir())


def test_group_table_matches_the_per_run_tables(cohort):
    _, out, _ = cohort
    group = _read_csv(out / "group" / "roi_group.csv")
    assert _read_csv(out / "group" / "roi_group.tsv", "\t") == group
    rows_json = json.loads((out / "group" / "roi_group.json").read_text())["rows"]
    assert len(rows_json) == len(group)
    for j, g in zip(rows_json, group):
        assert (j["run"], j["region"]) == (g["run"], g["region"])
        assert (j["mean_ppm"] is None) == (g["mean_ppm"] == "")
        if j["mean_ppm"] is not None:
            assert j["mean_ppm"] == float(g["mean_ppm"]) and j["n_voxels"] == int(g["n_voxels"])
    n = 0
    for s in ("01", "02"):
        per_run = _read_csv(out / f"sub-{s}" / "anat" / f"sub-{s}_roi.csv")
        rows = [r for r in group if r["subject"] == s]
        assert len(rows) == len(per_run) > 10
        for g, r in zip(rows, per_run):
            assert g["region"] == r["region"] and g["flag"] == r["flag"]
            if r["mean_ppm"]:
                assert float(g["mean_ppm"]) == float(r["mean_ppm"]) and float(g["sd_ppm"]) == float(r["sd_ppm"])
        n += len(per_run)
    assert len(group) == n
    qc = _read_csv(out / "group" / "qc.tsv", "\t")
    assert [q["status"] for q in qc] == ["done", "done", "failed"] and "Compressed file" in qc[2]["error"]
    assert (out / "group" / "roi_group.png").read_bytes()[:4] == b"\x89PNG"


def test_second_invocation_skips_the_done_runs(cohort, capsys):
    bids, out, _ = cohort
    before = {p: p.stat().st_mtime_ns for p in out.glob("sub-0*/anat/*")}
    rc = main(["batch", str(bids), "--out", str(out), "--workers", "2", *FLAGS])
    text = capsys.readouterr().out
    assert rc == 1 and "0 done, 2 skipped (already done), 1 failed" in text
    assert {p: p.stat().st_mtime_ns for p in out.glob("sub-0*/anat/*")} == before


def test_killed_run_leaves_no_partial_output(cohort, capsys):
    """A run killed (SIGKILL) while writing leaves its partial files in .work only: every file under a final name
    stays whole and the earlier run's record stays true; the next invocation removes the partial files."""
    bids, out, _ = cohort
    spec = discover_runs(str(bids), ["01"])[0]
    folder = Path(spec.derivative_folder(str(out)))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "QSMLogic", "batch", str(bids), "--out", str(out), "--participant-label", "01",
           "--serial", "--inversion", "tkd", "--disable", "swi", *FLAGS]  # another configuration: sub-01 runs again
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    work = out / WORK_FOLDER
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(f for d in work.iterdir() for f in d.iterdir()):
                break
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed while writing"
    assert any(work.iterdir())  # the partial files are in .work, under the attempt's own folder
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert after == before  # nothing under a final name changed
    assert completed(spec, str(out), CONFIG)[0]
    rc = main(["batch", str(bids), "--out", str(out), "--participant-label", "01", "--serial", *FLAGS])
    text = capsys.readouterr().out
    assert rc == 0 and "removed the partial files" in text and "0 done, 1 skipped" in text
    assert not any(work.iterdir())
