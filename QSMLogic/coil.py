"""Coil combination: one complex image per echo from multi-channel GRE data (stage ``coil_combination``).

Input layout (DESIGN.md §2): ``signal`` is complex ``(x, y, z, echo, coil)``; the output is complex64
``(x, y, z, echo)`` whose modulus is the combined magnitude and whose phase is free of the coils' phase offsets
(it keeps at most a smooth, singularity-free offset common to all echoes).

Every phase method reduces to per-voxel complex coil weights ``W_c(r)`` (one set for all echoes) and the weighted
sum ``P_n = Σ_c W_c·S_{c,n}``; the phase of ``P_n`` is the combined phase and the magnitude is either the
root-sum-of-squares ``sqrt(Σ_c |S_{c,n}|²)`` (``magnitude="rss"``) or the sensitivity-weighted (matched-filter,
SNR-optimal) ``|P_n| / ||W||`` (``magnitude="sensitivity_weighted"``; Roemer et al., MRM 1990). The methods differ
in how they estimate the weights' phase:

* ASPIRE (Eckstein et al., MRM 2018): per-coil offset φ0_c from echoes 1 and 2 (``S1²·conj(S2)`` when TE2 = 2·TE1,
  else the linear extrapolation below), smoothed as a magnitude-weighted complex field.
* MCPC-3D-S (Eckstein et al., MRM 2018): the coil-summed Hermitian product of echoes 1 and 2 gives an offset-free
  phase difference Δφ, which is spatially unwrapped; φ0_c = φ_{c,1} − TE1·Δφ/(TE2 − TE1), smoothed.
* Virtual reference coil (Parker et al., MRM 2014): coils are phase-matched to the strongest coil by one constant
  phase each and summed into a virtual coil; each coil's smoothed phase relative to that virtual coil is removed.
* Adaptive combination (Walsh et al., MRM 2000): the dominant eigenvector of the local coil covariance matrix
  (blocks of ``block_size_mm``), with the phase of a reference coil fixed, interpolated between block centres.
* Roemer / SENSE-style (Roemer et al., MRM 1990; Pruessmann et al., MRM 1999): sensitivities from a separate
  reference scan (``reference_signal``), whose object phase is removed with a virtual reference coil.

Memory: the input is never copied when it is already complex64 and C-contiguous; the methods hold the weights
(``(x, y, z, coil)`` complex64, the size of one echo of the input) plus a few 3D work arrays, and the final
weighted sum runs voxel by voxel in a parallel numba kernel.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numba
import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from .dipole import FFT_WORKERS
from .errors import QSMInputError
from .geometry import check_voxel_size
from .gre import check_echo_times
from .params import MethodSpec, Param, register_method

#: Magnitude choices shared by all phase-combination methods.
MAGNITUDE_CHOICES: Tuple[str, ...] = ("rss", "sensitivity_weighted")
#: Relative tolerance on TE2 = 2·TE1 for ASPIRE's direct per-coil estimate.
ASPIRE_TE_TOLERANCE = 0.01


# ----------------------------------------------------------------------------------------------------------------
# input checks and shared helpers
# ----------------------------------------------------------------------------------------------------------------
def _check_signal(
    signal: np.ndarray, te_s: Optional[Sequence[float]], min_echoes: int, method: str, need_te: bool = True
):
    """Return (complex64 C-contiguous 5D signal, echo times) after checking shapes, dtype and finiteness."""
    if signal is None:
        raise QSMInputError(f"{method}: the multi-coil complex signal is missing")
    s = np.asarray(signal)
    if not np.iscomplexobj(s):
        raise QSMInputError(f"{method}: signal must be complex (x, y, z, echo, coil), got dtype {s.dtype}")
    if s.ndim == 4:
        raise QSMInputError(
            f"{method}: signal has shape {s.shape}; coil combination needs (x, y, z, echo, coil) — for one echo "
            "add an echo axis of length 1"
        )
    if s.ndim != 5:
        raise QSMInputError(f"{method}: signal must have shape (x, y, z, echo, coil), got shape {s.shape}")
    n_echo = s.shape[3]
    if n_echo < min_echoes:
        raise QSMInputError(
            f"{method} needs at least {min_echoes} echoes to estimate the coil phase offsets, got {n_echo}"
        )
    te = check_echo_times(te_s, n_echo) if need_te else None
    s = np.ascontiguousarray(s, dtype=np.complex64)
    if not _all_finite(s.reshape(-1)):
        raise QSMInputError(f"{method}: signal contains NaN/Inf values; mask or replace them first")
    return s, te


@numba.njit(parallel=True, cache=True)
def _all_finite(a: np.ndarray) -> bool:
    bad = 0
    for i in numba.prange(a.size):
        v = a[i]
        if not (np.isfinite(v.real) and np.isfinite(v.imag)):
            bad += 1
    return bad == 0


def _check_magnitude_choice(magnitude: str) -> str:
    if magnitude not in MAGNITUDE_CHOICES:
        raise QSMInputError(f"magnitude must be one of {list(MAGNITUDE_CHOICES)}, got {magnitude!r}")
    return magnitude


def _sigma_voxels(sigma_mm: float, voxel_size_mm: Sequence[float]) -> np.ndarray:
    v = check_voxel_size(voxel_size_mm)
    if not np.isfinite(sigma_mm) or sigma_mm < 0:
        raise QSMInputError(f"sigma_mm must be a non-negative number of mm, got {sigma_mm!r}")
    return sigma_mm / v


def _smooth_complex(vol: np.ndarray, sigma_vox: np.ndarray) -> np.ndarray:
    """Gaussian smoothing of a complex 3D field (real and imaginary parts alike); identity for zero width."""
    if np.all(sigma_vox <= 0):
        return vol
    return ndi.gaussian_filter(vol, sigma=tuple(float(s) for s in sigma_vox), mode="nearest", truncate=2.5)


def _unit(z: np.ndarray) -> np.ndarray:
    """``z/|z|`` (complex64), 1 where ``z`` is 0."""
    a = np.abs(z)
    out = np.ones(z.shape, dtype=np.complex64)
    np.divide(z, a, out=out, where=a > 0)
    return out


def _echo_coils(signal: np.ndarray, echo: int) -> np.ndarray:
    """One echo for all coils as a contiguous ``(coil, x, y, z)`` complex64 array (one pass over the input)."""
    return np.ascontiguousarray(np.moveaxis(signal[:, :, :, echo, :], -1, 0))


def laplacian_unwrap(phase_rad: np.ndarray) -> np.ndarray:
    """Unwrap a 3D phase with the Laplacian method and return the congruent result (wrapped + 2πk).

    ∇²φ = cos φ·∇²sin φ − sin φ·∇²cos φ is wrap-free; inverting the discrete Laplacian (DCT, i.e. mirror
    boundaries) gives a smooth estimate, and rounding its difference to the wrapped input to multiples of 2π gives
    an unwrapped phase that agrees with the input modulo 2π (Schofield & Zhu, Opt Lett 2003). Adequate for the
    smooth difference phases used here; the unwrap stage offers better general-purpose unwrappers.
    """
    ph = np.asarray(phase_rad, dtype=np.float32)
    if ph.ndim != 3:
        raise QSMInputError(f"laplacian_unwrap needs a 3D phase, got shape {ph.shape}")
    lap = np.zeros(ph.shape, dtype=np.float64)
    for ax, n in enumerate(ph.shape):
        sh = [1, 1, 1]
        sh[ax] = n
        lap = lap + (2.0 * np.cos(np.pi * np.arange(n) / n) - 2.0).reshape(sh)

    def dct_lap(a: np.ndarray) -> np.ndarray:
        return sfft.idctn(sfft.dctn(a, type=2, workers=FFT_WORKERS) * lap, type=2, workers=FFT_WORKERS)

    s, c = np.sin(ph), np.cos(ph)
    rhs = sfft.dctn((c * dct_lap(s) - s * dct_lap(c)).astype(np.float32), type=2, workers=FFT_WORKERS)
    lap.flat[0] = 1.0
    rhs /= lap
    rhs.flat[0] = 0.0
    est = sfft.idctn(rhs, type=2, workers=FFT_WORKERS).astype(np.float32)
    return (ph + 2.0 * np.pi * np.round((est - ph) / (2.0 * np.pi))).astype(np.float32)


@numba.njit(parallel=True, cache=True)
def _weighted_sum_kernel(sig: np.ndarray, w: np.ndarray, use_rss: bool, moduli: bool, out: np.ndarray) -> None:
    """out[v, n] = M·P/|P| with P = Σ_c w[v, c]·sig[v, n, c] (|sig| if ``moduli``); M = RSS or |P|/||w[v]||."""
    nvox, ne, nc = sig.shape
    for v in numba.prange(nvox):
        wn = 0.0
        for c in range(nc):
            wn += w[v, c].real ** 2 + w[v, c].imag ** 2
        wn = np.sqrt(wn)
        for n in range(ne):
            pr = 0.0
            pi = 0.0
            ss = 0.0
            for c in range(nc):
                s = sig[v, n, c]
                if moduli:
                    s = complex(abs(s), 0.0)
                a = w[v, c]
                pr += a.real * s.real - a.imag * s.imag
                pi += a.real * s.imag + a.imag * s.real
                ss += s.real * s.real + s.imag * s.imag
            ap = np.sqrt(pr * pr + pi * pi)
            if use_rss:
                m = np.sqrt(ss)
            else:
                m = ap / wn if wn > 0 else 0.0
            if ap > 0:
                out[v, n] = complex(m * pr / ap, m * pi / ap)
            else:
                out[v, n] = complex(m, 0.0)


def _apply_weights(signal: np.ndarray, weights: np.ndarray, magnitude: str, moduli: bool = False) -> np.ndarray:
    """Combine ``signal`` (x,y,z,echo,coil) with per-voxel coil ``weights`` (x,y,z,coil) into (x,y,z,echo)."""
    nx, ny, nz, ne, nc = signal.shape
    out = np.empty((nx * ny * nz, ne), dtype=np.complex64)
    _weighted_sum_kernel(signal.reshape(-1, ne, nc), np.ascontiguousarray(weights, dtype=np.complex64).reshape(
        -1, nc), magnitude == "rss", moduli, out)
    return out.reshape(nx, ny, nz, ne)


@numba.njit(parallel=True, cache=True)
def _rss_kernel(sig: np.ndarray, out: np.ndarray) -> None:
    nvox, ne, nc = sig.shape
    for v in numba.prange(nvox):
        for n in range(ne):
            ss = 0.0
            for c in range(nc):
                ss += sig[v, n, c].real ** 2 + sig[v, n, c].imag ** 2
            out[v, n] = np.sqrt(ss)


def combine_magnitude(
    signal: np.ndarray, voxel_size_mm: Sequence[float] = (1.0, 1.0, 1.0), method: str = "rss",
    sigma_mm: float = 4.0,
) -> np.ndarray:
    """Combined magnitude (x,y,z,echo) float32: root-sum-of-squares or sensitivity-weighted.

    ``sensitivity_weighted`` is the matched filter ``Σ_c ŝ_c·|S_c| / sqrt(Σ_c ŝ_c²)`` with sensitivities ``ŝ_c``
    the Gaussian-smoothed (``sigma_mm``) first-echo coil magnitudes, the SNR-optimal combination for uncorrelated
    channels of equal noise (Roemer et al., MRM 1990); ``rss`` is ``sqrt(Σ_c |S_c|²)`` (same reference).
    """
    method = _check_magnitude_choice(method)
    s, _ = _check_signal(signal, None, 1, "combine_magnitude", need_te=False)
    nx, ny, nz, ne, nc = s.shape
    if method == "rss":
        out = np.empty((nx * ny * nz, ne), dtype=np.float32)
        _rss_kernel(s.reshape(-1, ne, nc), out)
        return out.reshape(nx, ny, nz, ne)
    sig = _sigma_voxels(sigma_mm, voxel_size_mm)
    e1 = _echo_coils(s, 0)
    w = np.empty((nx, ny, nz, nc), dtype=np.complex64)
    for c in range(nc):
        w[..., c] = ndi.gaussian_filter(np.abs(e1[c]), tuple(float(x) for x in sig), mode="nearest")
    del e1
    return np.abs(_apply_weights(s, w, "sensitivity_weighted", moduli=True))


# ----------------------------------------------------------------------------------------------------------------
# ASPIRE and MCPC-3D-S
# ----------------------------------------------------------------------------------------------------------------
def _offset_free_difference(e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Spatially unwrapped angle of the coil-summed Hermitian product Σ_c S_{c,2}·conj(S_{c,1}) (x,y,z)."""
    h = np.zeros(e1.shape[1:], dtype=np.complex64)
    for c in range(e1.shape[0]):
        h += e2[c] * np.conj(e1[c])
    return laplacian_unwrap(np.angle(h))


