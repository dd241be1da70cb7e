"""Is the volume big enough for QSM? Refusals for 2D/thin inputs and warnings for a field of view that cuts the brain.

Background field removal separates the field of sources outside the brain mask from that of sources inside it,
and dipole inversion explains the local field by susceptibility inside the mask (Schweser et al., NeuroImage 2011,
for SHARP; Liu et al., NMR Biomed 2011, for PDF; Kee et al., IEEE TBME 2017, review). Both assume the mask holds
all the tissue whose field is measured. When the field of view cuts through the brain, the tissue beyond the cut
faces is a source whose field is neither background (it is not outside the brain) nor explained by χ inside the
mask, and the dipole kernel's streaks from those faces cross the whole map. A volume that is 2D or only a few slices
thick has no usable third k-space axis for the dipole kernel at all.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from .errors import QSMInputError

#: Fewest voxels along each axis for background removal and dipole inversion to be attempted.
MIN_VOXELS_PER_AXIS = 8
#: Field-of-view extent (mm) below which the local field is warned to be ambiguous (a crop, not a head).
SMALL_FOV_MM = 60.0
#: Fraction of a face of the volume covered by the mask above which the brain counts as cut by that face.
CUT_FACE_FRACTION = 0.5


def check_volume_is_3d(shape: Sequence[int], voxel_size_mm: Sequence[float], what: str = "the input") -> None:
    """Raise :class:`QSMInputError` for a 2D or too-thin volume, with the reason (before any computation)."""
    shape = tuple(int(s) for s in shape[:3])
    for ax, (n, v) in enumerate(zip(shape, voxel_size_mm)):
        if n == 1:
            raise QSMInputError(
                f"{what} is 2D (a single slice along array axis {ax + 1}, shape {shape}): QSM needs a 3D volume, "
                "because the dipole field and its inversion extend in all three directions"
            )
        if n < MIN_VOXELS_PER_AXIS:
            raise QSMInputError(
                f"{what} has only {n} voxels ({n * float(v):.3g} mm) along array axis {ax + 1} (shape {shape}): "
                f"background removal and dipole inversion need at least {MIN_VOXELS_PER_AXIS} along every axis"
            )


def cut_faces(mask: np.ndarray) -> List[str]:
    """The faces of the volume (e.g. "axis 3 first slice") that the mask covers over more than
    :data:`CUT_FACE_FRACTION` of their area."""
    m = np.asarray(mask, dtype=bool)
    out = []
    for ax in range(3):
        for end, idx in (("first", 0), ("last", -1)):
            face = np.take(m, idx, axis=ax)
            if face.mean() > CUT_FACE_FRACTION:
                out.append(f"axis {ax + 1} {end} slice")
    return out


def fov_warnings(mask: np.ndarray, voxel_size_mm: Sequence[float]) -> List[str]:
    """Warnings (empty when none) that the field of view is too small or cuts the brain, for the user and the
    provenance: the QSM of such data carries streaks and offsets that no method can remove."""
    m = np.asarray(mask, dtype=bool)
    extent = [n * float(v) for n, v in zip(m.shape, voxel_size_mm)]
    warnings = []
    small = [f"{e:.0f} mm along axis {ax + 1}" for ax, e in enumerate(extent) if e < SMALL_FOV_MM]
    if small:
        warnings.append(
            f"the field of view is small ({', '.join(small)}; under {SMALL_FOV_MM:.0f} mm): a crop, not a whole "
            "brain, so the fields of tissue just outside it cannot be told from the local field"
        )
    faces = cut_faces(m)
    if faces:
        warnings.append(
            f"the brain mask covers most of {len(faces)} of the 6 faces of the volume ({', '.join(faces)}): the "
            "field of view cuts the brain, and the tissue beyond those faces leaves fields that background removal "
            "cannot remove and the inversion turns into streaks; treat χ near those faces (and, with 4+ cut faces, "
            "everywhere) as unreliable. SWI is not affected"
        )
    return warnings
