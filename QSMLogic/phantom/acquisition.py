"""Simulated multi-echo (multi-coil) GRE acquisition of the head model (DESIGN.md §1 signal model).

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
must remove.
"""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class PhantomAcquisition:
    """A simulated acquisition with its ground truth (fields in ppm, relative to the total field's zero mean)."""

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
    coil_sensitivities: Optional[np.ndarray]
    noise_sd: float


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


def coil_sensitivities(model: HeadModel, n_coils: int, rng: np.random.Generator, with_phase: bool = True
                       ) -> np.ndarray:
    """Complex receive sensitivities (x,y,z,coil, complex64) of ``n_coils`` loops on a helmet around the head."""
    x, y, z = _world_axes(model)
    head = model.labels > 0
    idx = np.nonzero(head)
    ext = [float(np.abs((i - 0.5 * (n - 1)) * v).max()) if i.size else 80.0
           for i, n, v in zip(idx, model.shape, model.voxel_size_mm)]
    semi = np.array(ext) + COIL_HELMET_GAP_MM
    k = np.arange(n_coils) + 0.5
    cos_polar = 1.0 - 1.6 * k / n_coils  # from the vertex down to below the equator (helmet, open at the neck)
    sin_polar = np.sqrt(1.0 - cos_polar**2)
    azim = np.pi * (1.0 + 5.0**0.5) * k
    pos = np.stack([sin_polar * np.cos(azim), sin_polar * np.sin(azim), cos_polar], axis=1) * semi
    a2 = np.float32(COIL_LOOP_RADIUS_MM**2)
    out = np.empty(model.shape + (n_coils,), np.complex64)
    for c in range(n_coils):
        d2 = (x - np.float32(pos[c, 0])) ** 2 + (y - np.float32(pos[c, 1])) ** 2 + (z - np.float32(pos[c, 2])) ** 2
        mag = (a2 / (a2 + d2)) ** np.float32(1.5)
        if with_phase:
            g = rng.normal(0.0, 1.0, 3).astype(np.float32) / np.float32(100.0)
            ph = (np.float32(rng.uniform(-np.pi, np.pi)) + g[0] * (x - np.float32(pos[c, 0]))
                  + g[1] * (y - np.float32(pos[c, 1])) + g[2] * (z - np.float32(pos[c, 2])))
            out[..., c] = mag * (np.cos(ph) + 1j * np.sin(ph))
        else:
            out[..., c] = mag
    return out


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


@njit(cache=True, parallel=True, fastmath=True)
def _sample(pd, r2, true_phase, c_mag, c_phase, te, noise_re, noise_im, out_phase, out_mag):
    """One channel and echo: ρ·|C|·exp(−R2*·TE)·exp(i(φ + arg C)) + noise → phase and magnitude."""
    nx, ny, nz = pd.shape
    for i in prange(nx):
        for j in range(ny):
            for k in range(nz):
                a = pd[i, j, k] * c_mag[i, j, k] * np.exp(-r2[i, j, k] * te)
                ph = true_phase[i, j, k] + c_phase[i, j, k]
                re = a * np.cos(ph) + noise_re[i, j, k]
                im = a * np.sin(ph) + noise_im[i, j, k]
                out_phase[i, j, k] = np.arctan2(im, re)
                out_mag[i, j, k] = np.sqrt(re * re + im * im)


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

    sens = coil_sensitivities(model, n_coils, rng_coil, with_phase=phase_offset) if n_coils else None
    amp1 = model.proton_density * np.exp(-r2 * np.float32(te[0]))
    if sens is not None:
        rss = np.sqrt(np.sum(sens.real**2 + sens.imag**2, axis=-1))
        ref_mag = float(np.mean(amp1[brain] * rss[brain], dtype=np.float64))
        del rss
    else:
        ref_mag = float(np.mean(amp1[brain], dtype=np.float64))
    noise_sd = 0.0 if np.isinf(snr_v) else ref_mag / snr_v

    out_shape = model.shape + (n_e, max(n_coils, 1))
    phase = np.empty(out_shape, np.float32)
    mag = np.empty(out_shape, np.float32)
    zeros = np.zeros(model.shape, np.float32)
    ones = np.ones(model.shape, np.float32)
    for c in range(max(n_coils, 1)):
        c_mag = np.abs(sens[..., c]) if sens is not None else ones
        c_phase = np.angle(sens[..., c]).astype(np.float32) if sens is not None else zeros
        for n in range(n_e):
            if noise_sd > 0:
                nre = rng_noise.standard_normal(model.shape, dtype=np.float32) * np.float32(noise_sd)
                nim = rng_noise.standard_normal(model.shape, dtype=np.float32) * np.float32(noise_sd)
            else:
                nre = nim = zeros
            _sample(model.proton_density, r2, true_phase[..., n], c_mag, c_phase, np.float32(te[n]), nre, nim,
                    phase[..., n, c], mag[..., n, c])
    if not n_coils:
        phase, mag = phase[..., 0], mag[..., 0]

    gre = GREData(phase_rad=phase, magnitude=mag, te_s=te, b0_tesla=b0, affine=model.affine,
                  b0_direction=tuple(float(v) for v in bdir),
                  metadata={"source": "QSMLogic.phantom", "seed": seed, "snr": snr_v, "n_coils": n_coils})
    del phase, mag
    return PhantomAcquisition(
        gre=gre, model=model, snr=snr_v, total_field_ppm=total, background_field_ppm=background,
        local_field_ppm=local, field_hz=field_hz, chi_ppm=model.chi_ppm, brain_mask=brain, labels=model.labels,
        r2star_hz=r2, true_phase_rad=true_phase, phase0_rad=phase0, coil_sensitivities=sens, noise_sd=noise_sd,
    )
