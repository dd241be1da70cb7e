"""A Poisson solver on a masked 3D domain, for the Laplacian background-removal methods.

Solves ``−∇²x = b`` on the interior voxels of a mask, with ``x = 0`` on every other voxel (homogeneous Dirichlet
boundary), using the 7-point Laplacian with physical (anisotropic) spacing ``1/h_a²``. The unknowns are stored
compactly (one entry per interior voxel, in C order) with a 6-neighbour table; the system is solved by the shared
conjugate gradients (:mod:`QSMLogic.utils.solvers`) preconditioned with symmetric successive over-relaxation
(SSOR-PCG; Saad, Iterative Methods for Sparse Linear Systems, 2003, §10.2 and §9.2). LBV (Zhou et al., NMR Biomed
2014) and HARPERELLA (Li et al., NMR Biomed 2015) both reduce to this problem.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np
from numba import njit, prange

from ..utils.solvers import CancelFn, blas_dot, cg

#: Over-relaxation factor of the SSOR preconditioner (1 < ω < 2; 1.6 is near-optimal for the 7-point Laplacian
#: on brain-sized domains of 50–200 voxels across).
SSOR_OMEGA = 1.6


@njit(cache=True, parallel=True)
def _matvec(x, nb, w6, diag, out):  # pragma: no cover - compiled
    n = x.shape[0]
    for i in prange(n):
        s = diag * x[i]
        for j in range(6):
            k = nb[i, j]
            if k >= 0:
                s -= w6[j] * x[k]
        out[i] = s


@njit(cache=True)
def _ssor_apply(r, nb, w6, diag, omega, z):  # pragma: no cover - compiled
    """z = M⁻¹ r for M = ω/(2−ω)·(D/ω + L)(D/ω)⁻¹(D/ω + U), L/U the strictly lower/upper parts of A."""
    n = r.shape[0]
    dw = diag / omega
    # forward: (D/ω + L) y = r; store t = (D/ω)·y = r − L·y in z, keep y in the same pass
    for i in range(n):
        s = r[i]
        for j in range(6):
            k = nb[i, j]
            if 0 <= k < i:
                s += w6[j] * (z[k] / dw)
        z[i] = s
    # z now holds t; y_k = t_k / dw was used above. Backward: (D/ω + U) z = t
    for i in range(n - 1, -1, -1):
        s = z[i]
        for j in range(6):
            k = nb[i, j]
            if k > i:
                s += w6[j] * z[k]
        z[i] = s / dw
    c = (2.0 - omega) / omega
    for i in range(n):
        z[i] *= c


@njit(cache=True, parallel=True)
def _neg_laplacian_rhs(field, flat_idx, strides, w3, out):  # pragma: no cover - compiled
    """out_i = −∇²field at interior voxel i (flat indices into the raveled field)."""
    for i in prange(flat_idx.shape[0]):
        p = flat_idx[i]
        c = field[p]
        s = 0.0
        for a in range(3):
            st = strides[a]
            s += w3[a] * (2.0 * c - field[p + st] - field[p - st])
        out[i] = s


@njit(cache=True, parallel=True)
def _neg_laplacian_rhs_wrapped(phase, flat_idx, strides, w3, out, max_step):  # pragma: no cover - compiled
    """out_i = −∇²φ at interior voxel i from wrapped phase, each neighbour difference wrapped to (−π, π];
    ``max_step`` gets the largest |wrapped neighbour difference| of the voxel (near π: possibly aliased)."""
    two_pi = 2.0 * np.pi
    for i in prange(flat_idx.shape[0]):
        p = flat_idx[i]
        c = phase[p]
        s = 0.0
        big = 0.0
        for a in range(3):
            st = strides[a]
            for q in (p + st, p - st):
                d = phase[q] - c
                d -= two_pi * np.floor((d + np.pi) / two_pi)
                s -= w3[a] * d
                big = max(big, abs(d))
        out[i] = s
        max_step[i] = big


class MaskedPoisson:
    """The operator ``A = −∇²`` restricted to the interior voxels of a mask (Dirichlet zero elsewhere).

    ``interior`` must not touch the array faces (callers pad by one voxel).
    """

    def __init__(self, interior: np.ndarray, voxel_size_mm: Sequence[float]) -> None:
        interior = np.ascontiguousarray(interior, dtype=bool)
        if interior[0].any() or interior[-1].any() or interior[:, 0].any() or interior[:, -1].any() \
                or interior[:, :, 0].any() or interior[:, :, -1].any():
            raise ValueError("interior touches the array faces; pad it by one voxel")
        self.shape = interior.shape
        self.flat_idx = np.flatnonzero(interior).astype(np.int64)
        n = self.flat_idx.size
        lut = np.full(interior.size, -1, dtype=np.int64)
        lut[self.flat_idx] = np.arange(n, dtype=np.int64)
        self.strides = np.array([self.shape[1] * self.shape[2], self.shape[2], 1], dtype=np.int64)
        h = np.asarray(voxel_size_mm, dtype=np.float64)
        self.w3 = 1.0 / h**2
        self.w6 = np.repeat(self.w3, 2)
        self.diag = float(2.0 * self.w3.sum())
        nb = np.empty((n, 6), dtype=np.int64)
        for a in range(3):
            nb[:, 2 * a] = lut[self.flat_idx + self.strides[a]]
            nb[:, 2 * a + 1] = lut[self.flat_idx - self.strides[a]]
        self.nb = nb

    @property
    def n(self) -> int:
        return int(self.flat_idx.size)

    def rhs_from_field(self, field: np.ndarray) -> np.ndarray:
        """``−∇²field`` at the interior voxels (``field`` defined on the interior and its 6-neighbours)."""
        out = np.empty(self.n, dtype=np.float64)
        _neg_laplacian_rhs(np.ascontiguousarray(field, dtype=np.float64).ravel(), self.flat_idx, self.strides,
                           self.w3, out)
        return out

    def rhs_from_wrapped_phase(self, phase_rad: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``−∇²φ`` at the interior voxels from wrapped phase (neighbour differences wrapped to (−π, π]), and each
        voxel's largest |wrapped neighbour difference| (rad)."""
        out = np.empty(self.n, dtype=np.float64)
        step = np.empty(self.n, dtype=np.float64)
        _neg_laplacian_rhs_wrapped(np.ascontiguousarray(phase_rad, dtype=np.float64).ravel(), self.flat_idx,
                                   self.strides, self.w3, out, step)
        return out, step

    def solve(self, b: np.ndarray, tol: float, max_iter: int, cancel: Optional[CancelFn] = None,
              what: str = "Poisson solve") -> Tuple[np.ndarray, int, float]:
        """SSOR-preconditioned CG (:func:`QSMLogic.utils.solvers.cg`) for ``A x = b`` in float64; returns (x on the
        full grid, iterations, relative residual). ``cancel()`` is checked every iteration."""

        ap, z = np.empty(self.n), np.empty(self.n)  # reused: CG consumes each result before the next call

        def apply_a(p: np.ndarray) -> np.ndarray:
            _matvec(p, self.nb, self.w6, self.diag, ap)
            return ap

        def ssor(r: np.ndarray) -> np.ndarray:
            _ssor_apply(r, self.nb, self.w6, self.diag, SSOR_OMEGA, z)
            return z

        x, it, rel = cg(apply_a, np.asarray(b, dtype=np.float64), max_iter=max_iter, tol=tol, cancel=cancel,
                        precondition=ssor, what=what, inner=blas_dot)
        full = np.zeros(self.shape, dtype=np.float32)
        full.ravel()[self.flat_idx] = x
        return full, it, rel
