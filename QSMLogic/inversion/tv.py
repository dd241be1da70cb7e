"""Total-variation dipole inversions solved by ADMM with closed-form k-space updates: FANSI and STAR-QSM.

All methods here minimise ``Φ(Kχ) + α·TV(χ)`` with ``K`` a real, symmetric k-space kernel (the unit dipole D, or
``S·D`` for single-step QSM), ``TV(χ) = Σ |∇χ|`` (isotropic, forward differences on the physical grid, ppm/mm) and
a data term Φ that is one of

* ``"l2"``  — ``½‖W(Kχ − φ)‖²`` (linear, weighted least squares);
* ``"l1"``  — ``‖W(Kχ − φ)‖₁`` (robust to outliers; the first stage of HD-QSM);
* ``"nl"``  — ``‖W(e^{i·s·Kχ} − e^{i·s·φ})‖² / s²`` (the nonlinear complex-exponential model of FANSI; ``s`` turns
  ppm into radians of phase, ``s = 2π·γ̄·B0·TE·1e-6``; dividing by ``s²`` makes it equal to the linear term for small
  residuals so that α means the same thing in both).

ADMM splitting (Milovic et al., Magn Reson Med 80 (2018) 814–821, "FANSI"; Bilgic et al., Magn Reson Med 72 (2014)
1444–1459 for the linear version): ``z = ∇χ`` with scaled dual ``s``, ``y = Kχ`` with scaled dual ``t``, penalties
``μ₁`` and ``μ₂``. Each iteration

1. χ  ← F⁻¹[(μ₁ F{∇ᵀ(z − s)} + μ₂ K F{y − t}) / (μ₁|E|² + μ₂K²)]   (closed form; |E|² the eigenvalues of ∇ᵀ∇),
2. z  ← shrink(∇χ + s, α/μ₁) (isotropic soft threshold),  s ← s + ∇χ − z,
3. y  ← prox of Φ/μ₂ at Kχ + t, pointwise (weighted average for l2, soft threshold for l1, Newton steps for nl
   started in the 2π-period of the data nearest to Kχ + t, so phase wraps in the data cost nothing),
   t ← t + Kχ − y,

costing four real FFTs per iteration; the pointwise steps are fused numba kernels. Iterations stop when the relative
change of χ in the mask falls below ``tol`` or after ``max_iter``.

Choice of α. The fields are in ppm; for the same SNR and echo times their noise in ppm falls as 1/B0, so the
best α falls with the field strength. ``alpha = 0`` (the default) means automatic for the stage's ``b0_tesla``:
α = 1e-4·(3 T/B0)^0.6 (:func:`QSMLogic.inversion.common.weight_for_field`; 1e-4 at 3 T, 6.0e-5 at 7 T). The 3 T
value (gradients in ppm/mm, weights of mean 1) is tuned on the project's head phantom at 1–2 mm and SNR 100 (field
noise ≈ 0.5 ppb); the exponent comes from the same phantom at 7 T (the error at SNR 100 is mostly the prior's bias,
so the best α falls more slowly than the noise). For noisier data raise α. FANSI sets ``μ₁ = 100·α``; here the
defaults are ``μ₁ = 300·α`` and ``μ₂ = 0.3`` (``mu_grad_factor``, ``mu_data``), which converge in far fewer
iterations (figures: docs/benchmarks.md).
Nonlinear data term: ``te_eff_s = 0`` (default) takes the effective echo time from the stage input ``te_s`` (the
pipeline passes the scan's echo times): ``Σ TE²/Σ TE`` (:func:`QSMLogic.inversion.common.effective_te_s`), 20 ms
when ``te_s`` is not given; ``b0_tesla`` defaults to 3 T likewise.
Automatic α: ``QSMLogic.inversion.selection.select_parameter("fansi_nltv", "alpha", candidates, ...)`` sweeps α and
picks it by the L-curve (maximum curvature) or the discrepancy principle (needs the noise σ); FANSI's authors find
the maximum-curvature point over-regularises TV and recommend the zero-curvature (inflection) point of the log-log
L-curve (Milovic et al., Magn Reson Med 85 (2021) 2924–2938).

STAR-QSM (Wei et al., NMR Biomed 28 (2015) 1294–1303): a two-level inversion for maps with a large dynamic range.
A first solve with a strong sparsity (TV) weight recovers the large susceptibility sources (haemorrhage, veins,
calcification) without their streaks; the field they explain is subtracted and a second solve with a weak weight
recovers the small tissue contrast from the residual field; the map is the sum. Both levels use the linear L2 data
term here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numba
import numpy as np

from ..params import MethodSpec, Param, register_method
from ..utils.fft import irfft, rfft
from ..utils.solvers import CancelFn, check_cancel
from .common import FALLBACK_TE_EFF_S, InversionProblem, effective_te_s, prepare_problem, weight_for_field

#: Data-term codes of the fused numba kernel.
_DATA_TERMS = {"l2": 0, "l1": 1, "nl": 2}

#: Field strength assumed when the stage gets no ``b0_tesla`` (tesla).
DEFAULT_B0_TESLA = 3.0
#: Effective TE of the nonlinear data term when the stage gets no ``te_s`` (s); 0 as a parameter means automatic.
DEFAULT_TE_EFF_S = FALLBACK_TE_EFF_S
#: FANSI's TV weight at 3 T; the default ``alpha = 0`` scales it to the field strength (:func:`default_alpha`).
ALPHA_3T = 1e-4
#: STAR-QSM's two TV weights at 3 T (strong for the large sources, weak for the residual).
STAR_ALPHA_LARGE = 1e-3
STAR_ALPHA_SMALL = 1e-4


def default_alpha(alpha: float, b0_tesla: Optional[float], value_3t: float = ALPHA_3T) -> float:
    """``alpha`` itself when > 0, else the automatic weight for ``b0_tesla``: ``value_3t·(3 T/B0)^0.6``."""
    if alpha > 0:
        return float(alpha)
    return weight_for_field(value_3t, b0_tesla)


# -------------------------------------------------------------------------------------------- fused numba kernels
@numba.njit(parallel=True, cache=True, fastmath=True)
def _tv_shrink(chi, s, q, tau, ih0, ih1, ih2):  # pragma: no cover - compiled
    """z = shrink(∇χ + s, τ); s ← ∇χ + s − z; q ← z − s (the input of the next χ update)."""
    nx, ny, nz = chi.shape
    for i in numba.prange(nx):
        ip = i + 1 if i + 1 < nx else 0
        for j in range(ny):
            jp = j + 1 if j + 1 < ny else 0
            for k in range(nz):
                kp = k + 1 if k + 1 < nz else 0
                c = chi[i, j, k]
                g0 = (chi[ip, j, k] - c) * ih0 + s[0, i, j, k]
                g1 = (chi[i, jp, k] - c) * ih1 + s[1, i, j, k]
                g2 = (chi[i, j, kp] - c) * ih2 + s[2, i, j, k]
                nrm = math.sqrt(g0 * g0 + g1 * g1 + g2 * g2)
                f = 1.0 - tau / nrm if nrm > tau else 0.0
                z0 = f * g0
                z1 = f * g1
                z2 = f * g2
                s[0, i, j, k] = g0 - z0
                s[1, i, j, k] = g1 - z1
                s[2, i, j, k] = g2 - z2
                q[0, i, j, k] = 2.0 * z0 - g0
                q[1, i, j, k] = 2.0 * z1 - g1
                q[2, i, j, k] = 2.0 * z2 - g2


@numba.njit(parallel=True, cache=True, fastmath=True)
def _grad_adjoint(q, out, scale, ih0, ih1, ih2):  # pragma: no cover - compiled
    """out = scale·∇ᵀq, the adjoint of the periodic forward difference (backward difference, sign flipped)."""
    nx, ny, nz = out.shape
    for i in numba.prange(nx):
        im = i - 1 if i > 0 else nx - 1
        for j in range(ny):
            jm = j - 1 if j > 0 else ny - 1
            for k in range(nz):
                km = k - 1 if k > 0 else nz - 1
                out[i, j, k] = scale * ((q[0, im, j, k] - q[0, i, j, k]) * ih0
                                        + (q[1, i, jm, k] - q[1, i, j, k]) * ih1
                                        + (q[2, i, j, km] - q[2, i, j, k]) * ih2)


@numba.njit(parallel=True, cache=True, fastmath=True)
def _data_step(kf, tf, yf, bf, wf, mu, mode, scale, newton, rf):  # pragma: no cover - compiled
    """y ← prox_{Φ/μ}(Kχ + t) pointwise, t ← Kχ + t − y, r ← y − t (next χ update's input); flat arrays."""
    for i in numba.prange(kf.size):
        v = kf[i] + tf[i]
        wi = wf[i]
        if wi <= 0.0:
            yi = v
        elif mode == 0:
            w2 = wi * wi
            yi = (w2 * bf[i] + mu * v) / (w2 + mu)
        elif mode == 1:
            d = v - bf[i]
            th = wi / mu
            if d > th:
                yi = bf[i] + d - th
            elif d < -th:
                yi = bf[i] + d + th
            else:
                yi = bf[i]
        else:
            w2 = wi * wi
            # start in the 2π-equivalent well of the data nearest to v: the global minimiser lies there
            period = 2.0 * math.pi / scale
            yi = bf[i] + period * math.floor((v - bf[i]) / period + 0.5)
            for _ in range(newton):
                a = scale * (yi - bf[i])
                g = w2 * math.sin(a) / scale + mu * (yi - v)
                h = w2 * math.cos(a) + mu
                if h < mu:
                    h = mu
                yi -= g / h
        yf[i] = yi
        tf[i] = v - yi
        rf[i] = yi - tf[i]


@numba.njit(parallel=True, cache=True, fastmath=True)
def _combine(f1, f2, kern, inv_den, mu2, x, kx):  # pragma: no cover - compiled
    """X = (f1 + μ₂·K·f2)·inv_den and K·X, on the rfft grid (f1 already carries μ₁); flat arrays."""
    for i in numba.prange(f1.size):
        v = (f1[i] + mu2 * kern[i] * f2[i]) * inv_den[i]
        x[i] = v
        kx[i] = kern[i] * v


@numba.njit(parallel=True, cache=True)
def _change_norms(new, old, idx):  # pragma: no cover - compiled
    """(‖new − old‖², ‖new‖²) over the flat indices ``idx``, accumulated in float64."""
    dd = 0.0
    nn = 0.0
    for j in numba.prange(idx.size):
        i = idx[j]
        a = np.float64(new[i])
        d = a - np.float64(old[i])
        dd += d * d
        nn += a * a
    return dd, nn


# -------------------------------------------------------------------------------------------------- ADMM engine
def difference_eigenvalues(shape: Sequence[int], voxel_size_mm: Sequence[float]) -> np.ndarray:
    """|E(k)|² = Σ_j 4·sin²(π k_j/N_j)/h_j², the eigenvalues of ∇ᵀ∇ for periodic forward differences (rfft grid)."""
    out = np.zeros((shape[0], shape[1], shape[2] // 2 + 1), dtype=np.float64)
    for ax, (n, h) in enumerate(zip(shape, voxel_size_mm)):
        m = n // 2 + 1 if ax == 2 else n
        e = 4.0 * np.sin(np.pi * np.arange(m) / n) ** 2 / h**2
        sh = [1, 1, 1]
        sh[ax] = m
        out += e.reshape(sh)
    return out.astype(np.float32)


@dataclass
class ADMMResult:
    """χ on the work grid, the iterations run and the final relative change of χ."""

    chi: np.ndarray
    iterations: int
    rel_change: float


def admm_tv(
    kernel: np.ndarray,
    data: np.ndarray,
    weight: np.ndarray,
    voxel_size_mm: Sequence[float],
    alpha: float,
    data_term: str = "l2",
    mu_grad: Optional[float] = None,
    mu_data: float = 1.0,
    max_iter: int = 50,
    tol: float = 1e-2,
    phase_scale_rad_per_ppm: float = 1.0,
    newton_steps: int = 2,
    chi0: Optional[np.ndarray] = None,
    eval_mask: Optional[np.ndarray] = None,
    cancel: Optional[CancelFn] = None,
    what: str = "ADMM-TV",
) -> ADMMResult:
    """Solve ``min_χ Φ(Kχ; data, weight) + α·TV(χ)`` by ADMM on a periodic grid (see the module docs).

    ``kernel`` is K on the rfft grid of ``data.shape`` (real, float32); ``weight`` is W (0 where there are no data);
    ``data_term`` one of ``"l2"``, ``"l1"``, ``"nl"``; ``mu_grad`` defaults to 100·α (FANSI). ``chi0`` warm-starts
    the split variables (z = ∇χ0, y = Kχ0). ``eval_mask`` is where the stopping rule measures the change of χ.
    ``cancel()`` is checked before every iteration (True raises QSMCancelled naming ``what``).
    """
    if data_term not in _DATA_TERMS:
        raise ValueError(f"data_term must be one of {sorted(_DATA_TERMS)}, got {data_term!r}")
    shape = data.shape
    vox = [float(v) for v in voxel_size_mm]
    ih = [np.float32(1.0 / v) for v in vox]
    mu1 = np.float32(100.0 * alpha if mu_grad is None else mu_grad)
    mu2 = np.float32(mu_data)
    kern = np.ascontiguousarray(kernel, dtype=np.float32)
    den = mu1 * difference_eigenvalues(shape, vox) + mu2 * kern * kern
    den.flat[0] = 1.0
    inv_den = (1.0 / den).astype(np.float32)
    del den
    b = np.ascontiguousarray(data, dtype=np.float32)
    w = np.ascontiguousarray(weight, dtype=np.float32)
    em_idx = np.flatnonzero((w > 0) if eval_mask is None else eval_mask)

    s = np.zeros((3,) + shape, dtype=np.float32)
    q = np.zeros((3,) + shape, dtype=np.float32)
    t = np.zeros(shape, dtype=np.float32)
    r1 = np.empty(shape, dtype=np.float32)
    if chi0 is None:
        chi = np.zeros(shape, dtype=np.float32)
        y = np.where(w > 0, b, np.float32(0.0)).astype(np.float32)
    else:
        chi = np.ascontiguousarray(chi0, dtype=np.float32)
        _tv_shrink(chi, s, q, np.float32(0.0), ih[0], ih[1], ih[2])  # q = ∇χ0 (s stays 0 with τ = 0)
        y = irfft(rfft(chi) * kern, shape)
    r2 = y.copy()
    spec_x = None
    rel = np.inf
    n_iter = 0
    mode = _DATA_TERMS[data_term]
    while n_iter < max_iter:
        check_cancel(cancel, what)
        n_iter += 1
        _grad_adjoint(q, r1, mu1, ih[0], ih[1], ih[2])
        f1 = rfft(r1)
        f2 = rfft(r2)
        if spec_x is None:
            spec_x = np.empty_like(f1)
            spec_kx = np.empty_like(f1)
        _combine(f1.reshape(-1), f2.reshape(-1), kern.reshape(-1), inv_den.reshape(-1), mu2, spec_x.reshape(-1),
                 spec_kx.reshape(-1))
        del f1, f2
        chi_new = irfft(spec_x, shape)
        kchi = irfft(spec_kx, shape)
        _tv_shrink(chi_new, s, q, np.float32(alpha / mu1), ih[0], ih[1], ih[2])
        _data_step(kchi.reshape(-1), t.reshape(-1), y.reshape(-1), b.reshape(-1), w.reshape(-1), mu2, mode,
                   np.float32(phase_scale_rad_per_ppm), newton_steps, r2.reshape(-1))
        dd, nn = _change_norms(chi_new.reshape(-1), chi.reshape(-1), em_idx)
        rel = float(np.sqrt(dd / nn)) if nn > 0 else 0.0
        chi = chi_new
        # a warm start's first update reproduces χ0 exactly (split variables consistent, duals zero): only the
        # later iterations can show convergence
        if rel < tol and (chi0 is None or n_iter > 1):
            break
    return ADMMResult(chi=chi, iterations=n_iter, rel_change=rel)


def phase_scale(b0_tesla: float, te_eff_s: float) -> float:
    """Radians of phase per ppm of field: 2π·γ̄·B0·TE·1e-6."""
    from ..constants import GAMMA_BAR_HZ_PER_T

    return 2.0 * np.pi * GAMMA_BAR_HZ_PER_T * b0_tesla * te_eff_s * 1e-6


def _solve(prob: InversionProblem, **kw) -> np.ndarray:
    return admm_tv(prob.kernel, prob.field, prob.weight, prob.voxel_size_mm, eval_mask=prob.mask, **kw).chi


# ------------------------------------------------------------------------------------------------------- methods
def fansi_tv(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    alpha: float = 0.0,
    mu_grad_factor: float = 300.0,
    mu_data: float = 0.3,
    max_iter: int = 30,
    tol: float = 2e-3,
    pad_voxels: int = 6,
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """FANSI with the linear data term: ``min ½‖W(Dχ − φ)‖² + α·TV(χ)`` (Milovic et al., MRM 2018).

    ``weight`` is W (mean 1 in the mask; the mask itself when None); ``alpha = 0`` is automatic for ``b0_tesla``
    (module docs). Returns χ in ppm (float32, 0 outside ``mask``).
    """
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    alpha = default_alpha(alpha, b0_tesla)
    chi = _solve(prob, alpha=alpha, data_term="l2", mu_grad=mu_grad_factor * alpha, mu_data=mu_data,
                 max_iter=max_iter, tol=tol, cancel=cancel, what="FANSI TV")
    return prob.to_input_grid(chi)


def fansi_nltv(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    alpha: float = 0.0,
    mu_grad_factor: float = 300.0,
    mu_data: float = 0.3,
    b0_tesla: Optional[float] = None,
    te_eff_s: float = 0.0,
    max_iter: int = 30,
    tol: float = 2e-3,
    pad_voxels: int = 6,
    te_s: Optional[Sequence[float]] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """FANSI with the nonlinear data term ``‖W(e^{i s Dχ} − e^{i s φ})‖²/s² + α·TV(χ)`` (Milovic et al., MRM 2018).

    ``s = 2π·γ̄·b0_tesla·te_eff_s·1e-6`` turns the field (ppm) back into phase (rad); residuals much larger than
    π/s ppm are treated as phase outliers and weigh less than in the linear model, and 2π wraps cost nothing.
    ``b0_tesla`` and ``te_s`` are stage inputs (the pipeline passes the scan's field strength and echo times; 3 T
    and a 20 ms effective TE when None). ``te_eff_s = 0`` takes the effective TE from ``te_s``
    (``Σ TE²/Σ TE``); ``alpha = 0`` is automatic for ``b0_tesla`` (module docs). Returns χ in ppm (float32, 0
    outside ``mask``).
    """
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    alpha = default_alpha(alpha, b0_tesla)
    te = float(te_eff_s) if te_eff_s > 0 else effective_te_s(te_s)
    scale = phase_scale(DEFAULT_B0_TESLA if b0_tesla is None else b0_tesla, te)
    chi = _solve(prob, alpha=alpha, data_term="nl", mu_grad=mu_grad_factor * alpha, mu_data=mu_data,
                 max_iter=max_iter, tol=tol, phase_scale_rad_per_ppm=scale, cancel=cancel, what="FANSI nonlinear TV")
    return prob.to_input_grid(chi)


def star_qsm(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    alpha_large: float = 0.0,
    alpha_small: float = 0.0,
    max_iter: int = 30,
    tol: float = 2e-3,
    pad_voxels: int = 6,
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """STAR-QSM (Wei et al., NMR Biomed 2015): a strongly regularised TV solve for the large sources, then a weakly
    regularised TV solve of the residual field for the small ones; χ is their sum (ppm, float32, 0 outside mask).
    Weights of 0 are automatic for ``b0_tesla`` (the 3 T values :data:`STAR_ALPHA_LARGE`, :data:`STAR_ALPHA_SMALL`
    scaled as FANSI's α).
    """
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    alpha_large = default_alpha(alpha_large, b0_tesla, STAR_ALPHA_LARGE)
    alpha_small = default_alpha(alpha_small, b0_tesla, STAR_ALPHA_SMALL)
    kw = dict(data_term="l2", max_iter=max_iter, tol=tol, mu_data=0.3, cancel=cancel, what="STAR-QSM")
    chi_large = _solve(prob, alpha=alpha_large, mu_grad=300.0 * alpha_large, **kw)
    residual = prob.field - irfft(rfft(chi_large) * prob.kernel, prob.shape)
    residual[~prob.mask] = 0.0
    chi_small = admm_tv(prob.kernel, residual, prob.weight, prob.voxel_size_mm, alpha=alpha_small,
                        mu_grad=300.0 * alpha_small, eval_mask=prob.mask, **kw).chi
    return prob.to_input_grid(chi_large + chi_small)


# -------------------------------------------------------------------------------------------------- registration
AUTO_ALPHA_HELP = ("TV weight α (fields in ppm, gradients in ppm/mm); 0 = automatic for the field strength: "
                   "1e-4·(3 T/B0)^0.6 (1e-4 at 3 T, 6e-5 at 7 T); raise it for noisier data")


def admm_params(alpha: float = 0.0, max_iter: int = 30, pad_voxels: int = 6, tol: float = 2e-3,
                mu: bool = True, alpha_help: str = AUTO_ALPHA_HELP, alpha_min: float = 0.0) -> Tuple[Param, ...]:
    """The parameter declarations the ADMM-TV methods share (defaults as given)."""
    out = [Param("alpha", float, alpha, alpha_help, minimum=alpha_min, maximum=1.0)]
    if mu:
        out += [Param("mu_grad_factor", float, 300.0, "ADMM gradient penalty μ₁ as a multiple of α", minimum=1.0,
                      maximum=1e4),
                Param("mu_data", float, 0.3, "ADMM data-consistency penalty μ₂", minimum=1e-3, maximum=100.0)]
    out += [Param("max_iter", int, max_iter, "maximum ADMM iterations", minimum=1, maximum=2000),
            Param("tol", float, tol, "stop when the relative change of χ in the mask is below this", minimum=0.0,
                  maximum=1.0),
            Param("pad_voxels", int, pad_voxels, "zero padding around the mask's bounding box", unit="voxels",
                  minimum=0, maximum=128)]
    return tuple(out)


_P_NL = (Param("te_eff_s", float, 0.0, "effective echo time that turns ppm back into phase (nonlinear term, with the "
               "b0_tesla input); 0 = from the echo times, ΣTE²/ΣTE (20 ms if none are given)", unit="s", minimum=0.0,
               maximum=0.2),)

register_method("inversion", MethodSpec(
    key="fansi_nltv", label="FANSI nonlinear TV",
    reference="Milovic et al., Magn Reson Med 80 (2018) 814-821",
    params=admm_params() + _P_NL,
    help="Nonlinear (complex exponential) data term, robust to phase outliers; α scales with the field noise.",
    func=fansi_nltv))

register_method("inversion", MethodSpec(
    key="fansi_tv", label="FANSI linear TV",
    reference="Milovic et al., Magn Reson Med 80 (2018) 814-821; Bilgic et al., Magn Reson Med 72 (2014) 1444-1459",
    params=admm_params(),
    help="Weighted linear least squares with total variation, solved by ADMM.",
    func=fansi_tv))

register_method("inversion", MethodSpec(
    key="star_qsm", label="STAR-QSM",
    reference="Wei et al., NMR Biomed 28 (2015) 1294-1303",
    params=(Param("alpha_large", float, 0.0, "TV weight of the large-source level; 0 = automatic: "
                  "1e-3·(3 T/B0)^0.6", minimum=0.0, maximum=1.0),
            Param("alpha_small", float, 0.0, "TV weight of the small-source level; 0 = automatic: 1e-4·(3 T/B0)^0.6",
                  minimum=0.0, maximum=1.0)) + admm_params(mu=False)[1:],
    help="Two-level streaking artifact reduction for maps with large susceptibility sources.",
    func=star_qsm))

__all__ = [
    "ADMMResult", "admm_tv", "admm_params", "default_alpha", "difference_eigenvalues", "phase_scale", "fansi_tv",
    "fansi_nltv", "star_qsm", "ALPHA_3T",
]
