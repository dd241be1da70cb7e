"""Regions on the subject's grid from an atlas (registered) or from a user label map (resampled with its geometry).

Both give a :class:`SubjectRegions`: an int32 label map on the χ grid, its regions (name, structure, side, colour),
where they came from (``source``, stated on every measurement row) and, for the atlas, the volume each region should
have on the subject, so regions cut by the field of view are flagged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import QSMInputError
from .atlas import Atlas, Region, atlas_box_mm, atlas_template, split_side, template_brain_centre_ras
from .registration import (
    CancelFn, ProgressFn, TemplateRegistration, register_template, resample_labels_to_grid, warp_to_subject,
)

#: Colours given to user labels that come without one (tab10-like, cycled).
_USER_COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
                 (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


@dataclass
class SubjectRegions:
    """Labels on the subject grid and what they mean."""

    labels: np.ndarray
    regions: Dict[int, Region]
    source: str
    expected_volume_mm3: Optional[Dict[int, float]] = None
    registration: Optional[TemplateRegistration] = None
    warning: str = ""


def _linear_part(transform) -> np.ndarray:
    """The 3×3 matrix of the affine part of a registration transform (subject → template)."""
    import SimpleITK as sitk

    t = transform
    if isinstance(t, sitk.CompositeTransform):
        t = t.GetNthTransform(0)
    return np.asarray(sitk.AffineTransform(t).GetMatrix(), np.float64).reshape(3, 3)


def atlas_regions(
    subject_image: np.ndarray,
    subject_affine: np.ndarray,
    atlas: Atlas,
    contrast: str,
    subject_mask: Optional[np.ndarray] = None,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    **registration_options,
) -> SubjectRegions:
    """Register the atlas's ``contrast`` template to ``subject_image`` and carry its labels (nearest neighbour) onto
    the subject grid. ``registration_options`` go to :func:`~.registration.register_template`."""
    template, template_affine = atlas_template(atlas, contrast)
    reg = register_template(subject_image, subject_affine, template, template_affine, template_brain_centre_ras(),
                            subject_mask=subject_mask, progress=progress, cancel=cancel, **registration_options)
    labels = warp_to_subject(atlas.labels, atlas.affine, reg.transform, np.shape(subject_image), subject_affine)
    det = abs(float(np.linalg.det(_linear_part(reg.transform))))
    atlas_vox = abs(float(np.linalg.det(atlas.affine[:3, :3])))
    counts = np.bincount(np.clip(atlas.labels, 0, None).ravel(), minlength=max(atlas.regions) + 1)
    expected = {k: float(counts[k]) * atlas_vox / det for k in atlas.regions if counts[k] > 0}
    warning = ""
    lo, hi = atlas_box_mm(atlas, 0.0)
    nuclei_mm = (hi - lo) / det ** (1.0 / 3.0)
    fov_mm = np.abs(np.asarray(subject_affine)[:3, :3]) @ np.asarray(np.shape(subject_image), np.float64)
    if np.any(np.sort(fov_mm) < np.sort(nuclei_mm)):
        warning = (f"the field of view ({' × '.join(f'{v:.0f}' for v in fov_mm)} mm) is smaller than the atlas's "
                   f"nuclei box ({' × '.join(f'{v:.0f}' for v in nuclei_mm)} mm): the registration cannot be trusted "
                   "to place the atlas; regions flagged outside the field of view are those the registration put "
                   "outside it")
    kind = "deformable" if len(reg.stages) == 3 else "affine"
    source = f"atlas {atlas.name} registered ({kind}, {contrast} template)"
    regions = {k: r for k, r in atlas.regions.items() if k in expected}
    return SubjectRegions(labels, regions, source, expected, reg, warning)


def warp_probability(atlas: Atlas, label: int, regions: SubjectRegions, subject_shape: Sequence[int],
                     subject_affine: np.ndarray) -> np.ndarray:
    """Probability map of an atlas ``label`` on the subject grid (linear interpolation through the registration)."""
    if regions.registration is None:
        raise QSMInputError("these regions come from no registration")
    return warp_to_subject(atlas.probability(label), atlas.affine, regions.registration.transform, subject_shape,
                           subject_affine, "linear")


def user_regions(
    labels: np.ndarray,
    labels_affine: Optional[np.ndarray],
    target_shape: Sequence[int],
    target_affine: np.ndarray,
    names: Optional[Dict[int, str]] = None,
    source: str = "user label map",
) -> SubjectRegions:
    """A user label map on any grid, resampled (nearest neighbour, through both geometries) onto the χ grid.

    ``labels_affine`` is required unless the label map is already on the χ grid (same shape): a label map without
    geometry on another grid is an error, since its position cannot be known. ``names``: label → name (sides are
    read from ``L``/``R``/``Left``/``Right`` prefixes); when given, exactly the named labels are regions (a named
    label absent from the map gives a flagged row); without it
    every label is, called ``label <k>``.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise QSMInputError(f"the label map must be 3D, got shape {lab.shape}")
    if labels_affine is None:
        if tuple(lab.shape) != tuple(int(n) for n in target_shape):
            raise QSMInputError(f"the label map (shape {lab.shape}) has no geometry and is not on the χ grid "
                                f"{tuple(target_shape)}: give it with its affine (a NIfTI/NRRD file or a node)")
        if not np.issubdtype(lab.dtype, np.integer):
            if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
                raise QSMInputError("the label map has non-integer values: give integer labels")
        on_grid = lab.astype(np.int32)
    else:
        on_grid = resample_labels_to_grid(lab, labels_affine, target_shape, target_affine)
    present = sorted(int(k) for k in np.unique(lab) if k > 0)
    if not present:
        raise QSMInputError("the label map has no label > 0")
    if names is not None:
        present = sorted(int(k) for k in names)
    regions = {}
    for i, k in enumerate(present):
        name = names[k] if names is not None else f"label {k}"
        structure, side = split_side(name)
        regions[k] = Region(k, name, structure, side, _USER_COLOURS[i % len(_USER_COLOURS)])
    return SubjectRegions(on_grid, regions, source)