def _offsets_from_two_echoes(
    signal: np.ndarray, te: np.ndarray, sigma_vox: np.ndarray, per_coil_product: bool
) -> np.ndarray:
    """Weights ``w_c·exp(−i·φ0_c)`` (x,y,z,coil) from echoes 1 and 2, φ0 smoothed as a complex field."""
    nx, ny, nz, _, nc = signal.shape
    e1 = _echo_coils(signal, 0)
    e2 = _echo_coils(signal, 1)
    if not per_coil_product:
        ratio = te[0] / (te[1] - te[0])
        rot = np.exp(-1j * ratio * _offset_free_difference(e1, e2)).astype(np.complex64)
    weights = np.empty((nx, ny, nz, nc), dtype=np.complex64)
    for c in range(nc):
        a1 = np.abs(e1[c])
        if per_coil_product:
            # exp(iφ0) = S1²·conj(S2)/|.|, weighted by |S1|: TE2 = 2·TE1 makes 2φ1 − φ2 = φ0 exactly
            z = e1[c] * e1[c] * np.conj(e2[c])
            den = a1 * np.abs(e2[c])
            np.divide(z, den, out=z, where=den > 0)
        else:
            z = e1[c] * rot
        zs = _smooth_complex(z, sigma_vox)
        # |smoothed| is the smoothed coil magnitude (a sensitivity estimate); its conjugate phase removes φ0_c
        weights[..., c] = np.conj(zs)
    return weights


