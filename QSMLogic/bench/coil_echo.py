"""Benchmark of coil combination, field mapping and R2* mapping on the phantom (time, peak memory, error vs truth).

Coil combination runs on ``ctx.coils()`` (16 coils); each method's output is scored by the phase singularities
left after removing the true ``2π·Δf·TE`` (echoes 1 and 5, inside the brain) and by the RMSE of the field fitted
from its echoes (complex fit, modulo the 1/ΔTE ambiguity) against the truth, beside that fit's predicted SD.
Field mapping and R2* run on ``ctx.acquisition`` (combined). Spatially unwrapped input for the phase fits is the
noisy phase unwrapped with the truth's help (a perfect unwrapper), so only the fits are measured.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np

from .. import coil, echo
from .common import BenchContext, BenchRow, measure

#: Deep grey-matter nuclei labels of the phantom (caudate … nucleus accumbens).
NUCLEI_LABELS = tuple(range(8, 18))


def _complex_signal(acq) -> np.ndarray:
    """The acquisition's complex signal, filled one (echo, coil) image at a time (no full-size temporaries)."""
    ph, mag = acq.gre.phase_rad, acq.gre.magnitude
    out = np.empty(ph.shape, np.complex64)
    for idx in np.ndindex(*ph.shape[3:]):
        sl = (Ellipsis,) + idx
        out.real[sl] = mag[sl] * np.cos(ph[sl])
        out.imag[sl] = mag[sl] * np.sin(ph[sl])
    return out


def _field_metrics(acq, fm: echo.FieldMap, alias_hz: float = 0.0) -> Dict[str, float]:
    m = acq.brain_mask
    err = (fm.field_hz - acq.field_hz)[m].astype(np.float64)
    if alias_hz:
        err = (err + alias_hz / 2) % alias_hz - alias_hz / 2
    rmse = float(np.sqrt(np.mean(err**2)))
    pred = float(np.sqrt(np.mean(fm.noise_sd_hz[m].astype(np.float64) ** 2)))
    return {"field_rmse_hz": rmse, "pred_sd_hz": pred, "rmse/pred": rmse / pred if pred > 0 else float("nan")}


def _reference_scan(signal: np.ndarray) -> np.ndarray:
    """A low-resolution reference scan (x/2, y/2, z/2, coil): the first echo averaged over 2×2×2 blocks."""
    nx, ny, nz, _, nc = (d // 2 * 2 if i < 3 else d for i, d in enumerate(signal.shape))
    ref = np.empty((nx // 2, ny // 2, nz // 2, nc), np.complex64)
    for c in range(nc):
        ref[..., c] = signal[:nx, :ny, :nz, 0, c].reshape(nx // 2, 2, ny // 2, 2, nz // 2, 2).mean(axis=(1, 3, 5))
    return ref


def _coil_rows(ctx: BenchContext) -> List[BenchRow]:
    """Each coil method on ctx.coils(); the acquisition's per-coil phase and magnitude are released once the
    complex signal is built (at 256×256×160×5×16 each copy is 6.7 GB), and each result before the next method."""
    acq, dt_sim, mem_sim = measure(ctx.coils)
    ctx.extras.pop("coil_acquisition", None)
    rows: List[BenchRow] = [BenchRow("phantom", f"simulate {acq.gre.n_coils} coils", dt_sim, mem_sim, {},
                                     f"{acq.gre.n_echoes} echoes, per-coil magnitude + phase")]
    signal = _complex_signal(acq)
    field_hz, brain, te, b0 = acq.field_hz, acq.brain_mask, acq.gre.te_s, acq.gre.b0_tesla
    vox = acq.model.voxel_size_mm
    del acq
    alias = 1.0 / (te[1] - te[0])
    runs = [
        ("aspire", coil.combine_aspire, {}),
        ("mcpc3ds", coil.combine_mcpc3ds, {}),
        ("vrc", coil.combine_vrc, {}),
        ("adaptive", coil.combine_adaptive, {}),
        ("roemer", coil.combine_roemer, {"reference_signal": _reference_scan(signal)}),
    ]
    note = f"{signal.shape[-1]} coils, input {signal.nbytes / 2**30:.1f} GiB"
    for key, fn, kw in runs:
        out, dt, mem = measure(fn, signal, te, vox, **kw)
        res = [coil.count_residues(np.angle(out[..., n] * np.exp(-2j * np.pi * field_hz * te[n])), brain)
               for n in (0, len(te) - 1)]
        fm = echo.fit_nonlinear_complex(np.angle(out), np.abs(out), brain, te, b0)
        del out
        metrics = {"residues_e1": float(res[0]), "residues_eN": float(res[1])}
        err = (fm.field_hz - field_hz)[brain].astype(np.float64)
        err = (err + alias / 2) % alias - alias / 2
        rmse = float(np.sqrt(np.mean(err**2)))
        pred = float(np.sqrt(np.mean(fm.noise_sd_hz[brain].astype(np.float64) ** 2)))
        del fm
        metrics.update({"field_rmse_hz": rmse, "pred_sd_hz": pred, "rmse/pred": rmse / pred})
        rows.append(BenchRow("coil_combination", key, dt, mem, metrics, note))
    out, dt, mem = measure(coil.combine_magnitude, signal, vox, "sensitivity_weighted")
    del out
    rows.append(BenchRow("coil_combination", "magnitude_matched", dt, mem, {}, "magnitude only"))
    return rows


def _echo_rows(ctx: BenchContext) -> List[BenchRow]:
    acq = ctx.acquisition
    g = acq.gre
    m = acq.brain_mask
    alias = 1.0 / (g.te_s[1] - g.te_s[0])
    unwrapped = acq.true_phase_rad + np.angle(np.exp(1j * (g.phase_rad - acq.true_phase_rad)))
    offset_free = unwrapped - acq.phase0_rad[..., None]
    runs = [
        ("weighted_linear", echo.fit_weighted_linear, unwrapped, {}, 0.0),
        ("weighted_linear_noint", echo.fit_weighted_linear, offset_free, {"intercept": False}, 0.0),
        ("weighted_linear_temporal", echo.fit_weighted_linear, g.phase_rad, {"temporal_unwrapping": True}, alias),
        ("nonlinear_complex", echo.fit_nonlinear_complex, g.phase_rad, {}, alias),
        ("echo_average", echo.fit_echo_average, offset_free, {}, 0.0),
    ]
    rows: List[BenchRow] = []
    for key, fn, ph, kw, al in runs:
        fm, dt, mem = measure(fn, ph, g.magnitude, m, g.te_s, g.b0_tesla, **kw)
        rows.append(BenchRow("field_mapping", key, dt, mem, _field_metrics(acq, fm, al),
                             "wrapped input, error mod 1/ΔTE" if al else "unwrapped input"))
    for key, fn in (("arlo", echo.r2star_arlo), ("loglinear", echo.r2star_loglinear)):
        r2, dt, mem = measure(fn, g.magnitude, g.te_s, m)
        metrics = {}
        for name, labels in (("GM", (6,)), ("WM", (7,)), ("nuclei", NUCLEI_LABELS)):
            sel = np.isin(acq.labels, labels) & m
            metrics[f"r2_relerr_{name}"] = float(np.median(r2[sel] / acq.r2star_hz[sel] - 1))
        rows.append(BenchRow("r2star", key, dt, mem, metrics, "median relative error"))
    return rows


def run(ctx: BenchContext) -> List[BenchRow]:
    """Time every coil-combination, field-mapping and R2* method with its error against the phantom's truth."""
    return _echo_rows(ctx) + _coil_rows(ctx)
