"""Cohort benchmark: subjects per hour through ``susceptibility-mri batch``, serial versus a Dask LocalCluster.

:func:`write_phantom_bids` writes a BIDS dataset of head-phantom subjects (one noise seed each; multi-echo GRE as
``sub-<label>/anat/sub-<label>_echo-<n>_part-<mag|phase>_MEGRE.nii.gz`` with ``EchoTime`` and
``MagneticFieldStrength`` sidecars). :func:`run` times the same dataset with ``--serial`` and on a LocalCluster
(each into a fresh output folder, so nothing is skipped) and reports subjects per hour, CPU seconds per subject
(user + system of every process involved: on a shared machine the wall time depends on the other load, the CPU time
much less) and the largest per-run peak memory.
Not part of ``bench``'s default areas (it processes whole subjects): ``susceptibility-mri bench --areas batch``.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .common import BenchContext, BenchRow

#: Benchmark cohort: subjects, matrix, voxel size (mm) and echo times (ms).
BENCH_SUBJECTS = 4
BENCH_SHAPE = (64, 64, 40)
BENCH_VOXEL_MM = (2.5, 2.5, 2.5)
BENCH_TE_MS = (4.0, 10.0, 16.0)


def write_phantom_bids(root: str, labels: Sequence[str], shape: Sequence[int] = BENCH_SHAPE,
                       voxel_size_mm: Sequence[float] = BENCH_VOXEL_MM, te_ms: Sequence[float] = BENCH_TE_MS,
                       b0_tesla: float = 3.0, snr: float = 100.0) -> Dict[str, List[str]]:
    """Write one phantom subject per label (noise seed = its position) under ``root``; returns each subject's files.

    The head model is built once; each subject is a new noisy acquisition of it.
    """
    import nibabel as nib

    from ..phantom import make_head_model, simulate_acquisition

    model = make_head_model(shape=tuple(shape), voxel_size_mm=tuple(voxel_size_mm), seed=0)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "dataset_description.json"), "w") as f:
        json.dump({"Name": "SusceptibilityMRI head phantom cohort", "BIDSVersion": "1.9.0"}, f)
    files: Dict[str, List[str]] = {}
    for i, label in enumerate(labels):
        gre = simulate_acquisition(model, te_s=tuple(t / 1000.0 for t in te_ms), b0_tesla=b0_tesla, snr=snr,
                                   seed=i).gre
        anat = os.path.join(root, f"sub-{label}", "anat")
        os.makedirs(anat, exist_ok=True)
        files[label] = []
        for n, te in enumerate(gre.te_s):
            for part, arr in (("mag", gre.magnitude), ("phase", gre.phase_rad)):
                stem = os.path.join(anat, f"sub-{label}_echo-{n + 1}_part-{part}_MEGRE")
                nib.save(nib.Nifti1Image(np.asarray(arr[..., n], np.float32), gre.affine), stem + ".nii.gz")
                with open(stem + ".json", "w") as f:
                    json.dump({"EchoTime": float(te), "MagneticFieldStrength": b0_tesla,
                               **({"PhaseUnits": "rad"} if part == "phase" else {})}, f)
                files[label].append(stem + ".nii.gz")
    return files


def _time_batch(bids: str, out: str, extra: Sequence[str]) -> Tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, the command and every process it started) of one batch."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "QSMLogic", "batch", bids, "--out", out, "--no-dashboard", *extra]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _peak_memory(out: str) -> float:
    with open(os.path.join(out, "group", "roi_group.json")) as f:
        runs = json.load(f)["runs"]
    return max(float(r["peak_memory_mb"]) for r in runs)


def run(ctx: BenchContext) -> List[BenchRow]:
    """Serial and LocalCluster timings of the same :data:`BENCH_SUBJECTS`-subject phantom cohort."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bids = os.path.join(tmp, "bids")
        write_phantom_bids(bids, [f"{i + 1:02d}" for i in range(BENCH_SUBJECTS)])
        for name, extra in (("serial", ["--serial"]), ("dask LocalCluster", [])):
            out = os.path.join(tmp, f"out-{name.split()[0]}")
            load = os.getloadavg()[0]
            wall, cpu = _time_batch(bids, out, extra)
            rows.append(BenchRow("batch", name, wall, _peak_memory(out),
                                 {"subjects_per_hour": BENCH_SUBJECTS * 3600.0 / wall,
                                  "cpu_s_per_subject": cpu / BENCH_SUBJECTS},
                                 f"{BENCH_SUBJECTS} subjects {BENCH_SHAPE} × {len(BENCH_TE_MS)} echoes, "
                                 f"{os.cpu_count()} cores, load average before {load:.1f}; memory: largest "
                                 "worker peak RSS"))
    return rows
