"""Susceptibility source separation (stage ``source_separation``): paramagnetic χ⁺ and diamagnetic χ⁻ maps.

Iron (paramagnetic) and myelin or calcium (diamagnetic) cancel in a voxel's net susceptibility but add up in its
reversible transverse relaxation. χ-separation (Shin et al., "χ-separation: magnetic susceptibility source
separation toward iron and myelin mapping in the brain", NeuroImage 240 (2021) 118371) models a voxel by

* the field:   δ_local = D ∗ (χ⁺ + χ⁻), so the dipole inversion's net χ = χ⁺ + χ⁻;
* the decay:   R2' = R2* − R2 = Dr·(χ⁺ − χ⁻) = Dr·(χ⁺ + |χ⁻|),

with χ⁺ ≥ 0, χ⁻ ≤ 0 and Dr the relaxometric constant (Hz/ppm). In the static dephasing regime (Yablonskiy &
Haacke, Magn Reson Med 32 (1994) 749–763) R2' grows with γ·B0·|Δχ|, so Dr is proportional to B0; its published value
at 3 T is Dr = 137 Hz/ppm (Shin et al. 2021), the default here, scaled by B0/3 T at other fields (the χ-sepnet
networks' training code uses 114 Hz/ppm; Dr is a parameter, not a constant of nature).

In the two-step methods the field equation is solved by the pipeline's dipole inversion (its net χ, with the
reference it states, is the input) and the decay equation gives the absolute susceptibility a = R2'/Dr voxel by
voxel. The two equations, weighted equally in ppm, are then solved for each voxel under Shin's sign constraints:

    minimise (χ⁺ + χ⁻ − χ)² + (χ⁺ − χ⁻ − a)²   subject to χ⁺ ≥ 0, χ⁻ ≤ 0.

The map (χ, a) → (χ⁺, χ⁻) is a scaled rotation, so the constrained minimum is the unconstrained one,
χ± = (χ ± a)/2, with each part clipped at zero; voxels where a clip was needed (|χ| > a: the data do not fit the
model, e.g. resolved veins or haemorrhage, or noise) are counted. This two-step form has Shin et al.'s model and
constraints, and its spatial regularisation is that of the chosen dipole inversion; Shin et al. solve both equations
in one regularised inversion, which the ``joint`` method does.

Methods:

* ``joint`` — both equations in one regularised inversion of the local field and R2' (:func:`chi_separation_joint`),
  the form of Shin et al.; needs the same R2 map and no χ reference.
* ``r2prime`` — R2' = R2* − R2 with R2 from a user map (spin-echo or mapped R2, or T2 converted by
  :func:`r2_from_t2`), on the data's grid (:func:`resample_to_grid` brings a map with its own geometry there).
  Voxels where R2 exceeds R2* by more than ``r2_tolerance_hz`` are impossible (R2' < 0) and are left out of the
  separation mask and counted; smaller excesses (noise) give R2' = 0.
* ``r2star_only`` — no R2 map: R2 is assumed uniform, ``r2_assumed_hz`` in every voxel (brain parenchyma has
  T2 ≈ 70–110 ms at 3 T, R2 ≈ 9–15 Hz, a spread far smaller than that of R2*), so R2' = R2* − R2_assumed. It is
  the simplest stated assumption; other gradient-echo-only separations model the decay differently (Dimov et al.,
  Tomography 8 (2022) 1544–1551; Li et al., NeuroImage 2023). Each Hz of R2 error moves χ⁺ and |χ⁻| by 1/(2·Dr)
  ppm (0.0036 ppm at 3 T), in the same direction. Voxels where R2* is below the assumed R2 (CSF) get R2' = 0 and
  are counted.

χ⁻ is reported as its magnitude: ``chi_dia_ppm`` = |χ⁻| ≥ 0, so the net susceptibility the sources give is
``chi_para_ppm − chi_dia_ppm`` (``chi_sum_ppm``), compared with the input χ in the info (it differs only where a
part was clipped). In the two-step methods both parts are relative to the input χ's reference: use a CSF reference,
where the sources are absent (a whole-brain-mean reference moves both parts by half its offset).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from .errors import QSMCancelled, QSMInputError
from .params import MethodSpec, Param, register_method

#: Relaxometric constant Dr at 3 T (Hz/ppm) of χ-separation, R2' = Dr·(χ⁺ + |χ⁻|) (Shin et al., NeuroImage 240
#: (2021) 118371): the stage's default and the phantom's truth.
DR_3T_HZ_PER_PPM = 137.0

#: Field strength at which ``dr_3t_hz_per_ppm`` holds; Dr scales with B0 (static dephasing regime).
DR_REFERENCE_B0_TESLA = 3.0
#: Uniform R2 (Hz) the R2*-only variant assumes by default: T2 ≈ 77 ms, within the 70–110 ms of brain parenchyma at
#: 3 T (e.g. Wansapura et al., J Magn Reson Imaging 9 (1999) 531–538).
R2_ASSUMED_HZ = 13.0
#: When R2 exceeds R2* in more than this fraction of the mask, the R2 map is almost surely wrong (T2 given for R2,
#: milliseconds for seconds, another subject or grid): refuse rather than mask most of the brain.
MAX_IMPOSSIBLE_FRACTION = 0.5


@dataclass
class SourceSeparation:
    """χ⁺ (``chi_para_ppm`` ≥ 0), |χ⁻| (``chi_dia_ppm`` ≥ 0), their net ``chi_sum_ppm`` = χ⁺ − |χ⁻|, the R2' used
    (Hz) and the voxels separated (``mask``); all float32/bool, 0 outside the mask. ``info``: Dr, counts, residuals."""

    chi_para_ppm: np.ndarray
    chi_dia_ppm: np.ndarray
    chi_sum_ppm: np.ndarray
    r2prime_hz: np.ndarray
    mask: np.ndarray
    info: Dict[str, Any] = field(default_factory=dict)


def relaxometric_constant_hz_per_ppm(b0_tesla: float, dr_3t_hz_per_ppm: float = DR_3T_HZ_PER_PPM) -> float:
    """Dr at ``b0_tesla``: ``dr_3t_hz_per_ppm · B0 / 3 T`` (R2' ∝ γ·B0·|Δχ| in the static dephasing regime)."""
    b0 = float(b0_tesla)
    if not np.isfinite(b0) or b0 <= 0:
        raise QSMInputError(f"b0_tesla must be a positive field strength in tesla, got {b0_tesla!r}")
    dr = float(dr_3t_hz_per_ppm)
    if not np.isfinite(dr) or dr <= 0:
        raise QSMInputError(f"dr_3t_hz_per_ppm must be positive (Hz/ppm), got {dr_3t_hz_per_ppm!r}")
    return dr * b0 / DR_REFERENCE_B0_TESLA


def r2_from_t2(t2: np.ndarray, unit: str = "s") -> np.ndarray:
    """R2 (Hz) from a T2 map in seconds (``unit="s"``) or milliseconds (``"ms"``); T2 ≤ 0 or non-finite → NaN."""
    if unit not in ("s", "ms"):
        raise QSMInputError(f"T2 unit must be 's' or 'ms', got {unit!r}")
    t = np.asarray(t2, dtype=np.float64) * (1e-3 if unit == "ms" else 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(np.isfinite(t) & (t > 0), 1.0 / t, np.nan)
    return r2.astype(np.float32)


def resample_to_grid(volume: np.ndarray, volume_affine: Optional[np.ndarray], target_shape: Sequence[int],
                     target_affine: Optional[np.ndarray], name: str = "R2 map") -> np.ndarray:
    """``volume`` (3D) on the target grid by trilinear interpolation through both index-to-world affines.

    A volume already of the target shape is returned as float32 when it has no affine of its own or the same one.
    A volume on another grid needs both affines (its own and the target's): without them there is no telling where
    its voxels lie, and the call fails naming ``name``. Target voxels outside the volume become NaN (and so leave
    the separation mask).
    """
    vol = np.asarray(volume, dtype=np.float32)
    shape = tuple(int(n) for n in target_shape)
    if vol.ndim != 3:
        raise QSMInputError(f"{name} must be a 3D volume, got shape {vol.shape}")
    if volume_affine is None or target_affine is None:
        if vol.shape != shape:
            raise QSMInputError(
                f"{name} has shape {vol.shape} but the data have {shape}, and without the geometry (affine) of "
                f"both it cannot be resampled: give the {name} as an image file with its geometry, or on the "
                "data's grid")
        return vol
    src = np.asarray(volume_affine, dtype=np.float64)
    dst = np.asarray(target_affine, dtype=np.float64)
    if src.shape != (4, 4) or dst.shape != (4, 4):
        raise QSMInputError(f"affines must be 4×4, got {src.shape} for the {name} and {dst.shape} for the data")
    if vol.shape == shape and np.allclose(src, dst, atol=1e-4):
        return vol
    try:
        index_map = np.linalg.solve(src, dst)  # target index → source index
    except np.linalg.LinAlgError as exc:
        raise QSMInputError(f"the {name}'s affine is singular") from exc
    kw = dict(offset=index_map[:3, 3], output_shape=shape, order=1, mode="constant", cval=0.0, prefilter=False)
    out = ndi.affine_transform(vol, index_map[:3, :3], **kw)
    # any interpolation that took weight from outside the source volume is outside its coverage
    coverage = ndi.affine_transform(np.ones_like(vol), index_map[:3, :3], **kw)
    out[coverage < 1.0 - 1e-4] = np.nan
    return out


def read_r2_map(path: str, target_shape: Sequence[int], target_affine: np.ndarray, quantity: str = "r2"
                ) -> np.ndarray:
    """An R2 (``quantity="r2"``, 1/s) or T2 (``"t2_ms"``, ``"t2_s"``) map from a NIfTI or NRRD file, as R2 (Hz) on
    the data's grid: resampled through the file's and the data's affines when the grids differ."""
    from .io.loader import read_volume

    if quantity not in ("r2", "t2_ms", "t2_s"):
        raise QSMInputError(f"R2 map quantity must be r2, t2_ms or t2_s, got {quantity!r}")
    data, affine = read_volume(path, "the R2/T2 map")
    r2 = data.astype(np.float32) if quantity == "r2" else r2_from_t2(data, "ms" if quantity == "t2_ms" else "s")
    return resample_to_grid(r2, affine, target_shape, target_affine, name=f"R2 map {path}")


def _check_maps(mask: Optional[np.ndarray], **maps: np.ndarray):
    arrs = {k: np.asarray(v, dtype=np.float32) for k, v in maps.items()}
    shape = None
    for k, a in arrs.items():
        if a.ndim != 3:
            raise QSMInputError(f"{k} must be a 3D map, got shape {a.shape}")
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            first = next(iter(arrs))
            raise QSMInputError(f"{k} has shape {a.shape} but {first} has {shape}: resample it to the data's grid "
                                "(resample_to_grid, with both affines)")
    m = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != shape:
        raise QSMInputError(f"mask shape {m.shape} differs from the maps' shape {shape}")
    if not m.any():
        raise QSMInputError("the mask is empty: no voxel to separate")
    return arrs, m


def separate_sources(chi_ppm: np.ndarray, r2prime_hz: np.ndarray, dr_hz_per_ppm: float,
                     mask: Optional[np.ndarray] = None) -> SourceSeparation:
    """χ⁺ and |χ⁻| from the net χ (ppm) and R2' (Hz, ≥ 0) with relaxometric constant ``dr_hz_per_ppm``.

    The per-voxel constrained least-squares solution of the module docstring. Voxels outside ``mask`` or with a
    non-finite χ or R2' are left out (counted in ``info["nonfinite_masked"]``). The inputs are not modified.
    """
    arrs, m = _check_maps(mask, chi_ppm=chi_ppm, r2prime_hz=r2prime_hz)
    chi, r2p = arrs["chi_ppm"], arrs["r2prime_hz"]
    dr = float(dr_hz_per_ppm)
    if not np.isfinite(dr) or dr <= 0:
        raise QSMInputError(f"dr_hz_per_ppm must be positive, got {dr_hz_per_ppm!r}")
    finite = np.isfinite(chi) & np.isfinite(r2p)
    n_nonfinite = int(np.count_nonzero(m & ~finite))
    m = m & finite
    if not m.any():
        raise QSMInputError("no mask voxel has a finite χ and R2'")
    if np.any(r2p[m] < 0):
        raise QSMInputError("r2prime_hz has negative values inside the mask: R2' = R2* − R2 must be ≥ 0 "
                            "(clip small negative values or leave those voxels out of the mask)")
    zero = np.float32(0.0)
    chi_m = np.where(m, chi, zero)
    a = np.where(m, r2p, zero) / np.float32(dr)
    para_u = np.float32(0.5) * (chi_m + a)
    dia_u = np.float32(0.5) * (a - chi_m)  # |χ⁻| before the sign constraint
    clipped = m & ((para_u < 0) | (dia_u < 0))
    para = np.maximum(para_u, zero).astype(np.float32)
    dia = np.maximum(dia_u, zero).astype(np.float32)
    total = (para - dia).astype(np.float32)
    resid = (total - chi_m)[m].astype(np.float64)
    info = {
        "dr_hz_per_ppm": dr,
        "voxels": int(m.sum()),
        "nonfinite_masked": n_nonfinite,
        "sign_clipped": int(clipped.sum()),
        "sign_clipped_paramagnetic_side": int(np.count_nonzero(clipped & (chi_m > 0))),
        "chi_sum_vs_input_rms_ppm": float(np.sqrt(np.mean(resid ** 2))),
        "chi_sum_vs_input_max_ppm": float(np.max(np.abs(resid))),
        "dia_sign_convention": "chi_dia_ppm is the magnitude |χ⁻| ≥ 0; net χ = chi_para_ppm − chi_dia_ppm",
    }
    return SourceSeparation(chi_para_ppm=para, chi_dia_ppm=dia, chi_sum_ppm=total,
                            r2prime_hz=np.where(m, r2p, zero).astype(np.float32), mask=m, info=info)


def chi_separation_r2prime(chi_ppm: np.ndarray, r2star_hz: Optional[np.ndarray], r2_hz: Optional[np.ndarray],
                           b0_tesla: float, mask: Optional[np.ndarray] = None,
                           dr_3t_hz_per_ppm: float = DR_3T_HZ_PER_PPM,
                           r2_tolerance_hz: float = 1.0) -> SourceSeparation:
    """χ-separation (Shin et al. 2021) with R2' = R2* − R2 from a measured R2 map (Hz) on the data's grid.

    Voxels with R2 > R2* + ``r2_tolerance_hz`` leave the mask (``info["r2_above_r2star_masked"]``); voxels with
    R2* < R2 ≤ R2* + tolerance get R2' = 0 (``info["r2prime_clipped_to_zero"]``). Voxels where the R2 map is not
    finite (``info["nonfinite_masked"]``) or ≤ 0 (zero-filled outside its own mask; ``r2_not_positive_masked``)
    leave the mask too. More than
    :data:`MAX_IMPOSSIBLE_FRACTION` of the mask with R2 > R2* + tolerance is an error (wrong map or units).
    """
    if r2star_hz is None:
        raise QSMInputError("source separation needs an R2* map, which needs multi-echo magnitude images "
                            "(at least 2 echoes with their magnitude); none was given")
    if r2_hz is None:
        raise QSMInputError("the r2prime method needs an R2 map (or T2, converted with r2_from_t2); without one, "
                            "use the r2star_only method and its stated assumption")
    arrs, m = _check_maps(mask, chi_ppm=chi_ppm, r2star_hz=r2star_hz, r2_hz=r2_hz)
    tol = float(r2_tolerance_hz)
    if not np.isfinite(tol) or tol < 0:
        raise QSMInputError(f"r2_tolerance_hz must be ≥ 0, got {r2_tolerance_hz!r}")
    r2s, r2 = arrs["r2star_hz"], arrs["r2_hz"]
    finite = np.isfinite(r2s) & np.isfinite(r2)
    n_nonfinite = int(np.count_nonzero(m & ~finite))
    m = m & finite
    with np.errstate(invalid="ignore"):
        no_r2 = m & (r2 <= 0)  # zero-filled outside the R2 map's own mask: no tissue has R2 = 0
    n_no_r2 = int(no_r2.sum())
    m = m & ~no_r2
    if not m.any():
        raise QSMInputError("no mask voxel has a finite R2 > 0 and R2* (does the R2 map cover the brain?)")
    with np.errstate(invalid="ignore"):
        r2p = r2s - r2
    impossible = m & (r2p < -tol)
    n_imp = int(impossible.sum())
    frac = n_imp / max(int(m.sum()), 1)
    if frac > MAX_IMPOSSIBLE_FRACTION:
        med_r2 = float(np.median(r2[m]))
        med_r2s = float(np.median(r2s[m]))
        raise QSMInputError(
            f"R2 exceeds R2* in {100 * frac:.0f} % of the mask (median R2 {med_r2:.3g} vs R2* {med_r2s:.3g} Hz): "
            "is the map T2 rather than R2 (convert with r2_from_t2), in other units, or from another scan?")
    m = m & ~impossible
    if not m.any():
        raise QSMInputError("no mask voxel has R2 ≤ R2*")
    small = m & (r2p < 0)
    r2p = np.where(m, np.maximum(r2p, np.float32(0.0)), np.float32(0.0)).astype(np.float32)
    dr = relaxometric_constant_hz_per_ppm(b0_tesla, dr_3t_hz_per_ppm)
    out = separate_sources(arrs["chi_ppm"], r2p, dr, m)
    out.info.update({
        "method": "r2prime",
        "r2_source": "user R2 map",
        "dr_3t_hz_per_ppm": float(dr_3t_hz_per_ppm),
        "b0_tesla": float(b0_tesla),
        "r2_above_r2star_masked": n_imp,
        "r2_above_r2star_tolerance_hz": tol,
        "r2prime_clipped_to_zero": int(small.sum()),
        "r2_not_positive_masked": n_no_r2,
        "nonfinite_masked": out.info["nonfinite_masked"] + n_nonfinite,
    })
    return out


def chi_separation_r2star_only(chi_ppm: np.ndarray, r2star_hz: Optional[np.ndarray], b0_tesla: float,
                               mask: Optional[np.ndarray] = None, dr_3t_hz_per_ppm: float = DR_3T_HZ_PER_PPM,
                               r2_assumed_hz: float = R2_ASSUMED_HZ) -> SourceSeparation:
    """χ-separation from gradient-echo data alone: R2' = R2* − ``r2_assumed_hz`` (R2 assumed uniform).

    The assumption and its consequence (each Hz of R2 error shifts χ⁺ and |χ⁻| by 1/(2·Dr) ppm) are recorded in
    ``info``; voxels with R2* below the assumed R2 get R2' = 0 (``info["r2star_below_assumed_r2"]``).
    """
    if r2star_hz is None:
        raise QSMInputError("source separation needs an R2* map, which needs multi-echo magnitude images "
                            "(at least 2 echoes with their magnitude); none was given")
    arrs, m = _check_maps(mask, chi_ppm=chi_ppm, r2star_hz=r2star_hz)
    r2a = float(r2_assumed_hz)
    if not np.isfinite(r2a) or r2a < 0:
        raise QSMInputError(f"r2_assumed_hz must be ≥ 0, got {r2_assumed_hz!r}")
    r2s = arrs["r2star_hz"]
    with np.errstate(invalid="ignore"):
        below = m & np.isfinite(r2s) & (r2s < r2a)
        r2p = np.maximum(r2s - np.float32(r2a), np.float32(0.0)).astype(np.float32)
    dr = relaxometric_constant_hz_per_ppm(b0_tesla, dr_3t_hz_per_ppm)
    out = separate_sources(arrs["chi_ppm"], r2p, dr, m)
    out.info.update({
        "method": "r2star_only",
        "r2_source": f"assumed uniform R2 = {r2a:g} Hz",
        "assumption": ("R2 is the same in every voxel; an R2 error of e Hz shifts chi_para_ppm and chi_dia_ppm by "
                       f"e/(2·Dr) = {1.0 / (2.0 * dr):.4f} ppm per Hz, in the same direction"),
        "dr_3t_hz_per_ppm": float(dr_3t_hz_per_ppm),
        "b0_tesla": float(b0_tesla),
        "r2_assumed_hz": r2a,
        "r2star_below_assumed_r2": int(below.sum()),
    })
    return out


def _shrink(g: np.ndarray, thr: float) -> np.ndarray:
    """Isotropic soft threshold of a gradient field (3, ...) by ``thr``: the proximal map of thr·‖·‖₂ per voxel."""
    mag = np.sqrt(np.sum(g * g, axis=0))
    scale = np.maximum(mag - np.float32(thr), np.float32(0.0)) / np.maximum(mag, np.float32(1e-12))
    return (g * scale[None]).astype(np.float32)


def chi_separation_joint(local_field_ppm: Optional[np.ndarray], r2star_hz: Optional[np.ndarray],
                         r2_hz: Optional[np.ndarray], b0_tesla: float, voxel_size_mm: Sequence[float],
                         b0_direction: Sequence[float], mask: Optional[np.ndarray] = None,
                         weight: Optional[np.ndarray] = None, dr_3t_hz_per_ppm: float = DR_3T_HZ_PER_PPM,
                         r2_tolerance_hz: float = 1.0, alpha: float = 2e-4, mu: float = 1.0,
                         max_iter: int = 150, tol: float = 1e-3, pad_voxels: int = 8,
                         cancel: Optional[Callable[[], bool]] = None) -> SourceSeparation:
    """χ-separation as one regularised inversion of the local field and R2' (the form of Shin et al. 2021):

        minimise ½‖W(D(χ⁺ − |χ⁻|) − δ)‖² + μ/2‖M(χ⁺ + |χ⁻| − R2'/Dr)‖² + α(TV(χ⁺) + TV(|χ⁻|)),  χ⁺, |χ⁻| ≥ 0,

    W the field's data weight, M the voxels with a valid R2' (as in :func:`chi_separation_r2prime`), TV isotropic
    total variation, solved by ADMM (Boyd et al., Found Trends Mach Learn 3 (2011) 1–122) with splittings for the
    gradients, the dipole field, the R2' term and the bounds; in the variables χ⁺ ∓ |χ⁻| every linear step is
    diagonal in k-space, as in FANSI (Milovic et al., Magn Reson Med 80 (2018) 814–821). Unlike the two-step methods
    the result needs no susceptibility reference: R2' and the bounds fix the zero (χ of CSF, with R2' = 0, is 0).
    Shin et al. use MEDI-type weighted ℓ1 gradients; this uses plain TV. ``info`` has the iterations run.
    """
    from .inversion.common import divergence, gradient, prepare_problem
    from .utils.fft import irfft, rfft
    from .inversion.tv import difference_eigenvalues

    if local_field_ppm is None:
        raise QSMInputError("the joint method needs the local field (background removal must run)")
    if r2star_hz is None:
        raise QSMInputError("source separation needs an R2* map, which needs multi-echo magnitude images "
                            "(at least 2 echoes with their magnitude); none was given")
    if r2_hz is None:
        raise QSMInputError("the joint method needs an R2 map (or T2, converted with r2_from_t2)")
    for name, val in (("alpha", alpha), ("mu", mu)):
        if not np.isfinite(val) or val < 0:
            raise QSMInputError(f"{name} must be ≥ 0, got {val!r}")
    field = np.asarray(local_field_ppm, dtype=np.float32)
    # R2' and the voxels where it is valid, by the same rules (and errors) as the two-step method
    ref = chi_separation_r2prime(np.zeros_like(field), r2star_hz, r2_hz, b0_tesla, mask, dr_3t_hz_per_ppm,
                                 r2_tolerance_hz)
    m = np.ones(field.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
    prob = prepare_problem(field, m, voxel_size_mm, b0_direction, weight=weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla)
    dr = ref.info["dr_hz_per_ppm"]
    vox = prob.voxel_size_mm
    a = prob.embed(ref.r2prime_hz / np.float32(dr))
    r2_mask = prob.embed(ref.mask.astype(np.float32)) * np.float32(mu)
    w2 = np.where(prob.mask, prob.weight, np.float32(0.0)) ** 2
    f = prob.field
    kern = prob.kernel
    lap = difference_eigenvalues(prob.shape, vox)
    rho_g, rho_d, rho_w, rho_q = np.float32(max(100.0 * alpha, 1e-3)), np.float32(1.0), np.float32(1.0), \
        np.float32(1.0)
    den_s = (0.5 * rho_g * lap + rho_d * kern**2 + 0.5 * rho_q).astype(np.float32)
    den_t = (0.5 * rho_g * lap + rho_w + 0.5 * rho_q).astype(np.float32)
    t = a.copy()  # start: the absolute susceptibility from R2', no net χ
    sv = np.zeros_like(t)
    p, n = 0.5 * (t + sv), 0.5 * (t - sv)
    y_gp = np.zeros((3,) + t.shape, np.float32)
    y_gn = np.zeros_like(y_gp)
    y_d = np.zeros_like(t)
    y_w = np.zeros_like(t)
    y_qp = np.zeros_like(t)
    y_qn = np.zeros_like(t)
    ds = irfft(rfft(sv) * kern, t.shape)
    iterations, change = 0, np.inf
    while iterations < int(max_iter) and change >= tol:
        iterations += 1
        if cancel is not None and cancel():
            raise QSMCancelled("source separation cancelled")
        gp = _shrink(gradient(p, vox) + y_gp, float(alpha / rho_g))
        gn = _shrink(gradient(n, vox) + y_gn, float(alpha / rho_g))
        z = (w2 * f + rho_d * (ds + y_d)) / (w2 + rho_d)
        w = (r2_mask * a + rho_w * (t + y_w)) / (r2_mask + rho_w)
        qp = np.maximum(p + y_qp, np.float32(0.0))
        qn = np.maximum(n + y_qn, np.float32(0.0))
        cp, cn = gp - y_gp, gn - y_gn
        ep, en = qp - y_qp, qn - y_qn
        rhs_s = (-0.5 * rho_g * divergence(cp - cn, vox) + rho_d * irfft(rfft(z - y_d) * kern, t.shape)
                 + 0.5 * rho_q * (ep - en))
        rhs_t = -0.5 * rho_g * divergence(cp + cn, vox) + rho_w * (w - y_w) + 0.5 * rho_q * (ep + en)
        s_new = irfft(rfft(rhs_s) / den_s, t.shape)
        t_new = irfft(rfft(rhs_t) / den_t, t.shape)
        change = float(np.linalg.norm(np.concatenate([(s_new - sv).ravel(), (t_new - t).ravel()]))
                       / max(np.linalg.norm(np.concatenate([s_new.ravel(), t_new.ravel()])), 1e-12))
        sv, t = s_new, t_new
        p, n = 0.5 * (t + sv), 0.5 * (t - sv)
        ds = irfft(rfft(sv) * kern, t.shape)
        y_gp += gradient(p, vox) - gp
        y_gn += gradient(n, vox) - gn
        y_d += ds - z
        y_w += t - w
        y_qp += p - qp
        y_qn += n - qn
    para = np.maximum(prob.to_input_grid(p), np.float32(0.0))
    dia = np.maximum(prob.to_input_grid(n), np.float32(0.0))
    sep_mask = m.copy()
    zero = np.float32(0.0)
    para = np.where(sep_mask, para, zero).astype(np.float32)
    dia = np.where(sep_mask, dia, zero).astype(np.float32)
    info = {k: v for k, v in ref.info.items() if k not in ("voxels", "sign_clipped", "sign_clipped_paramagnetic_side",
                                                          "chi_sum_vs_input_rms_ppm", "chi_sum_vs_input_max_ppm")}
    info.update({"method": "joint", "voxels": int(sep_mask.sum()), "r2prime_voxels": int(ref.mask.sum()),
                 "iterations": iterations, "rel_change": change, "alpha": float(alpha), "mu": float(mu)})
    return SourceSeparation(chi_para_ppm=para, chi_dia_ppm=dia, chi_sum_ppm=(para - dia).astype(np.float32),
                            r2prime_hz=ref.r2prime_hz, mask=sep_mask, info=info)


_DR_PARAM = Param("dr_3t_hz_per_ppm", float, DR_3T_HZ_PER_PPM,
                  "relaxometric constant Dr at 3 T (R2' = Dr·(χ⁺ + |χ⁻|); Shin et al. 2021: 137), scaled by B0/3 T",
                  unit="Hz/ppm", minimum=1.0, maximum=2000.0)

register_method("source_separation", MethodSpec(
    key="r2prime", label="χ-separation, R2' = R2* − R2 (R2 map)",
    reference="Shin et al., NeuroImage 240 (2021) 118371",
    params=(_DR_PARAM,
            Param("r2_tolerance_hz", float, 1.0, "R2 above R2* by less than this is noise (R2' = 0); by more, the "
                  "voxel is left out and counted", unit="Hz", minimum=0.0, maximum=100.0)),
    help="Needs an R2 map (spin-echo R2, or T2 converted) on the data's grid or with its geometry.",
    func=chi_separation_r2prime))
register_method("source_separation", MethodSpec(
    key="r2star_only", label="χ-separation from R2* alone (uniform R2 assumed)",
    reference="Shin et al., NeuroImage 2021; R2*-only: Dimov et al., Tomography 2022",
    params=(_DR_PARAM,
            Param("r2_assumed_hz", float, R2_ASSUMED_HZ, "R2 assumed in every voxel (R2' = R2* − this); 13 Hz ≈ "
                  "parenchymal T2 of 77 ms at 3 T", unit="Hz", minimum=0.0, maximum=100.0)),
    help="No R2 map: assumes a uniform R2; each Hz of R2 error shifts χ⁺ and |χ⁻| by 1/(2·Dr) ppm.",
    func=chi_separation_r2star_only))
register_method("source_separation", MethodSpec(
    key="joint", label="χ-separation, one regularised inversion of field and R2' (R2 map)",
    reference="Shin et al., NeuroImage 240 (2021) 118371; ADMM/TV as Milovic et al., Magn Reson Med 2018",
    params=(_DR_PARAM,
            Param("r2_tolerance_hz", float, 1.0, "R2 above R2* by less than this is noise (R2' = 0); by more, the "
                  "voxel has no R2' term", unit="Hz", minimum=0.0, maximum=100.0),
            Param("alpha", float, 2e-4, "total-variation weight of χ⁺ and |χ⁻|", minimum=0.0, maximum=1.0),
            Param("mu", float, 1.0, "weight of the R2'/Dr term against the field term (both in ppm)", minimum=0.0,
                  maximum=1e4),
            Param("max_iter", int, 150, "most ADMM iterations", minimum=1, maximum=5000),
            Param("tol", float, 1e-3, "stop when the relative change of (χ⁺, |χ⁻|) falls below this", minimum=1e-6,
                  maximum=0.1),
            Param("pad_voxels", int, 8, "zero padding around the mask's bounding box", unit="voxels", minimum=0,
                  maximum=64)),
    help="Needs an R2 map and the local field (not a single-step inversion); no χ reference needed.",
    func=chi_separation_joint))

__all__ = [
    "DR_3T_HZ_PER_PPM", "R2_ASSUMED_HZ", "SourceSeparation", "chi_separation_joint", "chi_separation_r2prime",
    "chi_separation_r2star_only",
    "r2_from_t2", "read_r2_map", "relaxometric_constant_hz_per_ppm", "resample_to_grid", "separate_sources",
]
