"""The unit dipole kernel and the forward field model (docs/conventions.md).

``δ_local = F⁻¹{ D(k) · F{χ} }`` with ``D(k) = 1/3 − (k·b̂)² / |k|²`` and ``D(0) = 0`` (Salomir et al., Concepts
Magn Reson B 2003; Marques & Bowtell, Concepts Magn Reson B 2005). The k grid is in physical units (1/mm), so
anisotropic voxels are handled, and b̂ is the unit B0 direction in the array's own axes. The 1/3 term is the
Lorentz-sphere correction: a uniform sphere has zero field inside.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft as sfft

from .geometry import check_b0_direction, check_voxel_size

#: Use every core for FFTs (the test and CI machines have 2).
FFT_WORKERS = -1


def kspace_grid(
    shape: Sequence[int], voxel_size_mm: Sequence[float], real: bool = False
) -> list[np.ndarray]:
    """Spatial frequencies (1/mm) per axis as broadcastable float64 arrays; ``real`` gives the rfftn layout."""
    v = check_voxel_size(voxel_size_mm, len(shape))
    ks = []
    for ax, (n, d) in enumerate(zip(shape, v)):
        if real and ax == len(shape) - 1:
            k = np.fft.rfftfreq(n, d=d)
        else:
            k = np.fft.fftfreq(n, d=d)
        sh = [1] * len(shape)
        sh[ax] = k.size
        ks.append(k.reshape(sh))
    return ks


def dipole_kernel(
    shape: Sequence[int],
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float] = (0.0, 0.0, 1.0),
    real: bool = False,
    dtype: type = np.float32,
) -> np.ndarray:
    """Unit dipole kernel D(k) on the FFT grid of ``shape`` (``real=True``: the rfftn half-spectrum layout)."""
    b = check_b0_direction(b0_direction)
    ks = kspace_grid(shape, voxel_size_mm, real=real)
    kb = ks[0] * b[0] + ks[1] * b[1] + ks[2] * b[2]
    k2 = ks[0] ** 2 + ks[1] ** 2 + ks[2] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        d = 1.0 / 3.0 - kb**2 / k2
    d.flat[0] = 0.0
    return d.astype(dtype)


def padded_shape(shape: Sequence[int], pad_factor: float = 1.0, min_pad_voxels: int = 0) -> tuple[int, ...]:
    """A fast FFT shape at least ``pad_factor·n + 2·min_pad_voxels`` along each axis."""
    return tuple(
        sfft.next_fast_len(int(np.ceil(n * pad_factor)) + 2 * int(min_pad_voxels), real=True) for n in shape
    )


def forward_field(
    chi_ppm: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float] = (0.0, 0.0, 1.0),
    pad_factor: float = 2.0,
    dtype: type = np.float32,
) -> np.ndarray:
    """Relative field δ (ppm) produced by the susceptibility ``chi_ppm`` (ppm), by k-space dipole convolution.

    The volume is zero padded to ``pad_factor`` times its size (centred) so that the periodic convolution of the
    FFT does not fold the field of one side onto the other; 2 keeps the wrap-around error of a source filling the
    volume well under 1 % of its peak field.
    """
    chi = np.asarray(chi_ppm)
    if chi.ndim != 3:
        raise ValueError(f"chi_ppm must be 3D, got shape {chi.shape}")
    shp = padded_shape(chi.shape, pad_factor)
    lo = [(p - n) // 2 for p, n in zip(shp, chi.shape)]
    buf = np.zeros(shp, dtype=np.float32)
    sl = tuple(slice(a, a + n) for a, n in zip(lo, chi.shape))
    buf[sl] = chi
    spec = sfft.rfftn(buf, workers=FFT_WORKERS)
    del buf
    spec *= dipole_kernel(shp, voxel_size_mm, b0_direction, real=True)
    out = sfft.irfftn(spec, s=shp, workers=FFT_WORKERS)
    return np.ascontiguousarray(out[sl], dtype=dtype)
