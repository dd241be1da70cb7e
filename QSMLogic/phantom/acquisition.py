"""Simulated multi-echo (multi-coil) GRE acquisition of the head model (signal model of docs/conventions.md).

Signal of coil c at echo n: ``ρ·C_c·exp(−R2*·TE_n)·exp(i(φ0 + 2π·Δf·TE_n)) + noise``, where ``C_c`` is the coil's
complex receive sensitivity (its phase is the coil's own smooth offset, so the per-coil transceiver phase is
``φ0 + arg C_c``) and ``φ0`` the smooth transceiver phase common to all coils. Without coils the signal is the
combined image itself (``C = 1``). The coil-combined truth is ``Σ_c conj(C_c)·S_c / sqrt(Σ|C_c|²)`` =
``ρ·sqrt(Σ|C_c|²)·exp(−R2*·TE)·exp(i(φ0 + 2π·Δf·TE))``.

Field: ``Δf = γ̄·B0·δ`` with δ the forward field (:func:`QSMLogic.dipole.forward_field`, zero padded) of the
susceptibility relative to air — air fills all space outside the head, so sources are the head's own contrast to
air. ``local_field_ppm`` is the field of χ inside the brain mask; ``background_field_ppm`` the field of everything
else with the brain replaced by reference tissue (χ = 0); they add up to the total.

Coil sensitivities follow the falloff of a circular loop on its axis, ``(a²/(a² + d²))^{3/2}`` (Biot–Savart,
d the distance to the loop centre), for loops spread evenly over a helmet around the head (a Fibonacci lattice,
as in Roemer et al., Magn Reson Med 16 (1990) 192–225 arrays), each with its own smooth phase (a constant plus a
linear ramp) that coil-combination methods such as ASPIRE (Eckstein et al., Magn Reson Med 79 (2018) 2996–3006)
must remove. The sensitivities are analytic, so they are evaluated where they are needed (inside the signal
kernel, and on first access of :attr:`PhantomAcquisition.coil_sensitivities`) rather than held as a full array.

The signal of all echoes and coils is formed by one numba kernel that visits voxels in memory order and writes each
voxel's (echo, coil) block contiguously. Its complex Gaussian noise comes from a counter-based generator: the
SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA 2014) hashes (seed, voxel, echo, coil, draw) into random bits,
turned into normals by the ziggurat method (Marsaglia & Tsang, J Stat Softw 5(8), 2000), so the noise depends on
the seed only, not on the thread count or scheduling.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import scipy.fft as sfft
from numba import njit, prange

from ..constants import ppm_to_hz
from ..dipole import FFT_WORKERS, dipole_kernel, padded_shape
from ..errors import QSMInputError
from ..geometry import check_b0_direction
from ..gre import GREData, check_echo_times
from .model import HeadModel
from .tissues import BY_NAME, R2STAR_REFERENCE_B0_TESLA

#: Radius of each receive loop (mm) and the gap between the head surface and the helmet of loops (mm).
COIL_LOOP_RADIUS_MM = 45.0
COIL_HELMET_GAP_MM = 25.0

_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
#: Hashed draws reserved per complex noise sample (the ziggurat needs 2 for ≈ 98 % of samples; more than 64 never).
_DRAWS_PER_SAMPLE_LOG2 = np.uint64(6)


@dataclass(frozen=True)
class CoilArray:
    """Receive loops, one row per coil: ``params[c] = (centre x, y, z (mm), phase gradient x, y, z (rad/mm),
    phase offset (rad))`` in the array axes, relative to the grid centre; ``loop_radius_mm`` is each loop's radius."""

    params: np.ndarray
    loop_radius_mm: float = COIL_LOOP_RADIUS_MM

    @property
    def n_coils(self) -> int:
        return int(self.params.shape[0])


