"""Choosing the regularisation weight of any registered inversion method.

:func:`select_parameter` runs a method for each candidate value of one parameter and records, for each result χ,
the data residual ``‖W(Dχ − δ)‖`` in the mask and the regularisation norm (by default the total variation
``‖∇χ‖₁`` in the mask, the prior of most methods here). Two rules pick the value:

* ``"lcurve"`` — the corner of the L-curve (Hansen & O'Leary, SIAM J Sci Comput 14 (1993) 1487–1503): the point of
  maximum curvature of (log residual, log regularisation norm) as a curve in the order of the candidates; as used
  for QSM by Liu et al., MRM 2012 (MEDI) and Bilgic et al., MRM 2014.
* ``"discrepancy"`` — Morozov's discrepancy principle (Morozov, Soviet Math Dokl 7 (1966) 414–417): the candidate
  whose RMS residual in the mask is closest to the noise SD of the field (``noise_sd_ppm``).

The candidate list must be ordered (increasing or decreasing); the curvature uses finite differences along it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from ..errors import QSMInputError
from ..params import run_method, stage
from .common import gradient, prepare_problem


@dataclass
class SelectionResult:
    """Outcome of a parameter sweep: the chosen value, its map and the curve behind the choice."""

    method: str
    param: str
    rule: str
    best_value: float
    chi_ppm: np.ndarray
    values: List[float]
    residual_norms: List[float]
    regularisation_norms: List[float]
    curvature: List[float] = field(default_factory=list)


def total_variation(chi: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float]) -> float:
    """‖∇χ‖₁ over the mask (ppm/mm summed over voxels and axes)."""
    g = gradient(np.asarray(chi, dtype=np.float32), voxel_size_mm)
    return float(np.sum(np.abs(g[:, mask]), dtype=np.float64))


def lcurve_curvature(residuals: Sequence[float], reg_norms: Sequence[float]) -> np.ndarray:
    """Signed curvature of the curve (log ρ, log η) sampled in order; the L-curve corner is its maximum."""
    x = np.log(np.asarray(residuals, dtype=np.float64))
    y = np.log(np.asarray(reg_norms, dtype=np.float64))
    if x.size < 3:
        raise QSMInputError("the L-curve needs at least 3 candidate values")
    t = np.arange(x.size, dtype=np.float64)
    dx, dy = np.gradient(x, t), np.gradient(y, t)
    ddx, ddy = np.gradient(dx, t), np.gradient(dy, t)
    return (dx * ddy - dy * ddx) / np.maximum((dx * dx + dy * dy) ** 1.5, 1e-30)


def select_parameter(
    method: str,
    param: str,
    candidates: Sequence[float],
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    rule: str = "lcurve",
    noise_sd_ppm: Optional[float] = None,
    weight: Optional[np.ndarray] = None,
    magnitude: Optional[np.ndarray] = None,
    params: Optional[Dict[str, Any]] = None,
    regularisation: Optional[Callable[[np.ndarray, np.ndarray, Sequence[float]], float]] = None,
    extra_inputs: Optional[Dict[str, Any]] = None,
) -> SelectionResult:
    """Sweep ``param`` of inversion ``method`` over ``candidates`` and pick one by ``rule`` (see module docs)."""
    spec = stage("inversion").method(method)
    if param not in {p.name for p in spec.params}:
        raise QSMInputError(f"method {method!r} has no parameter {param!r}; its parameters are "
                            f"{[p.name for p in spec.params]}")
    if rule not in ("lcurve", "discrepancy"):
        raise QSMInputError(f"rule must be 'lcurve' or 'discrepancy', got {rule!r}")
    if rule == "discrepancy" and (noise_sd_ppm is None or noise_sd_ppm <= 0):
        raise QSMInputError("the discrepancy principle needs noise_sd_ppm > 0")
    vals = [float(v) for v in candidates]
    if len(vals) < (3 if rule == "lcurve" else 1):
        raise QSMInputError(f"rule {rule!r} needs more candidate values, got {len(vals)}")
    diffs = np.diff(vals)
    if not (np.all(diffs > 0) or np.all(diffs < 0)):
        raise QSMInputError("candidate values must be strictly increasing or strictly decreasing")
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight=weight)
    reg_fn = regularisation or total_variation
    inputs = {"local_field_ppm": local_field_ppm, "mask": mask, "voxel_size_mm": voxel_size_mm,
              "b0_direction": b0_direction, "weight": weight, "magnitude": magnitude}
    inputs.update(extra_inputs or {})
    maps, res, regs = [], [], []
    m_in = np.asarray(mask, dtype=bool)
    for v in vals:
        p = dict(params or {})
        p[param] = v
        chi = np.asarray(run_method("inversion", method, inputs, p), dtype=np.float32)
        r = prob.weight * (prob.dipole(prob.embed(chi)) - prob.field)
        res.append(float(np.sqrt(np.sum(r[prob.mask].astype(np.float64) ** 2))))
        regs.append(max(float(reg_fn(chi, m_in, prob.voxel_size_mm)), 1e-30))
        maps.append(chi)
    curv: List[float] = []
    if rule == "lcurve":
        c = lcurve_curvature(res, regs)
        curv = [float(v) for v in c]
        inner = np.arange(1, len(vals) - 1)
        best = int(inner[np.argmax(np.abs(c[1:-1]))])
    else:
        rms = np.asarray(res) / np.sqrt(prob.mask.sum())
        best = int(np.argmin(np.abs(rms - float(noise_sd_ppm))))
    return SelectionResult(method=method, param=param, rule=rule, best_value=vals[best], chi_ppm=maps[best],
                           values=vals, residual_norms=res, regularisation_norms=regs, curvature=curv)


__all__ = ["SelectionResult", "select_parameter", "lcurve_curvature", "total_variation"]
