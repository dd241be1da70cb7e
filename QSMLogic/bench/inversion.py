"""Benchmark of every registered dipole inversion method (and COSMOS) on the phantom's true local field.

Input: the phantom's true local field plus Gaussian noise of the SD a 5-echo field fit has at SNR 100
(``1/(2π·SNR·sqrt(Σ TEₙ² e^{−2R2*TEₙ}))``, R2* = 20 s⁻¹), the brain mask, the first-echo magnitude. Each map and the
truth are referenced to the whole-brain mean; the row reports nRMSE, HFEN, SSIM, the magic-angle streaking measure
and the deep grey nuclei error (:mod:`QSMLogic.metrics`). COSMOS gets three orientations (0°, 20° about x, 35° about
y) simulated from the same χ.
"""
from __future__ import annotations

from typing import List

import numpy as np

from ..constants import GAMMA_BAR_HZ_PER_T
from ..dipole import forward_field
from ..geometry import rotation_matrix
from ..metrics import all_metrics
from ..params import load_all, stage
from ..phantom import LABEL_NAMES
from ..pipeline import SINGLE_STEP_INVERSIONS
from ..reference import reference_whole_brain
from .common import BenchContext, BenchRow, measure


def field_noise_sd_ppm(te_s, b0_tesla: float, snr: float, r2star_hz: float = 20.0) -> float:
    """SD (ppm) of a multi-echo field fit at first-echo magnitude SNR ``snr``."""
    te = np.asarray(te_s, dtype=np.float64)
    sd_hz = 1.0 / (2 * np.pi * snr * np.sqrt(np.sum(te**2 * np.exp(-2 * r2star_hz * te))))
    return float(sd_hz / (GAMMA_BAR_HZ_PER_T * b0_tesla) * 1e6)


def run(ctx: BenchContext) -> List[BenchRow]:
    from ..inversion import cosmos_inversion, invert_dipole

    load_all()
    acq = ctx.acquisition
    gre = acq.gre
    m = acq.brain_mask
    vox = acq.model.voxel_size_mm
    b0 = gre.b0_direction
    sd = field_noise_sd_ppm(gre.te_s, gre.b0_tesla, acq.snr if acq.snr else 100.0)
    rng = np.random.default_rng(0)
    field = (acq.local_field_ppm + sd * rng.standard_normal(m.shape).astype(np.float32) * m).astype(np.float32)
    truth = reference_whole_brain(acq.chi_ppm, m).chi_ppm
    mag = gre.magnitude[..., 0]

    def metrics_of(chi: np.ndarray) -> dict:
        est = reference_whole_brain(chi, m).chi_ppm
        return all_metrics(est, truth, m, vox, b0, labels=acq.labels, label_names=LABEL_NAMES)

    rows: List[BenchRow] = []
    for key in stage("inversion").method_keys:
        extra = {"labels": acq.labels} if key == "medi0" else {}
        if key in SINGLE_STEP_INVERSIONS:  # background removal included: the total field with the same noise
            extra["total_field_ppm"] = (acq.total_field_ppm + (field - acq.local_field_ppm)).astype(np.float32)
        try:
            chi, dt, mem = measure(invert_dipole, field, m, vox, b0, method=key, magnitude=mag, **extra)
        except Exception as exc:  # a method failing must not hide the others' numbers
            rows.append(BenchRow("inversion", key, float("nan"), float("nan"), {}, f"FAILED: {exc}"))
            continue
        rows.append(BenchRow("inversion", key, dt, mem, metrics_of(chi), f"noise SD {sd:.2g} ppm"))

    chi_in = np.where(m, acq.chi_ppm, np.float32(0.0)).astype(np.float32)
    dirs = [rotation_matrix(ax, a) @ np.asarray(b0, dtype=np.float64)
            for ax, a in (((1, 0, 0), 0.0), ((1, 0, 0), 20.0), ((0, 1, 0), 35.0))]
    fields = [(forward_field(chi_in, vox, d) + sd * rng.standard_normal(m.shape).astype(np.float32) * m)
              .astype(np.float32) for d in dirs]
    chi, dt, mem = measure(cosmos_inversion, fields, dirs, m, vox)
    rows.append(BenchRow("inversion", "cosmos (3 orient.)", dt, mem, metrics_of(chi), "multi-orientation reference"))
    return rows
