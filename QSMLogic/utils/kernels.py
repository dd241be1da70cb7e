"""The spherical mean value (SMV) kernel and truncated inverses of k-space kernels.

SMV: the mean over a sphere, the operator whose invariance of harmonic functions (the background field inside the
brain) SHARP-type background removal rests on (Schweser et al., NeuroImage 2011; Li et al., NeuroImage 2011) and
whose high-pass iLSQR and single-step TV use as a Laplacian surrogate.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import QSMInputError
from ..geometry import check_voxel_size
from .fft import rfft


def smv_kernel_spectrum(shape: Sequence[int], voxel_size_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """rfftn spectrum (real, float32) of the unit-sum spherical mean value kernel of ``radius_mm`` on ``shape``.

    The sphere holds the voxel centres within ``radius_mm`` in physical units (ellipsoidal in index space for
    anisotropic voxels), centred on voxel 0 with periodic wrap, so the spectrum is real and ``S(0) = 1``. A sphere
    wider than the grid is an error.
    """
    vox = check_voxel_size(voxel_size_mm)
    half = [int(np.floor(radius_mm / v * (1 + 1e-9))) for v in vox]
    axes = [np.arange(-h, h + 1) for h in half]
    d2 = sum((ax.reshape([-1 if i == j else 1 for j in range(3)]) * v) ** 2 for i, (ax, v) in enumerate(zip(axes, vox)))
    ball = (d2 <= radius_mm**2 * (1 + 1e-6)).astype(np.float64)
    if any(2 * h + 1 > n for h, n in zip(half, shape)):
        raise QSMInputError(f"SMV radius {radius_mm:g} mm does not fit in a grid of shape {tuple(shape)}")
    buf = np.zeros(tuple(shape), dtype=np.float32)
    idx = np.ix_(*[ax % n for ax, n in zip(axes, shape)])
    buf[idx] = (ball / ball.sum()).astype(np.float32)
    return np.ascontiguousarray(rfft(buf).real, dtype=np.float32)


def truncated_inverse(kernel: np.ndarray, threshold: float, mode: str = "tsvd") -> np.ndarray:
    """Inverse of a real k-space kernel where ``|kernel| > threshold``; below it 0 (``"tsvd"``: truncated SVD of a
    diagonal operator) or ``sign(kernel)/threshold`` (``"tkd"``, truncated k-space division; Shmueli et al., MRM
    2009)."""
    big = np.abs(kernel) > threshold
    inv = np.zeros_like(kernel)
    np.divide(1.0, kernel, out=inv, where=big)
    if mode == "tkd":
        inv[~big] = np.sign(kernel[~big]) / np.float32(threshold)
    elif mode != "tsvd":
        raise QSMInputError(f"truncated inverse mode {mode!r} is not one of tsvd, tkd")
    return inv


__all__ = ["smv_kernel_spectrum", "truncated_inverse"]
