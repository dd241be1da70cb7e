"""Benchmark of the head phantom: building the model (cold, anatomy cache cleared) and simulating the scan."""
from __future__ import annotations

from typing import List

import numpy as np

from .common import BenchContext, BenchRow, measure

#: Quick-mode grid (a 256×256×160 mm field of view).
QUICK_SHAPE, QUICK_VOXEL_MM = (64, 64, 64), (4.0, 4.0, 2.5)


def run(ctx: BenchContext) -> List[BenchRow]:
    """Time make_head_model (cold and cached) and simulate_acquisition at the context's size; report sanity metrics."""
    from ..phantom import make_head_model, simulate_acquisition
    from ..phantom.model import _anatomy

    if ctx.quick:
        shape, voxel = QUICK_SHAPE, QUICK_VOXEL_MM
    else:
        shape, voxel = ctx.acquisition.model.shape, ctx.acquisition.model.voxel_size_mm
    te = tuple(ctx.acquisition.gre.te_s)
    _anatomy.cache_clear()
    model, t_cold, mem_cold = measure(make_head_model, shape=shape, voxel_size_mm=voxel, seed=0)
    _, t_warm, mem_warm = measure(make_head_model, shape=shape, voxel_size_mm=voxel, seed=0)
    acq, t_sim, mem_sim = measure(simulate_acquisition, model, te_s=te, b0_tesla=3.0, snr=100.0, seed=0)
    b = acq.brain_mask
    metrics = {
        "brain_L": float(np.count_nonzero(b) * np.prod(voxel) / 1e6),
        "bg_max_ppm": float(np.abs(acq.background_field_ppm[b]).max()),
        "local_p99_ppm": float(np.percentile(np.abs(acq.local_field_ppm[b]), 99)),
        "noise_sd": float(acq.noise_sd),
    }
    size = "x".join(str(n) for n in shape)
    return [
        BenchRow("phantom", "make_head_model cold", t_cold, mem_cold, {}, f"{size}, anatomy resampled"),
        BenchRow("phantom", "make_head_model cached", t_warm, mem_warm, {}, "same grid again"),
        BenchRow("phantom", "simulate_acquisition", t_sim, mem_sim, metrics, f"{len(te)} echoes, combined"),
    ]
