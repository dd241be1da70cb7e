"""Weighted least-squares inversions: Tikhonov-regularised CGLS/LSQR and iLSQR.

* ``cgls`` / ``lsqr``: ``min_χ ‖W(Dχ − δ)‖² + λ‖Rχ‖²`` over χ supported in the mask, with R the identity (classic
  Tikhonov) or the gradient ∇ (smoothness), solved by conjugate gradients on the normal equations (CGLS) or by
  LSQR (Paige & Saunders, ACM TOMS 1982). W is the data weight (1/noise SD, mean 1 in the mask). The Tikhonov
  formulation in QSM follows Kressler et al., IEEE Trans Med Imaging 29 (2010) 273–281.
* ``ilsqr``: iterative LSQR with streaking-artefact removal (Li et al., NeuroImage 108 (2015) 111–122):
  (1) χ_LSQR, an early-stopped LSQR solution of the weighted problem, the weight also down-weighting voxels with a
  large field Laplacian (unreliable phase); (2) a fast estimate χ_FS whose ill-conditioned k-space is filled from
  the derivative relation — the sign of D times the field, blended with its spherical-mean-smoothed copy where
  |D| is small — rescaled by regression onto a TKD map; (3) the streaking artefact χ_SA, the component of χ_LSQR
  in the ill-conditioned cone ``|D| < t`` whose gradients, weighted to be trusted only where χ_FS has no edge,
  match those of χ_LSQR (an LSQR solve); (4) χ = χ_LSQR − χ_SA.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..params import MethodSpec, Param, register_method
from ..utils.fft import convolve, irfft, rfft
from ..utils.kernels import smv_kernel_spectrum, truncated_inverse
from ..utils.solvers import CancelFn, cg, lsqr as lsqr_solve
from .common import InversionProblem, divergence, gradient, prepare_problem


def _tikhonov(prob: InversionProblem, lambda_: float, regulariser: str, solver: str, max_iter: int,
              tol: float, weight: np.ndarray, cancel: Optional[CancelFn] = None) -> np.ndarray:
    what = "CGLS" if solver == "cg" else "LSQR"
    m = prob.mask.astype(np.float32)
    w = weight
    vox = prob.voxel_size_mm
    lam = float(lambda_)
    if solver == "cg":
        w2 = w * w

        def normal(x: np.ndarray) -> np.ndarray:
            out = m * prob.dipole(w2 * prob.dipole(m * x))
            if lam > 0 and regulariser == "identity":
                out += np.float32(lam) * (m * x)
            elif lam > 0:
                out -= np.float32(lam) * (m * divergence(gradient(m * x, vox), vox))
            return out

        b = m * prob.dipole(w2 * prob.field)
        x, _, _ = cg(normal, b, max_iter=max_iter, tol=tol, cancel=cancel, what=what)
        return m * x
    if regulariser == "identity":
        x, _ = lsqr_solve(lambda v: w * prob.dipole(m * v), lambda r: m * prob.dipole(w * r), w * prob.field,
                          prob.shape, damp=float(np.sqrt(lam)), max_iter=max_iter, tol=tol, cancel=cancel,
                          what=what)
        return m * x
    s = np.float32(np.sqrt(lam))
    n = prob.shape

    def fwd(v: np.ndarray) -> np.ndarray:
        mv = m * v
        out = np.empty((4,) + n, dtype=np.float32)
        out[0] = w * prob.dipole(mv)
        out[1:] = s * gradient(mv, vox)
        return out

    def adj(r: np.ndarray) -> np.ndarray:
        return m * (prob.dipole(w * r[0]) - s * divergence(r[1:], vox))

    rhs = np.zeros((4,) + n, dtype=np.float32)
    rhs[0] = w * prob.field
    x, _ = lsqr_solve(fwd, adj, rhs, n, max_iter=max_iter, tol=tol, cancel=cancel, what=what)
    return m * x


def _tik_method(solver: str):
    def run(local_field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float],
            b0_direction: Sequence[float], weight: Optional[np.ndarray] = None, lambda_: float = 1e-3,
            regulariser: str = "gradient", max_iter: int = 100, tol: float = 1e-2,
            pad_voxels: int = 12, b0_tesla: Optional[float] = None,
            cancel: Optional[CancelFn] = None) -> np.ndarray:
        prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight=weight,
                               pad_voxels=pad_voxels, b0_tesla=b0_tesla)
        return prob.to_input_grid(_tikhonov(prob, lambda_, regulariser, solver, max_iter, tol, prob.weight,
                                            cancel))

    run.__name__ = f"{solver}_tikhonov"
    run.__doc__ = (f"Weighted Tikhonov least squares solved by {'CGLS' if solver == 'cg' else 'LSQR'}: "
                   "min ‖W(Dχ − δ)‖² + λ‖Rχ‖², R = identity or gradient (Kressler et al. IEEE TMI 2010).")
    return run


cgls = _tik_method("cg")
lsqr_tikhonov = _tik_method("lsqr")


def _percentile_ramp(values: np.ndarray, mask: np.ndarray, p_lo: float, p_hi: float) -> np.ndarray:
    """1 below the p_lo-th percentile of ``values`` in ``mask``, 0 above the p_hi-th, linear between; 0 outside."""
    lo, hi = np.percentile(values[mask], [p_lo, p_hi])
    span = max(float(hi - lo), 1e-30)
    w = np.clip((hi - values) / span, 0.0, 1.0).astype(np.float32)
    w[~mask] = 0.0
    return w


def _laplacian(x: np.ndarray, vox: Sequence[float]) -> np.ndarray:
    return divergence(gradient(x, vox), vox)


def _fast_qsm(prob: InversionProblem, smv_radius_mm: float) -> np.ndarray:
    """χ_FS of Li et al. 2015: sign(D)·F{δ}, ill-conditioned region filled by SMV smoothing, rescaled to TKD."""
    d = prob.kernel
    m = prob.mask
    a = np.abs(d).astype(np.float64)
    lo, hi = np.percentile(a[a > 0], [1.0, 30.0])
    wk = np.clip((a - lo) / max(hi - lo, 1e-30), 0.0, 1.0).astype(np.float32)
    smv = smv_kernel_spectrum(prob.shape, prob.voxel_size_mm, smv_radius_mm)
    blend = wk + (1.0 - wk) * smv
    spec = rfft(prob.field)
    spec *= np.sign(d)
    spec *= blend
    x = irfft(spec, prob.shape) * m
    spec = rfft(x)
    spec *= blend
    x = irfft(spec, prob.shape) * m
    tk = rfft(prob.field)
    tk *= truncated_inverse(d, 1.0 / 8.0, "tkd")
    tkd = irfft(tk, prob.shape)
    # least-squares fit tkd ≈ s·x + c in the mask
    xs, ts = x[m].astype(np.float64), tkd[m].astype(np.float64)
    s, c = np.polyfit(xs, ts, 1) if xs.std() > 0 else (1.0, 0.0)
    return np.where(m, np.float32(s) * x + np.float32(c), np.float32(0.0)).astype(np.float32)


def ilsqr(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    lsqr_tol: float = 1e-3,
    lsqr_max_iter: int = 100,
    cone_threshold: float = 0.05,
    sa_tol: float = 1e-2,
    sa_max_iter: int = 10,
    smv_radius_mm: float = 3.0,
    pad_voxels: int = 12,
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """iLSQR (Li et al., NeuroImage 2015): LSQR solution minus its estimated streaking artefact; see module docs."""
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, weight=weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    m = prob.mask
    mf = m.astype(np.float32)
    vox = prob.voxel_size_mm
    # (1) LSQR with a weight that distrusts voxels of large field Laplacian (60th–99.9th percentile ramp)
    lap_w = _percentile_ramp(np.abs(_laplacian(prob.field, vox)), m, 60.0, 99.9)
    w = prob.weight * lap_w
    x_lsqr, _ = lsqr_solve(lambda v: w * prob.dipole(mf * v), lambda r: mf * prob.dipole(w * r), w * prob.field,
                           prob.shape, max_iter=lsqr_max_iter, tol=lsqr_tol, cancel=cancel, what="iLSQR")
    x_lsqr *= mf
    # (2) fast estimate with the ill-conditioned region filled, for the structure of the artefact weights
    x_fs = _fast_qsm(prob, smv_radius_mm)
    g_fs = np.abs(gradient(x_fs, vox))
    wg = np.stack([_percentile_ramp(g_fs[i], m, 50.0, 70.0) for i in range(3)])
    del g_fs
    # (3) streaking artefact: the cone component whose (non-edge) gradients match those of χ_LSQR
    cone = (np.abs(prob.kernel) < cone_threshold).astype(np.float32)

    def fwd(v: np.ndarray) -> np.ndarray:
        return wg * gradient(convolve(v, cone), vox)

    def adj(r: np.ndarray) -> np.ndarray:
        return -convolve(divergence(wg * r, vox), cone)

    x_sa, _ = lsqr_solve(fwd, adj, wg * gradient(x_lsqr, vox), prob.shape, max_iter=sa_max_iter, tol=sa_tol,
                         cancel=cancel, what="iLSQR")
    x_sa = convolve(x_sa, cone)
    # (4) remove it
    return prob.to_input_grid(mf * (x_lsqr - x_sa))


_PAD = Param("pad_voxels", int, 12, "zero padding around the mask's bounding box", unit="voxels",
             minimum=0, maximum=128)
_TIK_PARAMS = (
    Param("lambda_", float, 1e-3, "Tikhonov weight λ (with the gradient regulariser, in mm²)", minimum=0.0,
          maximum=1e3),
    Param("regulariser", str, "gradient", "R in λ‖Rχ‖²: identity (classic Tikhonov) or gradient",
          choices=("gradient", "identity")),
    Param("max_iter", int, 100, "maximum solver iterations", minimum=1, maximum=2000),
    Param("tol", float, 1e-2, "relative residual tolerance", minimum=1e-8, maximum=0.5),
    _PAD,
)
register_method("inversion", MethodSpec(
    key="cgls", label="Weighted Tikhonov least squares (CGLS)",
    reference="Kressler et al., IEEE Trans Med Imaging 2010; Hestenes & Stiefel, J Res NBS 1952",
    params=_TIK_PARAMS, func=cgls))
register_method("inversion", MethodSpec(
    key="lsqr", label="Weighted Tikhonov least squares (LSQR)",
    reference="Kressler et al., IEEE Trans Med Imaging 2010; Paige & Saunders, ACM Trans Math Softw 1982",
    params=_TIK_PARAMS, func=lsqr_tikhonov))
register_method("inversion", MethodSpec(
    key="ilsqr", label="iLSQR (LSQR with streaking-artefact removal)",
    reference="Li et al., NeuroImage 2015",
    params=(
        Param("lsqr_tol", float, 1e-3, "tolerance of the initial LSQR (early stopping regularises)",
              minimum=1e-6, maximum=0.5),
        Param("lsqr_max_iter", int, 100, "maximum iterations of the initial LSQR", minimum=1, maximum=1000),
        Param("cone_threshold", float, 0.05, "|D| below which k-space is ill-conditioned", minimum=0.01,
              maximum=0.5),
        Param("sa_tol", float, 1e-2, "tolerance of the streaking-artefact LSQR", minimum=1e-6, maximum=0.5),
        Param("sa_max_iter", int, 10, "maximum iterations of the streaking-artefact LSQR", minimum=1, maximum=1000),
        Param("smv_radius_mm", float, 3.0, "radius of the smoothing sphere in the fast estimate", unit="mm",
              minimum=0.5, maximum=20.0),
        _PAD,
    ),
    func=ilsqr))

__all__ = ["cgls", "lsqr_tikhonov", "ilsqr"]