@dataclass
class PhantomAcquisition:
    """A simulated acquisition with its ground truth (fields in ppm, relative to the total field's zero mean).

    ``coil_sensitivities`` (complex64, x,y,z,coil, or None without coils) is computed from ``coils`` on first
    access and then kept: at 256×256×160 it takes 1.3 GB for 16 coils, which the simulation itself never holds.
    """

    gre: GREData
    model: HeadModel
    snr: float
    total_field_ppm: np.ndarray
    background_field_ppm: np.ndarray
    local_field_ppm: np.ndarray
    field_hz: np.ndarray
    chi_ppm: np.ndarray
    brain_mask: np.ndarray
    labels: np.ndarray
    r2star_hz: np.ndarray
    true_phase_rad: np.ndarray
    phase0_rad: np.ndarray
    coils: Optional[CoilArray]
    noise_sd: float

    @cached_property
    def coil_sensitivities(self) -> Optional[np.ndarray]:
        """Complex receive sensitivities (x,y,z,coil, complex64), or None for the combined image."""
        if self.coils is None:
            return None
        return _sensitivity_map(self.model, self.coils)


def _world_axes(model: HeadModel) -> list:
    """World (mm) coordinate vectors of the model grid, relative to its centre, as broadcastable float32 arrays."""
    out = []
    for a, n in enumerate(model.shape):
        c = ((np.arange(n) - 0.5 * (n - 1)) * model.voxel_size_mm[a]).astype(np.float32)
        sh = [1, 1, 1]
        sh[a] = n
        out.append(c.reshape(sh))
    return out


def transceiver_phase(model: HeadModel, rng: np.random.Generator) -> np.ndarray:
    """A smooth random transceiver phase φ0 (rad, x,y,z): constant + linear + quadratic terms, ≈ ±π over the head."""
    x, y, z = _world_axes(model)
    s = np.float32(1.0 / 100.0)
    c0 = rng.uniform(-np.pi, np.pi)
    g = rng.normal(0.0, 0.8, 3).astype(np.float32)
    q = rng.normal(0.0, 0.5, 3).astype(np.float32)
    ph = (np.float32(c0) + g[0] * x * s + g[1] * y * s + g[2] * z * s
          + q[0] * (x * s) ** 2 + q[1] * (y * s) ** 2 + q[2] * (x * s) * (z * s))
    return np.broadcast_to(ph, model.shape).astype(np.float32)


def coil_array(model: HeadModel, n_coils: int, rng: np.random.Generator, with_phase: bool = True) -> CoilArray:
    """``n_coils`` loops on a helmet around the head (Fibonacci lattice), each with a random smooth phase."""
    head = model.labels > 0
    idx = np.nonzero(head)
    ext = [float(np.abs((i - 0.5 * (n - 1)) * v).max()) if i.size else 80.0
           for i, n, v in zip(idx, model.shape, model.voxel_size_mm)]
    semi = np.array(ext) + COIL_HELMET_GAP_MM
    k = np.arange(n_coils) + 0.5
    cos_polar = 1.0 - 1.6 * k / n_coils  # from the vertex down to below the equator (helmet, open at the neck)
    sin_polar = np.sqrt(1.0 - cos_polar**2)
    azim = np.pi * (1.0 + 5.0**0.5) * k
    params = np.zeros((n_coils, 7), np.float32)
    params[:, :3] = np.stack([sin_polar * np.cos(azim), sin_polar * np.sin(azim), cos_polar], axis=1) * semi
    if with_phase:
        for c in range(n_coils):
            params[c, 3:6] = rng.normal(0.0, 1.0, 3).astype(np.float32) / np.float32(100.0)
            params[c, 6] = rng.uniform(-np.pi, np.pi)
    return CoilArray(params=params)


def coil_sensitivities(model: HeadModel, n_coils: int, rng: np.random.Generator, with_phase: bool = True
                       ) -> np.ndarray:
    """Complex receive sensitivities (x,y,z,coil, complex64) of ``n_coils`` loops on a helmet around the head."""
    return _sensitivity_map(model, coil_array(model, n_coils, rng, with_phase))


