"""Susceptibility-weighted imaging (stage ``swi``) and minimum-intensity projections.

Stage inputs: ``magnitude, phase, mask, voxel_size_mm, te_s, b0_direction`` (``phase`` wrapped, in radians, in the
internal convention, ``(x, y, z)`` or ``(x, y, z, echo)``), plus, for the variants, ``local_field_ppm``,
``chi_ppm`` and ``b0_tesla``. Every method returns an :class:`SWIResult`.

Methods
-------
``homodyne``   Classic SWI (Haacke et al., MRM 2004; Reichenbach et al., Radiology 1997): the complex image is
               high-pass filtered by dividing by a low-pass (Hann-windowed k-space) copy of itself, a phase mask is
               built on the paramagnetic side and ``SWI = |S| · f^n``.
``unwrapped``  SWI from an unwrapped, background-removed phase, as CLEAR-SWI (Eckstein et al., NeuroImage 2021):
               the local field (ppm) is turned into phase at an effective echo time instead of the homodyne filter,
               and the echoes' magnitudes are combined for SNR.
``swim``       Susceptibility-weighted imaging and mapping (SWIM; Liu, Haacke et al., 2014, e.g. Haacke et al.,
               JMRI 2015): the mask comes from the susceptibility map — χ above a threshold darkens — so the
               contrast no longer depends on the vessels' orientation to B0.

Phase-mask convention (docs/conventions.md): here a paramagnetic source gives *positive* phase, so the mask is
``f = (π − φ)/π`` for ``0 < φ ≤ π`` (0 beyond π) and 1 for ``φ ≤ 0``. In the convention of Haacke's paper and of
scanners whose paramagnetic phase is negative (the "seed" table: WM 0, GM −0.25π, small vein −0.5π, large vein −π
give 1, 0.32, 0.06, 0 for n = 4), the same mask is obtained by negating the phase first
(``phase_mask(−φ_seed)``); a wrong sign is visible as veins that stay bright while diamagnetic structures darken.

The minimum-intensity projection (mIP) is sliding: each output slice is the minimum over the slab of
``round(slab_mm / voxel size along the axis)`` slices centred on it, so the result keeps the input's shape and
geometry (same array shape, same affine). The projection direction is asked for in world terms, ``mip_direction``
= ``axial`` (along superior–inferior), ``coronal`` (anterior–posterior) or ``sagittal`` (left–right), the same
axes in RAS and LPS; :func:`mip_projection_axis` turns it into the array axis closest to it from the volume's
affine (:func:`axis_closest_to`), so sagittal, coronal and oblique acquisitions project along the right anatomical
axis. Without an affine an axial mIP follows the B0 direction (superior for a head-first scan); ``mip_axis`` 0–2
forces an array axis. The default slab is 16 mm (clinical SWI mIPs are 8–16 mm thick); 0 turns the mIP off.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import numpy as np
import scipy.fft as sfft
from numba import njit, prange

from .constants import GAMMA_BAR_HZ_PER_T
from .dipole import FFT_WORKERS
from .errors import QSMInputError
from .geometry import check_affine, check_voxel_size, direction_matrix_from_affine, voxel_size_from_affine
from .params import MethodSpec, Param, register_method


@dataclass
class SWIResult:
    """SWI output: the SWI volume, the (high-passed or local) phase in radians that built the mask (whole field of
    view; ``None`` for SWIM), the phase mask ``f`` (before the power; 1 outside the mask), the sliding mIP of
    ``swi`` (``None`` when the slab is 0) and ``info`` (method settings; for the mIP its direction, array axis and
    how it was found, the axis' angle to the world direction, slices and actual slab in mm)."""

    swi: np.ndarray
    filtered_phase: Optional[np.ndarray]
    phase_mask: np.ndarray
    mip: Optional[np.ndarray]
    info: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- compiled kernels


@njit(cache=True)
def _stats(flat):  # pragma: no cover - compiled
    """(number of NaN/Inf, min, max of the finite values) in one pass."""
    nbad = 0
    lo = np.inf
    hi = -np.inf
    for x in flat:
        if not np.isfinite(x):
            nbad += 1
        else:
            lo = min(lo, x)
            hi = max(hi, x)
    return nbad, lo, hi


@njit(cache=True, parallel=True)
def _phase_mask_kernel(fp, scale, fo):  # pragma: no cover - compiled
    for i in prange(fo.size):
        x = fp[i]
        fo[i] = 1.0 if x <= 0 else max(0.0, 1.0 - x / scale)


@njit(cache=True, parallel=True)
def _to_complex(fm, fp, fo):  # pragma: no cover - compiled
    for i in prange(fo.size):
        fo[i] = fm[i] * np.complex64(complex(np.cos(fp[i]), np.sin(fp[i])))


@njit(cache=True, parallel=True)
def _homodyne_angle(fs, fl, fo):  # pragma: no cover - compiled
    for i in prange(fo.size):
        z = fs[i] * np.conj(fl[i])
        fo[i] = np.arctan2(z.imag, z.real)


@njit(cache=True, parallel=True)
def _apply_mask(fm, ff, fk, power, fw):  # pragma: no cover - compiled
    for i in prange(fw.size):
        if not fk[i]:
            ff[i] = 1.0
        fw[i] = fm[i] * ff[i] ** power


@njit(cache=True, parallel=True)
def _combine(flat, w, fo):  # pragma: no cover - compiled
    """fo = Σ w_e·m_e² / sqrt(Σ (w_e·m_e)²) per voxel (w = 1: root-sum-of-squares); flat is (voxels, echo)."""
    n_e = flat.shape[1]
    for i in prange(fo.size):
        num = 0.0
        den = 0.0
        for e in range(n_e):
            m = np.float64(flat[i, e])
            num += w[e] * m * m
            den += (w[e] * m) ** 2
        fo[i] = num / np.sqrt(den) if den > 0 else 0.0


@njit(cache=True, parallel=True)
def _sliding_min_last(v, lo, hi, out):  # pragma: no cover - compiled
    """Minimum over the window [k − lo, k + hi] (clipped) along the last axis of a 2D (lines × n) array."""
    n_lines, n = v.shape
    for j in prange(n_lines):
        for k in range(n):
            a = max(0, k - lo)
            b = min(n - 1, k + hi)
            m = v[j, a]
            for q in range(a + 1, b + 1):
                if v[j, q] < m:
                    m = v[j, q]
            out[j, k] = m


# ----------------------------------------------------------------------------------------------- building blocks


def phase_mask(phase_rad: np.ndarray, scale_rad: float = np.pi) -> np.ndarray:
    """Paramagnetic phase mask (internal convention, paramagnetic = positive phase; Haacke et al., MRM 2004).

    ``f = 1 − φ/scale_rad`` for ``φ > 0`` clipped at 0, and 1 for ``φ ≤ 0``; ``scale_rad = π`` is Haacke's
    ``(π − φ)/π``. Apply ``f**n`` for the power ``n``.
    """
    p = np.ascontiguousarray(phase_rad, dtype=np.float32)
    out = np.empty(p.shape, np.float32)
    _phase_mask_kernel(p.reshape(-1), np.float32(scale_rad), out.reshape(-1))
    return out


def hann_lowpass(signal: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """Low-pass a complex 3D image with a separable Hann window of ``window[a]`` k-space samples along axis ``a``
    (0 leaves that axis unfiltered, which makes the filter 2D in-plane)."""
    s = np.asarray(signal, dtype=np.complex64)
    axes = [a for a in range(3) if window[a] > 0]
    spec = sfft.fftn(s, axes=axes, workers=FFT_WORKERS)
    for a in axes:
        n = s.shape[a]
        w = int(min(window[a], n))
        k = np.fft.fftfreq(n) * n  # integer k index, centred on 0
        h = np.where(np.abs(k) < w / 2.0, 0.5 * (1.0 + np.cos(2.0 * np.pi * k / w)), 0.0).astype(np.float32)
        sh = [1, 1, 1]
        sh[a] = n
        spec *= h.reshape(sh)
    return sfft.ifftn(spec, axes=axes, workers=FFT_WORKERS, overwrite_x=True).astype(np.complex64, copy=False)


def homodyne_phase(signal: np.ndarray, window: Sequence[int]) -> np.ndarray:
    """High-pass phase ``arg(S · conj(LP(S)))`` of a complex 3D image (homodyne filter, Noll et al., IEEE TMI 1991;
    Haacke et al., MRM 2004), in radians."""
    sig = np.ascontiguousarray(signal, dtype=np.complex64)
    lp = hann_lowpass(sig, window)
    out = np.empty(sig.shape, np.float32)
    _homodyne_angle(sig.reshape(-1), np.ascontiguousarray(lp).reshape(-1), out.reshape(-1))
    return out


def filter_window(shape: Sequence[int], voxel_size_mm: Sequence[float], filter_size: float, filter_unit: str,
                  filter_dims: str, slice_axis: int) -> tuple:
    """k-space window widths (samples per axis; 0 = axis not filtered) from the user's filter size.

    ``filter_unit = "voxels"``: ``filter_size`` central k-space samples (Haacke's 32 or 64). ``"mm"``: the low-pass
    image's resolution in mm, i.e. ``FOV_a / filter_size`` samples along each axis. ``filter_dims = "2d"`` leaves
    ``slice_axis`` unfiltered.
    """
    vox = check_voxel_size(voxel_size_mm)
    out = []
    for a, n in enumerate(shape):
        if filter_dims == "2d" and a == slice_axis:
            out.append(0)
            continue
        w = filter_size if filter_unit == "voxels" else n * vox[a] / filter_size
        out.append(max(2, int(round(w))))
    return tuple(out)


def axis_closest_to(affine: np.ndarray, world_direction: Sequence[float] = (0.0, 0.0, 1.0)) -> int:
    """The array axis whose world direction is closest (by |cos|) to ``world_direction`` (superior by default,
    +z in RAS and LPS alike)."""
    r = direction_matrix_from_affine(affine)
    d = np.asarray(world_direction, dtype=np.float64)
    nrm = float(np.linalg.norm(d))
    if d.shape != (3,) or not np.isfinite(nrm) or nrm == 0:
        raise QSMInputError(f"world_direction must be a non-zero 3-vector, got {world_direction!r}")
    return int(np.argmax(np.abs(r.T @ (d / nrm))))


def slab_slices(slab_mm: float, voxel_size_mm: Sequence[float], axis: int) -> int:
    """Number of slices in a slab of ``slab_mm``: ``round(slab_mm / voxel size along axis)``, at least 1."""
    vox = check_voxel_size(voxel_size_mm)
    if not 0 <= axis < 3:
        raise QSMInputError(f"mIP axis must be 0, 1 or 2, got {axis}")
    if not np.isfinite(slab_mm) or slab_mm <= 0:
        raise QSMInputError(f"mIP slab thickness must be positive mm, got {slab_mm!r}")
    return max(1, int(round(slab_mm / vox[axis])))


def minimum_intensity_projection(volume: np.ndarray, slab_mm: float, axis: int,
                                 voxel_size_mm: Sequence[float], extra_slice_before: bool = True) -> np.ndarray:
    """Sliding mIP: each slice along ``axis`` becomes the minimum over the slab of
    :func:`slab_slices` slices centred on it (clipped at the volume ends). Same shape, hence same geometry.

    An even slab cannot be centred on a slice: its extra slice lies before (lower index) when
    ``extra_slice_before``, else after. The stage sets it so that the extra slice is on the world-negative side
    (inferior for an axial mIP) whichever way the array axis runs, so the mIP does not depend on the array order.
    """
    v = np.asarray(volume)
    if v.ndim != 3:
        raise QSMInputError(f"mIP needs a 3D volume, got shape {v.shape}")
    n = slab_slices(slab_mm, voxel_size_mm, axis)
    if n == 1:
        return v.copy()
    # window of n slices centred on each slice (for even n, one more slice on one side)
    before = n // 2 if extra_slice_before else (n - 1) // 2
    lines = np.ascontiguousarray(np.moveaxis(v, axis, -1))
    shp = lines.shape
    lines = lines.reshape(-1, shp[-1])
    out = np.empty_like(lines)
    _sliding_min_last(lines, before, n - 1 - before, out)
    return np.ascontiguousarray(np.moveaxis(out.reshape(shp), -1, axis))


# ----------------------------------------------------------------------------------------------- input handling


def _check_3d(name: str, a: Any, shape: Optional[tuple] = None, allow_echo: bool = True,
              lower: Optional[float] = None, upper: Optional[float] = None) -> np.ndarray:
    """Shape check, then one pass for NaN/Inf and the range [lower, upper] (each optional); returns float32."""
    if a is None:
        raise QSMInputError(f"{name} is missing")
    arr = np.asarray(a)
    if arr.ndim not in ((3, 4) if allow_echo else (3,)):
        raise QSMInputError(f"{name} must be (x, y, z){' or (x, y, z, echo)' if allow_echo else ''}, "
                            f"got shape {arr.shape}")
    if shape is not None and arr.shape[:3] != shape:
        raise QSMInputError(f"{name} shape {arr.shape} does not match {shape}")
    if np.iscomplexobj(arr):
        raise QSMInputError(f"{name} is complex; give a real array")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    nbad, lo, hi = _stats(arr.ravel())
    if nbad:
        raise QSMInputError(f"{name} contains {nbad} NaN/Inf voxel(s)")
    if lower is not None and lo < lower:
        raise QSMInputError(f"{name} has values down to {lo:.4g}, below {lower:.4g}"
                            + (": is it a phase image?" if lower == 0 else ""))
    if upper is not None and hi > upper:
        raise QSMInputError(f"{name} has values up to {hi:.4g}, above {upper:.4g}")
    return arr


def _masked_map(name: str, a: Any, shape: tuple, mask: np.ndarray) -> np.ndarray:
    """A 3D map matching ``shape``; NaN/Inf inside ``mask`` is an error, outside it is set to 0."""
    if a is None:
        raise QSMInputError(f"{name} is missing")
    arr = np.asarray(a)
    if arr.shape != shape:
        raise QSMInputError(f"{name} must be 3D with shape {shape}, got {arr.shape}")
    bad = mask & ~np.isfinite(arr)
    if bad.any():
        raise QSMInputError(f"{name} contains {int(bad.sum())} NaN/Inf voxel(s) inside the mask")
    return np.where(mask, np.nan_to_num(arr), 0).astype(np.float32)


def _prepare(magnitude: Any, mask: Any) -> tuple:
    mag = _check_3d("magnitude (|S|, not negative)", magnitude, lower=0.0)
    shape = mag.shape[:3]
    if mask is None:
        m = np.ones(shape, dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != shape:
            raise QSMInputError(f"mask shape {m.shape} does not match {shape}")
        m = np.ascontiguousarray(m, dtype=bool)
    if not m.any():
        raise QSMInputError("mask is empty")
    return mag, shape, m


def _echo_times(te_s: Any, n_echo: int) -> np.ndarray:
    if te_s is None:
        raise QSMInputError("te_s (echo times in seconds) is missing")
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
    if te.size != n_echo or not np.all(np.isfinite(te)) or np.any(te <= 0) or np.any(te > 1.0):
        raise QSMInputError(f"te_s must hold {n_echo} positive echo time(s) in seconds, got {te.tolist()}")
    return te


#: World direction (RAS or LPS: the same axes) along which each named mIP projects.
MIP_DIRECTIONS = {"axial": (0.0, 0.0, 1.0), "coronal": (0.0, 1.0, 0.0), "sagittal": (1.0, 0.0, 0.0)}
#: Default sliding-mIP slab (mm): clinical SWI mIPs are 8–16 mm thick; the Slicer modules use the same.
DEFAULT_MIP_SLAB_MM = 16.0


def mip_projection_axis(affine: Optional[np.ndarray] = None, b0_direction: Optional[Sequence[float]] = None,
                        direction: str = "axial", mip_axis: int = -1,
                        voxel_size_mm: Optional[Sequence[float]] = None) -> Dict[str, Any]:
    """The array axis a mIP in world ``direction`` (``axial``, ``coronal``, ``sagittal``) projects along.

    With ``affine`` (index → RAS/LPS mm): the array axis closest to the world direction (:func:`axis_closest_to`);
    ``voxel_size_mm``, when given, must agree with the affine's column norms (a header that disagrees with the data
    is an error, not a silent choice). Without an affine, ``axial`` follows ``b0_direction`` (superior for a
    head-first scan, docs/conventions.md) and, with neither, array axis 2 (recorded as an assumption); ``coronal`` and
    ``sagittal`` need the affine. ``mip_axis`` 0–2 forces that array axis. Returns ``{"axis", "source",
    "angle_deg", "sign"}``: ``angle_deg`` the angle between the chosen axis and the world direction (None when
    unknown), ``sign`` +1 when the array index runs toward the world +direction (superior for axial), −1 when
    against it (where it is unknown, +1).
    """
    if direction not in MIP_DIRECTIONS:
        raise QSMInputError(f"mIP direction {direction!r} is not one of {', '.join(MIP_DIRECTIONS)}")
    world = np.asarray(MIP_DIRECTIONS[direction])
    r = None
    if affine is not None:
        a = check_affine(affine)
        if voxel_size_mm is not None:
            vox = check_voxel_size(voxel_size_mm)
            hdr = np.asarray(voxel_size_from_affine(a))
            if not np.allclose(vox, hdr, rtol=1e-3, atol=1e-4):
                raise QSMInputError(f"voxel_size_mm {tuple(vox.tolist())} disagrees with the affine's voxel size "
                                    f"{tuple(np.round(hdr, 4).tolist())}: the geometry is inconsistent")
        r = direction_matrix_from_affine(a)
    if mip_axis not in (-1, 0, 1, 2):
        raise QSMInputError(f"mip_axis must be -1 (from the direction), 0, 1 or 2, got {mip_axis}")
    if mip_axis >= 0:
        ax, source = int(mip_axis), "mip_axis parameter"
    elif r is not None:
        ax, source = axis_closest_to(affine, world), f"affine ({direction})"
    elif direction != "axial":
        raise QSMInputError(f"a {direction} mIP needs the volume's affine to find that world axis in the array")
    elif b0_direction is not None:
        b = np.asarray(b0_direction, dtype=np.float64)
        ax, source = int(np.argmax(np.abs(b))), "b0_direction (no affine; B0 taken as superior)"
    else:
        ax, source = 2, "assumed array axis 2 (no affine, no B0 direction)"
    angle, sign = None, 1
    if r is not None:
        c = float(r[:, ax] @ world)
        angle, sign = float(np.degrees(np.arccos(min(1.0, abs(c))))), (1 if c >= 0 else -1)
    elif direction == "axial" and b0_direction is not None:
        sign = 1 if float(np.asarray(b0_direction, dtype=np.float64)[ax]) >= 0 else -1
    return {"axis": ax, "source": source, "angle_deg": angle, "sign": sign}


def _finish(method: str, mag: np.ndarray, f: np.ndarray, phase: Optional[np.ndarray], power: int,
            mask: np.ndarray, voxel_size_mm: Sequence[float], mip_slab_mm: float, mip_axis: int,
            b0_direction: Optional[Sequence[float]], info: Dict[str, Any], affine: Optional[np.ndarray] = None,
            mip_direction: str = "axial") -> SWIResult:
    mip_info: Dict[str, Any] = {}
    if mip_slab_mm > 0:
        sel = mip_projection_axis(affine, b0_direction, mip_direction, mip_axis, voxel_size_mm)
        ax = sel["axis"]
        n = slab_slices(mip_slab_mm, voxel_size_mm, ax)
        # an even slab's extra slice goes to the world-negative side (lower index when the axis runs toward +)
        mip_info = dict(mip_direction=mip_direction, mip_axis=ax, mip_axis_source=sel["source"],
                        mip_axis_angle_deg=sel["angle_deg"], mip_slices=n, mip_slab_mm=mip_slab_mm,
                        mip_slab_mm_actual=float(n * check_voxel_size(voxel_size_mm)[ax]),
                        mip_extra_slice_before=bool(sel["sign"] > 0))
    f = np.ascontiguousarray(f, dtype=np.float32)
    swi = np.empty(f.shape, np.float32)
    _apply_mask(np.ascontiguousarray(mag, dtype=np.float32).reshape(-1), f.reshape(-1),
                np.ascontiguousarray(mask).reshape(-1), power, swi.reshape(-1))
    mip = None
    info = dict(info, method=method, power=power, **mip_info)
    if mip_info:
        mip = minimum_intensity_projection(swi, mip_slab_mm, mip_info["mip_axis"], voxel_size_mm,
                                           mip_info["mip_extra_slice_before"])
    return SWIResult(swi=swi, filtered_phase=phase, phase_mask=f, mip=mip, info=info)


def combine_magnitude(magnitude: np.ndarray, te_s: Optional[Sequence[float]], how: str) -> np.ndarray:
    """Combine echo magnitudes ``(x, y, z, echo)``: ``"rss"`` root-sum-of-squares (the SNR-optimal combination for
    equal noise), ``"snr_weighted"`` ``Σ w·m / sqrt(Σ w²)`` with ``w = m·TE`` (favours the T2*-weighted late
    echoes whose venous contrast grows with TE, as CLEAR-SWI's weighting; Eckstein et al., NeuroImage 2021),
    ``"last"`` the last echo. A 3D input is returned as is."""
    m = np.asarray(magnitude, dtype=np.float32)
    if m.ndim == 3:
        return m
    if how == "last":
        return m[..., -1].copy()
    if how in ("rss", "snr_weighted"):
        w = np.ones(m.shape[3]) if how == "rss" else _echo_times(te_s, m.shape[3])
        out = np.empty(m.shape[:3], np.float32)
        _combine(np.ascontiguousarray(m).reshape(-1, m.shape[3]), w.astype(np.float64), out.reshape(-1))
        return out
    raise QSMInputError(f"magnitude combination {how!r} is not one of rss, snr_weighted, last")


# ----------------------------------------------------------------------------------------------- methods


def swi_homodyne(magnitude: np.ndarray, phase: np.ndarray, voxel_size_mm: Sequence[float],
                 mask: Optional[np.ndarray] = None, te_s: Optional[Sequence[float]] = None,
                 b0_direction: Optional[Sequence[float]] = None, filter_size: float = 4.0,
                 filter_unit: str = "mm", filter_dims: str = "2d", slice_axis: int = 2, power: int = 4,
                 echo_index: int = -1, mip_slab_mm: float = DEFAULT_MIP_SLAB_MM, mip_direction: str = "axial",
                 mip_axis: int = -1, affine: Optional[np.ndarray] = None) -> SWIResult:
    """Classic SWI (Haacke et al., MRM 2004).

    Uses echo ``echo_index`` of multi-echo input (the last by default). The complex image ``|S|·e^{iφ}`` is
    divided by its Hann low-pass copy (``filter_size`` in k-space samples or as a resolution in mm, 2D in the
    planes normal to ``slice_axis`` or 3D); the high-passed phase gives the paramagnetic mask ``f`` (positive phase
    darkens, see the module doc), ``SWI = |S|·f^power`` inside ``mask`` (``|S|`` elsewhere). ``mip_slab_mm > 0``
    adds a sliding mIP in world ``mip_direction``, along the array axis :func:`mip_projection_axis` picks from
    ``affine`` (or ``mip_axis`` 0–2).
    """
    ph_in, mag_in = np.asarray(phase), np.asarray(magnitude)
    if ph_in.shape != mag_in.shape:
        raise QSMInputError(f"phase shape {ph_in.shape} does not match magnitude shape {mag_in.shape}")
    info: Dict[str, Any] = {}
    if ph_in.ndim == 4:  # only the chosen echo is checked and used
        if not -ph_in.shape[3] <= echo_index < ph_in.shape[3]:
            raise QSMInputError(f"echo_index {echo_index} is out of range for {ph_in.shape[3]} echoes")
        if te_s is not None:
            info["te_s"] = float(_echo_times(te_s, ph_in.shape[3])[echo_index])
        ph_in, mag_in = ph_in[..., echo_index], mag_in[..., echo_index]
    mag, shape, m = _prepare(mag_in, mask)
    ph = _check_3d("phase (wrapped, radians)", ph_in, shape, lower=-np.pi - 1e-3, upper=np.pi + 1e-3)
    if not 0 <= slice_axis < 3:
        raise QSMInputError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    win = filter_window(shape, voxel_size_mm, filter_size, filter_unit, filter_dims, slice_axis)
    sig = np.empty(shape, np.complex64)
    _to_complex(np.ascontiguousarray(mag, dtype=np.float32).reshape(-1),
                np.ascontiguousarray(ph, dtype=np.float32).reshape(-1), sig.reshape(-1))
    hp = homodyne_phase(sig, win)
    info.update(filter_window_samples=win, filter_dims=filter_dims)
    return _finish("homodyne", mag, phase_mask(hp), hp, power, m, voxel_size_mm, mip_slab_mm, mip_axis,
                   b0_direction, info, affine, mip_direction)


def swi_unwrapped(magnitude: np.ndarray, local_field_ppm: np.ndarray, voxel_size_mm: Sequence[float],
                  mask: Optional[np.ndarray] = None, te_s: Optional[Sequence[float]] = None,
                  b0_tesla: Optional[float] = None, b0_direction: Optional[Sequence[float]] = None,
                  effective_te_s: float = 0.0, phase_scale_rad: float = np.pi, power: int = 4,
                  magnitude_combination: str = "snr_weighted", mip_slab_mm: float = DEFAULT_MIP_SLAB_MM,
                  mip_direction: str = "axial", mip_axis: int = -1,
                  affine: Optional[np.ndarray] = None) -> SWIResult:
    """SWI from the unwrapped local field (as CLEAR-SWI, Eckstein et al., NeuroImage 2021).

    The background-removed local field ``local_field_ppm`` becomes phase at ``effective_te_s`` (0: the last echo
    time), ``φ = 2π·γ̄·B0·TE·δ``, free of wraps and of the homodyne filter's blurring; the mask is
    ``1 − φ/phase_scale_rad`` on the paramagnetic side; the echo magnitudes are combined by
    ``magnitude_combination`` (see :func:`combine_magnitude`). Needs ``b0_tesla``. The mIP as in
    :func:`swi_homodyne`.
    """
    mag, shape, m = _prepare(magnitude, mask)
    loc = _masked_map("local_field_ppm", local_field_ppm, shape, m)
    if b0_tesla is None or not np.isfinite(b0_tesla) or b0_tesla <= 0:
        raise QSMInputError(f"unwrapped SWI needs b0_tesla > 0 to turn ppm into phase, got {b0_tesla!r}")
    n_echo = mag.shape[3] if mag.ndim == 4 else 1
    if effective_te_s > 0:
        te_eff = float(effective_te_s)
    else:
        te_eff = float(_echo_times(te_s, n_echo)[-1])
    phase = (loc.astype(np.float64) * 1e-6 * GAMMA_BAR_HZ_PER_T * float(b0_tesla) * 2 * np.pi * te_eff
             ).astype(np.float32)
    comb = combine_magnitude(mag, te_s, magnitude_combination)
    info = {"effective_te_s": te_eff, "magnitude_combination": magnitude_combination}
    return _finish("unwrapped", comb, phase_mask(phase, phase_scale_rad), phase, power, m, voxel_size_mm,
                   mip_slab_mm, mip_axis, b0_direction, info, affine, mip_direction)


def swim(magnitude: np.ndarray, chi_ppm: np.ndarray, voxel_size_mm: Sequence[float],
         mask: Optional[np.ndarray] = None, te_s: Optional[Sequence[float]] = None,
         b0_direction: Optional[Sequence[float]] = None, chi_threshold_ppm: float = 0.0,
         chi_max_ppm: float = 0.4, power: int = 4, magnitude_combination: str = "snr_weighted",
         mip_slab_mm: float = DEFAULT_MIP_SLAB_MM, mip_direction: str = "axial", mip_axis: int = -1,
         affine: Optional[np.ndarray] = None) -> SWIResult:
    """SWIM, susceptibility-weighted imaging from the QSM map (Liu, Haacke et al., 2014).

    ``f = 1 − (χ − chi_threshold_ppm)/(chi_max_ppm − chi_threshold_ppm)`` for χ above the threshold, clipped to
    [0, 1], 1 elsewhere; ``SWI = |S|·f^power``. χ does not depend on the vessel's angle to B0, so neither does
    the darkening. ``filtered_phase`` is ``None``. The mIP as in :func:`swi_homodyne`.
    """
    mag, shape, m = _prepare(magnitude, mask)
    chi = _masked_map("chi_ppm", chi_ppm, shape, m)
    if chi_max_ppm <= chi_threshold_ppm:
        raise QSMInputError(f"chi_max_ppm ({chi_max_ppm}) must exceed chi_threshold_ppm ({chi_threshold_ppm})")
    f = np.clip(1.0 - (chi.astype(np.float32) - np.float32(chi_threshold_ppm))
                / np.float32(chi_max_ppm - chi_threshold_ppm), 0.0, 1.0).astype(np.float32)
    comb = combine_magnitude(mag, te_s, magnitude_combination)
    info = {"chi_threshold_ppm": chi_threshold_ppm, "chi_max_ppm": chi_max_ppm,
            "magnitude_combination": magnitude_combination}
    return _finish("swim", comb, f, None, power, m, voxel_size_mm, mip_slab_mm, mip_axis, b0_direction, info,
                   affine, mip_direction)


# ----------------------------------------------------------------------------------------------- registry

_POWER = Param("power", int, 4, "phase-mask power n", minimum=1, maximum=10)
_MIP = (Param("mip_slab_mm", float, DEFAULT_MIP_SLAB_MM, "sliding mIP slab thickness (0: no mIP)", unit="mm",
              minimum=0.0, maximum=200.0),
        Param("mip_direction", str, "axial", "mIP projection direction in world (patient) terms; the array axis "
              "closest to it is found from the affine", choices=tuple(MIP_DIRECTIONS)),
        Param("mip_axis", int, -1, "force the mIP's array axis (-1: from mip_direction)", choices=(-1, 0, 1, 2)))
_COMB = Param("magnitude_combination", str, "snr_weighted", "echo magnitude combination",
              choices=("rss", "snr_weighted", "last"))

register_method("swi", MethodSpec(
    key="homodyne", label="SWI (homodyne, Haacke)", reference="Haacke et al., MRM 2004", func=swi_homodyne,
    params=(Param("filter_size", float, 4.0, "homodyne low-pass size (k-space samples, or resolution in mm)",
                  minimum=2.0, maximum=512.0),
            Param("filter_unit", str, "mm", "unit of filter_size", choices=("voxels", "mm")),
            Param("filter_dims", str, "2d", "2D in-plane or 3D Hann window", choices=("2d", "3d")),
            Param("slice_axis", int, 2, "array axis normal to the 2D filter planes", choices=(0, 1, 2)),
            _POWER,
            Param("echo_index", int, -1, "echo used from multi-echo data (-1: last)", minimum=-64, maximum=63),
            ) + _MIP))
register_method("swi", MethodSpec(
    key="unwrapped", label="SWI from the local field (CLEAR-SWI-like)", reference="Eckstein et al., NeuroImage 2021",
    func=swi_unwrapped,
    params=(Param("effective_te_s", float, 0.0, "echo time for ppm → phase (0: last echo)", unit="s",
                  minimum=0.0, maximum=1.0),
            Param("phase_scale_rad", float, float(np.pi), "phase giving f = 0", unit="rad", minimum=0.01,
                  maximum=100.0),
            _POWER, _COMB) + _MIP))
register_method("swi", MethodSpec(
    key="swim", label="SWIM (QSM-weighted)", reference="Liu, Haacke et al., 2014 (SWIM)", func=swim,
    params=(Param("chi_threshold_ppm", float, 0.0, "χ above which voxels darken", unit="ppm", minimum=-2.0,
                  maximum=2.0),
            Param("chi_max_ppm", float, 0.4, "χ giving f = 0", unit="ppm", minimum=-2.0, maximum=5.0),
            _POWER, _COMB) + _MIP))

__all__ = ["DEFAULT_MIP_SLAB_MM", "MIP_DIRECTIONS", "SWIResult", "phase_mask", "hann_lowpass", "homodyne_phase",
           "filter_window", "axis_closest_to", "mip_projection_axis", "slab_slices", "minimum_intensity_projection",
           "combine_magnitude", "swi_homodyne", "swi_unwrapped", "swim"]
