"""Multi-echo field mapping (stage ``field_mapping``) and R2*/T2* mapping (stage ``r2star``).

Signal model (docs/conventions.md), coil-combined: ``S_n = ρ·exp(−R2*·TE_n)·exp(i(φ0 + 2π·Δf·TE_n)) + noise``
with complex Gaussian noise of SD ``σ`` in the real and in the imaginary part. At high SNR the phase noise of echo n is
``σ/|S_n|``, which gives every fit below its maximum-likelihood weights (``|S_n|²``) and its Cramér–Rao noise
(``noise_sd_hz``, the per-voxel SD of the fitted frequency — the weight map for the dipole inversion). ``σ`` is
given (``noise_sd``) or estimated robustly from the fit residuals inside the mask (their median against the χ²
distribution's), or, with too few echoes for residuals, from the Rayleigh background outside the mask.

Field-mapping methods (all return a :class:`FieldMap`):

* ``weighted_linear``: weighted least squares of the (unwrapped) phase against TE, with or without intercept φ0
  (weights ``|S_n|²``; without intercept this is the ML average of φ_n/TE_n with weights ``|S_n|²·TE_n²``);
  optional temporal unwrapping along echoes (Robinson et al., NMR Biomed 2017; Liu et al., MRM 2013).
* ``nonlinear_complex``: Gauss–Newton fit of ``|S_n|·exp(i(φ0 + ω·TE_n))`` to the complex signal, robust to phase
  wraps (as MEDI's complex field fit, Liu et al., MRM 2013); the frequency is aliased beyond ±1/(2ΔTE).
* ``echo_average``: magnitude/TE-weighted average of φ_n/TE_n (Wu et al., NeuroImage 2012; Robinson et al.,
  NMR Biomed 2017), also available as :func:`combine_phase_echoes`.

R2* methods: weighted log-linear least squares and ARLO (Pei et al., MRM 2015).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import stats

from .constants import hz_to_ppm
from .errors import QSMInputError
from .gre import check_echo_times
from .params import MethodSpec, Param, register_method

#: Relative tolerance for "equally spaced" echo times (ARLO, pooled echo differences).
EQUAL_SPACING_RTOL = 0.01
#: Echo-time weighting choices of :func:`combine_phase_echoes`.
ECHO_WEIGHTINGS: Tuple[str, ...] = ("magnitude_te_squared", "magnitude_te")


@dataclass
class FieldMap:
    """A fitted B0 field map.

    ``field_hz``/``field_ppm``: the frequency offset Δf and δ = Δf/(γ̄·B0) in ppm (0 outside the mask);
    ``noise_sd_hz``: per-voxel SD of the fitted Δf predicted from the magnitude noise model (0 outside the mask:
    no estimate); ``phase0_rad``: the fitted phase at TE = 0 (0 when fitted without intercept); ``reliable``:
    voxels of the mask whose fit is consistent (noise SD and residual within ``reliability_factor`` of typical);
    ``noise_sd``: the complex-noise SD σ used (magnitude units); ``method``: the method key.
    """

    field_hz: np.ndarray
    field_ppm: np.ndarray
    noise_sd_hz: np.ndarray
    phase0_rad: np.ndarray
    reliable: np.ndarray
    te_s: Tuple[float, ...]
    b0_tesla: float
    noise_sd: float
    method: str

    @property
    def noise_sd_ppm(self) -> np.ndarray:
        """Per-voxel SD of the field in ppm."""
        return hz_to_ppm(self.noise_sd_hz, self.b0_tesla).astype(np.float32)

    def weight(self) -> np.ndarray:
        """Inverse-SD weights (x,y,z) for the dipole inversion, mean 1 over reliable voxels, 0 elsewhere."""
        w = np.zeros(self.noise_sd_hz.shape, np.float32)
        sel = self.reliable & (self.noise_sd_hz > 0)
        if np.any(sel):
            inv = 1.0 / self.noise_sd_hz[sel].astype(np.float64)
            w[sel] = inv / inv.mean()
        return w


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------
def _as_4d(name: str, a: Optional[np.ndarray]) -> np.ndarray:
    if a is None:
        raise QSMInputError(f"{name} is missing")
    arr = np.asarray(a)
    if np.iscomplexobj(arr):
        raise QSMInputError(f"{name} must be real, got a complex array")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4:
        raise QSMInputError(f"{name} must have shape (x, y, z, echo), got shape {arr.shape}")
    return arr


def _check_mask(mask: Optional[np.ndarray], shape: Tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise QSMInputError(f"mask shape {m.shape} does not match the image's spatial shape {tuple(shape)}")
    m = m.astype(bool)
    if not np.any(m):
        raise QSMInputError("mask is empty: no voxel to fit")
    return m


def _rows(name: str, a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked voxels as (n_voxels, n_echo) float64, after a NaN/Inf check."""
    r = a[mask].astype(np.float64)
    if not np.all(np.isfinite(r)):
        raise QSMInputError(f"{name} contains NaN/Inf inside the mask; mask or replace those voxels")
    return r