def combine_aspire(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float], sigma_mm: float = 4.0,
    magnitude: str = "rss",
) -> np.ndarray:
    """ASPIRE coil combination (Eckstein et al., "Computationally efficient combination of multi-channel phase
    data from multi-echo acquisitions (ASPIRE)", MRM 2018).

    With TE2 = 2·TE1 the per-coil offset is φ0_c = 2φ_{c,1} − φ_{c,2}, computed wrap-free as the angle of
    ``S1²·conj(S2)``. For other echo times the offset is extrapolated linearly from (TE1, TE2),
    φ0_c = φ_{c,1} − TE1·Δφ/(TE2 − TE1), with Δφ the spatially unwrapped phase of the coil-summed Hermitian product.
    The offsets are smoothed (Gaussian of ``sigma_mm``, as the magnitude-weighted complex field) and removed from
    every echo before the magnitude-weighted sum.
    """
    magnitude = _check_magnitude_choice(magnitude)
    s, te = _check_signal(signal, te_s, 2, "ASPIRE")
    sig = _sigma_voxels(sigma_mm, voxel_size_mm)
    direct = abs(te[1] - 2.0 * te[0]) <= ASPIRE_TE_TOLERANCE * te[0]
    w = _offsets_from_two_echoes(s, te, sig, per_coil_product=direct)
    return _apply_weights(s, w, magnitude)


