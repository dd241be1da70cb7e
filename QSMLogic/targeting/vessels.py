"""Vessel segmentation from QSM or SWI for trajectory planning: multiscale Frangi vesselness or a threshold.

Two stated methods:

* :func:`frangi_vesselness` — the multiscale Hessian vesselness of Frangi, Niessen, Vincken & Viergever, MICCAI 1998
  (LNCS 1496, 130–137). Veins are *bright* tubes in QSM (paramagnetic deoxyhaemoglobin, ≈ +0.3–0.5 ppm) and
  *dark* tubes in SWI; ``bright`` picks the polarity. Scales are given in mm and converted per axis, so
  anisotropic voxels are right; the Hessian is scale-normalised (σ²), α = β = 0.5 and c is half the largest
  Hessian norm, as in the paper. Round blobs (the iron-rich nuclei) and plates score low.
* :func:`threshold_vessels` — voxels above a susceptibility threshold (QSM, ppm) or below an intensity threshold
  (SWI), keeping connected parts of at least a minimum volume; simple, and it also catches haemorrhage.

:func:`segment_vessels` thresholds the vesselness into a mask. Arrays are in their own axis order with
``voxel_size_mm`` in the same order.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import QSMInputError

#: Frangi scales (vessel radii, mm) by default: small cortical veins to the internal cerebral veins and sinuses.
DEFAULT_SCALES_MM = (1.0, 1.5, 2.5)


def _check(volume: np.ndarray, voxel_size_mm: Sequence[float], mask: Optional[np.ndarray]) -> tuple:
    v = np.asarray(volume)
    if v.ndim != 3:
        raise QSMInputError(f"vessel segmentation needs a 3D volume, got shape {v.shape}")
    if not np.issubdtype(v.dtype, np.floating) and not np.issubdtype(v.dtype, np.integer):
        raise QSMInputError(f"volume must be real numbers, got {v.dtype}")
    vs = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if vs.shape != (3,) or np.any(~np.isfinite(vs)) or np.any(vs <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive sizes, got {voxel_size_mm!r}")
    m = np.ones(v.shape, bool) if mask is None else np.asarray(mask, bool)
    if m.shape != v.shape:
        raise QSMInputError(f"mask shape {m.shape} differs from the volume's {v.shape}")
    if not np.all(np.isfinite(v[m])):
        raise QSMInputError("volume has NaN or infinite values inside the mask")
    return v, vs, m


def frangi_vesselness(
    volume: np.ndarray,
    voxel_size_mm: Sequence[float],
    scales_mm: Sequence[float] = DEFAULT_SCALES_MM,
    bright: bool = True,
    mask: Optional[np.ndarray] = None,
    alpha: float = 0.5,
    beta: float = 0.5,
) -> np.ndarray:
    """Multiscale Frangi vesselness (0…1, float32; maximum over ``scales_mm``), zero outside ``mask``.

    ``bright=True`` for bright vessels (QSM), ``False`` for dark ones (SWI, magnitude).
    """
    v, vs, m = _check(volume, voxel_size_mm, mask)
    scales = [float(s) for s in scales_mm]
    if not scales or min(scales) <= 0:
        raise QSMInputError(f"scales_mm must be positive radii in mm, got {scales_mm!r}")
    img = np.where(m, v, 0.0 if mask is None else float(np.median(v[m]))).astype(np.float32)
    if not bright:
        img = -img
    idx = np.nonzero(m)
    out = np.zeros(v.shape, np.float32)
    pairs = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    for s in scales:
        sigma = s / vs
        hess = np.empty((len(idx[0]), 3, 3), np.float64)
        for a, b in pairs:
            order = [0, 0, 0]
            order[a] += 1
            order[b] += 1
            d = ndi.gaussian_filter(img, sigma, order=order, mode="nearest")[idx] * (s * s / (vs[a] * vs[b]))
            hess[:, a, b] = d
            hess[:, b, a] = d
        lam = np.linalg.eigvalsh(hess)
        del hess
        order_abs = np.argsort(np.abs(lam), axis=1)
        lam = np.take_along_axis(lam, order_abs, axis=1)
        l1, l2, l3 = lam[:, 0], lam[:, 1], lam[:, 2]
        norm = np.sqrt((lam**2).sum(axis=1))
        c = 0.5 * float(norm.max()) if norm.size else 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            ra = np.abs(l2) / np.abs(l3)
            rb = np.abs(l1) / np.sqrt(np.abs(l2 * l3))
        vness = (1.0 - np.exp(-(ra**2) / (2 * alpha**2))) * np.exp(-(rb**2) / (2 * beta**2)) \
            * (1.0 - np.exp(-(norm**2) / (2 * c * c + 1e-30)))
        vness[(l2 > 0) | (l3 > 0) | ~np.isfinite(vness)] = 0.0
        out[idx] = np.maximum(out[idx], vness.astype(np.float32))
    return out


def _remove_small(mask: np.ndarray, voxel_size_mm: np.ndarray, min_volume_mm3: float) -> np.ndarray:
    comp, n = ndi.label(mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        return mask
    sizes = np.bincount(comp.ravel()) * float(np.prod(voxel_size_mm))
    keep = sizes >= min_volume_mm3
    keep[0] = False
    return keep[comp]


def segment_vessels(
    volume: np.ndarray,
    voxel_size_mm: Sequence[float],
    threshold: float = 0.05,
    scales_mm: Sequence[float] = DEFAULT_SCALES_MM,
    bright: bool = True,
    mask: Optional[np.ndarray] = None,
    min_volume_mm3: float = 10.0,
) -> np.ndarray:
    """Vessel mask: Frangi vesselness above ``threshold``, connected parts of at least ``min_volume_mm3`` kept."""
    if not 0.0 < threshold < 1.0:
        raise QSMInputError(f"vesselness threshold must be within (0, 1), got {threshold}")
    vness = frangi_vesselness(volume, voxel_size_mm, scales_mm, bright, mask)
    return _remove_small(vness > threshold, np.asarray(voxel_size_mm, np.float64), min_volume_mm3)


def threshold_vessels(
    volume: np.ndarray,
    voxel_size_mm: Sequence[float],
    threshold: float,
    bright: bool = True,
    mask: Optional[np.ndarray] = None,
    min_volume_mm3: float = 10.0,
) -> np.ndarray:
    """Vessel mask by thresholding: ``volume > threshold`` (bright, e.g. QSM in ppm) or ``< threshold`` (dark, SWI)."""
    v, vs, m = _check(volume, voxel_size_mm, mask)
    sel = (v > threshold) if bright else (v < threshold)
    return _remove_small(sel & m, vs, min_volume_mm3)
