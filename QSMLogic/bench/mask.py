"""Benchmark of the brain-mask methods on the phantom: time, peak memory and Dice against the intracranial mask.

The phantom's ``brain_mask`` (intracranial space: CSF, brain tissue, veins, lesions) is the truth; ``dice`` is
2|A∩B|/(|A|+|B|) and ``outside_%`` the share of the estimate that lies outside it (scalp or skull kept).
"""
from __future__ import annotations

from typing import List

import numpy as np

from .. import mask as mk
from .common import BenchContext, BenchRow, measure


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def run(ctx: BenchContext) -> List[BenchRow]:
    acq = ctx.acquisition
    g = acq.gre
    vox = acq.model.voxel_size_mm
    truth = acq.brain_mask
    runs = [
        ("magnitude_threshold", lambda: mk.mask_from_magnitude(g.magnitude, vox)),
        ("phase_quality", lambda: mk.mask_from_phase_quality(g.phase_rad, vox, g.magnitude, g.te_s)),
    ]
    rows: List[BenchRow] = []
    for key, fn in runs:
        m, dt, mem = measure(fn)
        rows.append(BenchRow("mask", key, dt, mem, {"dice": _dice(m, truth),
                                                    "outside_%": 100.0 * np.count_nonzero(m & ~truth) / m.sum()},
                             f"{int(truth.sum())} brain voxels"))
    return rows