def combine_mcpc3ds(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float], sigma_mm: float = 4.0,
    magnitude: str = "rss",
) -> np.ndarray:
    """MCPC-3D-S coil combination (Eckstein et al., MRM 2018; after Robinson et al., MRM 2011 "MCPC-3D").

    The coil-summed Hermitian product of echoes 1 and 2 has no coil offsets; its phase Δφ = 2π·Δf·(TE2 − TE1) is
    unwrapped in 3D and each coil's offset is φ0_c = φ_{c,1} − TE1·Δφ/(TE2 − TE1), valid for any echo times.
    The offsets are smoothed (``sigma_mm``, the "S") as magnitude-weighted complex fields and removed.
    """
    magnitude = _check_magnitude_choice(magnitude)
    s, te = _check_signal(signal, te_s, 2, "MCPC-3D-S")
    w = _offsets_from_two_echoes(s, te, _sigma_voxels(sigma_mm, voxel_size_mm), per_coil_product=False)
    return _apply_weights(s, w, magnitude)


# ----------------------------------------------------------------------------------------------------------------
# Virtual reference coil
# ----------------------------------------------------------------------------------------------------------------
def _virtual_reference(coils: np.ndarray) -> np.ndarray:
    """Virtual coil Σ_c S_c·exp(−iθ_c) with θ_c the mean phase of coil c relative to the strongest coil."""
    power = np.einsum("cxyz,cxyz->c", coils.real, coils.real) + np.einsum("cxyz,cxyz->c", coils.imag, coils.imag)
    ref = int(np.argmax(power))
    v = np.zeros(coils.shape[1:], dtype=np.complex64)
    for c in range(coils.shape[0]):
        theta = np.angle(np.vdot(coils[ref], coils[c]))  # Σ conj(S_ref)·S_c
        v += coils[c] * np.complex64(np.exp(-1j * theta))
    return v


