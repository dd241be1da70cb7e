"""MEDI — morphology-enabled dipole inversion — and MEDI+0 (CSF-regularised).

MEDI (Liu et al., Magn Reson Med 2012;67:137–147; Liu et al., NeuroImage 2012;59:2560–2568; de Rochefort et al.,
MRM 2010) solves

    min_χ  λ/2 ‖W(Dχ − δ)‖²  +  ‖M_G ∇χ‖₁                                   (linear data term)
    min_χ  λ/2 ‖W(e^{iκDχ} − e^{iκδ})‖² / κ²  +  ‖M_G ∇χ‖₁                   (non-linear data term)

with W the SNR weight (1/noise SD, mean 1 in the mask; the magnitude stands in when no weight is given), κ the
phase per ppm (rad/ppm) of the non-linear model and M_G the gradient mask that leaves the strongest ``edge_fraction``
of magnitude edges unpenalised (:func:`QSMLogic.inversion.common.edge_mask`). The L1 term is handled by lagged
diffusivity (its weight ``1/sqrt(|M_G ∇χ|² + β)`` frozen at the current χ) and the data term by Gauss–Newton, each
linearised step solved by conjugate gradients; the outer loop stops when ‖Δχ‖/‖χ‖ < ``tol``.

MEDI+0 (Liu et al., Magn Reson Med 2018;79:2795–2803) adds ``λ_CSF ‖M_CSF(χ − χ̄_CSF)‖²`` which makes the
ventricular CSF uniform and so gives the map a zero (CSF) reference. The CSF mask comes from ``csf_mask`` or from
``labels`` (values given by ``csf_labels``); the stage passes neither, so run MEDI+0 from
:func:`QSMLogic.inversion.invert_dipole` with ``csf_mask=`` or ``labels=``.

Units: fields and χ in ppm, ∇ in 1/mm. ``lambda_ = 0`` (the default) is automatic for the stage's ``b0_tesla``:
λ = 2e4·(B0/3 T)^0.6 (:func:`QSMLogic.inversion.common.weight_for_field`; 2e4 at 3 T, 3.3e4 at 7 T), the 3 T value
tuned on the phantom (SNR 100, 1–2 mm). Fields in ppm get less noisy at higher B0 (noise in ppm ∝ 1/B0), so λ grows
with B0, but far less than the (B0/3 T)² a MAP argument gives (the phantom's best λ at 7 T: docs/benchmarks.md).
``rad_per_ppm = 0`` (default) computes κ of the
non-linear term from the ``b0_tesla`` and ``te_s`` inputs: κ = 2π·γ̄·B0·TE_eff·1e-6 with TE_eff = ΣTE²/ΣTE
(:func:`QSMLogic.inversion.common.effective_te_s`; 3 T and 20 ms when not given).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import QSMInputError
from ..params import MethodSpec, Param, register_method
from ..utils.fft import irfft, rfft
from ..utils.kernels import truncated_inverse
from ..utils.solvers import CancelFn, cg, dot
from .common import (
    InversionProblem, divergence, edge_mask, effective_te_s, gradient, prepare_problem, weight_for_field,
)

#: Data weight λ at 3 T for fields and χ in ppm and gradients in 1/mm; ``lambda_ = 0`` scales it (:func:`lambda_for`).
LAMBDA_3T = 2.0e4
#: λ by field strength (tesla), the automatic values at 3 T and 7 T.
DEFAULT_LAMBDA = {3.0: LAMBDA_3T, 7.0: round(weight_for_field(LAMBDA_3T, 7.0, data_weight=True), -2)}


def lambda_for(lambda_: float, b0_tesla: Optional[float]) -> float:
    """``lambda_`` itself when > 0, else the automatic λ for ``b0_tesla`` (3 T when None): 2e4·(B0/3 T)^0.6."""
    if lambda_ > 0:
        return float(lambda_)
    return weight_for_field(LAMBDA_3T, b0_tesla, data_weight=True)


def kappa_for(rad_per_ppm: float, b0_tesla: Optional[float], te_s: Optional[Sequence[float]]) -> float:
    """``rad_per_ppm`` itself when > 0, else 2π·γ̄·B0·TE_eff·1e-6 from the inputs (3 T, 20 ms when absent)."""
    if rad_per_ppm > 0:
        return float(rad_per_ppm)
    from .tv import DEFAULT_B0_TESLA, phase_scale

    return phase_scale(DEFAULT_B0_TESLA if b0_tesla is None else b0_tesla, effective_te_s(te_s))
#: Smoothing β of the L1 norm, (ppm/mm)²: |g| ≈ sqrt(g² + β).
L1_SMOOTHING = 1e-8


def _csf_from_inputs(prob: InversionProblem, csf_mask: Optional[np.ndarray], labels: Optional[np.ndarray],
                     csf_labels: str) -> np.ndarray:
    if csf_mask is not None:
        c = np.asarray(csf_mask, dtype=bool)
        if c.shape != prob.input_shape:
            raise QSMInputError(f"csf_mask shape {c.shape} differs from the field shape {prob.input_shape}")
    elif labels is not None:
        lab = np.asarray(labels)
        if lab.shape != prob.input_shape:
            raise QSMInputError(f"labels shape {lab.shape} differs from the field shape {prob.input_shape}")
        try:
            keys = [int(v) for v in str(csf_labels).replace(";", ",").split(",") if v.strip()]
        except ValueError as exc:
            raise QSMInputError(f"csf_labels must be comma-separated integers, got {csf_labels!r}") from exc
        c = np.isin(lab, keys)
    else:
        raise QSMInputError("MEDI+0 needs a CSF region: pass csf_mask= (bool array) or labels= with csf_labels")
    out = prob.embed(c).astype(bool) & prob.mask
    if out.sum() < 10:
        raise QSMInputError(f"the CSF mask has only {int(out.sum())} voxels inside the brain mask; MEDI+0 needs more")
    return out


def _solve(
    prob: InversionProblem,
    lambda_: float,
    edge_fraction: float,
    max_iter: int,
    cg_max_iter: int,
    cg_tol: float,
    tol: float,
    data_term: str,
    rad_per_ppm: float,
    csf: Optional[np.ndarray],
    lambda_csf: float,
    cancel: Optional[CancelFn],
    what: str,
) -> np.ndarray:
    vox = prob.voxel_size_mm
    m = prob.mask
    mf = m.astype(np.float32)
    w2 = prob.weight * prob.weight
    if prob.magnitude is not None:
        mg = edge_mask(prob.magnitude, m, vox, edge_fraction)
    else:  # no magnitude: the structure of a TKD estimate stands in for the anatomy
        spec = rfft(prob.field)
        spec *= truncated_inverse(prob.kernel, 0.19, "tkd")
        mg = edge_mask(irfft(spec, prob.shape), m, vox, edge_fraction)
    mg *= mf
    lam = np.float32(lambda_)
    csf_f = None if csf is None else csf.astype(np.float32)
    n_csf = 0 if csf is None else int(csf.sum())

    def csf_op(x: np.ndarray) -> np.ndarray:  # M_CSF(x − mean_CSF(x)): a symmetric projection
        mean = float(np.sum(x[csf], dtype=np.float64)) / n_csf
        return csf_f * (x - np.float32(mean))

    chi = np.zeros(prob.shape, dtype=np.float32)
    kappa = np.float32(rad_per_ppm)
    # the non-linear fit starts from the linear solution: from χ = 0 a field of several radians of phase would put
    # Gauss–Newton on the wrong branch of the sine
    terms = ["linear"] * max_iter + (["nonlinear"] * max_iter if data_term == "nonlinear" else [])
    for it, term in enumerate(terms):
        g = mg * gradient(chi, vox)
        p = mg / np.sqrt(g * g + np.float32(L1_SMOOTHING))  # lagged diffusivity with M_G folded in: M_G P M_G
        p *= mg
        del g
        dchi = prob.dipole(chi)
        if term == "nonlinear":
            # Gauss–Newton: JᴴJ = κ²DᵀW²D, Jᴴr = −κ DᵀW² sin(κ(δ − Dχ)); both divided by κ²
            resid = np.sin(kappa * (prob.field - dchi)) / kappa
        else:
            resid = prob.field - dchi

        def reg(x: np.ndarray, p: np.ndarray = p) -> np.ndarray:
            return -divergence(p * gradient(x, vox), vox)

        def normal(x: np.ndarray, reg=reg) -> np.ndarray:
            out = reg(x) + lam * prob.dipole(w2 * prob.dipole(x))
            if csf is not None:
                out += np.float32(lambda_csf) * csf_op(x)
            out *= mf
            return out

        rhs = lam * prob.dipole(w2 * resid) - reg(chi)
        if csf is not None:
            rhs -= np.float32(lambda_csf) * csf_op(chi)
        rhs *= mf
        step, _, _ = cg(normal, rhs, max_iter=cg_max_iter, tol=cg_tol, cancel=cancel, what=what)
        chi += step
        if np.sqrt(dot(step, step)) < tol * np.sqrt(dot(chi, chi)):
            if term == "nonlinear" or data_term == "linear":
                break
            terms[it + 1:max_iter] = []  # linear stage converged: go on to the non-linear one
    return chi * mf


def medi(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    magnitude: Optional[np.ndarray] = None,
    lambda_: float = 0.0,
    edge_fraction: float = 0.3,
    max_iter: int = 8,
    cg_max_iter: int = 30,
    cg_tol: float = 1e-2,
    tol: float = 0.1,
    data_term: str = "linear",
    rad_per_ppm: float = 0.0,
    pad_voxels: int = 12,
    b0_tesla: Optional[float] = None,
    te_s: Optional[Sequence[float]] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """MEDI (Liu et al. MRM 2012): weighted data fit plus L1 norm of the non-edge gradients; see module docs."""
    if weight is None and magnitude is not None:
        mg = np.asarray(magnitude, dtype=np.float32)
        weight = mg[..., 0] if mg.ndim == 4 else mg
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight=weight, magnitude=magnitude,
                           pad_voxels=pad_voxels, b0_tesla=b0_tesla)
    chi = _solve(prob, lambda_for(lambda_, b0_tesla), edge_fraction, max_iter, cg_max_iter, cg_tol, tol, data_term,
                 kappa_for(rad_per_ppm, b0_tesla, te_s), None, 0.0, cancel, "MEDI")
    return prob.to_input_grid(chi)


def medi0(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    magnitude: Optional[np.ndarray] = None,
    csf_mask: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    csf_labels: str = "5",
    lambda_: float = 0.0,
    lambda_csf: float = 100.0,
    edge_fraction: float = 0.3,
    max_iter: int = 8,
    cg_max_iter: int = 30,
    cg_tol: float = 1e-2,
    tol: float = 0.1,
    data_term: str = "linear",
    rad_per_ppm: float = 0.0,
    pad_voxels: int = 12,
    b0_tesla: Optional[float] = None,
    te_s: Optional[Sequence[float]] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """MEDI+0 (Liu et al. MRM 2018): MEDI plus a uniform-CSF penalty; the result is referenced to the CSF mean."""
    if weight is None and magnitude is not None:
        mg = np.asarray(magnitude, dtype=np.float32)
        weight = mg[..., 0] if mg.ndim == 4 else mg
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight=weight, magnitude=magnitude,
                           pad_voxels=pad_voxels, b0_tesla=b0_tesla)
    csf = _csf_from_inputs(prob, csf_mask, labels, csf_labels)
    chi = _solve(prob, lambda_for(lambda_, b0_tesla), edge_fraction, max_iter, cg_max_iter, cg_tol, tol, data_term,
                 kappa_for(rad_per_ppm, b0_tesla, te_s), csf, lambda_csf, cancel, "MEDI+0")
    chi -= np.float32(np.mean(chi[csf], dtype=np.float64))
    chi *= prob.mask
    return prob.to_input_grid(chi)


_COMMON = (
    Param("lambda_", float, 0.0, "data-fidelity weight λ; 0 = automatic for the field strength: 2e4·(B0/3 T)^0.6 "
          "(2e4 at 3 T, 3.3e4 at 7 T)", minimum=0.0, maximum=1e9),
    Param("edge_fraction", float, 0.3, "fraction of strongest magnitude gradients left unpenalised (M_G = 0)",
          minimum=0.0, maximum=0.9),
    Param("max_iter", int, 8, "maximum Gauss–Newton / lagged-diffusivity iterations", minimum=1, maximum=100),
    Param("cg_max_iter", int, 30, "maximum CG iterations per outer iteration", minimum=1, maximum=500),
    Param("cg_tol", float, 1e-2, "relative residual tolerance of the inner CG", minimum=1e-6, maximum=0.5),
    Param("tol", float, 0.1, "stop when ‖Δχ‖/‖χ‖ falls below this", minimum=1e-4, maximum=1.0),
    Param("data_term", str, "linear", "linear W(Dχ − δ) or non-linear W(e^{iκDχ} − e^{iκδ})",
          choices=("linear", "nonlinear")),
    Param("rad_per_ppm", float, 0.0, "κ of the non-linear data term: phase per ppm = 2π·γ̄·B0·TE; 0 = from the "
          "b0_tesla and te_s inputs with TE = ΣTE²/ΣTE", unit="rad/ppm", minimum=0.0, maximum=1000.0),
    Param("pad_voxels", int, 12, "zero padding around the mask's bounding box", unit="voxels", minimum=0,
          maximum=128),
)
register_method("inversion", MethodSpec(
    key="medi", label="MEDI (morphology-enabled dipole inversion)",
    reference="Liu et al., Magn Reson Med 2012; Liu et al., NeuroImage 2012",
    params=_COMMON,
    help="Needs the magnitude for the edge mask (falls back to a TKD estimate's edges without it).",
    func=medi))
register_method("inversion", MethodSpec(
    key="medi0", label="MEDI+0 (MEDI with CSF regularisation)",
    reference="Liu et al., Magn Reson Med 2018",
    params=(Param("csf_labels", str, "5", "label values of the CSF region (used with labels=; 5 = phantom ventricles)"),
            Param("lambda_csf", float, 100.0, "weight of the uniform-CSF penalty", minimum=0.0, maximum=1e9))
    + _COMMON,
    help="Needs csf_mask= or labels= (see QSMLogic.inversion.invert_dipole); result referenced to CSF.",
    func=medi0))

__all__ = ["medi", "medi0", "DEFAULT_LAMBDA", "LAMBDA_3T", "lambda_for", "kappa_for"]