def _coil_tables(model: HeadModel, coils: Optional[CoilArray]) -> tuple:
    """Per-axis factors of the coil sensitivities (float32, (n_axis, coil) each): squared distances to the loop
    centres ``d2x, d2y, d2z`` and the phase factors ``cos/sin`` along each axis (the offset folded into x). The
    phase is linear and the distance a sum of squares, so a voxel's value needs no transcendental function."""
    n_c = coils.n_coils if coils is not None else 1
    params = coils.params.astype(np.float64) if coils is not None else np.zeros((1, 7))
    d2, cs, sn = [], [], []
    for a, n in enumerate(model.shape):
        d = (np.arange(n) - 0.5 * (n - 1))[:, None] * model.voxel_size_mm[a] - params[None, :n_c, a]
        ph = params[None, :n_c, 3 + a] * d + (params[None, :n_c, 6] if a == 0 else 0.0)
        d2.append((d * d).astype(np.float32))
        cs.append(np.cos(ph).astype(np.float32))
        sn.append(np.sin(ph).astype(np.float32))
    return tuple(d2) + tuple(cs) + tuple(sn)


@njit(cache=True, inline="always")
def _coil_row(tabs, i, j, row_d2, row_re, row_im):
    """The (x, y) part of every coil's sensitivity at row (i, j): summed squared distance and phase factor."""
    d2x, d2y, _, cx, cy, _, sx, sy, _ = tabs
    for c in range(row_d2.size):
        row_d2[c] = d2x[i, c] + d2y[j, c]
        row_re[c] = cx[i, c] * cy[j, c] - sx[i, c] * sy[j, c]
        row_im[c] = cx[i, c] * sy[j, c] + sx[i, c] * cy[j, c]


@njit(cache=True, inline="always")
def _coil_voxel(tabs, k, a2, row_d2, row_re, row_im, out_re, out_im):
    """Every coil's sensitivity at voxel k of the row: loop falloff (a²/(a² + d²))^{3/2} times the phase factor."""
    d2z, cz, sz = tabs[2], tabs[5], tabs[8]
    for c in range(row_d2.size):
        t = a2 / (a2 + row_d2[c] + d2z[k, c])
        m = t * np.sqrt(t)
        out_re[c] = m * (row_re[c] * cz[k, c] - row_im[c] * sz[k, c])
        out_im[c] = m * (row_re[c] * sz[k, c] + row_im[c] * cz[k, c])


@njit(cache=True, parallel=True, fastmath=True)
def _sensitivity_kernel(tabs, a2, out):
    """Fill ``out`` (x,y,z,2·coil float32: interleaved real, imaginary) with every coil's sensitivity."""
    nx, ny, nz = tabs[0].shape[0], tabs[1].shape[0], tabs[2].shape[0]
    n_c = tabs[0].shape[1]
    for i in prange(nx):
        row_d2 = np.empty(n_c, np.float32)
        row_re = np.empty(n_c, np.float32)
        row_im = np.empty(n_c, np.float32)
        v_re = np.empty(n_c, np.float32)
        v_im = np.empty(n_c, np.float32)
        for j in range(ny):
            _coil_row(tabs, i, j, row_d2, row_re, row_im)
            for k in range(nz):
                _coil_voxel(tabs, k, a2, row_d2, row_re, row_im, v_re, v_im)
                for c in range(n_c):
                    out[i, j, k, 2 * c] = v_re[c]
                    out[i, j, k, 2 * c + 1] = v_im[c]


def _sensitivity_map(model: HeadModel, coils: CoilArray) -> np.ndarray:
    out = np.empty(model.shape + (coils.n_coils,), np.complex64)
    _sensitivity_kernel(_coil_tables(model, coils), np.float32(coils.loop_radius_mm**2), out.view(np.float32))
    return out