def _weights_relative_to(coils: np.ndarray, reference: np.ndarray, sigma_vox: np.ndarray) -> np.ndarray:
    """Weights conj(smooth(S_c·exp(−i∠V))) (x,y,z,coil): removes each coil's phase relative to the reference V."""
    nc = coils.shape[0]
    u = _unit(np.conj(reference))
    w = np.empty(coils.shape[1:] + (nc,), dtype=np.complex64)
    for c in range(nc):
        w[..., c] = np.conj(_smooth_complex(coils[c] * u, sigma_vox))
    return w


def combine_vrc(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float], sigma_mm: float = 4.0,
    magnitude: str = "rss",
) -> np.ndarray:
    """Virtual-reference-coil combination (Parker et al., "Phase reconstruction from multiple coil data using a
    virtual reference coil", MRM 2014).

    The strongest coil (first-echo energy) is the reference; every coil is phase-matched to it by one constant
    phase and summed into a virtual coil with signal everywhere. Each coil's phase relative to the virtual coil
    (first echo, Gaussian-smoothed with ``sigma_mm``) is then removed and the coils summed; the result keeps the
    virtual coil's smooth offset, common to all echoes. Works with a single echo.
    """
    magnitude = _check_magnitude_choice(magnitude)
    s, _ = _check_signal(signal, te_s, 1, "VRC")
    e1 = _echo_coils(s, 0)
    w = _weights_relative_to(e1, _virtual_reference(e1), _sigma_voxels(sigma_mm, voxel_size_mm))
    return _apply_weights(s, w, magnitude)


