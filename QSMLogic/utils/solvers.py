"""Iterative solvers on arrays: conjugate gradients (optionally preconditioned) and LSQR.

CG: Hestenes & Stiefel, J Res NBS 49 (1952) 409–436; preconditioned CG as in Saad, Iterative Methods for Sparse
Linear Systems (2003), Algorithm 9.1. LSQR: Paige & Saunders, ACM Trans Math Softw 8 (1982) 43–71.

Both work on arrays of any shape and precision (float32 fields on the FFT work grid, float64 compact vectors of
the masked Poisson problem), accumulate inner products in float64 unless told otherwise, and call ``cancel()``
before every iteration: True raises :class:`QSMLogic.errors.QSMCancelled`, so a long solve stops within one
operator application.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ..errors import QSMCancelled

Operator = Callable[[np.ndarray], np.ndarray]
CancelFn = Callable[[], bool]


def dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product accumulated in float64."""
    return float(np.sum(a * b, dtype=np.float64))


def blas_dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product by BLAS in the arrays' own precision (no temporary array; its blocked summation keeps float32
    rounding small). The background-removal solves use it: their figures were measured with it, and an
    iteration-limited solve of an ill-conditioned problem (PDF) moves with the rounding (docs/benchmarks.md)."""
    return float(np.dot(a.reshape(-1), b.reshape(-1)))


def check_cancel(cancel: Optional[CancelFn], what: str) -> None:
    """Raise :class:`QSMCancelled` naming ``what`` when ``cancel()`` returns True (nothing without ``cancel``)."""
    if cancel is not None and cancel():
        raise QSMCancelled(f"{what} cancelled")


def cg(
    apply_a: Operator,
    b: np.ndarray,
    x0: Optional[np.ndarray] = None,
    max_iter: int = 100,
    tol: float = 1e-3,
    cancel: Optional[CancelFn] = None,
    precondition: Optional[Operator] = None,
    what: str = "solver",
    inner: Callable[[np.ndarray, np.ndarray], float] = dot,
) -> Tuple[np.ndarray, int, float]:
    """Conjugate gradients for ``A x = b``, A symmetric positive (semi-)definite; returns (x, iterations, ‖r‖/‖b‖).

    Works in the precision of ``b``. Stops when ‖r‖ ≤ tol·‖b‖ (also before the first iteration, from ``x0``), when
    the curvature pᵀAp is no longer positive, or after ``max_iter`` iterations. ``precondition(r)`` applies M⁻¹ of
    a symmetric positive definite preconditioner M; ``inner`` is the inner product (:func:`dot` or
    :func:`blas_dot`). ``apply_a`` and ``precondition`` may return a buffer they reuse (each result is used up
    before the next call). ``cancel()`` returning True raises QSMCancelled naming ``what``.
    """
    dtype = b.dtype.type
    if x0 is None:
        x = np.zeros_like(b)
        r = b.copy()
    else:
        x = np.array(x0, dtype=b.dtype)
        r = b - apply_a(x)
    z = r if precondition is None else precondition(r)
    p = z.copy()
    rr = inner(r, r)
    rz = rr if precondition is None else inner(r, z)
    bnorm = np.sqrt(inner(b, b)) or 1.0
    rel = np.sqrt(rr) / bnorm
    it = 0
    while it < max_iter and rel > tol:
        check_cancel(cancel, what)
        ap = apply_a(p)
        pap = inner(p, ap)
        if pap <= 0:
            break
        alpha = dtype(rz / pap)
        x += alpha * p
        ap *= alpha
        r -= ap
        it += 1
        rr = inner(r, r)
        rel = np.sqrt(rr) / bnorm
        if rel <= tol:
            break
        z = r if precondition is None else precondition(r)
        rz_new = rr if precondition is None else inner(r, z)
        p *= dtype(rz_new / rz)
        p += z
        rz = rz_new
    return x, it, float(rel)


def lsqr(
    apply_a: Operator,
    apply_at: Operator,
    b: np.ndarray,
    x_shape: Tuple[int, ...],
    damp: float = 0.0,
    max_iter: int = 100,
    tol: float = 1e-3,
    cancel: Optional[CancelFn] = None,
    what: str = "solver",
) -> Tuple[np.ndarray, int]:
    """LSQR (Paige & Saunders 1982) for min ‖A x − b‖² + damp²‖x‖² in float32; returns (x, iterations).

    ``apply_a`` maps an array of ``x_shape`` to one shaped like ``b``; ``apply_at`` is its adjoint. Stops when the
    normal-equation residual ‖Aᵀr − damp²x‖ falls below ``tol`` times its starting value, or after ``max_iter``.
    ``cancel()`` returning True raises QSMCancelled naming ``what``.
    """
    x = np.zeros(x_shape, dtype=np.float32)
    u = b.astype(np.float32, copy=True)
    beta = np.sqrt(dot(u, u))
    if beta == 0.0:
        return x, 0
    u /= np.float32(beta)
    v = apply_at(u).astype(np.float32, copy=False)
    alpha = np.sqrt(dot(v, v))
    if alpha == 0.0:
        return x, 0
    v /= np.float32(alpha)
    w = v.copy()
    phibar, rhobar = beta, alpha
    start = alpha * beta
    it = 0
    for _ in range(max_iter):
        it += 1
        check_cancel(cancel, what)
        u = apply_a(v) - np.float32(alpha) * u
        beta = np.sqrt(dot(u, u))
        if beta > 0:
            u /= np.float32(beta)
        v = apply_at(u) - np.float32(beta) * v
        alpha = np.sqrt(dot(v, v))
        if alpha > 0:
            v /= np.float32(alpha)
        # eliminate the damping term, then the subdiagonal (plane rotations)
        rhobar1 = np.hypot(rhobar, damp)
        c1 = rhobar / rhobar1
        phibar = c1 * phibar
        rho = np.hypot(rhobar1, beta)
        c, s = rhobar1 / rho, beta / rho
        theta = s * alpha
        rhobar = -c * alpha
        phi = c * phibar
        phibar = s * phibar
        x += np.float32(phi / rho) * w
        w = v - np.float32(theta / rho) * w
        # ‖Aᵀr‖ estimate of Paige & Saunders: phibar·alpha·|c|
        if abs(phibar * alpha * c) <= tol * start or alpha == 0.0:
            break
    return x, it


__all__ = ["CancelFn", "check_cancel", "dot", "blas_dot", "cg", "lsqr"]
