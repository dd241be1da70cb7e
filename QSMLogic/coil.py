"""Coil combination: one complex image per echo from multi-channel GRE data (stage ``coil_combination``).

Input layout (docs/conventions.md): ``signal`` is complex ``(x, y, z, echo, coil)``; the output is complex64
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

Memory: the input is never copied when it is already complex64 and C-contiguous, and no full-size array per coil
is made. Coil offsets are smooth, so the weights live on a coarse grid of blocks of ``b`` voxels per axis (``b`` ≈
half the smoothing width in voxels, 1–4): block means of the per-coil offset estimate are accumulated in one pass
over the signal (numba), smoothed there per coil, and interpolated trilinearly at every voxel inside the final
weighted sum, which also runs in one parallel pass. Besides the input and the output ``(x, y, z, echo)`` the
methods hold the coarse weights (``(x, y, z, coil)/b³``) and a few 3D work arrays.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numba
import numpy as np
from scipy import ndimage as ndi

from .errors import QSMInputError
from .geometry import check_voxel_size
from .gre import check_echo_times
from .params import MethodSpec, Param, register_method
from .unwrap import laplacian_unwrap_3d, unwrap_romeo

#: Magnitude choices shared by all phase-combination methods.
MAGNITUDE_CHOICES: Tuple[str, ...] = ("rss", "sensitivity_weighted")
#: Relative tolerance on TE2 = 2·TE1 for ASPIRE's direct per-coil estimate.
ASPIRE_TE_TOLERANCE = 0.01
#: Largest coarse-grid block (voxels per axis) for the smoothed coil weights.
MAX_BLOCK = 4


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


def _unit(z: np.ndarray) -> np.ndarray:
    """``z/|z|`` (complex64), 1 where ``z`` is 0."""
    a = np.abs(z)
    out = np.ones(z.shape, dtype=np.complex64)
    np.divide(z, a, out=out, where=a > 0)
    return out


def _unwrap_congruent(phase_rad: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Laplacian-unwrapped 3D phase made congruent with the input (wrapped + 2πk): the smooth Laplacian estimate
    (:func:`QSMLogic.unwrap.laplacian_unwrap_3d`, Schofield & Zhu, Opt Lett 2003) picks each voxel's 2π multiple."""
    ph = np.asarray(phase_rad, dtype=np.float32)
    est = laplacian_unwrap_3d(ph, voxel_size_mm)
    est -= ph
    est *= np.float32(1.0 / (2.0 * np.pi))
    np.round(est, out=est)
    est *= np.float32(2.0 * np.pi)
    est += ph
    return est


