"""Refinement of small iron-rich nuclei (STN, SN, RN, GPi) by χ thresholding inside the dilated atlas region.

A registered atlas region of a nucleus a few millimetres across can be off by a voxel or two; the nucleus itself is
bright on QSM (paramagnetic iron). Inside the region grown by ``dilation_mm``, voxels with χ above a threshold are
kept, and of those only the connected components that touch the original region (so a neighbouring nucleus or vein
that enters the dilated zone is dropped). The threshold is given (``threshold_ppm``) or chosen by Otsu's method
(Otsu, IEEE Trans Syst Man Cybern 9 (1979) 62–66) on the χ values in the dilated zone — the split between the bright
nucleus and its darker surroundings — and is always reported, as the row's source states it.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..errors import QSMInputError
from ..mask import otsu_threshold as mask_otsu_threshold
from .regions import SubjectRegions

#: CIT168/PD25 structure-name fragments of the nuclei refined by default.
IRON_RICH = ("Subthalamic", "Substantia", "Red Nucleus", "red nucleus", "substantia nigra", "subthalamic",
             "Globus Pallidus interna", "globus pallidus interna")


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold of ``values`` (:func:`QSMLogic.mask.otsu_threshold` on a ``bins`` histogram over the values'
    whole range); needs at least two different finite values."""
    v = np.asarray(values, np.float64).ravel()
    if v.size < 2 or not np.all(np.isfinite(v)) or v.max() == v.min():
        raise QSMInputError("Otsu threshold needs at least two different finite values")
    return mask_otsu_threshold(v, n_bins=bins, upper_percentile=None)


def refine_by_threshold(
    chi_ppm: np.ndarray,
    region: np.ndarray,
    voxel_size_mm: Sequence[float],
    dilation_mm: float = 2.0,
    threshold_ppm: Optional[float] = None,
    mask: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, float]:
    """(refined region, threshold used in ppm): voxels of the ``dilation_mm``-grown region with χ > threshold,
    restricted to connected components (26-connected) that overlap ``region``."""
    chi = np.asarray(chi_ppm, np.float32)
    reg = np.asarray(region, bool)
    if reg.shape != chi.shape:
        raise QSMInputError(f"region shape {reg.shape} differs from the χ map's {chi.shape}")
    if not reg.any():
        raise QSMInputError("the region to refine is empty")
    if dilation_mm < 0:
        raise QSMInputError(f"dilation_mm must be ≥ 0, got {dilation_mm}")
    grown = ndi.distance_transform_edt(~reg, sampling=np.asarray(voxel_size_mm, np.float64)) <= dilation_mm
    if mask is not None:
        grown &= np.asarray(mask, bool)
    if not grown.any():
        raise QSMInputError("the dilated region lies outside the mask")
    t = otsu_threshold(chi[grown]) if threshold_ppm is None else float(threshold_ppm)
    bright = grown & (chi > t)
    comp, _ = ndi.label(bright, structure=np.ones((3, 3, 3), bool))
    keep = np.unique(comp[reg & bright])
    keep = keep[keep > 0]
    return np.isin(comp, keep), t


def refine_regions(
    chi_ppm: np.ndarray,
    regions: SubjectRegions,
    voxel_size_mm: Sequence[float],
    structures: Sequence[str] = IRON_RICH,
    dilation_mm: float = 2.0,
    threshold_ppm: Optional[float] = None,
    mask: Optional[np.ndarray] = None,
) -> Tuple[SubjectRegions, Dict[int, float]]:
    """Refine every region whose structure contains one of ``structures``; the others are kept. Returns the new
    regions (source naming the rule and each threshold) and the threshold used per refined label. A region whose
    refinement keeps no voxel stays as it was and is not listed in the thresholds."""
    lab = np.array(regions.labels, copy=True)
    thresholds: Dict[int, float] = {}
    for k, r in regions.regions.items():
        if not any(s.lower() in r.structure.lower() for s in structures):
            continue
        sel = regions.labels == k
        if not sel.any():
            continue
        refined, t = refine_by_threshold(chi_ppm, sel, voxel_size_mm, dilation_mm, threshold_ppm, mask)
        if not refined.any():
            continue
        lab[sel & ~refined] = 0
        lab[refined & ((lab == 0) | sel)] = k
        thresholds[k] = t
    used = ", ".join(f"{regions.regions[k].name}: {t:.3f} ppm" for k, t in thresholds.items())
    rule = ("Otsu threshold" if threshold_ppm is None else f"χ > {threshold_ppm:g} ppm") + \
        f" within +{dilation_mm:g} mm ({used})"
    return SubjectRegions(lab, dict(regions.regions), f"{regions.source}; refined by {rule}",
                          regions.expected_volume_mm3, regions.registration, regions.warning), thresholds
