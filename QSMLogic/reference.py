"""Susceptibility reference (stage ``reference``): QSM gives χ up to a constant, so every map states its zero.

Methods (docs/conventions.md: report the reference used with every map):

* ``whole_brain`` — subtract the mean χ in the mask (the usual choice when no CSF segmentation is at hand;
  Deistung et al., NeuroImage 2013 discuss its dependence on the mask).
* ``csf`` — subtract the mean χ in CSF: voxels of ``labels`` whose value is in ``csf_labels`` (default 5, the
  phantom's ventricles; lateral-ventricle CSF is the common choice, Straub et al., Magn Reson Med 78 (2017)
  204–214) or a ``csf_mask``; only voxels inside the mask count.
* ``none`` — keep the inversion's own offset.

Each returns a :class:`ReferencedMap` with the map (float32, 0 outside the mask), the reference name and the offset
subtracted (ppm).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .errors import QSMInputError
from .params import MethodSpec, Param, register_method


@dataclass
class ReferencedMap:
    """A susceptibility map with the reference it is relative to (``reference``) and the offset removed (ppm)."""

    chi_ppm: np.ndarray
    reference: str
    offset_ppm: float


def _inputs(chi_ppm: np.ndarray, mask: Optional[np.ndarray]):
    chi = np.asarray(chi_ppm, dtype=np.float32)
    if chi.ndim != 3:
        raise QSMInputError(f"chi_ppm must be 3D, got shape {chi.shape}")
    m = np.isfinite(chi) if mask is None else np.asarray(mask, dtype=bool)
    if m.shape != chi.shape:
        raise QSMInputError(f"mask shape {m.shape} differs from chi_ppm shape {chi.shape}")
    if not m.any():
        raise QSMInputError("mask is empty: no voxel to reference")
    if not np.all(np.isfinite(chi[m])):
        raise QSMInputError("chi_ppm has NaN or Inf values inside the mask")
    return chi, m


def _apply(chi: np.ndarray, m: np.ndarray, region: np.ndarray, name: str) -> ReferencedMap:
    offset = float(np.mean(chi[region], dtype=np.float64))
    out = np.where(m, chi - np.float32(offset), np.float32(0.0)).astype(np.float32)
    return ReferencedMap(chi_ppm=out, reference=name, offset_ppm=offset)


def reference_whole_brain(chi_ppm: np.ndarray, mask: Optional[np.ndarray] = None) -> ReferencedMap:
    """χ minus its mean over the mask (the whole brain)."""
    chi, m = _inputs(chi_ppm, mask)
    return _apply(chi, m, m, "whole_brain")


def parse_labels(text: str) -> tuple:
    """Comma-separated integers, e.g. ``"4,5"`` → (4, 5); QSMInputError naming the text otherwise."""
    try:
        vals = tuple(int(v) for v in str(text).replace(";", ",").split(",") if v.strip())
    except ValueError as exc:
        raise QSMInputError(f"csf_labels must be comma-separated integers, got {text!r}") from exc
    if not vals:
        raise QSMInputError("csf_labels is empty")
    return vals


def reference_csf(chi_ppm: np.ndarray, mask: Optional[np.ndarray] = None, labels: Optional[np.ndarray] = None,
                  csf_mask: Optional[np.ndarray] = None, csf_labels: str = "5",
                  min_voxels: int = 10) -> ReferencedMap:
    """χ minus its mean over CSF (from ``csf_mask``, else ``labels`` ∈ ``csf_labels``), inside the mask."""
    chi, m = _inputs(chi_ppm, mask)
    if csf_mask is not None:
        region = np.asarray(csf_mask, dtype=bool)
        if region.shape != chi.shape:
            raise QSMInputError(f"csf_mask shape {region.shape} differs from chi_ppm shape {chi.shape}")
        source = "csf_mask"
    elif labels is not None:
        lab = np.asarray(labels)
        if lab.shape != chi.shape:
            raise QSMInputError(f"labels shape {lab.shape} differs from chi_ppm shape {chi.shape}")
        keys = parse_labels(csf_labels)
        region = np.isin(lab, keys)
        source = "labels " + ",".join(str(k) for k in keys)
    else:
        raise QSMInputError("the CSF reference needs labels (with csf_labels) or a csf_mask")
    region = region & m
    n = int(region.sum())
    if n < min_voxels:
        raise QSMInputError(f"the CSF region has {n} voxels inside the mask (fewer than {min_voxels}): "
                            "check csf_labels or use the whole_brain reference")
    return _apply(chi, m, region, f"csf ({source})")


def reference_none(chi_ppm: np.ndarray, mask: Optional[np.ndarray] = None) -> ReferencedMap:
    """χ unchanged (0 outside the mask): the inversion's own zero."""
    chi, m = _inputs(chi_ppm, mask)
    return ReferencedMap(chi_ppm=np.where(m, chi, np.float32(0.0)).astype(np.float32), reference="none",
                         offset_ppm=0.0)


register_method("reference", MethodSpec(
    key="whole_brain", label="Whole-brain mean", reference="Deistung et al., NeuroImage 2013",
    func=reference_whole_brain))
register_method("reference", MethodSpec(
    key="csf", label="CSF (ventricles)", reference="Straub et al., Magn Reson Med 2017",
    params=(Param("csf_labels", str, "5", "label values of the CSF reference region (5 = phantom ventricles)"),
            Param("min_voxels", int, 10, "fewest CSF voxels accepted", minimum=1, maximum=100000)),
    help="Needs a label map (pipeline labels) or a csf_mask.",
    func=reference_csf))
register_method("reference", MethodSpec(
    key="none", label="None (inversion's own offset)", reference="—", func=reference_none))

__all__ = ["ReferencedMap", "reference_whole_brain", "reference_csf", "reference_none", "parse_labels"]