# ----------------------------------------------------------------------------------------------------------------
# Adaptive combination (Walsh)
# ----------------------------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _block_eigenvectors(sig: np.ndarray, b: np.ndarray, n_iter: int) -> np.ndarray:
    """Dominant eigenvector (unit norm) of Σ s·sᴴ over each block of b[0]×b[1]×b[2] voxels and all echoes."""
    nx, ny, nz, ne, nc = sig.shape
    cx = (nx + b[0] - 1) // b[0]
    cy = (ny + b[1] - 1) // b[1]
    cz = (nz + b[2] - 1) // b[2]
    out = np.zeros((cx, cy, cz, nc), dtype=np.complex64)
    for idx in numba.prange(cx * cy * cz):
        i = idx // (cy * cz)
        j = (idx // cz) % cy
        k = idx % cz
        r = np.zeros((nc, nc), dtype=np.complex128)
        for x in range(i * b[0], min((i + 1) * b[0], nx)):
            for y in range(j * b[1], min((j + 1) * b[1], ny)):
                for z in range(k * b[2], min((k + 1) * b[2], nz)):
                    for n in range(ne):
                        for p in range(nc):
                            sp = sig[x, y, z, n, p]
                            for q in range(p + 1):
                                r[p, q] += sp * np.conj(sig[x, y, z, n, q])
        v = np.empty(nc, dtype=np.complex128)
        for p in range(nc):
            for q in range(p):
                r[q, p] = np.conj(r[p, q])
            v[p] = np.sqrt(max(r[p, p].real, 0.0))
        nrm = np.sqrt(np.sum(np.abs(v) ** 2))
        if nrm == 0:
            continue
        v /= nrm
        for _ in range(n_iter):
            v = r @ v
            nrm = np.sqrt(np.sum(np.abs(v) ** 2))
            if nrm == 0:
                break
            v /= nrm
        for p in range(nc):
            out[i, j, k, p] = v[p]
    return out


@numba.njit(parallel=True, cache=True)
def _interpolate_weights(coarse: np.ndarray, b: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of conj(coarse block vectors) from block centres to every voxel (x,y,z,coil)."""
    cx, cy, cz, nc = coarse.shape
    nx, ny, nz = shape[0], shape[1], shape[2]
    out = np.empty((nx, ny, nz, nc), dtype=np.complex64)
    for x in numba.prange(nx):
        fx = min(max((x + 0.5) / b[0] - 0.5, 0.0), cx - 1.0)
        x0 = min(int(fx), cx - 1)
        x1 = min(x0 + 1, cx - 1)
        tx = fx - x0
        for y in range(ny):
            fy = min(max((y + 0.5) / b[1] - 0.5, 0.0), cy - 1.0)
            y0 = min(int(fy), cy - 1)
            y1 = min(y0 + 1, cy - 1)
            ty = fy - y0
            for z in range(nz):
                fz = min(max((z + 0.5) / b[2] - 0.5, 0.0), cz - 1.0)
                z0 = min(int(fz), cz - 1)
                z1 = min(z0 + 1, cz - 1)
                tz = fz - z0
                for c in range(nc):
                    v = ((1 - tx) * ((1 - ty) * ((1 - tz) * coarse[x0, y0, z0, c] + tz * coarse[x0, y0, z1, c])
                                     + ty * ((1 - tz) * coarse[x0, y1, z0, c] + tz * coarse[x0, y1, z1, c]))
                         + tx * ((1 - ty) * ((1 - tz) * coarse[x1, y0, z0, c] + tz * coarse[x1, y0, z1, c])
                                 + ty * ((1 - tz) * coarse[x1, y1, z0, c] + tz * coarse[x1, y1, z1, c])))
                    out[x, y, z, c] = np.conj(v)
    return out


def combine_adaptive(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float], block_size_mm: float = 6.0,
    magnitude: str = "sensitivity_weighted",
) -> np.ndarray:
    """Adaptive combination (Walsh, Gmitro & Marcellin, "Adaptive reconstruction of phased array MR imagery",
    MRM 2000).

    The coil covariance ``Σ s·sᴴ`` is accumulated over blocks of about ``block_size_mm`` (all echoes: the common
    off-resonance phase cancels in ``s·sᴴ``); its dominant eigenvector (power iteration) estimates the relative
    coil sensitivities. The eigenvectors' arbitrary phase is fixed by making the reference coil's (the strongest
    coil) component real, and the vectors are interpolated trilinearly between block centres, so the combined
    phase carries that coil's smooth sensitivity phase — and can show singularities where that coil is weak.
    """
    magnitude = _check_magnitude_choice(magnitude)
    s, _ = _check_signal(signal, te_s, 1, "adaptive combination")
    v = check_voxel_size(voxel_size_mm)
    if not np.isfinite(block_size_mm) or block_size_mm <= 0:
        raise QSMInputError(f"block_size_mm must be positive, got {block_size_mm!r}")
    b = np.maximum(1, np.round(block_size_mm / v)).astype(np.int64)
    coarse = _block_eigenvectors(s, b, 30)
    power = np.sum(np.abs(coarse) ** 2, axis=(0, 1, 2))
    ref = int(np.argmax(power))
    coarse *= _unit(np.conj(coarse[..., ref]))[..., None]
    w = _interpolate_weights(coarse, b, np.asarray(s.shape[:3], dtype=np.int64))
    return _apply_weights(s, w, magnitude)


# ----------------------------------------------------------------------------------------------------------------
# Roemer / SENSE-style with a reference scan
# ----------------------------------------------------------------------------------------------------------------
def _resample_to(ref: np.ndarray, shape: Tuple[int, int, int]) -> np.ndarray:
    """Resample a (coil, x', y', z') complex array to (coil, *shape) over the same field of view (trilinear)."""
    if ref.shape[1:] == tuple(shape):
        return ref
    zoom = [n / m for n, m in zip(shape, ref.shape[1:])]
    out = np.empty((ref.shape[0],) + tuple(shape), dtype=np.complex64)
    for c in range(ref.shape[0]):
        re = ndi.zoom(ref[c].real, zoom, order=1, mode="nearest", grid_mode=True)
        im = ndi.zoom(ref[c].imag, zoom, order=1, mode="nearest", grid_mode=True)
        out[c] = re + 1j * im
    return out


def combine_roemer(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float],
    reference_signal: Optional[np.ndarray] = None, sigma_mm: float = 4.0, magnitude: str = "sensitivity_weighted",
) -> np.ndarray:
    """Roemer / SENSE-style combination with sensitivities from a separate reference scan (Roemer et al., "The
    NMR phased array", MRM 1990; sensitivity maps as in Pruessmann et al., MRM 1999).

    ``reference_signal`` is a complex ``(x', y', z', coil)`` scan with the same coils and field of view (for
    example a fast low-resolution pre-scan); it is resampled to the image grid. Its object phase is removed with a
    virtual reference coil (Parker et al., MRM 2014) so the sensitivities keep only the coils' phases; they are
    normalised by their root-sum-of-squares, smoothed with ``sigma_mm``, and the image is combined as
    ``Σ_c conj(ĉ_c)·S_c`` (identity noise covariance).
    """
    magnitude = _check_magnitude_choice(magnitude)
    s, _ = _check_signal(signal, te_s, 1, "Roemer combination")
    if reference_signal is None:
        raise QSMInputError("Roemer combination needs reference_signal: a complex (x, y, z, coil) reference scan")
    r = np.asarray(reference_signal)
    if not np.iscomplexobj(r) or r.ndim != 4:
        raise QSMInputError(
            f"reference_signal must be a complex (x, y, z, coil) array, got dtype {r.dtype} shape {r.shape}"
        )
    if r.shape[3] != s.shape[4]:
        raise QSMInputError(f"reference_signal has {r.shape[3]} coils but signal has {s.shape[4]}")
    if not np.all(np.isfinite(r)):
        raise QSMInputError("reference_signal contains NaN/Inf values")
    ref = _resample_to(np.ascontiguousarray(np.moveaxis(r, -1, 0), dtype=np.complex64), s.shape[:3])
    u = _unit(np.conj(_virtual_reference(ref)))
    rss = np.sqrt(np.sum(np.abs(ref) ** 2, axis=0))
    inv = np.zeros_like(rss)
    np.divide(1.0, rss, out=inv, where=rss > 0)
    sig = _sigma_voxels(sigma_mm, voxel_size_mm)
    w = np.empty(s.shape[:3] + (s.shape[4],), dtype=np.complex64)
    for c in range(ref.shape[0]):
        w[..., c] = np.conj(_smooth_complex(ref[c] * u * inv, sig))
    return _apply_weights(s, w, magnitude)


# ----------------------------------------------------------------------------------------------------------------
# quality check
# ----------------------------------------------------------------------------------------------------------------
def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def count_residues(phase_rad: np.ndarray, mask: Optional[np.ndarray] = None) -> int:
    """Number of phase singularities (residues) of a 3D phase: elementary 2×2 loops, in the three planes, whose
    sum of wrapped differences is ±2π (Goldstein et al., Radio Science 1988), counting loops whose four corners
    lie in ``mask``. A phase free of open-ended discontinuities has none."""
    p = np.asarray(phase_rad, dtype=np.float64)
    if p.ndim != 3:
        raise QSMInputError(f"count_residues needs a 3D phase, got shape {p.shape}")
    m = np.ones(p.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != p.shape:
        raise QSMInputError(f"mask shape {m.shape} does not match phase shape {p.shape}")
    total = 0
    for a, b in ((0, 1), (0, 2), (1, 2)):
        da = _wrap(np.diff(p, axis=a))
        db = _wrap(np.diff(p, axis=b))
        # loop: +da(at b) + db(at a+1) − da(at b+1) − db(at a)
        sl_a = [slice(None)] * 3
        sl_b = [slice(None)] * 3
        sl_a[b] = slice(0, -1)
        da0 = da[tuple(sl_a)]
        sl_a[b] = slice(1, None)
        da1 = da[tuple(sl_a)]
        sl_b[a] = slice(0, -1)
        db0 = db[tuple(sl_b)]
        sl_b[a] = slice(1, None)
        db1 = db[tuple(sl_b)]
        loop = da0 + db1 - da1 - db0
        mm = m.copy()
        for ax in (a, b):
            sl0 = [slice(None)] * 3
            sl1 = [slice(None)] * 3
            sl0[ax] = slice(0, -1)
            sl1[ax] = slice(1, None)
            mm = mm[tuple(sl0)] & mm[tuple(sl1)]
        total += int(np.count_nonzero((np.abs(loop) > np.pi) & mm))
    return total


# ----------------------------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------------------------
def _sigma_param(default: float = 4.0) -> Param:
    return Param("sigma_mm", float, default, "Gaussian width for smoothing the coil phase offsets", unit="mm",
                 minimum=0.0, maximum=30.0)


def _magnitude_param(default: str) -> Param:
    return Param("magnitude", str, default, "combined magnitude: root-sum-of-squares or sensitivity-weighted "
                 "(matched filter)", choices=MAGNITUDE_CHOICES)


register_method("coil_combination", MethodSpec(
    key="aspire", label="ASPIRE", reference="Eckstein et al., MRM 2018",
    params=(_sigma_param(), _magnitude_param("rss")), func=combine_aspire,
    help="Per-coil phase offsets from echoes 1 and 2 (TE2 = 2·TE1, else linear extrapolation); needs ≥ 2 echoes."))
register_method("coil_combination", MethodSpec(
    key="mcpc3ds", label="MCPC-3D-S", reference="Eckstein et al., MRM 2018",
    params=(_sigma_param(), _magnitude_param("rss")), func=combine_mcpc3ds,
    help="Offsets from the unwrapped coil-summed echo-difference phase; any echo times, needs ≥ 2 echoes."))
register_method("coil_combination", MethodSpec(
    key="vrc", label="Virtual reference coil", reference="Parker et al., MRM 2014",
    params=(_sigma_param(), _magnitude_param("rss")), func=combine_vrc,
    help="Phases relative to a virtual coil built from the strongest coil's phase-matched sum; single echo OK."))
register_method("coil_combination", MethodSpec(
    key="adaptive", label="Adaptive (Walsh)", reference="Walsh et al., MRM 2000",
    params=(Param("block_size_mm", float, 6.0, "block over which the coil covariance is estimated", unit="mm",
                  minimum=1.0, maximum=40.0), _magnitude_param("sensitivity_weighted")),
    func=combine_adaptive, help="Dominant eigenvector of the local coil covariance, reference-coil phase."))
register_method("coil_combination", MethodSpec(
    key="roemer", label="Roemer (reference scan)", reference="Roemer et al., MRM 1990",
    params=(_sigma_param(), _magnitude_param("sensitivity_weighted")), func=combine_roemer,
    help="Sensitivities from a separate reference scan (input reference_signal, complex (x,y,z,coil))."))


__all__ = ["combine_aspire", "combine_mcpc3ds", "combine_vrc", "combine_adaptive", "combine_roemer",
           "combine_magnitude", "laplacian_unwrap", "count_residues", "MAGNITUDE_CHOICES"]