@njit(cache=True, parallel=True, fastmath=True)
def _mean_signal_rss(pd, r2, te0, brain, tabs, a2, with_coils):
    """Mean over ``brain`` of ρ·exp(−R2*·TE0)·sqrt(Σ_c |C_c|²) (float64; |C| = 1 without coils)."""
    nx, ny, nz = pd.shape
    n_c = tabs[0].shape[1]
    total = 0.0
    count = 0
    for i in prange(nx):
        row_d2 = np.empty(n_c, np.float32)
        row_re = np.empty(n_c, np.float32)
        row_im = np.empty(n_c, np.float32)
        v_re = np.empty(n_c, np.float32)
        v_im = np.empty(n_c, np.float32)
        for j in range(ny):
            _coil_row(tabs, i, j, row_d2, row_re, row_im)
            for k in range(nz):
                if not brain[i, j, k]:
                    continue
                ss = 1.0
                if with_coils:
                    _coil_voxel(tabs, k, a2, row_d2, row_re, row_im, v_re, v_im)
                    ss = 0.0
                    for c in range(n_c):
                        ss += v_re[c] * v_re[c] + v_im[c] * v_im[c]
                total += pd[i, j, k] * np.exp(-r2[i, j, k] * te0) * np.sqrt(ss)
                count += 1
    return total / max(count, 1)