def _prepare(
    phase: Optional[np.ndarray], magnitude: Optional[np.ndarray], mask: Optional[np.ndarray],
    te_s: Optional[Sequence[float]], method: str, min_echoes: int, need_phase: bool = True,
):
    """Validate inputs; return (phase rows or None, magnitude rows, mask, te)."""
    if magnitude is None:
        raise QSMInputError(f"{method} needs the magnitude images (for its weights and noise model)")
    mag = _as_4d("magnitude", magnitude)
    ph = None
    if need_phase:
        ph = _as_4d("phase", phase)
        if ph.shape != mag.shape:
            raise QSMInputError(f"magnitude shape {mag.shape} does not match phase shape {ph.shape}")
    n_echo = mag.shape[3]
    if n_echo < min_echoes:
        raise QSMInputError(f"{method} needs at least {min_echoes} echoes, got {n_echo}")
    te = check_echo_times(te_s, n_echo)
    m = _check_mask(mask, mag.shape[:3])
    mag_rows = _rows("magnitude", mag, m)
    if np.any(mag_rows < 0):
        raise QSMInputError("magnitude has negative values inside the mask: is it a phase image?")
    ph_rows = _rows("phase", ph, m) if ph is not None else None
    return ph_rows, mag_rows, m, te


def _check_b0(b0_tesla: float) -> float:
    b0 = float(b0_tesla) if b0_tesla is not None else float("nan")
    if not np.isfinite(b0) or b0 <= 0 or b0 > 25:
        raise QSMInputError(f"b0_tesla must be a positive field strength in tesla, got {b0_tesla!r}")
    return b0


def _equally_spaced(te: np.ndarray) -> bool:
    d = np.diff(te)
    return d.size > 0 and bool(np.all(np.abs(d - d.mean()) <= EQUAL_SPACING_RTOL * d.mean()))


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def _scatter(mask: np.ndarray, values: np.ndarray, fill: float = 0.0, dtype: type = np.float32) -> np.ndarray:
    out = np.full(mask.shape, fill, dtype=dtype)
    out[mask] = values
    return out


