"""Benchmark of every registered dipole inversion method (and COSMOS) on the phantom, in the two settings of the
QSM Challenge 2.0 (Marques et al., Magn Reson Med 86 (2021) 526–542):

* **(a) true local field** — dipole inversion alone: the phantom's true local field plus Gaussian noise of the SD a
  5-echo field fit has at SNR 100 (``1/(2π·SNR·sqrt(Σ TEₙ² e^{−2R2*TEₙ}))``, R2* = 20 s⁻¹), the brain mask, the
  first-echo magnitude; COSMOS gets three orientations (0°, 20° about x, 35° about y) simulated from the same χ.
* **(b) full chain** — the default pipeline (:func:`QSMLogic.pipeline.run_pipeline`, every stage at its default)
  from the simulated wrapped phase up to the local field, run once (its inversion set to TKD and SWI/R2* off, which
  changes nothing upstream); then every method inverts that local field with the chain's mask, its noise weight
  (1/σ of the field fit, as the pipeline passes it), the echo-RMS magnitude, ``b0_tesla`` and ``te_s``, exactly the
  inputs the pipeline's inversion stage gets. SSTV gets the chain's total field and field mask instead.

Each map and the truth are referenced to their mean in the setting's mask; a row reports time, peak memory, nRMSE,
HFEN, SSIM, the magic-angle streaking measure, the deep grey nuclei error, the calcification moment (ppm·mm³,
negative = diamagnetic), its error and the error SD around the calcification (:func:`QSMLogic.metrics.all_metrics`).
The two rows of a method are printed one above the other (columns: :data:`SHORT_NAMES`); the first (b) row gives
the chain's own time and the nRMSE of its local field against the true one.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from ..constants import GAMMA_BAR_HZ_PER_T
from ..dipole import forward_field
from ..geometry import rotation_matrix
from ..metrics import all_metrics, nrmse
from ..params import load_all, stage
from ..phantom import LABEL_NAMES
from ..pipeline import SINGLE_STEP_INVERSIONS
from ..reference import reference_whole_brain
from .common import BenchContext, BenchRow, measure

AREA_A = "inversion (a)"
AREA_B = "inversion (b)"
#: Column names of the table (the table's columns are 14 characters wide) for the keys of all_metrics.
SHORT_NAMES = {"nrmse_pct": "nRMSE_%", "hfen_pct": "HFEN_%", "ssim": "SSIM", "streak_pct": "streak_%",
               "deep_gray_err_ppm": "DGM_err_ppm", "calc_moment": "calc_ppm_mm3", "calc_moment_err_pct": "calc_err_%",
               "calc_streak_ppm": "calc_SD_ppm"}


def short(scores: Dict[str, float]) -> Dict[str, float]:
    """``scores`` with the table's short column names."""
    return {SHORT_NAMES.get(k, k): v for k, v in scores.items()}


def field_noise_sd_ppm(te_s, b0_tesla: float, snr: float, r2star_hz: float = 20.0) -> float:
    """SD (ppm) of a multi-echo field fit at first-echo magnitude SNR ``snr``."""
    te = np.asarray(te_s, dtype=np.float64)
    sd_hz = 1.0 / (2 * np.pi * snr * np.sqrt(np.sum(te**2 * np.exp(-2 * r2star_hz * te))))
    return float(sd_hz / (GAMMA_BAR_HZ_PER_T * b0_tesla) * 1e6)


def chain_to_local_field(acq: Any) -> Dict[str, Any]:
    """The default chain from the wrapped phase up to the local field: the inversion stage's inputs, with timing.

    Returns ``local``, ``mask`` (background removal's), ``field_mask``, ``weight`` (the inversion stage's, with the
    brain-edge shell left out), ``total_weight`` (the noise weight on the field mask, for single-step methods),
    ``magnitude``, ``total``, ``seconds``, ``peak_mb`` and ``stages`` (a text of the stage times).
    """
    from ..pipeline import PipelineConfig, _weight_from_noise, run_pipeline

    cfg = PipelineConfig.default().set("inversion", "tkd")
    cfg.stages["swi"]["enabled"] = False
    cfg.stages["r2star"]["enabled"] = False
    res, dt, mem = measure(run_pipeline, acq.gre, cfg, labels=acq.labels)
    out = res.outputs
    field_mask = out["field_mask"].astype(bool)
    rec = [r for r in res.provenance["stages"] if r["stage"] not in ("inversion", "reference")]
    return {
        "local": out["local_field_ppm"], "mask": out["qsm_mask"].astype(bool), "field_mask": field_mask,
        "weight": res.details["inversion_weight"],
        "total_weight": _weight_from_noise(out["noise_sd_hz"], field_mask), "magnitude": out["magnitude"],
        "total": out["total_field_ppm"],
        "seconds": float(sum(r["seconds"] for r in rec)), "peak_mb": mem,
        "stages": ", ".join(f"{r['stage']} {r['seconds']:.1f}s" for r in rec),
    }


