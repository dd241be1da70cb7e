"""COSMOS — calculation of susceptibility through multiple orientation sampling (Liu et al., Magn Reson Med 61
(2009) 196–204).

With local fields δ_i measured at several B0 directions b̂_i of the same object (already registered to one grid),
the k-space least-squares solution is closed form:

    χ = F⁻¹{ Σ_i D_i(k) F{δ_i}(k) / (Σ_i D_i(k)² + ε) }

The cones ``D_i = 0`` of distinct directions intersect only along lines, so the denominator vanishes only there
(and at k = 0); ``ε`` (small) keeps those few points finite. The fields are known only inside the mask, which the
closed form ignores (it treats the field as zero outside); ``refine_iter`` conjugate-gradient iterations on
``Σ_i ‖M(D_iχ − δ_i)‖²`` with χ supported in the mask M, started from the closed form, remove that truncation error
(the image-space COSMOS of the same paper). COSMOS takes several fields, so it is not a method of
the single-orientation ``inversion`` stage: call :func:`cosmos` directly.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..dipole import dipole_kernel
from ..errors import QSMInputError
from ..geometry import check_b0_direction
from ..utils.fft import convolve, irfft, rfft
from ..utils.solvers import CancelFn, cg
from .common import check_local_field_ppm, prepare_problem


def cosmos(
    local_fields_ppm: Sequence[np.ndarray],
    b0_directions: Sequence[Sequence[float]],
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    weights: Optional[Sequence[np.ndarray]] = None,
    epsilon: float = 1e-3,
    refine_iter: int = 60,
    tol: float = 1e-4,
    pad_voxels: int = 12,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """χ (ppm, float32, 0 outside ``mask``) from ≥ 2 local fields (ppm) with their unit B0 directions.

    ``weights`` (optional, one per orientation, e.g. 1/noise SD) weight each field in the k-space combination by
    its mean weight in the mask. Raises :class:`QSMInputError` for fewer than two orientations, mismatched list
    lengths or shapes, and (through the common checks) for fields not in ppm, an empty mask or non-unit directions.
    """
    fields = [np.asarray(f) for f in local_fields_ppm]
    dirs = list(b0_directions)
    if len(fields) < 2:
        raise QSMInputError(f"COSMOS needs at least 2 orientations, got {len(fields)}")
    if len(dirs) != len(fields):
        raise QSMInputError(f"{len(fields)} fields but {len(dirs)} B0 directions")
    if weights is not None and len(weights) != len(fields):
        raise QSMInputError(f"{len(fields)} fields but {len(weights)} weights")
    for i, f in enumerate(fields):
        if f.shape != fields[0].shape:
            raise QSMInputError(f"field {i} has shape {f.shape}, field 0 has {fields[0].shape}")
    prob = prepare_problem(fields[0], mask, voxel_size_mm, dirs[0], pad_voxels=pad_voxels)
    num = None
    den = None
    kernels, scales = [], []
    for i, (f, b) in enumerate(zip(fields, dirs)):
        check_local_field_ppm(f, prob.input_mask)
        scale = 1.0
        if weights is not None:
            scale = float(np.mean(np.asarray(weights[i], dtype=np.float64)[prob.input_mask]))
        d = prob.kernel if i == 0 else dipole_kernel(prob.shape, voxel_size_mm, check_b0_direction(b), real=True)
        kernels.append(d)
        scales.append(scale)
        spec = rfft(prob.embed(np.where(prob.input_mask, f, 0.0)))
        spec *= d * np.float32(scale)
        num = spec if num is None else num + spec
        d2 = d * d * np.float32(scale)
        den = d2 if den is None else den + d2
    num /= den + np.float32(epsilon)
    chi = irfft(num, prob.shape) * prob.mask
    if refine_iter > 0:
        chi = _refine(prob, fields, kernels, scales, chi, refine_iter, tol, cancel)
    return prob.to_input_grid(chi)


def _refine(prob, fields, kernels, scales, chi0, max_iter, tol, cancel):
    """CG on Σ_i s_i‖M(D_iχ − δ_i)‖² over χ supported in the mask M, from the closed-form start."""
    mf = prob.mask.astype(np.float32)
    data = [prob.embed(np.where(prob.input_mask, f, 0.0)) for f in fields]

    def normal(x: np.ndarray) -> np.ndarray:
        out = np.zeros_like(x)
        for d, s in zip(kernels, scales):
            out += np.float32(s) * convolve(mf * convolve(mf * x, d), d)
        return mf * out

    rhs = np.zeros(prob.shape, dtype=np.float32)
    for d, s, f in zip(kernels, scales, data):
        rhs += np.float32(s) * convolve(f, d)
    rhs *= mf
    chi, _, _ = cg(normal, rhs, x0=chi0, max_iter=max_iter, tol=tol, cancel=cancel, what="COSMOS")
    return chi * mf


__all__ = ["cosmos"]