# ----------------------------------------------------------------------------------------------------------------
# temporal unwrapping
# ----------------------------------------------------------------------------------------------------------------
def _line_fit(ph: np.ndarray, te: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Unweighted least-squares line through the rows of ``ph`` against ``te``: (intercept, slope)."""
    tm = te.mean()
    dt = te - tm
    slope = (ph - ph.mean(axis=1, keepdims=True)) @ dt / float(dt @ dt)
    return ph.mean(axis=1) - slope * tm, slope


def _temporal_unwrap_rows(ph: np.ndarray, te: np.ndarray) -> np.ndarray:
    """Unwrap each row along echoes: echo n is moved by 2πk to the value predicted from the echoes before it."""
    out = ph.copy()
    if te.size < 2:
        return out
    out[:, 1] = ph[:, 0] + _wrap(ph[:, 1] - ph[:, 0])
    for n in range(2, te.size):
        icpt, slope = _line_fit(out[:, :n], te[:n])
        pred = icpt + slope * te[n]
        out[:, n] = ph[:, n] + 2.0 * np.pi * np.round((pred - ph[:, n]) / (2.0 * np.pi))
    return out


def _align_echo_offsets(ph: np.ndarray, te: np.ndarray) -> np.ndarray:
    """Remove whole-volume 2π offsets between spatially unwrapped echoes (each echo unwrapped on its own may land
    on a different multiple of 2π): echo n is shifted by the median 2πk that brings it to its temporal prediction."""
    out = ph.copy()
    for n in range(1, te.size):
        if n == 1:
            pred = out[:, 0] + _wrap(out[:, 1] - out[:, 0])
        else:
            icpt, slope = _line_fit(out[:, :n], te[:n])
            pred = icpt + slope * te[n]
        k = np.round(np.median((pred - out[:, n]) / (2.0 * np.pi)))
        out[:, n] += 2.0 * np.pi * k
    return out


def unwrap_echoes(phase: np.ndarray, te_s: Sequence[float], mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Temporal unwrapping of wrapped multi-echo phase (x,y,z,echo): consecutive-echo differences are unwrapped
    by the frequency expected from the echoes before (first pair: the wrapped difference, i.e. |Δf·ΔTE| < ½).
    Each voxel is unwrapped on its own; echo 1 keeps its (possibly wrapped) value. Returns float32."""
    ph = _as_4d("phase", phase)
    te = check_echo_times(te_s, ph.shape[3])
    m = _check_mask(mask, ph.shape[:3])
    out = np.zeros(ph.shape, np.float32)
    out[m] = _temporal_unwrap_rows(_rows("phase", ph, m), te)
    return out


# ----------------------------------------------------------------------------------------------------------------
# noise model
# ----------------------------------------------------------------------------------------------------------------
def _sigma_from_residuals(chi: np.ndarray, dof: int) -> float:
    """σ² from per-voxel Σ|S|²·r² ~ σ²·χ²(dof): median ratio against the χ² median (robust to outliers)."""
    return float(np.sqrt(np.median(chi) / stats.chi2.ppf(0.5, dof)))


def _sigma_from_background(magnitude: np.ndarray, mask: np.ndarray) -> float:
    """σ from the Rayleigh-distributed first-echo magnitude outside the mask (median = σ·sqrt(2 ln 2))."""
    out = np.asarray(magnitude)[..., 0][~mask] if np.asarray(magnitude).ndim == 4 else np.asarray(magnitude)[~mask]
    if out.size < 100:
        raise QSMInputError(
            "cannot estimate the noise level: too few echoes for fit residuals and no background outside the "
            "mask; give noise_sd"
        )
    return float(np.median(out) / np.sqrt(2.0 * np.log(2.0)))


def _resolve_sigma(noise_sd: float, chi: Optional[np.ndarray], dof: int, magnitude: np.ndarray,
                   mask: np.ndarray) -> float:
    if noise_sd is not None and noise_sd > 0:
        return float(noise_sd)
    if noise_sd is not None and noise_sd < 0:
        raise QSMInputError(f"noise_sd must be ≥ 0 (0: estimate it), got {noise_sd}")
    if chi is not None and dof >= 1:
        s = _sigma_from_residuals(chi, dof)
        if s > 0:
            return s
    return _sigma_from_background(_as_4d("magnitude", magnitude), mask)


def _reliable(mask: np.ndarray, sd_hz: np.ndarray, chi: Optional[np.ndarray], dof: int, sigma: float,
              factor: float) -> np.ndarray:
    ok = np.isfinite(sd_hz) & (sd_hz > 0) & (sd_hz <= factor * np.median(sd_hz[np.isfinite(sd_hz)]))
    if chi is not None and dof >= 1:
        ok &= chi / dof <= factor**2 * sigma**2
    return _scatter(mask, ok, False, bool)


# ----------------------------------------------------------------------------------------------------------------
# fits
# ----------------------------------------------------------------------------------------------------------------
def _wls(ph: np.ndarray, w: np.ndarray, te: np.ndarray, intercept: bool):
    """Weighted LS of rows ``ph`` against ``te``; returns (φ0, ω rad/s, var factor of ω (×σ²), Σw·r²)."""
    stt = w @ (te * te)
    wp = w * ph
    stp = wp @ te
    if intercept:
        sw = w.sum(axis=1)
        st = w @ te
        sp = wp.sum(axis=1)
        det = sw * stt - st * st
        with np.errstate(divide="ignore", invalid="ignore"):
            omega = (sw * stp - st * sp) / det
            phi0 = (stt * sp - st * stp) / det
            var = sw / det
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            omega = stp / stt
            var = 1.0 / stt
        phi0 = np.zeros_like(omega)
    r = ph - phi0[:, None] - omega[:, None] * te[None, :]
    return phi0, omega, var, np.sum(w * r * r, axis=1)


def _field_map(mask, omega, var, phi0, chi, dof, sigma, factor, te, b0, method) -> FieldMap:
    sd_hz = np.sqrt(var) * sigma / (2.0 * np.pi)
    f = omega / (2.0 * np.pi)
    bad = ~np.isfinite(f) | ~np.isfinite(sd_hz)
    f[bad] = 0.0
    sd_hz[bad] = np.inf
    rel = _reliable(mask, sd_hz, chi, dof, sigma, factor)
    sd_hz[bad] = 0.0
    field_hz = _scatter(mask, f)
    return FieldMap(
        field_hz=field_hz, field_ppm=hz_to_ppm(field_hz, b0).astype(np.float32), noise_sd_hz=_scatter(mask, sd_hz),
        phase0_rad=_scatter(mask, _wrap(phi0)), reliable=rel, te_s=tuple(float(t) for t in te), b0_tesla=b0,
        noise_sd=float(sigma), method=method,
    )


def fit_weighted_linear(
    phase: np.ndarray, magnitude: np.ndarray, mask: Optional[np.ndarray], te_s: Sequence[float], b0_tesla: float,
    intercept: bool = True, temporal_unwrapping: bool = False, noise_sd: float = 0.0, reliability_factor: float = 3.0,
) -> FieldMap:
    """Weighted linear least-squares fit of phase against echo time (Robinson et al., NMR Biomed 2017; the
    magnitude-weighted fit of MEDI, Liu et al., MRM 2013).

    ``phase`` (x,y,z,echo) is spatially unwrapped (whole-volume 2π offsets between echoes are removed) or, with
    ``temporal_unwrapping``, wrapped and unwrapped here along echoes (then fit with ``intercept``, which absorbs a
    wrapped first echo). Weights ``|S_n|²`` (inverse phase-noise variances) make it the maximum-likelihood fit;
    ``noise_sd_hz`` is its Cramér–Rao SD: ``σ/(2π)·sqrt(Σw/det)`` with intercept, ``σ/(2π·sqrt(Σ|S_n|²TE_n²))``
    without. ``noise_sd`` (σ, magnitude units; 0 = estimate) sets the noise level.
    """
    b0 = _check_b0(b0_tesla)
    ph, mag, m, te = _prepare(phase, magnitude, mask, te_s, "weighted linear field fit", 2 if intercept else 1)
    ph = _temporal_unwrap_rows(ph, te) if temporal_unwrapping else _align_echo_offsets(ph, te)
    w = mag * mag
    phi0, omega, var, chi = _wls(ph, w, te, intercept)
    # residual-based noise estimate and consistency check from the model with intercept (needs ≥ 3 echoes)
    if intercept and te.size >= 3:
        chi_s, dof_s = chi, te.size - 2
    elif te.size >= 3:
        chi_s, dof_s = _wls(ph, w, te, True)[3], te.size - 2
    else:
        chi_s, dof_s = None, 0
    sigma = _resolve_sigma(noise_sd, chi_s, dof_s, magnitude, m)
    return _field_map(m, omega, var, phi0, chi_s, dof_s, sigma, reliability_factor, te, b0, "weighted_linear")


def fit_nonlinear_complex(
    phase: np.ndarray, magnitude: np.ndarray, mask: Optional[np.ndarray], te_s: Sequence[float], b0_tesla: float,
    max_iterations: int = 10, noise_sd: float = 0.0, reliability_factor: float = 3.0,
) -> FieldMap:
    """Nonlinear fit of the complex signal ``|S_n|·exp(i(φ0 + ω·TE_n))`` by Gauss–Newton (as MEDI's complex field
    fit: Liu et al., "Morphology enabled dipole inversion ...", MRM 2013; Kressler et al., IEEE TMI 2010).

    Minimising ``Σ_n |S_n − |S_n|·exp(iθ_n)|²`` = ``2·Σ_n |S_n|²·(1 − cos(φ_n − θ_n))`` works on wrapped phase:
    each Gauss–Newton step is the weighted linear fit (weights ``|S_n|²``) of ``sin(φ_n − θ_n)``. Start: ω from
    the coil-free Hermitian product of consecutive echoes, φ0 from the ω-demodulated echo sum. Vectorised over
    voxels. The frequency is unambiguous within ±1/(2·ΔTE); larger offsets alias (spatial unwrapping of the field
    map, as in MEDI, resolves them). Noise SD: the Cramér–Rao bound of the two-parameter fit.
    """
    b0 = _check_b0(b0_tesla)
    if int(max_iterations) < 1:
        raise QSMInputError(f"max_iterations must be ≥ 1, got {max_iterations}")
    ph, mag, m, te = _prepare(phase, magnitude, mask, te_s, "nonlinear complex field fit", 2)
    s = mag * np.exp(1j * ph)
    if _equally_spaced(te):
        h = np.sum(s[:, 1:] * np.conj(s[:, :-1]), axis=1)
    else:
        h = s[:, 1] * np.conj(s[:, 0])
    omega = np.angle(h) / (te[1] - te[0])
    phi0 = np.angle(np.sum(mag * s * np.exp(-1j * omega[:, None] * te[None, :]), axis=1))
    del s
    w = mag * mag
    sw = w.sum(axis=1)
    st = w @ te
    stt = w @ (te * te)
    with np.errstate(divide="ignore", invalid="ignore"):
        det = sw * stt - st * st
        for _ in range(int(max_iterations)):
            e = np.sin(_wrap(ph - phi0[:, None] - omega[:, None] * te[None, :]))
            g0 = np.sum(w * e, axis=1)
            g1 = (w * e) @ te
            d_omega = (sw * g1 - st * g0) / det
            d_phi0 = (stt * g0 - st * g1) / det
            d_omega[~np.isfinite(d_omega)] = 0.0
            d_phi0[~np.isfinite(d_phi0)] = 0.0
            omega += d_omega
            phi0 += d_phi0
            if np.max(np.abs(d_omega)) * te[-1] < 1e-6:
                break
        var = sw / det
    r = _wrap(ph - phi0[:, None] - omega[:, None] * te[None, :])
    chi = np.sum(w * r * r, axis=1)
    dof = te.size - 2
    sigma = _resolve_sigma(noise_sd, chi, dof, magnitude, m)
    return _field_map(m, omega, var, phi0, chi, dof, sigma, reliability_factor, te, b0, "nonlinear_complex")


def _echo_average_rows(ph: np.ndarray, mag: np.ndarray, te: np.ndarray, weighting: str):
    if weighting not in ECHO_WEIGHTINGS:
        raise QSMInputError(f"weighting must be one of {list(ECHO_WEIGHTINGS)}, got {weighting!r}")
    u = (mag * te) ** 2 if weighting == "magnitude_te_squared" else mag * te
    su = u.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        omega = (u * ph) @ (1.0 / te) / su
        # var(φ_n/TE_n) = σ²/(|S_n|²·TE_n²)
        var = np.sum(u * u / (mag * mag * te * te), axis=1) / (su * su)
    return omega, var


def combine_phase_echoes(
    phase: np.ndarray, magnitude: np.ndarray, te_s: Sequence[float], mask: Optional[np.ndarray] = None,
    weighting: str = "magnitude_te_squared",
) -> np.ndarray:
    """Echo combination of unwrapped phase images: the weighted average of φ_n/TE_n, returned as frequency in Hz
    (x,y,z float32, 0 outside ``mask``). ``magnitude_te_squared`` weights by |S_n|²·TE_n² (inverse variances, the
    ML estimate for φ0 = 0; Robinson et al., NMR Biomed 2017); ``magnitude_te`` by |S_n|·TE_n (Wu et al.,
    NeuroImage 2012). Needs phase free of a TE-independent offset (e.g. ASPIRE-combined)."""
    ph, mag, m, te = _prepare(phase, magnitude, mask, te_s, "phase echo combination", 1)
    omega, _ = _echo_average_rows(_align_echo_offsets(ph, te), mag, te, weighting)
    omega[~np.isfinite(omega)] = 0.0
    return _scatter(m, omega / (2.0 * np.pi))


def fit_echo_average(
    phase: np.ndarray, magnitude: np.ndarray, mask: Optional[np.ndarray], te_s: Sequence[float], b0_tesla: float,
    weighting: str = "magnitude_te_squared", temporal_unwrapping: bool = False, noise_sd: float = 0.0,
    reliability_factor: float = 3.0,
) -> FieldMap:
    """Field map by the weighted echo average of :func:`combine_phase_echoes` (Wu et al., NeuroImage 2012;
    Robinson et al., NMR Biomed 2017), with its propagated noise SD ``σ/(2π)·sqrt(Σu_n²/(|S_n|²TE_n²))/Σu_n``."""
    b0 = _check_b0(b0_tesla)
    ph, mag, m, te = _prepare(phase, magnitude, mask, te_s, "echo-average field map", 1)
    ph = _temporal_unwrap_rows(ph, te) if temporal_unwrapping else _align_echo_offsets(ph, te)
    omega, var = _echo_average_rows(ph, mag, te, weighting)
    chi, dof = (_wls(ph, mag * mag, te, True)[3], te.size - 2) if te.size >= 3 else (None, 0)
    sigma = _resolve_sigma(noise_sd, chi, dof, magnitude, m)
    return _field_map(m, omega, var, np.zeros_like(omega), chi, dof, sigma, reliability_factor, te, b0,
                      "echo_average")


# ----------------------------------------------------------------------------------------------------------------
# R2* / T2*
# ----------------------------------------------------------------------------------------------------------------
def _check_r2_max(max_r2star_hz: float) -> float:
    if not np.isfinite(max_r2star_hz) or max_r2star_hz <= 0:
        raise QSMInputError(f"max_r2star_hz must be positive, got {max_r2star_hz!r}")
    return float(max_r2star_hz)


def r2star_loglinear(
    magnitude: np.ndarray, te_s: Sequence[float], mask: Optional[np.ndarray] = None, max_r2star_hz: float = 500.0
) -> np.ndarray:
    """R2* (Hz, x,y,z float32) by weighted least squares of ln|S_n| against TE, weights |S_n|² (the inverse
    variance of ln|S| at high SNR; Bevington & Robinson 2003, as used for R2* maps e.g. by Yablonskiy et al.,
    MRM 2013). Clipped to [0, max_r2star_hz]; 0 outside the mask."""
    rmax = _check_r2_max(max_r2star_hz)
    _, mag, m, te = _prepare(None, magnitude, mask, te_s, "log-linear R2* fit", 2, need_phase=False)
    tiny = np.finfo(np.float64).tiny
    y = np.log(np.maximum(mag, tiny))
    _, slope, _, _ = _wls(y, mag * mag, te, True)
    r2 = np.nan_to_num(-slope, nan=0.0, posinf=rmax, neginf=0.0)
    return _scatter(m, np.clip(r2, 0.0, rmax))


def r2star_arlo(
    magnitude: np.ndarray, te_s: Sequence[float], mask: Optional[np.ndarray] = None, max_r2star_hz: float = 500.0
) -> np.ndarray:
    """R2* by ARLO, auto-regression on linear operations (Pei et al., "Algorithm for fast monoexponential fitting
    based on Auto-Regression on Linear Operations (ARLO) of data", MRM 2015).

    For S(t) = S0·exp(−R2*·t), ``d_i = S_i − S_{i+2}`` equals R2* times the integral of S over [TE_i, TE_{i+2}],
    approximated by Simpson's rule ``s_i = ΔTE/3·(S_i + 4S_{i+1} + S_{i+2})``; R2* is the least-squares slope
    ``Σ s_i·d_i / Σ s_i²`` — closed form, no logarithm. Needs ≥ 3 equally spaced echoes.
    """
    rmax = _check_r2_max(max_r2star_hz)
    _, mag, m, te = _prepare(None, magnitude, mask, te_s, "ARLO R2* fit", 3, need_phase=False)
    if not _equally_spaced(te):
        raise QSMInputError(f"ARLO needs equally spaced echo times, got {te.tolist()}; use the log-linear fit")
    dte = float(np.mean(np.diff(te)))
    s = dte / 3.0 * (mag[:, :-2] + 4.0 * mag[:, 1:-1] + mag[:, 2:])
    d = mag[:, :-2] - mag[:, 2:]
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.sum(s * d, axis=1) / np.sum(s * s, axis=1)
    r2 = np.nan_to_num(r2, nan=0.0, posinf=rmax, neginf=0.0)
    return _scatter(m, np.clip(r2, 0.0, rmax))


def t2star_ms_from_r2star(r2star_hz: np.ndarray, max_t2star_ms: float = 1000.0) -> np.ndarray:
    """T2* in ms = 1000/R2* (float32), with R2* ≤ 0 giving ``max_t2star_ms``, R2* = inf giving 0, and the result
    clipped to [0, max_t2star_ms]; NaN stays NaN."""
    if not np.isfinite(max_t2star_ms) or max_t2star_ms <= 0:
        raise QSMInputError(f"max_t2star_ms must be positive, got {max_t2star_ms!r}")
    r = np.asarray(r2star_hz, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(r > 0, 1000.0 / r, np.where(np.isnan(r), np.nan, max_t2star_ms))
    return np.clip(t, 0.0, max_t2star_ms).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------------------------
_NOISE = Param("noise_sd", float, 0.0, "SD of the complex noise (real and imaginary parts, magnitude units); "
               "0 = estimate from the fit residuals", minimum=0.0)
_RELIABILITY = Param("reliability_factor", float, 3.0, "voxels whose noise SD or residual exceed this many times "
                     "the typical value are marked unreliable", minimum=1.0, maximum=100.0)
_TEMPORAL = Param("temporal_unwrapping", bool, False, "the input phase is wrapped: unwrap it along echoes here")

register_method("field_mapping", MethodSpec(
    key="weighted_linear", label="Weighted linear fit", reference="Robinson et al., NMR Biomed 2017",
    params=(Param("intercept", bool, True, "fit a phase offset φ0 at TE = 0"), _TEMPORAL, _NOISE, _RELIABILITY),
    func=fit_weighted_linear, help="Magnitude²-weighted least squares of phase vs TE, with its Cramér–Rao SD."))
register_method("field_mapping", MethodSpec(
    key="nonlinear_complex", label="Nonlinear complex fit", reference="Liu et al., MRM 2013",
    params=(Param("max_iterations", int, 10, "Gauss–Newton iterations", minimum=1, maximum=100), _NOISE,
            _RELIABILITY),
    func=fit_nonlinear_complex, help="Gauss–Newton fit on the complex signal; robust to phase wraps."))
register_method("field_mapping", MethodSpec(
    key="echo_average", label="Weighted echo average", reference="Wu et al., NeuroImage 2012",
    params=(Param("weighting", str, "magnitude_te_squared", "weights of φ_n/TE_n", choices=ECHO_WEIGHTINGS),
            _TEMPORAL, _NOISE, _RELIABILITY),
    func=fit_echo_average, help="Average of phase/TE weighted by magnitude and TE (phase without offset)."))

_R2MAX = Param("max_r2star_hz", float, 500.0, "upper clip of R2*", unit="Hz", minimum=1.0, maximum=10000.0)
register_method("r2star", MethodSpec(
    key="arlo", label="ARLO", reference="Pei et al., MRM 2015", params=(_R2MAX,), func=r2star_arlo,
    help="Auto-regression on linear operations; needs ≥ 3 equally spaced echoes."))
register_method("r2star", MethodSpec(
    key="loglinear", label="Log-linear weighted fit", reference="Pei et al., MRM 2015 (comparison baseline)",
    params=(_R2MAX,), func=r2star_loglinear, help="Weighted least squares of ln|S| vs TE."))


__all__ = ["FieldMap", "fit_weighted_linear", "fit_nonlinear_complex", "fit_echo_average", "combine_phase_echoes",
           "unwrap_echoes", "r2star_loglinear", "r2star_arlo", "t2star_ms_from_r2star", "ECHO_WEIGHTINGS"]