def run(ctx: BenchContext) -> List[BenchRow]:
    from ..inversion import cosmos_inversion, invert_dipole

    load_all()
    acq = ctx.acquisition
    gre = acq.gre
    vox = acq.model.voxel_size_mm
    b0 = gre.b0_direction
    scan = {"b0_tesla": gre.b0_tesla, "te_s": tuple(gre.te_s)}

    # setting (a): the true local field with noise
    m = acq.brain_mask
    sd = field_noise_sd_ppm(gre.te_s, gre.b0_tesla, acq.snr if acq.snr else 100.0)
    rng = np.random.default_rng(0)
    field = (acq.local_field_ppm + sd * rng.standard_normal(m.shape).astype(np.float32) * m).astype(np.float32)
    a_in = {"field": field, "mask": m, "weight": None, "magnitude": gre.magnitude[..., 0],
            "total": (acq.total_field_ppm + (field - acq.local_field_ppm)).astype(np.float32), "total_mask": m,
            "note": f"true local field, noise SD {sd:.2g} ppm", "truth": reference_whole_brain(acq.chi_ppm, m).chi_ppm}

    # setting (b): the default chain from the wrapped phase
    ch = chain_to_local_field(acq)
    mb = ch["mask"]
    b_in = {"field": ch["local"], "mask": mb, "weight": ch["weight"], "magnitude": ch["magnitude"],
            "total": ch["total"], "total_mask": ch["field_mask"], "total_weight": ch["total_weight"],
            "note": "default chain from wrapped phase",
            "truth": reference_whole_brain(acq.chi_ppm, mb).chi_ppm}
    local_err = nrmse(ch["local"], acq.local_field_ppm, mb)
    rows: List[BenchRow] = [BenchRow(AREA_B, "chain to local field", ch["seconds"], ch["peak_mb"],
                                     {"local_nRMSE_%": local_err}, ch["stages"])]

    def score(chi: np.ndarray, setting: dict) -> dict:
        mask = setting["mask"]
        est = reference_whole_brain(np.where(mask, chi, np.float32(0.0)), mask).chi_ppm
        return short(all_metrics(est, setting["truth"], mask, vox, b0, labels=acq.labels, label_names=LABEL_NAMES))

    for key in stage("inversion").method_keys:
        for area, setting in ((AREA_A, a_in), (AREA_B, b_in)):
            extra: Dict[str, Any] = dict(scan)
            if key == "medi0":
                extra["labels"] = acq.labels
            fld, msk, wgt = setting["field"], setting["mask"], setting["weight"]
            if key in SINGLE_STEP_INVERSIONS:  # background removal included: the total field
                extra["total_field_ppm"] = setting["total"]
                msk, wgt = setting["total_mask"], setting.get("total_weight")
            try:
                chi, dt, mem = measure(invert_dipole, fld, msk, vox, b0, method=key, weight=wgt,
                                       magnitude=setting["magnitude"], **extra)
            except Exception as exc:  # a method failing must not hide the others' numbers
                rows.append(BenchRow(area, key, float("nan"), float("nan"), {}, f"FAILED: {exc}"))
                continue
            rows.append(BenchRow(area, key, dt, mem, score(chi, setting), setting["note"]))
            del chi

    chi_in = np.where(m, acq.chi_ppm, np.float32(0.0)).astype(np.float32)
    dirs = [rotation_matrix(ax, a) @ np.asarray(b0, dtype=np.float64)
            for ax, a in (((1, 0, 0), 0.0), ((1, 0, 0), 20.0), ((0, 1, 0), 35.0))]
    fields = [(forward_field(chi_in, vox, d) + sd * rng.standard_normal(m.shape).astype(np.float32) * m)
              .astype(np.float32) for d in dirs]
    chi, dt, mem = measure(cosmos_inversion, fields, dirs, m, vox)
    rows.append(BenchRow(AREA_A, "cosmos (3 orient.)", dt, mem, score(chi, a_in), "multi-orientation reference"))
    return rows
