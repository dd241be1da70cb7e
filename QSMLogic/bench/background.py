"""Benchmark of the background field removal methods on the phantom (time, peak memory, local-field nRMSE).

Input: the field fitted from the noisy echoes (the phantom's wrapped phase unwrapped with its known true phase,
then a magnitude-weighted least-squares slope in TE, through the origin after removing the true phase offset), with
its 1/noise-SD weight; truth: the phantom's ``local_field_ppm``. Errors are reported inside each method's eroded
mask and inside a common core (the mask eroded by 12 mm) so that methods with different edge loss compare fairly.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .. import background as bgr
from ..background.common import distance_inside
from ..constants import GAMMA_BAR_HZ_PER_T
from .common import BenchContext, BenchRow, measure


def noisy_field_ppm(acq) -> Tuple[np.ndarray, np.ndarray]:
    """(field in ppm, weight = 1/noise SD, normalised) from the acquisition's noisy echoes."""
    gre = acq.gre
    te = np.asarray(gre.te_s, dtype=np.float32)
    num = np.zeros(gre.shape, np.float32)
    den = np.zeros(gre.shape, np.float32)
    for n in range(te.size):
        true = acq.true_phase_rad[..., n]
        d = gre.phase_rad[..., n] - true
        d -= np.float32(2 * np.pi) * np.round(d / np.float32(2 * np.pi))
        ph = true + d - acq.phase0_rad
        w2 = (gre.magnitude[..., n] * te[n]) ** 2
        num += w2 * ph / te[n]
        den += w2
    slope = num / np.maximum(den, 1e-20)
    field_ppm = slope / np.float32(2 * np.pi * GAMMA_BAR_HZ_PER_T * gre.b0_tesla) * np.float32(1e6)
    weight = np.sqrt(den)
    return field_ppm.astype(np.float32), (weight / max(float(weight[acq.brain_mask].mean()), 1e-20)).astype(
        np.float32)


def run(ctx: BenchContext) -> List[BenchRow]:
    acq = ctx.acquisition
    vox = acq.model.voxel_size_mm
    b0 = acq.gre.b0_direction
    field, weight = noisy_field_ppm(acq)
    m = acq.brain_mask
    core = m & (distance_inside(np.pad(m, 1), np.asarray(vox))[1:-1, 1:-1, 1:-1] > 12.0)
    runs = [
        ("sharp", bgr.sharp, {}),
        ("vsharp", bgr.vsharp, {}),
        ("resharp", bgr.resharp, {}),
        ("ismv", bgr.ismv, {}),
        ("pdf", bgr.pdf, {"b0_direction": b0, "weight": weight}),
        ("lbv", bgr.lbv, {}),
        ("harperella", bgr.harperella, {"phase_rad": acq.gre.phase_rad, "te_s": acq.gre.te_s,
                                        "b0_tesla": acq.gre.b0_tesla}),
    ]
    rows: List[BenchRow] = []
    for key, fn, extra in runs:
        kw = dict(extra)
        if key != "harperella":
            kw["field_ppm"] = field
        res, dt, mem = measure(fn, mask=m, voxel_size_mm=vox, **kw)
        metrics = {
            "nrmse_%": 100 * bgr.local_field_nrmse(res.local_field_ppm, acq.local_field_ppm, res.mask),
            "nrmse_core_%": 100 * bgr.local_field_nrmse(res.local_field_ppm, acq.local_field_ppm, core & res.mask),
            "edge_loss_mm": bgr.edge_loss_mm(m, res.mask, vox),
        }
        it = res.info.get("iterations")
        rows.append(BenchRow("background", key, dt, mem, metrics, f"{it} iterations" if it is not None else ""))
    return rows
