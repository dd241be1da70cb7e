"""Closed-form k-space inversions: TKD, TKD with underestimation correction, TSVD.

* TKD — thresholded k-space division (Shmueli et al., Magn Reson Med 62 (2009) 1510–1522): ``χ = F⁻¹{F{δ}/D̃}``
  with ``1/D̃ = 1/D`` where ``|D| > t`` and ``sign(D)/t`` elsewhere.
* TKD with correction (Schweser et al., Magn Reson Med 69 (2013) 1582–1594, "superfast dipole inversion"): the
  truncation shrinks every susceptibility value by the same factor, the value at r = 0 of the point-spread function
  ``F⁻¹{D/D̃}`` — the k-space mean ``ψ = mean_k(D·(1/D̃))`` — so dividing the TKD map by ψ removes the bias.
* TSVD — truncated singular value decomposition (Wharton et al., Magn Reson Med 63 (2010) 1292–1304): ``1/D̃ = 0``
  where ``|D| ≤ t``.

``b0_tesla`` (a stage input; optional) only sharpens the Hz-versus-ppm check of the input field.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..params import MethodSpec, Param, register_method
from ..utils.fft import irfft, rfft
from ..utils.kernels import truncated_inverse
from .common import prepare_problem


def _kspace_mean(values_rfft: np.ndarray, n_last: int) -> float:
    """Mean over the full k-space of a Hermitian-symmetric quantity given on the rfft half grid."""
    w = np.full(values_rfft.shape[-1], 2.0)
    w[0] = 1.0
    if n_last % 2 == 0:
        w[-1] = 1.0
    total = float(np.sum(np.sum(values_rfft, axis=(0, 1), dtype=np.float64) * w))
    return total / (values_rfft.shape[0] * values_rfft.shape[1] * n_last)


def _direct(local_field_ppm, mask, voxel_size_mm, b0_direction, threshold, mode, correct, pad_voxels, b0_tesla):
    prob = prepare_problem(local_field_ppm, mask, voxel_size_mm, b0_direction, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    inv = truncated_inverse(prob.kernel, threshold, mode)
    spec = rfft(prob.field)
    spec *= inv
    chi = irfft(spec, prob.shape)
    if correct:
        psi = _kspace_mean(prob.kernel * inv, prob.shape[-1])
        chi /= np.float32(psi)
    return prob.to_input_grid(chi)


def tkd(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    threshold: float = 0.19,
    pad_voxels: int = 12,
    b0_tesla: Optional[float] = None,
) -> np.ndarray:
    """Thresholded k-space division (Shmueli et al. MRM 2009); χ in ppm, 0 outside the mask."""
    return _direct(local_field_ppm, mask, voxel_size_mm, b0_direction, threshold, "tkd", False, pad_voxels, b0_tesla)


def tkd_corrected(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    threshold: float = 0.19,
    pad_voxels: int = 12,
    b0_tesla: Optional[float] = None,
) -> np.ndarray:
    """TKD divided by the truncation's underestimation factor ψ (Schweser et al. MRM 2013)."""
    return _direct(local_field_ppm, mask, voxel_size_mm, b0_direction, threshold, "tkd", True, pad_voxels, b0_tesla)


def tsvd(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    threshold: float = 0.1,
    correct: bool = False,
    pad_voxels: int = 12,
    b0_tesla: Optional[float] = None,
) -> np.ndarray:
    """Truncated SVD inversion (Wharton et al. MRM 2010), optionally with the ψ correction."""
    return _direct(local_field_ppm, mask, voxel_size_mm, b0_direction, threshold, "tsvd", correct, pad_voxels, b0_tesla)


def underestimation_factor(
    shape: Sequence[int], voxel_size_mm: Sequence[float], b0_direction: Sequence[float], threshold: float,
    mode: str = "tkd", kernel: Optional[np.ndarray] = None,
) -> float:
    """ψ = mean_k(D / D̃): the factor by which a truncated inversion scales susceptibilities (Schweser 2013)."""
    from ..dipole import dipole_kernel

    d = dipole_kernel(shape, voxel_size_mm, b0_direction, real=True) if kernel is None else kernel
    return _kspace_mean(d * truncated_inverse(d, threshold, mode), int(shape[-1]))


_PAD = Param("pad_voxels", int, 12, "zero padding around the mask's bounding box (FFT wrap-around guard)",
             unit="voxels", minimum=0, maximum=128)

register_method("inversion", MethodSpec(
    key="tkd", label="TKD (thresholded k-space division)",
    reference="Shmueli et al., Magn Reson Med 2009",
    params=(Param("threshold", float, 0.19, "kernel truncation threshold t (|D| ≤ t replaced by sign(D)·t)",
                  minimum=0.01, maximum=0.5), _PAD),
    help="Fast closed-form inversion; underestimates χ by the factor ψ and shows streaks near the magic angle.",
    func=tkd))
register_method("inversion", MethodSpec(
    key="tkd_corrected", label="TKD with underestimation correction",
    reference="Schweser et al., Magn Reson Med 2013 (TKD: Shmueli et al., Magn Reson Med 2009)",
    params=(Param("threshold", float, 0.19, "kernel truncation threshold t", minimum=0.01, maximum=0.5), _PAD),
    help="TKD divided by ψ, the truncation's point-spread value at the centre.",
    func=tkd_corrected))
register_method("inversion", MethodSpec(
    key="tsvd", label="TSVD (truncated SVD)",
    reference="Wharton et al., Magn Reson Med 2010",
    params=(Param("threshold", float, 0.1, "kernel truncation threshold (|D| ≤ t set to 0)",
                  minimum=0.01, maximum=0.5),
            Param("correct", bool, False, "divide by the truncation's underestimation factor ψ (Schweser 2013)"),
            _PAD),
    func=tsvd))

__all__ = ["tkd", "tkd_corrected", "tsvd", "underestimation_factor"]