def _unwrap_difference(h: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Unwrapped phase of the echo-difference signal ``h`` (x,y,z complex): ROMEO region growing (Dymerska et al.,
    MRM 2021) where ``|h|`` is above 5 % of its 99th percentile, the congruent Laplacian unwrap elsewhere. Each
    connected ROMEO region takes the 2π multiple that agrees best with the Laplacian estimate, so separate regions
    share one global solution; ROMEO avoids the Laplacian's local 2π misses in steep fields (sinuses)."""
    ph = np.angle(h)
    lap = _unwrap_congruent(ph, voxel_size_mm)
    a = np.abs(h)
    mask = a > np.float32(0.05) * np.percentile(a[:: max(1, a.shape[0] // 32)], 99)
    if not mask.any():
        return lap
    romeo = unwrap_romeo(ph, magnitude=np.sqrt(a), mask=mask).unwrapped[..., 0]
    del a
    labels, n = ndi.label(mask)
    lab = labels[mask]
    diff = (lap[mask] - romeo[mask]) / np.float32(2.0 * np.pi)
    k = np.round(np.bincount(lab, weights=diff, minlength=n + 1) / np.maximum(np.bincount(lab, minlength=n + 1), 1))
    lap[mask] = romeo[mask] + np.float32(2.0 * np.pi) * k[lab].astype(np.float32)
    return lap


# ----------------------------------------------------------------------------------------------------------------
# coarse weight grid: block means of a per-coil estimate, smoothing, trilinear interpolation in the final sum
# ----------------------------------------------------------------------------------------------------------------
#: What ``_block_means`` averages per coil: |S1|; S1²·conj(S2)/(|S1|·|S2|); S1·rot (rot a given 3D unit field).
_MODULUS, _PRODUCT, _ROTATED = 0, 1, 2


def _block_size(sigma_vox: np.ndarray) -> np.ndarray:
    """Voxels per coarse block along each axis: half the smoothing width, 1 to :data:`MAX_BLOCK`. A block mean
    adds a box of variance (b² − 1)/12 voxels² to the Gaussian's σ² ≥ 4b², under 2 % of it."""
    return np.clip(np.floor(np.asarray(sigma_vox, dtype=np.float64) / 2.0), 1, MAX_BLOCK).astype(np.int64)


def _coarse_shape(shape: Sequence[int], b: np.ndarray) -> Tuple[int, int, int]:
    return tuple(int(-(-n // int(k))) for n, k in zip(shape, b))


@numba.njit(parallel=True, cache=True)
def _block_means(sig: np.ndarray, mode: int, rot: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out[i, j, k, c] = mean over block (i, j, k) of the per-coil quantity selected by ``mode`` (first echoes)."""
    nx, ny, nz, _, nc = sig.shape
    cx, cy, cz = out.shape[0], out.shape[1], out.shape[2]
    for i in numba.prange(cx):
        acc = np.zeros((cy, cz, nc), dtype=np.complex128)
        cnt = np.zeros((cy, cz), dtype=np.float64)
        for x in range(i * b[0], min((i + 1) * b[0], nx)):
            for y in range(ny):
                j = y // b[1]
                for z in range(nz):
                    k = z // b[2]
                    cnt[j, k] += 1.0
                    for c in range(nc):
                        s1 = complex(sig[x, y, z, 0, c])
                        if mode == 0:
                            v = complex(abs(s1), 0.0)
                        elif mode == 1:
                            s2 = complex(sig[x, y, z, 1, c])
                            den = abs(s1) * abs(s2)
                            v = s1 * s1 * s2.conjugate() / den if den > 0 else complex(0.0, 0.0)
                        else:
                            v = s1 * complex(rot[x, y, z])
                        acc[j, k, c] += v
        for j in range(cy):
            for k in range(cz):
                for c in range(nc):
                    out[i, j, k, c] = acc[j, k, c] / cnt[j, k] if cnt[j, k] > 0 else 0.0


def _smoothed_coarse(coarse: np.ndarray, sigma_vox: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Gaussian-smooth each coil of a coarse (cx, cy, cz, coil) field with σ/b blocks; returns the conjugate
    (the weights that remove the field's phase), C-contiguous complex64."""
    sig_c = np.asarray(sigma_vox, dtype=np.float64) / b
    out = np.empty_like(coarse)
    for c in range(coarse.shape[3]):
        vol = np.ascontiguousarray(coarse[..., c])
        if np.any(sig_c > 0):
            vol = ndi.gaussian_filter(vol, sigma=tuple(float(s) for s in sig_c), mode="nearest", truncate=2.5)
        out[..., c] = np.conj(vol)
    return out


def _coil_weights(signal: np.ndarray, mode: int, sigma_vox: np.ndarray,
                  rot: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Coarse weights (cx, cy, cz, coil) and block size: conj(smooth(block mean of the ``mode`` quantity))."""
    b = _block_size(sigma_vox)
    coarse = np.empty(_coarse_shape(signal.shape[:3], b) + (signal.shape[4],), dtype=np.complex64)
    r = np.ones((1, 1, 1), np.complex64) if rot is None else np.ascontiguousarray(rot, dtype=np.complex64)
    _block_means(signal, mode, r, b, coarse)
    return _smoothed_coarse(coarse, sigma_vox, b), b


@numba.njit(inline="always")
def _axis_interp(p: int, b: int, n: int):
    f = min(max((p + 0.5) / b - 0.5, 0.0), n - 1.0)
    p0 = min(int(f), n - 1)
    return p0, min(p0 + 1, n - 1), f - p0


@numba.njit(parallel=True, cache=True)
def _weighted_sum_kernel(sig: np.ndarray, w: np.ndarray, b: np.ndarray, use_rss: bool, moduli: bool,
                         out: np.ndarray) -> None:
    """out[x,y,z,n] = M·P/|P|, P = Σ_c w̃_c·S_{c,n} (|S| if ``moduli``), w̃ the coarse weights ``w`` interpolated
    trilinearly from block centres; M = RSS of the coils or |P|/||w̃||."""
    nx, ny, nz, ne, nc = sig.shape
    cx, cy, cz = w.shape[0], w.shape[1], w.shape[2]
    for x in numba.prange(nx):
        wv = np.empty(nc, dtype=np.complex128)
        x0, x1, tx = _axis_interp(x, b[0], cx)
        for y in range(ny):
            y0, y1, ty = _axis_interp(y, b[1], cy)
            for z in range(nz):
                z0, z1, tz = _axis_interp(z, b[2], cz)
                wn = 0.0
                for c in range(nc):
                    v = ((1 - tx) * ((1 - ty) * ((1 - tz) * w[x0, y0, z0, c] + tz * w[x0, y0, z1, c])
                                     + ty * ((1 - tz) * w[x0, y1, z0, c] + tz * w[x0, y1, z1, c]))
                         + tx * ((1 - ty) * ((1 - tz) * w[x1, y0, z0, c] + tz * w[x1, y0, z1, c])
                                 + ty * ((1 - tz) * w[x1, y1, z0, c] + tz * w[x1, y1, z1, c])))
                    wv[c] = v
                    wn += v.real * v.real + v.imag * v.imag
                wn = np.sqrt(wn)
                for n in range(ne):
                    pr = 0.0
                    pi = 0.0
                    ss = 0.0
                    for c in range(nc):
                        s = sig[x, y, z, n, c]
                        sr, si = s.real, s.imag
                        if moduli:
                            sr, si = np.sqrt(sr * sr + si * si), 0.0
                        a = wv[c]
                        pr += a.real * sr - a.imag * si
                        pi += a.real * si + a.imag * sr
                        ss += sr * sr + si * si
                    ap = np.sqrt(pr * pr + pi * pi)
                    if use_rss:
                        m = np.sqrt(ss)
                    else:
                        m = ap / wn if wn > 0 else 0.0
                    if ap > 0:
                        out[x, y, z, n] = complex(m * pr / ap, m * pi / ap)
                    else:
                        out[x, y, z, n] = complex(m, 0.0)


def _apply_weights(signal: np.ndarray, weights: np.ndarray, b: np.ndarray, magnitude: str,
                   moduli: bool = False) -> np.ndarray:
    """Combine ``signal`` (x,y,z,echo,coil) with coarse coil ``weights`` (blocks of ``b``) into (x,y,z,echo)."""
    out = np.empty(signal.shape[:4], dtype=np.complex64)
    _weighted_sum_kernel(signal, np.ascontiguousarray(weights, dtype=np.complex64), np.asarray(b, np.int64),
                         magnitude == "rss", moduli, out)
    return out


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
    w, b = _coil_weights(s, _MODULUS, _sigma_voxels(sigma_mm, voxel_size_mm))
    return np.abs(_apply_weights(s, w, b, "sensitivity_weighted", moduli=True))


# ----------------------------------------------------------------------------------------------------------------
# ASPIRE and MCPC-3D-S
# ----------------------------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _hermitian_sum(sig: np.ndarray) -> np.ndarray:
    """Σ_c S_{c,2}·conj(S_{c,1}) (x,y,z) complex64: the echo-difference signal, free of coil offsets."""
    nx, ny, nz, _, nc = sig.shape
    out = np.empty((nx, ny, nz), dtype=np.complex64)
    for x in numba.prange(nx):
        for y in range(ny):
            for z in range(nz):
                h = complex(0.0, 0.0)
                for c in range(nc):
                    h += complex(sig[x, y, z, 1, c]) * complex(sig[x, y, z, 0, c]).conjugate()
                out[x, y, z] = h
    return out


def _offset_rotation(signal: np.ndarray, te: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """exp(−i·TE1·Δφ/(TE2 − TE1)) (x,y,z) complex64, with Δφ the unwrapped phase of the coil-summed Hermitian
    product of echoes 1 and 2 (:func:`_unwrap_difference`): multiplied with S_{c,1} it leaves |S_{c,1}|·exp(iφ0_c)."""
    dphi = _unwrap_difference(_hermitian_sum(signal), voxel_size_mm)
    dphi *= np.float32(-te[0] / (te[1] - te[0]))
    rot = np.empty(dphi.shape, dtype=np.complex64)
    np.cos(dphi, out=rot.real)
    np.sin(dphi, out=rot.imag)
    return rot


def combine_aspire(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float], sigma_mm: float = 4.0,
    magnitude: str = "rss",
) -> np.ndarray:
    """ASPIRE coil combination (Eckstein et al., "Computationally efficient combination of multi-channel phase
    data from multi-echo acquisitions (ASPIRE)", MRM 2018).

    With TE2 = 2·TE1 the per-coil offset is φ0_c = 2φ_{c,1} − φ_{c,2}, computed wrap-free as the angle of
    ``S1²·conj(S2)`` (weighted by |S1|). For other echo times the offset is extrapolated linearly from (TE1, TE2),
    φ0_c = φ_{c,1} − TE1·Δφ/(TE2 − TE1), with Δφ the spatially unwrapped phase of the coil-summed Hermitian product.
    The offsets are smoothed (Gaussian of ``sigma_mm``, as the magnitude-weighted complex field) and removed from
    every echo before the magnitude-weighted sum.
    """
    magnitude = _check_magnitude_choice(magnitude)
    s, te = _check_signal(signal, te_s, 2, "ASPIRE")
    sig = _sigma_voxels(sigma_mm, voxel_size_mm)
    if abs(te[1] - 2.0 * te[0]) <= ASPIRE_TE_TOLERANCE * te[0]:
        w, b = _coil_weights(s, _PRODUCT, sig)
    else:
        w, b = _coil_weights(s, _ROTATED, sig, _offset_rotation(s, te, voxel_size_mm))
    return _apply_weights(s, w, b, magnitude)


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
    sig = _sigma_voxels(sigma_mm, voxel_size_mm)
    w, b = _coil_weights(s, _ROTATED, sig, _offset_rotation(s, te, voxel_size_mm))
    return _apply_weights(s, w, b, magnitude)


# ----------------------------------------------------------------------------------------------------------------
# Virtual reference coil
# ----------------------------------------------------------------------------------------------------------------
@numba.njit(parallel=True, cache=True)
def _first_echo_products(sig: np.ndarray, ref: int) -> np.ndarray:
    """(coil,) complex128: Σ conj(S_ref)·S_c over the first echo (ref < 0: the coil energies Σ|S_c|²)."""
    nx, ny, nz, _, nc = sig.shape
    part = np.zeros((nx, nc), dtype=np.complex128)
    for x in numba.prange(nx):
        for y in range(ny):
            for z in range(nz):
                for c in range(nc):
                    s = complex(sig[x, y, z, 0, c])
                    r = s if ref < 0 else complex(sig[x, y, z, 0, ref])
                    part[x, c] += r.conjugate() * s
    return part.sum(axis=0)


@numba.njit(parallel=True, cache=True)
def _virtual_unit(sig: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """conj(V)/|V| (x,y,z) complex64 for the virtual coil V = Σ_c S_{c,1}·rot_c (1 where V = 0)."""
    nx, ny, nz, _, nc = sig.shape
    out = np.empty((nx, ny, nz), dtype=np.complex64)
    for x in numba.prange(nx):
        for y in range(ny):
            for z in range(nz):
                v = complex(0.0, 0.0)
                for c in range(nc):
                    v += complex(sig[x, y, z, 0, c]) * rot[c]
                a = abs(v)
                out[x, y, z] = v.conjugate() / a if a > 0 else complex(1.0, 0.0)
    return out


def _virtual_reference_unit(signal: np.ndarray) -> np.ndarray:
    """conj(V)/|V| of the virtual coil Σ_c S_c·exp(−iθ_c), θ_c the mean first-echo phase of coil c relative to
    the strongest coil (Parker et al., MRM 2014)."""
    ref = int(np.argmax(_first_echo_products(signal, -1).real))
    theta = np.angle(_first_echo_products(signal, ref))
    return _virtual_unit(signal, np.exp(-1j * theta))


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
    w, b = _coil_weights(s, _ROTATED, _sigma_voxels(sigma_mm, voxel_size_mm), _virtual_reference_unit(s))
    return _apply_weights(s, w, b, magnitude)


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
    return _apply_weights(s, np.conj(coarse), b, magnitude)


# ----------------------------------------------------------------------------------------------------------------
# Roemer / SENSE-style with a reference scan
# ----------------------------------------------------------------------------------------------------------------
def _resample_to(ref: np.ndarray, shape: Tuple[int, int, int]) -> np.ndarray:
    """Resample a (x', y', z', coil) complex array to (*shape, coil) over the same field of view (trilinear)."""
    if ref.shape[:3] == tuple(shape):
        return np.ascontiguousarray(ref, dtype=np.complex64)
    zoom = [n / m for n, m in zip(shape, ref.shape[:3])]
    out = np.empty(tuple(shape) + (ref.shape[3],), dtype=np.complex64)
    for c in range(ref.shape[3]):
        out[..., c].real = ndi.zoom(ref[..., c].real, zoom, order=1, mode="nearest", grid_mode=True)
        out[..., c].imag = ndi.zoom(ref[..., c].imag, zoom, order=1, mode="nearest", grid_mode=True)
    return out


def combine_roemer(
    signal: np.ndarray, te_s: Sequence[float], voxel_size_mm: Sequence[float],
    reference_signal: Optional[np.ndarray] = None, sigma_mm: float = 4.0, magnitude: str = "sensitivity_weighted",
) -> np.ndarray:
    """Roemer / SENSE-style combination with sensitivities from a separate reference scan (Roemer et al., "The
    NMR phased array", MRM 1990; sensitivity maps as in Pruessmann et al., MRM 1999).

    ``reference_signal`` is a complex ``(x', y', z', coil)`` scan with the same coils and field of view (for
    example a fast low-resolution pre-scan); it is resampled to the coarse grid of the weights. Its object phase
    is removed with a virtual reference coil (Parker et al., MRM 2014) so the sensitivities keep only the coils'
    phases; they are normalised by their root-sum-of-squares, smoothed with ``sigma_mm``, and the image is combined as
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
    sig = _sigma_voxels(sigma_mm, voxel_size_mm)
    b = _block_size(sig)
    ref = _resample_to(r, _coarse_shape(s.shape[:3], b))
    # remove the object phase with the reference scan's own virtual coil, normalise by its root-sum-of-squares
    ref *= _virtual_reference_unit(ref[..., None, :])[..., None]
    rss = np.sqrt(np.sum(np.abs(ref) ** 2, axis=-1, keepdims=True))
    np.divide(ref, rss, out=ref, where=rss > 0)
    return _apply_weights(s, _smoothed_coarse(ref, sig, b), b, magnitude)


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
           "combine_magnitude", "count_residues", "MAGNITUDE_CHOICES"]
