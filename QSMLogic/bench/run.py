"""``susceptibility-mri bench``: simulate the phantom at realistic size and time every stage.

Prints one table row per method: wall time, peak memory added (MiB, sampled RSS) and error metrics against the
phantom's ground truth. Each area lives in ``QSMLogic.bench.<area>`` with ``run(ctx) -> list[BenchRow]``.
"""
from __future__ import annotations

import importlib
import os
import platform
import time
from typing import List, Optional, Sequence

import numpy as np

from ..errors import QSMInputError
from .common import BenchContext, BenchRow, format_rows, measure

#: Areas in pipeline order (the default run).
AREAS = ("phantom", "coil_echo", "mask", "unwrap", "background", "inversion", "swi", "pipeline", "roi")
#: Areas run only when named (``--areas independent batch``): the qsm-forward heads (test extra ``qsm-forward``;
#: ~12 min per 1 mm variant on 2 cores the first time, the simulations are cached) and a small cohort through
#: ``batch`` serially and on Dask.
OPTIONAL_AREAS = ("independent", "batch")
QUICK_SHAPE = (64, 64, 48)


def run_benchmarks(
    quick: bool = False,
    areas: Optional[Sequence[str]] = None,
    shape: Sequence[int] = (256, 256, 160),
    n_coils: int = 16,
) -> int:
    """Run the benchmark areas (:data:`AREAS` by default; :data:`OPTIONAL_AREAS` when named) and print the
    table; returns 0."""
    unknown = [a for a in (areas or ()) if a not in AREAS + OPTIONAL_AREAS]
    if unknown:
        raise QSMInputError(f"unknown benchmark area(s) {unknown}; areas are {list(AREAS + OPTIONAL_AREAS)}")
    from ..phantom import make_head_model, simulate_acquisition

    shp = QUICK_SHAPE if quick else tuple(shape)
    vox = (256.0 / shp[0], 256.0 / shp[1], 160.0 / shp[2]) if quick else (1.0, 1.0, 1.0)
    cpu = platform.processor() or platform.machine()
    print(f"SusceptibilityMRI benchmark — {time.strftime('%Y-%m-%d %H:%M')}, {cpu}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"phantom {shp} at {tuple(round(v, 2) for v in vox)} mm, 5 echoes (TE 4–20 ms, 3 T, SNR 100); "
          f"coil variant: {4 if quick else n_coils} coils")

    def build():
        model = make_head_model(shape=shp, voxel_size_mm=vox, seed=0)
        return simulate_acquisition(model, te_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0, snr=100.0,
                                    seed=0)

    acq, dt, mem = measure(build)
    ctx = BenchContext(acquisition=acq, quick=quick, n_coils=4 if quick else n_coils)
    rows: List[BenchRow] = [BenchRow("phantom", "model+simulate", dt, mem, {}, "5 echoes, combined")]
    for area in areas or AREAS:
        if area == "phantom":
            continue
        mod = importlib.import_module(f"QSMLogic.bench.{area}")
        t0 = time.perf_counter()
        new = mod.run(ctx)
        rows.extend(new)
        print(format_rows(new))
        print(f"  ({area}: {time.perf_counter() - t0:.0f} s)\n", flush=True)
    print("=== summary ===")
    print(format_rows(rows))
    return 0