@njit(cache=True, inline="always")
def _mix64(z):
    """SplitMix64 output function (Steele, Lea & Flood 2014): a bijective 64-bit hash."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _ziggurat_tables(n_layers: int = 128, r: float = 3.442619855899, v: float = 9.91256303526217e-3):
    """Layer tables of the 128-layer normal ziggurat (Marsaglia & Tsang, J Stat Softw 5(8), 2000) for 31-bit
    magnitudes: ``k`` (acceptance bounds), ``w`` (scales to x) and ``f`` (density at each layer's edge)."""
    scale = 2.0**31
    k = np.zeros(n_layers, np.int64)
    w = np.zeros(n_layers)
    f = np.zeros(n_layers)
    q = v / np.exp(-0.5 * r * r)
    k[0], w[0], f[0] = int(r / q * scale), q / scale, 1.0
    w[-1], f[-1] = r / scale, np.exp(-0.5 * r * r)
    x_out = r
    for i in range(n_layers - 2, 0, -1):
        x_in = np.sqrt(-2.0 * np.log(v / x_out + np.exp(-0.5 * x_out * x_out)))
        k[i + 1] = int(x_in / x_out * scale)
        x_out = x_in
        f[i] = np.exp(-0.5 * x_in * x_in)
        w[i] = x_in / scale
    return k, w, f


_ZIG_K, _ZIG_W, _ZIG_F = _ziggurat_tables()
_ZIG_R = 3.442619855899


@njit(cache=True, inline="always")
def _uniform(h):
    """A float64 uniform in (0, 1) from the top 53 bits of ``h``."""
    return (np.float64(h >> np.uint64(11)) + 0.5) * 2.0**-53


@njit(cache=True, inline="always")
def _normal(key, draw, zk, zw, zf):
    """One standard normal from the hashed draws ``draw, draw + 1, …`` of stream ``key`` (ziggurat); returns the
    value and the next unused draw. Each draw's hash gives the signed 32-bit magnitude and, from separate bits,
    the layer, so the two are independent."""
    while True:
        h = _mix64(key + draw * _GOLDEN_GAMMA)
        draw += np.uint64(1)
        hz = np.int64(np.int32(h & np.uint64(0xFFFFFFFF)))
        iz = np.int64((h >> np.uint64(32)) & np.uint64(127))
        x = hz * zw[iz]
        if abs(hz) < zk[iz]:
            return x, draw
        u = _mix64(key + draw * _GOLDEN_GAMMA)
        draw += np.uint64(1)
        if iz == 0:  # the tail beyond r (Marsaglia 1964)
            while True:
                t = -np.log(_uniform(u)) / _ZIG_R
                y = -np.log((np.float64(u & np.uint64(0x1FFFFF)) + 0.5) * 2.0**-21)
                if y + y >= t * t:
                    return (_ZIG_R + t if hz > 0 else -_ZIG_R - t), draw
                u = _mix64(key + draw * _GOLDEN_GAMMA)
                draw += np.uint64(1)
        if zf[iz] + _uniform(u) * (zf[iz - 1] - zf[iz]) < np.exp(-0.5 * x * x):  # the wedge
            return x, draw


def _atan_coefficients(degree: int = 8) -> np.ndarray:
    """Power-series coefficients (in t = x²) of atan(x)/x on [0, 1], from Chebyshev interpolation at ``degree + 1``
    nodes (max error of atan ≈ 1e-7 rad, float32 rounding level)."""
    nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    t = 0.5 * (nodes + 1.0)
    cheb = np.polynomial.Chebyshev.fit(t, np.arctan(np.sqrt(t)) / np.sqrt(t), degree, domain=[0.0, 1.0])
    return cheb.convert(kind=np.polynomial.Polynomial).coef.astype(np.float32)


_ATAN_COEF = _atan_coefficients()


@njit(cache=True, inline="always")
def _atan2(y, x, coef):
    """Branch-free float32 atan2 (vectorisable; ±1e-7 rad): octant reduction and a polynomial on [0, 1]."""
    ax = abs(x)
    ay = abs(y)
    hi = max(ax, ay)
    t = min(ax, ay) / max(hi, np.float32(1e-38))
    z = t * t
    p = coef[coef.size - 1]
    for m in range(coef.size - 2, -1, -1):
        p = p * z + coef[m]
    p *= t
    p = np.float32(0.5 * np.pi) - p if ay > ax else p
    p = np.float32(np.pi) - p if x < 0 else p
    return -p if y < 0 else p


@njit(cache=True, parallel=True, fastmath=True)
def _simulate_kernel(pd, r2, true_phase, te, tabs, a2, with_coils, noise_sd, key, out_phase, out_mag, zk, zw, zf,
                     atan_coef):
    """All echoes and channels: ρ·C_c·exp(−R2*·TE_n)·exp(i·φ_n) + noise → phase and magnitude.

    ``out_phase``/``out_mag`` are (x,y,z,echo·coil) views of the (x,y,z,echo,coil) outputs: each voxel's block is
    formed in a small buffer, then converted to phase and magnitude and written contiguously. Noise sample
    (voxel v, echo n, coil c) has counter ``(v·N_echo + n)·N_coil + c``.
    """
    nx, ny, nz = pd.shape
    n_e = te.size
    n_c = tabs[0].shape[1]
    n_ec = n_e * n_c
    for i in prange(nx):
        row_d2 = np.empty(n_c, np.float32)
        row_re = np.empty(n_c, np.float32)
        row_im = np.empty(n_c, np.float32)
        c_re = np.ones(n_c, np.float32)
        c_im = np.zeros(n_c, np.float32)
        s_amp = np.empty(n_e, np.float32)
        s_cos = np.empty(n_e, np.float32)
        s_sin = np.empty(n_e, np.float32)
        b_re = np.empty(n_ec, np.float32)
        b_im = np.empty(n_ec, np.float32)
        for j in range(ny):
            if with_coils:
                _coil_row(tabs, i, j, row_d2, row_re, row_im)
            for k in range(nz):
                if with_coils:
                    _coil_voxel(tabs, k, a2, row_d2, row_re, row_im, c_re, c_im)
                rho = pd[i, j, k]
                rate = r2[i, j, k]
                for n in range(n_e):
                    s_amp[n] = rho * np.exp(-rate * te[n])
                    s_cos[n] = np.cos(true_phase[i, j, k, n])
                    s_sin[n] = np.sin(true_phase[i, j, k, n])
                for n in range(n_e):
                    for c in range(n_c):
                        b_re[n * n_c + c] = s_amp[n] * (s_cos[n] * c_re[c] - s_sin[n] * c_im[c])
                        b_im[n * n_c + c] = s_amp[n] * (s_sin[n] * c_re[c] + s_cos[n] * c_im[c])
                if noise_sd > 0:
                    base = np.uint64(((i * ny + j) * nz + k) * n_ec)
                    for m in range(n_ec):
                        draw = (base + np.uint64(m)) << _DRAWS_PER_SAMPLE_LOG2
                        g_re, draw = _normal(key, draw, zk, zw, zf)
                        g_im, draw = _normal(key, draw, zk, zw, zf)
                        b_re[m] += noise_sd * np.float32(g_re)
                        b_im[m] += noise_sd * np.float32(g_im)
                for m in range(n_ec):
                    out_phase[i, j, k, m] = _atan2(b_im[m], b_re[m], atan_coef)
                    out_mag[i, j, k, m] = np.sqrt(b_re[m] * b_re[m] + b_im[m] * b_im[m])


def _fields(sources: Sequence[np.ndarray], voxel_size_mm, b0_direction, pad_factor: float = 2.0) -> list:
    """Forward fields (ppm) of several χ volumes with one dipole kernel (as :func:`QSMLogic.dipole.forward_field`)."""
    shp = padded_shape(sources[0].shape, pad_factor)
    lo = [(p - n) // 2 for p, n in zip(shp, sources[0].shape)]
    sl = tuple(slice(a, a + n) for a, n in zip(lo, sources[0].shape))
    kernel = dipole_kernel(shp, voxel_size_mm, b0_direction, real=True)
    out = []
    for chi in sources:
        buf = np.zeros(shp, np.float32)
        buf[sl] = chi
        spec = sfft.rfftn(buf, workers=FFT_WORKERS)
        del buf
        spec *= kernel
        out.append(np.ascontiguousarray(sfft.irfftn(spec, s=shp, workers=FFT_WORKERS)[sl], dtype=np.float32))
        del spec
    return out


def _check_acq_inputs(model: HeadModel, te_s: Sequence[float], b0_tesla: float, n_coils: int, snr: Optional[float]):
    if not isinstance(model, HeadModel):
        raise QSMInputError(f"model must be a HeadModel from make_head_model, got {type(model).__name__}")
    te = check_echo_times(te_s, len(np.atleast_1d(te_s)))
    b0 = float(b0_tesla)
    if not np.isfinite(b0) or b0 <= 0 or b0 > 25:
        raise QSMInputError(f"b0_tesla must be a field strength in tesla in (0, 25], got {b0_tesla!r}")
    if int(n_coils) != n_coils or n_coils < 0 or n_coils == 1:
        raise QSMInputError(f"n_coils must be 0 (combined image) or an integer ≥ 2, got {n_coils!r}")
    s = float("inf") if snr is None else float(snr)
    if np.isnan(s) or s <= 0:
        raise QSMInputError(f"snr must be positive (or inf / None for no noise), got {snr!r}")
    return te, b0, int(n_coils), s


def simulate_acquisition(
    model: HeadModel,
    te_s: Sequence[float] = (0.004, 0.008, 0.012, 0.016, 0.020),
    b0_tesla: float = 3.0,
    b0_direction: Optional[Sequence[float]] = None,
    n_coils: int = 0,
    snr: Optional[float] = 100.0,
    seed: int = 0,
    phase_offset: bool = True,
) -> PhantomAcquisition:
    """Simulate a multi-echo GRE scan of ``model``.

    ``b0_direction`` (unit vector in the array axes) defaults to world +z from the affine; give another to simulate
    an oblique acquisition. ``n_coils = 0`` gives the combined image (x,y,z,echo); ``n_coils ≥ 2`` gives per-coil
    data (x,y,z,echo,coil). ``snr`` is the mean brain magnitude of the combined image at the first echo divided by
    ``noise_sd``, the SD of the real and of the imaginary part of each channel's complex Gaussian noise
    (``inf``/``None``: no noise). ``phase_offset=False`` sets φ0 = 0 and makes the coil sensitivities real.
    R2* is scaled linearly from 3 T to ``b0_tesla``. Deterministic for a given ``seed``.
    """
    te, b0, n_coils, snr_v = _check_acq_inputs(model, te_s, b0_tesla, n_coils, snr)
    bdir = np.array([0.0, 0.0, 1.0]) if b0_direction is None else check_b0_direction(b0_direction)
    if b0_direction is None:
        rot = model.affine[:3, :3] / np.linalg.norm(model.affine[:3, :3], axis=0)
        bdir = rot.T @ bdir
    rng_phase = np.random.default_rng([seed, 1])
    rng_coil = np.random.default_rng([seed, 2])
    rng_noise = np.random.default_rng([seed, 3])

    chi_air = np.float32(BY_NAME["background/air"].chi_ppm)
    brain = model.brain_mask
    local, total = _fields([np.where(brain, model.chi_ppm, np.float32(0.0)), model.chi_ppm - chi_air],
                           model.voxel_size_mm, bdir)
    background = total - local
    field_hz = ppm_to_hz(total, b0).astype(np.float32)

    r2 = (model.r2star_hz * np.float32(b0 / R2STAR_REFERENCE_B0_TESLA)).astype(np.float32)
    phase0 = transceiver_phase(model, rng_phase) if phase_offset else np.zeros(model.shape, np.float32)
    n_e = te.size
    true_phase = np.empty(model.shape + (n_e,), np.float32)
    for n in range(n_e):
        true_phase[..., n] = phase0 + np.float32(2 * np.pi * te[n]) * field_hz

    coils = coil_array(model, n_coils, rng_coil, with_phase=phase_offset) if n_coils else None
    tabs = _coil_tables(model, coils)
    a2 = np.float32(COIL_LOOP_RADIUS_MM**2)
    pd = np.ascontiguousarray(model.proton_density, dtype=np.float32)
    ref_mag = _mean_signal_rss(pd, r2, np.float32(te[0]), np.ascontiguousarray(brain), tabs, a2, coils is not None)
    noise_sd = 0.0 if np.isinf(snr_v) else ref_mag / snr_v

    n_ch = max(n_coils, 1)
    phase = np.empty(model.shape + (n_e, n_ch), np.float32)
    mag = np.empty(model.shape + (n_e, n_ch), np.float32)
    key = np.uint64(rng_noise.integers(0, 2**63))
    flat = model.shape + (n_e * n_ch,)
    _simulate_kernel(pd, r2, true_phase, te.astype(np.float32), tabs, a2, coils is not None, np.float32(noise_sd), key,
                     phase.reshape(flat), mag.reshape(flat), _ZIG_K, _ZIG_W, _ZIG_F, _ATAN_COEF)
    if not n_coils:
        phase, mag = phase[..., 0], mag[..., 0]

    gre = GREData(phase_rad=phase, magnitude=mag, te_s=te, b0_tesla=b0, affine=model.affine,
                  b0_direction=tuple(float(v) for v in bdir),
                  metadata={"source": "QSMLogic.phantom", "seed": seed, "snr": snr_v, "n_coils": n_coils})
    del phase, mag
    return PhantomAcquisition(
        gre=gre, model=model, snr=snr_v, total_field_ppm=total, background_field_ppm=background,
        local_field_ppm=local, field_hz=field_hz, chi_ppm=model.chi_ppm, brain_mask=brain, labels=model.labels,
        r2star_hz=r2, true_phase_rad=true_phase, phase0_rad=phase0, coils=coils, noise_sd=noise_sd,
    )
