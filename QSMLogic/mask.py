"""Brain (tissue) mask (stage ``mask``): from magnitude, from phase quality, or from a user label map.

- ``magnitude_threshold``: the echo-combined magnitude (root mean square over echoes) is thresholded at the larger
  of ``threshold_factor`` × its Otsu threshold (Otsu, IEEE Trans Syst Man Cybern 1979) and 5× the noise level
  (estimated from the darkest voxels, Rayleigh statistics); then the head is cut from the scalp: the foreground is
  eroded by ``separation_mm``, its largest connected component kept and dilated back inside the foreground
  (morphological reconstruction), holes are filled, the mask is closed by ``closing_mm`` and eroded by
  ``erosion_mm``. Morphology uses Euclidean distance transforms in millimetres, so anisotropic voxels are right.
- ``phase_quality``: the ROMEO voxel quality (Dymerska et al., MRM 2021; phase coherence, phase-gradient coherence
  across echoes, magnitude coherence) thresholded, then the same morphology — ROMEO's quality mask.
- ``label_map``: a user-supplied label map (any non-zero label is tissue), checked for shape and emptiness.
An empty result raises :class:`QSMInputError` naming the step that emptied it.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ._distance import depth_mm, distance_mm
from .errors import QSMInputError
from .geometry import check_voxel_size
from .params import MethodSpec, Param, register_method

#: The foreground threshold is at least this many times the estimated noise level.
NOISE_FLOOR_FACTOR = 5.0
#: Threshold, as a fraction of the median magnitude, for volumes without background (cropped inside the head).
CROPPED_FRACTION_OF_MEDIAN = 0.2


def combined_magnitude(magnitude: np.ndarray) -> np.ndarray:
    """Root mean square over echoes of a (x, y, z[, echo]) magnitude, float32 (x, y, z)."""
    mag = np.asarray(magnitude)
    if mag.ndim == 3:
        mag = mag[..., None]
    if mag.ndim != 4:
        raise QSMInputError(f"magnitude must have shape (x, y, z[, echo]), got shape {mag.shape}")
    if not np.all(np.isfinite(mag)):
        raise QSMInputError(f"magnitude contains {int(np.count_nonzero(~np.isfinite(mag)))} NaN/Inf voxel(s)")
    if float(mag.min()) < 0:
        raise QSMInputError("magnitude has negative values: is it a phase image?")
    return np.sqrt(np.mean(np.square(mag, dtype=np.float32), axis=3))


def otsu_threshold(values: np.ndarray, n_bins: int = 256, upper_percentile: Optional[float] = 99.9) -> float:
    """Otsu's threshold (maximum between-class variance; Otsu, IEEE Trans Syst Man Cybern 9 (1979) 62–66) of
    ``values`` on an ``n_bins`` histogram from the minimum to the ``upper_percentile``-th percentile (values above
    are counted in the last bin), so that a few very bright voxels do not squeeze the histogram; ``None``: up to the
    maximum."""
    v = np.asarray(values, dtype=np.float64).ravel()
    hi = float(v.max()) if upper_percentile is None else float(np.percentile(v, upper_percentile))
    lo = float(v.min())
    if not hi > lo:
        return lo
    hist, edges = np.histogram(np.clip(v, lo, hi), bins=n_bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(hist * centres)
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def noise_level(combined: np.ndarray, threshold: float) -> float:
    """Noise SD estimate from the voxels below ``threshold``: their median / 1.1774 (the median of a Rayleigh
    distribution is 1.1774 σ); 0 when no voxel is below."""
    low = combined[combined < threshold]
    return float(np.median(low) / 1.1774) if low.size else 0.0


def _erode(m: np.ndarray, radius_mm: float, vox: np.ndarray) -> np.ndarray:
    if radius_mm <= 0:
        return m
    return depth_mm(m, vox) > radius_mm


def _dilate(m: np.ndarray, radius_mm: float, vox: np.ndarray) -> np.ndarray:
    if radius_mm <= 0 or not m.any():
        return m
    return distance_mm(~m, vox) <= radius_mm


def _largest_component(m: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(m)
    if n <= 1:
        return m
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def clean_mask(
    foreground: np.ndarray, voxel_size_mm: Sequence[float], separation_mm: float = 5.0,
    closing_mm: float = 2.0, erosion_mm: float = 0.0, what: str = "foreground",
) -> np.ndarray:
    """Largest object of a foreground, cut from loosely attached tissue, holes filled, closed, eroded.

    Erode by ``separation_mm``, keep the largest connected component (6-connected), dilate it back by the same
    radius inside the foreground, fill holes, close by ``closing_mm`` (dilate + erode), fill holes again, erode by
    ``erosion_mm``. Raises QSMInputError naming the step if the mask becomes empty.
    """
    vox = check_voxel_size(voxel_size_mm)
    fg = np.asarray(foreground, dtype=bool)
    if not fg.any():
        raise QSMInputError(f"the {what} is empty: no voxel passed the threshold (lower it?)")
    core = _erode(fg, separation_mm, vox)
    if not core.any():
        raise QSMInputError(f"the {what} vanished when eroded by separation_mm={separation_mm}: "
                            "use a smaller separation (the object is thinner than that)")
    core = _largest_component(core)
    m = _dilate(core, separation_mm + 0.5 * float(vox.min()), vox) & fg if separation_mm > 0 else core
    m = ndi.binary_fill_holes(m)
    if closing_mm > 0:
        m = _erode(_dilate(m, closing_mm, vox), closing_mm, vox) | m
        m = ndi.binary_fill_holes(m)
    m = _erode(m, erosion_mm, vox)
    if not m.any():
        raise QSMInputError(f"the mask is empty after erosion by erosion_mm={erosion_mm}: erode less")
    return m


def mask_from_magnitude(
    magnitude: np.ndarray,
    voxel_size_mm: Sequence[float],
    threshold_factor: float = 1.0,
    separation_mm: float = 5.0,
    closing_mm: float = 2.0,
    erosion_mm: float = 0.0,
) -> np.ndarray:
    """Brain mask from the magnitude: robust threshold plus morphology (module docstring).

    ``threshold_factor`` scales the Otsu threshold (< 1 keeps darker tissue); ``separation_mm`` is the erosion
    that detaches the brain from the scalp through the dark skull; ``erosion_mm`` shrinks the final mask.
    """
    c = combined_magnitude(magnitude)
    if float(c.max()) <= 0:
        raise QSMInputError("the magnitude is zero everywhere")
    otsu = otsu_threshold(c)
    floor = NOISE_FLOOR_FACTOR * noise_level(c, otsu)
    if floor > otsu:
        # The voxels below Otsu's threshold are not noise: the volume has no background (a crop inside the head),
        # so Otsu only splits dark from bright tissue. Keep everything but near-zero voxels.
        thr = threshold_factor * CROPPED_FRACTION_OF_MEDIAN * float(np.median(c))
    else:
        thr = max(threshold_factor * otsu, floor)
    return clean_mask(c > thr, voxel_size_mm, separation_mm, closing_mm, erosion_mm, "thresholded magnitude")


def mask_from_phase_quality(
    phase: np.ndarray,
    voxel_size_mm: Sequence[float],
    magnitude: Optional[np.ndarray] = None,
    te_s: Optional[Sequence[float]] = None,
    quality_threshold: float = 0.5,
    separation_mm: float = 5.0,
    closing_mm: float = 2.0,
    erosion_mm: float = 0.0,
) -> np.ndarray:
    """Tissue mask from the ROMEO phase quality of the first echo (with the second for gradient coherence),
    thresholded at ``quality_threshold``, then the morphology of :func:`clean_mask`."""
    from .unwrap import romeo_quality

    ph = np.asarray(phase, dtype=np.float32)
    if ph.ndim == 3:
        ph = ph[..., None]
    if ph.ndim != 4:
        raise QSMInputError(f"phase must have shape (x, y, z[, echo]), got shape {ph.shape}")
    if not np.all(np.isfinite(ph)):
        raise QSMInputError(f"phase contains {int(np.count_nonzero(~np.isfinite(ph)))} NaN/Inf voxel(s)")
    mag = None
    if magnitude is not None:
        mag = np.asarray(magnitude, dtype=np.float32)
        if mag.ndim == 3:
            mag = mag[..., None]
        if mag.shape != ph.shape:
            raise QSMInputError(f"magnitude shape {mag.shape} does not match phase shape {ph.shape}")
    two = ph.shape[3] > 1
    if two and te_s is None:
        raise QSMInputError("several echoes need their echo times te_s (seconds)")
    ratio = float(te_s[0] / te_s[1]) if two else 1.0  # type: ignore[index]
    q = romeo_quality(ph[..., 0], None, mag[..., 0] if mag is not None else None, ph[..., 1] if two else None,
                      ratio)
    return clean_mask(q >= quality_threshold, voxel_size_mm, separation_mm, closing_mm, erosion_mm,
                      "phase-quality mask")


def mask_from_labels(labels: Optional[np.ndarray], phase: Optional[np.ndarray] = None) -> np.ndarray:
    """A user-supplied label map as a bool mask (every non-zero label is tissue).

    ``phase`` (x, y, z[, echo]), when given, fixes the expected spatial shape.
    """
    if labels is None:
        raise QSMInputError("the label_map mask method needs a label map (labels), none was given")
    lab = np.asarray(labels)
    if lab.ndim == 4 and lab.shape[3] == 1:
        lab = lab[..., 0]
    if lab.ndim != 3:
        raise QSMInputError(f"the label map must be 3D, got shape {lab.shape}")
    if phase is not None and lab.shape != np.shape(phase)[:3]:
        raise QSMInputError(f"label map shape {lab.shape} does not match the data's spatial shape "
                            f"{np.shape(phase)[:3]}")
    if np.issubdtype(lab.dtype, np.floating) and not np.all(np.isfinite(lab)):
        raise QSMInputError("the label map contains NaN/Inf")
    m = lab != 0
    if not m.any():
        raise QSMInputError("the label map is empty (no non-zero voxel)")
    return m


_MORPH = (
    Param("separation_mm", float, 5.0, "erosion that detaches the brain from the scalp before keeping the largest "
          "component (then undone)", unit="mm", minimum=0.0, maximum=30.0),
    Param("closing_mm", float, 2.0, "morphological closing radius", unit="mm", minimum=0.0, maximum=20.0),
    Param("erosion_mm", float, 0.0, "final erosion of the mask", unit="mm", minimum=0.0, maximum=30.0),
)
register_method("mask", MethodSpec(
    key="magnitude_threshold", label="Magnitude threshold + morphology", reference="Otsu, IEEE Trans SMC 1979",
    params=(Param("threshold_factor", float, 1.0, "multiplier of the Otsu threshold", minimum=0.05,
                  maximum=5.0),) + _MORPH,
    func=mask_from_magnitude, help="Robust magnitude threshold, largest component, holes filled."))
register_method("mask", MethodSpec(
    key="phase_quality", label="ROMEO phase quality", reference="Dymerska et al., Magn Reson Med 2021",
    params=(Param("quality_threshold", float, 0.5, "minimum ROMEO voxel quality", minimum=0.0, maximum=1.0),)
    + _MORPH,
    func=mask_from_phase_quality, help="Voxels whose phase is locally coherent."))
register_method("mask", MethodSpec(
    key="label_map", label="User label map", reference="user-supplied segmentation",
    params=(), func=mask_from_labels, help="Every non-zero label of the given label map (input 'labels')."))

__all__ = ["mask_from_magnitude", "mask_from_phase_quality", "mask_from_labels", "clean_mask", "otsu_threshold",
           "noise_level", "combined_magnitude"]
