"""Error metrics of a susceptibility map against a ground truth (phantom or COSMOS reference).

All metrics take the estimate and the truth referenced the same way (see :mod:`QSMLogic.reference`) and a mask;
values outside the mask are ignored.

* :func:`nrmse` — 100·‖x − t‖/‖t‖ in the mask (%), the RMSE of the 2016 QSM reconstruction challenge
  (Langkammer et al., Magn Reson Med 79 (2018) 1661–1673).
* :func:`hfen` — high-frequency error norm (Ravishankar & Bresler, IEEE TMI 2011; as in the 2016 challenge): the
  nRMSE (%) of the Laplacian-of-Gaussian filtered maps, σ = 1.5 voxels.
* :func:`ssim` — structural similarity (Wang et al., IEEE TIP 13 (2004) 600–612), 3D, Gaussian window σ = 1.5
  voxels, K1 = 0.01, K2 = 0.03, on both maps clipped and scaled from a common χ range (default −0.1…0.2 ppm, the
  challenge's display range) to 0…1; averaged over the mask.
* :func:`label_errors` / :func:`deep_gray_error` — mean χ per label minus the true mean (ppm); the deep grey nuclei
  error is the mean absolute value of these over the nuclei.
* :func:`calcification_moment` — the susceptibility moment Σ(χ − χ_ref)·V (ppm·mm³) in the calcification dilated by
  ``dilation_mm`` (QSM Challenge 2.0, Marques et al., Magn Reson Med 86 (2021) 526–542), which stays comparable
  when the estimate blurs the calcification; χ_ref is the mean in a shell just outside, so the moment is the
  calcification's own (diamagnetic: negative) excess; :func:`calcification_moment_error` is the relative error (%).
* :func:`streaking` — our streaking measure: the energy of the error in the magic-angle cone of k-space,
  100·‖P_cone F{M(x − t)}‖ / ‖F{M t}‖ (%), P_cone selecting |D(k)| < ``cone_threshold`` (k ≠ 0). Streaks are the
  error component the dipole kernel cannot see, so they live in this cone; the measure is in the same units as
  nRMSE and is 0 for a perfect map. :func:`calcification_streaking` is Challenge 2.0's version: the SD of the error
  in a shell around the calcification (ppm).
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from .dipole import FFT_WORKERS, dipole_kernel
from .errors import QSMInputError

#: Names (lower-case substrings) of deep grey nuclei in label tables, as in the phantom and the CIT168 atlas.
DEEP_GRAY_NAMES: Tuple[str, ...] = ("caudate", "putamen", "pallidus", "thalamus", "nigra", "red nucleus",
                                    "subthalamic", "dentate", "accumbens")


def _prep(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray], margin: Optional[int] = None):
    """Checked float64 copies of the maps and the bool mask; with ``margin``, cropped to the mask's bounding box
    grown by ``margin`` voxels (clipped at the volume's edges).

    A filter of radius ≤ ``margin`` then gives the same values in the mask as on the whole volume, and a brain in a
    256×256×160 field of view costs a third of it.
    """
    x0, t0 = np.asarray(estimate), np.asarray(truth)
    if x0.shape != t0.shape:
        raise QSMInputError(f"estimate shape {x0.shape} differs from truth shape {t0.shape}")
    m = np.ones(x0.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != x0.shape:
        raise QSMInputError(f"mask shape {m.shape} differs from map shape {x0.shape}")
    if not m.any():
        raise QSMInputError("mask is empty")
    if margin is not None and mask is not None:
        idx = np.nonzero(m.any(axis=(1, 2))), np.nonzero(m.any(axis=(0, 2))), np.nonzero(m.any(axis=(0, 1)))
        box = tuple(slice(max(int(i[0][0]) - margin, 0), min(int(i[0][-1]) + 1 + margin, n))
                    for i, n in zip(idx, m.shape))
        x0, t0, m = x0[box], t0[box], m[box]
    return np.asarray(x0, dtype=np.float64), np.asarray(t0, dtype=np.float64), m


def _radius(sigma: float, truncate: float) -> int:
    """Radius (voxels) of scipy.ndimage's Gaussian kernels for ``sigma`` and ``truncate``, plus one."""
    return int(truncate * float(sigma) + 0.5) + 1


def _relative_norm(diff: np.ndarray, ref: np.ndarray) -> float:
    den = float(np.linalg.norm(ref))
    if den == 0.0:
        raise QSMInputError("the truth is zero in the mask: a relative error is undefined")
    return 100.0 * float(np.linalg.norm(diff)) / den


def nrmse(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Normalised root-mean-square error 100·‖x − t‖/‖t‖ over the mask (%)."""
    x, t, m = _prep(estimate, truth, mask, margin=0)
    return _relative_norm((x - t)[m], t[m])


def centred_nrmse(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """:func:`nrmse` (%) of the two maps each minus its mean in ``mask``: the error of a relative quantity such as
    susceptibility, whatever reference either map was given."""
    x, t, m = _prep(estimate, truth, mask, margin=0)
    x, t = x[m], t[m]
    return _relative_norm((x - x.mean()) - (t - t.mean()), t - t.mean())


def hfen(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None, sigma_voxels: float = 1.5
         ) -> float:
    """High-frequency error norm (%): nRMSE of the LoG-filtered (σ in voxels) masked maps, over the mask."""
    x, t, m = _prep(estimate, truth, mask, margin=_radius(sigma_voxels, 2.5))
    lx = ndimage.gaussian_laplace(np.where(m, x, 0.0), sigma_voxels, truncate=2.5)
    lt = ndimage.gaussian_laplace(np.where(m, t, 0.0), sigma_voxels, truncate=2.5)
    return _relative_norm((lx - lt)[m], lt[m])


def ssim(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None,
         value_range_ppm: Tuple[float, float] = (-0.1, 0.2), sigma_voxels: float = 1.5) -> float:
    """Mean 3D SSIM over the mask of the two maps clipped and scaled from ``value_range_ppm`` to 0…1."""
    x, t, m = _prep(estimate, truth, mask, margin=_radius(sigma_voxels, 3.5))
    lo, hi = value_range_ppm
    if not hi > lo:
        raise QSMInputError(f"value_range_ppm must be increasing, got {value_range_ppm}")
    a = np.clip((np.where(m, x, lo) - lo) / (hi - lo), 0.0, 1.0)
    b = np.clip((np.where(m, t, lo) - lo) / (hi - lo), 0.0, 1.0)
    c1, c2 = 0.01**2, 0.03**2

    def g(v: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(v, sigma_voxels, truncate=3.5)

    mu_a, mu_b = g(a), g(b)
    va = g(a * a) - mu_a**2
    vb = g(b * b) - mu_b**2
    cov = g(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return float(np.mean(s[m]))


def label_errors(estimate: np.ndarray, truth: np.ndarray, labels: np.ndarray,
                 only: Optional[Iterable[int]] = None, mask: Optional[np.ndarray] = None) -> Dict[int, float]:
    """Mean estimate minus mean truth (ppm) in each label (``only`` those given; label 0 is skipped)."""
    x, t, m = _prep(estimate, truth, mask)
    lab = np.asarray(labels)
    if lab.shape != x.shape:
        raise QSMInputError(f"labels shape {lab.shape} differs from map shape {x.shape}")
    keys = sorted(int(k) for k in np.unique(lab[m])) if only is None else [int(k) for k in only]
    out: Dict[int, float] = {}
    for k in keys:
        sel = (lab == k) & m
        if k != 0 and sel.any():
            out[k] = float(x[sel].mean() - t[sel].mean())
    return out


def deep_gray_labels(label_names: Mapping[int, str]) -> Tuple[int, ...]:
    """Labels whose name contains one of :data:`DEEP_GRAY_NAMES`."""
    return tuple(sorted(k for k, n in label_names.items() if any(s in n.lower() for s in DEEP_GRAY_NAMES)))


def deep_gray_error(estimate: np.ndarray, truth: np.ndarray, labels: np.ndarray, label_names: Mapping[int, str],
                    mask: Optional[np.ndarray] = None) -> float:
    """Mean absolute error (ppm) of the per-nucleus mean χ over the deep grey nuclei."""
    keys = deep_gray_labels(label_names)
    errs = label_errors(estimate, truth, labels, only=keys, mask=mask)
    if not errs:
        raise QSMInputError("no deep grey nucleus label is present in the mask")
    return float(np.mean(np.abs(list(errs.values()))))


def _ball(radius_mm: float, voxel_size_mm: Sequence[float]) -> np.ndarray:
    r = [int(np.floor(radius_mm / v)) for v in voxel_size_mm]
    g = np.ogrid[tuple(slice(-n, n + 1) for n in r)]
    return sum((gi * v) ** 2 for gi, v in zip(g, voxel_size_mm)) <= radius_mm**2


def dilate_mm(region: np.ndarray, radius_mm: float, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Binary dilation of ``region`` by a ball of ``radius_mm`` (anisotropic voxels handled).

    Works on the region's bounding box grown by the radius, by the exact Euclidean distance transform (the voxels
    within ``radius_mm`` of the region, the same set as a dilation by the ball :func:`_ball`), so a small region in
    a large volume and a large radius cost little.
    """
    reg = np.asarray(region, dtype=bool)
    if radius_mm <= 0 or not reg.any():
        return reg.copy()
    vox = [float(v) for v in voxel_size_mm]
    idx = np.nonzero(reg)
    box = tuple(slice(max(int(i.min()) - int(radius_mm // v) - 1, 0), min(int(i.max()) + int(radius_mm // v) + 2, n))
                for i, v, n in zip(idx, vox, reg.shape))
    out = np.zeros_like(reg)
    dist = ndimage.distance_transform_edt(~reg[box], sampling=vox)
    out[box] = dist <= radius_mm * (1.0 + 1e-9)
    return out


def calcification_moment(chi_ppm: np.ndarray, calcification: np.ndarray, voxel_size_mm: Sequence[float],
                         dilation_mm: float = 4.0, shell_mm: float = 4.0, mask: Optional[np.ndarray] = None) -> float:
    """Susceptibility moment Σ(χ − χ_ref)·V_voxel (ppm·mm³) over the calcification dilated by ``dilation_mm``.

    ``χ_ref`` is the mean χ in the shell from ``dilation_mm`` to ``dilation_mm + shell_mm`` around the
    calcification (within ``mask`` when given), so the moment is the calcification's excess over the tissue around
    it — a negative number for a diamagnetic focus, independent of how the map is referenced and of the
    surrounding tissue's own susceptibility; ``shell_mm = 0`` gives the plain Σχ·V.
    """
    calc = np.asarray(calcification, dtype=bool)
    roi = dilate_mm(calc, dilation_mm, voxel_size_mm)
    if not roi.any():
        raise QSMInputError("the calcification region is empty")
    x = np.asarray(chi_ppm, dtype=np.float64)
    ref = 0.0
    if shell_mm > 0:
        shell = dilate_mm(calc, dilation_mm + shell_mm, voxel_size_mm) & ~roi
        if mask is not None:
            shell &= np.asarray(mask, dtype=bool)
        if not shell.any():
            raise QSMInputError("the shell around the calcification has no voxel (in the mask)")
        ref = float(np.mean(x[shell]))
    return float(np.sum(x[roi] - ref) * float(np.prod(voxel_size_mm)))


def calcification_moment_error(estimate: np.ndarray, truth: np.ndarray, calcification: np.ndarray,
                               voxel_size_mm: Sequence[float], dilation_mm: float = 4.0, shell_mm: float = 4.0,
                               mask: Optional[np.ndarray] = None) -> float:
    """Relative error (%) of the calcification moment (:func:`calcification_moment`): 100·(m_est − m_true)/|m_true|.
    """
    mt = calcification_moment(truth, calcification, voxel_size_mm, dilation_mm, shell_mm, mask)
    me = calcification_moment(estimate, calcification, voxel_size_mm, dilation_mm, shell_mm, mask)
    if mt == 0.0:
        raise QSMInputError("the true calcification moment is zero")
    return 100.0 * (me - mt) / abs(mt)


def calcification_streaking(estimate: np.ndarray, truth: np.ndarray, calcification: np.ndarray,
                            voxel_size_mm: Sequence[float], mask: Optional[np.ndarray] = None,
                            inner_mm: float = 4.0, outer_mm: float = 12.0) -> float:
    """SD (ppm) of the error in the shell ``inner_mm``…``outer_mm`` around the calcification (Challenge 2.0)."""
    x, t, m = _prep(estimate, truth, mask)
    shell = dilate_mm(calcification, outer_mm, voxel_size_mm) & ~dilate_mm(calcification, inner_mm, voxel_size_mm)
    shell &= m
    if not shell.any():
        raise QSMInputError("the shell around the calcification has no voxel in the mask")
    return float(np.std((x - t)[shell]))


def streaking(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float],
              b0_direction: Sequence[float], cone_threshold: float = 0.1) -> float:
    """Error energy in the magic-angle cone |D(k)| < ``cone_threshold``, relative to the truth's energy (%)."""
    x, t, m = _prep(estimate, truth, mask)
    shape = tuple(sfft.next_fast_len(n, real=True) for n in x.shape)
    e = sfft.rfftn(np.where(m, x - t, 0.0), s=shape, workers=FFT_WORKERS)
    r = sfft.rfftn(np.where(m, t, 0.0), s=shape, workers=FFT_WORKERS)
    d = dipole_kernel(shape, voxel_size_mm, b0_direction, real=True)
    cone = np.abs(d) < cone_threshold
    cone.flat[0] = False
    wts = np.full(shape[-1] // 2 + 1, 2.0)  # the rfft half spectrum counts the mirrored half twice
    wts[0] = 1.0
    if shape[-1] % 2 == 0:
        wts[-1] = 1.0
    num = float(np.sum((np.abs(e) ** 2 * cone) * wts))
    den = float(np.sum(np.abs(r) ** 2 * wts))
    if den == 0.0:
        raise QSMInputError("the truth is zero in the mask")
    return float(100.0 * np.sqrt(num / den))


#: Name (lower-case substring) of the calcification label in label tables, as in the phantom.
CALCIFICATION_NAME = "calcification"


def calcification_region(labels: np.ndarray, label_names: Mapping[int, str]) -> Optional[np.ndarray]:
    """Voxels of the label(s) named like :data:`CALCIFICATION_NAME`; None when there is none or it is empty."""
    keys = [k for k, n in label_names.items() if CALCIFICATION_NAME in n.lower()]
    if not keys:
        return None
    reg = np.isin(np.asarray(labels), keys)
    return reg if reg.any() else None


def all_metrics(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float],
                b0_direction: Sequence[float], labels: Optional[np.ndarray] = None,
                label_names: Optional[Mapping[int, str]] = None, dilation_mm: float = 4.0) -> Dict[str, float]:
    """nRMSE, HFEN, SSIM, streaking and, with labels and names, the deep grey nuclei error and the calcification
    metrics, as one dict.

    Keys: ``nrmse_pct``, ``hfen_pct``, ``ssim``, ``streak_pct`` (magic-angle cone error, %); with labels:
    ``deep_gray_err_ppm``; where a calcification label is present: ``calc_moment`` (the estimate's moment, ppm·mm³,
    in the calcification dilated by ``dilation_mm``, relative to the 4 mm shell around that; negative =
    diamagnetic), ``calc_moment_err_pct`` (its relative error against the truth's) and ``calc_streak_ppm`` (SD of
    the error in the 4–12 mm shell around it).
    """
    out = {"nrmse_pct": nrmse(estimate, truth, mask), "hfen_pct": hfen(estimate, truth, mask),
           "ssim": ssim(estimate, truth, mask),
           "streak_pct": streaking(estimate, truth, mask, voxel_size_mm, b0_direction)}
    if labels is not None and label_names is not None:
        out["deep_gray_err_ppm"] = deep_gray_error(estimate, truth, labels, label_names, mask)
        calc = calcification_region(labels, label_names)
        if calc is not None:
            calc = calc & np.asarray(mask, dtype=bool)
        if calc is not None and calc.any():
            out["calc_moment"] = calcification_moment(estimate, calc, voxel_size_mm, dilation_mm, mask=mask)
            out["calc_moment_err_pct"] = calcification_moment_error(estimate, truth, calc, voxel_size_mm,
                                                                    dilation_mm, mask=mask)
            out["calc_streak_ppm"] = calcification_streaking(estimate, truth, calc, voxel_size_mm, mask)
    return out


__all__ = ["DEEP_GRAY_NAMES", "nrmse", "centred_nrmse", "hfen", "ssim", "label_errors", "deep_gray_labels",
           "deep_gray_error", "dilate_mm", "calcification_moment", "calcification_moment_error",
           "calcification_streaking", "streaking", "calcification_region", "CALCIFICATION_NAME", "all_metrics"]
