"""TGV-QSM: dipole inversion with second-order total generalised variation (Langkammer et al., NeuroImage 111
(2015) 622–630), solved by the primal–dual algorithm of Chambolle & Pock (J Math Imaging Vis 40 (2011) 120–145).

Formulation used here (documented deviation). The original TGV-QSM fits the Laplacian of the wrapped phase,
``Δφ = (⅓Δ − ∂²_b)χ`` in the mask, which folds background removal into the problem. This implementation takes the
local field (background already removed) and uses the dipole data term instead:

    min_{χ, w}  ½‖W(Dχ − φ)‖²  +  α₁‖∇χ − w‖₁  +  α₀‖ε(w)‖₁

with ``w`` a vector field, ``ε(w) = ½(∇w + ∇wᵀ)`` its symmetrised gradient (TGV², Bredies et al., SIAM J Imaging
Sci 3 (2010) 492–526), ∇ forward and ε backward periodic differences on the physical grid (1/mm), norms pointwise
Euclidean/Frobenius. TGV favours piecewise-smooth maps, avoiding TV's staircasing in smoothly varying tissue.

Primal–dual splitting: K(χ, w) = (W·Dχ, ∇χ − w, ε(w)); all three parts of the objective are handled through their
convex conjugates (the data term's prox is a scaling, the two L1 norms' are projections onto balls of radius α₁,
α₀), so every step is explicit: two real FFTs for D and two for Dᵀ per iteration. Step sizes τ = r/‖K‖ and
σ = 1/(r·‖K‖) (``step_ratio`` r), ‖K‖ estimated by power iteration; χ starts from a short ADMM-TV solve. Langkammer
et al. use α₀ = 2·α₁ (in voxel units); here α₀ is given per mm and the defaults are tuned on the project's head
phantom at 1–3 mm and SNR 100 (fields in ppm; α scales with the noise). ``alpha1 = 0`` (default) is automatic for
the stage's ``b0_tesla``: 1e-4·(3 T/B0)^0.6 (:func:`QSMLogic.inversion.common.weight_for_field`; the phantom's best
α₁ at 7 T: docs/benchmarks.md).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numba
import numpy as np

from ..params import MethodSpec, Param, register_method
from ..utils.fft import irfft, rfft
from ..utils.solvers import CancelFn, check_cancel
from .common import prepare_problem
from .tv import admm_tv, default_alpha


def _fwd(x: np.ndarray, ax: int, ih: float) -> np.ndarray:
    """Periodic forward difference along ``ax`` (1/mm)."""
    return (np.roll(x, -1, axis=ax) - x) * np.float32(ih)


def _bwd(x: np.ndarray, ax: int, ih: float) -> np.ndarray:
    """Periodic backward difference along ``ax`` (1/mm)."""
    return (x - np.roll(x, 1, axis=ax)) * np.float32(ih)


#: Index pairs of the 6 stored components of a symmetric 3×3 tensor field and their weight in the Frobenius norm.
_SYM = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
_SYM_WEIGHT = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 2.0], dtype=np.float32).reshape(6, 1, 1, 1)


def _sym_grad(w: np.ndarray, ih: Sequence[float]) -> np.ndarray:
    """ε(w) = ½(∇w + ∇wᵀ) with backward differences, as 6 components (xx, yy, zz, xy, xz, yz)."""
    out = np.empty((6,) + w.shape[1:], dtype=np.float32)
    for c, (i, j) in enumerate(_SYM):
        if i == j:
            out[c] = _bwd(w[i], i, ih[i])
        else:
            out[c] = 0.5 * (_bwd(w[j], i, ih[i]) + _bwd(w[i], j, ih[j]))
    return out


def _sym_grad_adjoint(q: np.ndarray, ih: Sequence[float]) -> np.ndarray:
    """Adjoint of :func:`_sym_grad` for the Frobenius inner product (off-diagonal entries counted twice)."""
    out = np.zeros((3,) + q.shape[1:], dtype=np.float32)
    for c, (i, j) in enumerate(_SYM):
        if i == j:
            out[i] -= _fwd(q[c], i, ih[i])
        else:
            out[j] -= _fwd(q[c], i, ih[i])
            out[i] -= _fwd(q[c], j, ih[j])
    return out


def _grad(x: np.ndarray, ih: Sequence[float]) -> np.ndarray:
    return np.stack([_fwd(x, a, ih[a]) for a in range(3)])


def _grad_adjoint(p: np.ndarray, ih: Sequence[float]) -> np.ndarray:
    return -(_bwd(p[0], 0, ih[0]) + _bwd(p[1], 1, ih[1]) + _bwd(p[2], 2, ih[2]))


def _project(v: np.ndarray, radius: float, weight: Optional[np.ndarray] = None) -> None:
    """Project a field of vectors (first axis) in place onto the ball of ``radius`` (weighted Euclidean norm)."""
    sq = v * v if weight is None else weight * v * v
    nrm = np.sqrt(np.sum(sq, axis=0))
    v /= np.maximum(np.float32(1.0), nrm / np.float32(radius))


# ---------------------------------------------------------------------------- fused primal–dual steps (numba)
@numba.njit(parallel=True, cache=True, fastmath=True)
def _data_dual(d, pd, wgt, wphi, sigma):  # pragma: no cover - compiled
    """pd ← (pd + σ(W·Dχ̄ − Wφ))/(1 + σ) with ``d`` = Dχ̄; then d ← W·pd (the input of Dᵀ)."""
    inv = 1.0 / (1.0 + sigma)
    nx, ny, nz = d.shape
    for i in numba.prange(nx):
        for j in range(ny):
            for k in range(nz):
                v = (pd[i, j, k] + sigma * (wgt[i, j, k] * d[i, j, k] - wphi[i, j, k])) * inv
                pd[i, j, k] = v
                d[i, j, k] = wgt[i, j, k] * v


@numba.njit(parallel=True, cache=True, fastmath=True)
def _dual_step(chib, wb, p, q, sigma, a1, a0, h0, h1, h2):  # pragma: no cover - compiled
    """p ← proj_{α₁}(p + σ(∇χ̄ − w̄)), q ← proj_{α₀}(q + σ ε(w̄)), periodic differences (1/mm)."""
    nx, ny, nz = chib.shape
    for i in numba.prange(nx):
        ip = i + 1 if i + 1 < nx else 0
        im = i - 1 if i > 0 else nx - 1
        for j in range(ny):
            jp = j + 1 if j + 1 < ny else 0
            jm = j - 1 if j > 0 else ny - 1
            for k in range(nz):
                kp = k + 1 if k + 1 < nz else 0
                km = k - 1 if k > 0 else nz - 1
                c = chib[i, j, k]
                w0 = wb[0, i, j, k]
                w1 = wb[1, i, j, k]
                w2 = wb[2, i, j, k]
                p0 = p[0, i, j, k] + sigma * ((chib[ip, j, k] - c) * h0 - w0)
                p1 = p[1, i, j, k] + sigma * ((chib[i, jp, k] - c) * h1 - w1)
                p2 = p[2, i, j, k] + sigma * ((chib[i, j, kp] - c) * h2 - w2)
                f = math.sqrt(p0 * p0 + p1 * p1 + p2 * p2) / a1
                f = 1.0 / f if f > 1.0 else 1.0
                p[0, i, j, k] = p0 * f
                p[1, i, j, k] = p1 * f
                p[2, i, j, k] = p2 * f
                q0 = q[0, i, j, k] + sigma * ((w0 - wb[0, im, j, k]) * h0)
                q1 = q[1, i, j, k] + sigma * ((w1 - wb[1, i, jm, k]) * h1)
                q2 = q[2, i, j, k] + sigma * ((w2 - wb[2, i, j, km]) * h2)
                q3 = q[3, i, j, k] + sigma * 0.5 * ((w1 - wb[1, im, j, k]) * h0 + (w0 - wb[0, i, jm, k]) * h1)
                q4 = q[4, i, j, k] + sigma * 0.5 * ((w2 - wb[2, im, j, k]) * h0 + (w0 - wb[0, i, j, km]) * h2)
                q5 = q[5, i, j, k] + sigma * 0.5 * ((w2 - wb[2, i, jm, k]) * h1 + (w1 - wb[1, i, j, km]) * h2)
                f = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + 2.0 * (q3 * q3 + q4 * q4 + q5 * q5)) / a0
                f = 1.0 / f if f > 1.0 else 1.0
                q[0, i, j, k] = q0 * f
                q[1, i, j, k] = q1 * f
                q[2, i, j, k] = q2 * f
                q[3, i, j, k] = q3 * f
                q[4, i, j, k] = q4 * f
                q[5, i, j, k] = q5 * f


@numba.njit(parallel=True, cache=True, fastmath=True)
def _primal_step(dtw, p, q, chi, w, chib, wb, tau, h0, h1, h2):  # pragma: no cover - compiled
    """χ ← χ − τ(DᵀW·pd + ∇ᵀp), w ← w − τ(−p + εᵀq) (``dtw`` = DᵀW·pd); χ̄ = 2χ_new − χ, w̄ = 2w_new − w."""
    nx, ny, nz = chi.shape
    for i in numba.prange(nx):
        ip = i + 1 if i + 1 < nx else 0
        im = i - 1 if i > 0 else nx - 1
        for j in range(ny):
            jp = j + 1 if j + 1 < ny else 0
            jm = j - 1 if j > 0 else ny - 1
            for k in range(nz):
                kp = k + 1 if k + 1 < nz else 0
                km = k - 1 if k > 0 else nz - 1
                p0 = p[0, i, j, k]
                p1 = p[1, i, j, k]
                p2 = p[2, i, j, k]
                # ∇ᵀp = −(backward divergence)
                gt = -((p0 - p[0, im, j, k]) * h0 + (p1 - p[1, i, jm, k]) * h1 + (p2 - p[2, i, j, km]) * h2)
                gc = dtw[i, j, k] + gt
                c_old = chi[i, j, k]
                c_new = c_old - tau * gc
                chi[i, j, k] = c_new
                chib[i, j, k] = 2.0 * c_new - c_old
                # εᵀq with forward differences (off-diagonal entries counted twice in the Frobenius product)
                e0 = -((q[0, ip, j, k] - q[0, i, j, k]) * h0 + (q[3, i, jp, k] - q[3, i, j, k]) * h1
                       + (q[4, i, j, kp] - q[4, i, j, k]) * h2)
                e1 = -((q[1, i, jp, k] - q[1, i, j, k]) * h1 + (q[3, ip, j, k] - q[3, i, j, k]) * h0
                       + (q[5, i, j, kp] - q[5, i, j, k]) * h2)
                e2 = -((q[2, i, j, kp] - q[2, i, j, k]) * h2 + (q[4, ip, j, k] - q[4, i, j, k]) * h0
                       + (q[5, i, jp, k] - q[5, i, j, k]) * h1)
                o0 = w[0, i, j, k]
                o1 = w[1, i, j, k]
                o2 = w[2, i, j, k]
                n0 = o0 - tau * (e0 - p0)
                n1 = o1 - tau * (e1 - p1)
                n2 = o2 - tau * (e2 - p2)
                w[0, i, j, k] = n0
                w[1, i, j, k] = n1
                w[2, i, j, k] = n2
                wb[0, i, j, k] = 2.0 * n0 - o0
                wb[1, i, j, k] = 2.0 * n1 - o1
                wb[2, i, j, k] = 2.0 * n2 - o2


def tgv_qsm(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    alpha1: float = 0.0,
    alpha0_factor: float = 2.0,
    max_iter: int = 200,
    pad_voxels: int = 6,
    step_ratio: float = 10.0,
    warm_start_iter: int = 15,
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """TGV-QSM (Langkammer et al., NeuroImage 2015) on the local field by Chambolle–Pock; see the module docs.

    ``alpha1`` weighs ‖∇χ − w‖₁, ``alpha0 = alpha0_factor·alpha1`` weighs ‖ε(w)‖₁. ``step_ratio`` = τ·‖K‖ =
    1/(σ·‖K‖) balances primal and dual steps (χ in ppm is small next to the duals, so a primal step larger than the
    symmetric choice converges much faster). ``warm_start_iter`` > 0 starts χ from that many iterations of the ADMM
    TV solve (:func:`QSMLogic.inversion.tv.admm_tv`, α = α₁): the problem is convex, so the start changes only how
    many primal–dual iterations are needed. Returns χ in ppm (float32, 0 outside ``mask``). ``cancel()`` is checked
    before every iteration.
    """
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    alpha1 = default_alpha(alpha1, b0_tesla)
    shape = prob.shape
    ih = [float(1.0 / v) for v in prob.voxel_size_mm]
    kern = prob.kernel
    wgt = prob.weight
    wphi = wgt * prob.field
    alpha0 = alpha0_factor * alpha1

    def dip(x: np.ndarray) -> np.ndarray:
        return irfft(rfft(x) * kern, shape)

    def k_apply(chi: np.ndarray, w: np.ndarray):
        return wgt * dip(chi), _grad(chi, ih) - w, _sym_grad(w, ih)

    def kt_apply(pd: np.ndarray, p: np.ndarray, q: np.ndarray):
        return dip(wgt * pd) + _grad_adjoint(p, ih), -p + _sym_grad_adjoint(q, ih)

    # ‖K‖ by power iteration on KᵀK
    rng = np.random.default_rng(0)
    xc = rng.standard_normal(shape).astype(np.float32)
    xw = rng.standard_normal((3,) + shape).astype(np.float32)
    norm = 1.0
    for _ in range(15):
        nrm = np.sqrt(np.sum(xc * xc, dtype=np.float64) + np.sum(xw * xw, dtype=np.float64))
        xc /= np.float32(nrm)
        xw /= np.float32(nrm)
        xc, xw = kt_apply(*k_apply(xc, xw))
        norm = float(np.sqrt(np.sqrt(np.sum(xc * xc, dtype=np.float64) + np.sum(xw * xw, dtype=np.float64))))
    lip = 1.05 * norm
    tau = np.float32(step_ratio / lip)
    sigma = np.float32(1.0 / (step_ratio * lip))

    if warm_start_iter > 0:
        chi = admm_tv(kern, prob.field, wgt, prob.voxel_size_mm, alpha=alpha1, data_term="l2", mu_grad=300.0 * alpha1,
                      mu_data=0.3, max_iter=warm_start_iter, tol=0.0, eval_mask=prob.mask, cancel=cancel,
                      what="TGV-QSM").chi
    else:
        chi = np.zeros(shape, dtype=np.float32)
    chi = np.ascontiguousarray(chi, dtype=np.float32)
    w = np.zeros((3,) + shape, dtype=np.float32)
    chi_bar, w_bar = chi.copy(), w.copy()
    pd = np.zeros(shape, dtype=np.float32)
    p = np.zeros((3,) + shape, dtype=np.float32)
    q = np.zeros((6,) + shape, dtype=np.float32)
    wgt = np.ascontiguousarray(wgt, dtype=np.float32)
    wphi = np.ascontiguousarray(wphi, dtype=np.float32)
    h = [np.float32(v) for v in ih]
    a1, a0 = np.float32(alpha1), np.float32(alpha0)
    for _ in range(max_iter):
        check_cancel(cancel, "TGV-QSM")
        d = dip(chi_bar)  # W·Dχ̄ enters the data dual; the fused step leaves W·pd in d for Dᵀ
        _data_dual(d, pd, wgt, wphi, sigma)
        _dual_step(chi_bar, w_bar, p, q, sigma, a1, a0, h[0], h[1], h[2])
        dtw = dip(d)
        _primal_step(dtw, p, q, chi, w, chi_bar, w_bar, tau, h[0], h[1], h[2])
        del d, dtw
    return prob.to_input_grid(chi)


register_method("inversion", MethodSpec(
    key="tgv", label="TGV-QSM",
    reference="Langkammer et al., NeuroImage 111 (2015) 622-630",
    params=(
        Param("alpha1", float, 0.0, "weight of ‖∇χ − w‖₁ (first order; fields in ppm, 1/mm); 0 = automatic: "
              "1e-4·(3 T/B0)^0.6", minimum=0.0, maximum=1.0),
        Param("alpha0_factor", float, 2.0, "α₀ = factor·α₁, weight of ‖ε(w)‖₁ (second order)", minimum=0.1,
              maximum=100.0),
        Param("max_iter", int, 200, "Chambolle–Pock iterations", minimum=1, maximum=10000),
        Param("step_ratio", float, 10.0, "primal/dual step balance τ·‖K‖ (σ = 1/(ratio·‖K‖))", minimum=1e-3,
              maximum=1e3),
        Param("warm_start_iter", int, 15, "ADMM-TV iterations for the starting χ (0: start from zero)", minimum=0,
              maximum=500),
        Param("pad_voxels", int, 6, "zero padding around the mask's bounding box", unit="voxels", minimum=0,
              maximum=128),
    ),
    help="Second-order TGV regularisation on the local field (dipole data term), primal-dual solver.",
    func=tgv_qsm))

__all__ = ["tgv_qsm"]
