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
* :func:`calcification_moment` — the susceptibility moment Σχ·V (ppm·mm³) in the calcification dilated by
  ``dilation_mm`` (QSM Challenge 2.0, Marques et al., Magn Reson Med 86 (2021) 526–542), which stays comparable
  when the estimate blurs the calcification; :func:`calcification_moment_error` is the relative error (%).
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


def _prep(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray]):
    x = np.asarray(estimate, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if x.shape != t.shape:
        raise QSMInputError(f"estimate shape {x.shape} differs from truth shape {t.shape}")
    m = np.ones(x.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != x.shape:
        raise QSMInputError(f"mask shape {m.shape} differs from map shape {x.shape}")
    if not m.any():
        raise QSMInputError("mask is empty")
    return x, t, m


def _relative_norm(diff: np.ndarray, ref: np.ndarray) -> float:
    den = float(np.linalg.norm(ref))
    if den == 0.0:
        raise QSMInputError("the truth is zero in the mask: a relative error is undefined")
    return 100.0 * float(np.linalg.norm(diff)) / den


def nrmse(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None) -> float:
    """Normalised root-mean-square error 100·‖x − t‖/‖t‖ over the mask (%)."""
    x, t, m = _prep(estimate, truth, mask)
    return _relative_norm((x - t)[m], t[m])


def hfen(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None, sigma_voxels: float = 1.5
         ) -> float:
    """High-frequency error norm (%): nRMSE of the LoG-filtered (σ in voxels) masked maps, over the mask."""
    x, t, m = _prep(estimate, truth, mask)
    lx = ndimage.gaussian_laplace(np.where(m, x, 0.0), sigma_voxels, truncate=2.5)
    lt = ndimage.gaussian_laplace(np.where(m, t, 0.0), sigma_voxels, truncate=2.5)
    return _relative_norm((lx - lt)[m], lt[m])


def ssim(estimate: np.ndarray, truth: np.ndarray, mask: Optional[np.ndarray] = None,
         value_range_ppm: Tuple[float, float] = (-0.1, 0.2), sigma_voxels: float = 1.5) -> float:
    """Mean 3D SSIM over the mask of the two maps clipped and scaled from ``value_range_ppm`` to 0…1."""
    x, t, m = _prep(estimate, truth, mask)
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
    """Binary dilation of ``region`` by a ball of ``radius_mm`` (anisotropic voxels handled)."""
    reg = np.asarray(region, dtype=bool)
    if radius_mm <= 0:
        return reg.copy()
    return ndimage.binary_dilation(reg, structure=_ball(radius_mm, voxel_size_mm))


def calcification_moment(chi_ppm: np.ndarray, calcification: np.ndarray, voxel_size_mm: Sequence[float],
                         dilation_mm: float = 4.0) -> float:
    """Σχ·V_voxel (ppm·mm³) over the calcification dilated by ``dilation_mm``."""
    roi = dilate_mm(calcification, dilation_mm, voxel_size_mm)
    if not roi.any():
        raise QSMInputError("the calcification region is empty")
    return float(np.sum(np.asarray(chi_ppm, dtype=np.float64)[roi]) * float(np.prod(voxel_size_mm)))


def calcification_moment_error(estimate: np.ndarray, truth: np.ndarray, calcification: np.ndarray,
                               voxel_size_mm: Sequence[float], dilation_mm: float = 4.0) -> float:
    """Relative error (%) of the calcification moment: 100·(m_est − m_true)/|m_true|."""
    mt = calcification_moment(truth, calcification, voxel_size_mm, dilation_mm)
    me = calcification_moment(estimate, calcification, voxel_size_mm, dilation_mm)
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
    return 100.0 * np.sqrt(num / den)


def all_metrics(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float],
                b0_direction: Sequence[float], labels: Optional[np.ndarray] = None,
                label_names: Optional[Mapping[int, str]] = None) -> Dict[str, float]:
    """nRMSE, HFEN, SSIM, streaking and (with labels and names) the deep grey nuclei error, as one dict."""
    out = {"nrmse_pct": nrmse(estimate, truth, mask), "hfen_pct": hfen(estimate, truth, mask),
           "ssim": ssim(estimate, truth, mask),
           "streak_pct": streaking(estimate, truth, mask, voxel_size_mm, b0_direction)}
    if labels is not None and label_names is not None:
        out["deep_gray_err_ppm"] = deep_gray_error(estimate, truth, labels, label_names, mask)
    return out


__all__ = ["DEEP_GRAY_NAMES", "nrmse", "hfen", "ssim", "label_errors", "deep_gray_labels", "deep_gray_error",
           "dilate_mm", "calcification_moment", "calcification_moment_error", "calcification_streaking",
           "streaking", "all_metrics"]
