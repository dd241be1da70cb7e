"""What the background-removal families share: the result type, the erosion that belongs to a kernel radius, the
assembly of a result from the work grid, and the accuracy measures used by the tests and benchmarks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from .._distance import distance_mm
from ..errors import QSMInputError
from ..geometry import check_voxel_size
from ..utils.grid import FFTCrop

#: What a background method's input checks say there is no voxel to do in an empty mask.
PURPOSE = "remove the background field in"


@dataclass
class BackgroundResult:
    """Output of a background removal method.

    ``local_field_ppm``: the tissue (local) field, zero outside ``mask``. ``mask``: the eroded mask in which the
    local field is valid. ``background_field_ppm``: total − local inside ``mask`` (``None`` where the method never
    sees the unwrapped total field, as HARPERELLA on wrapped phase). ``info``: method, parameters in effect,
    iterations, residuals, eroded voxel count, faces touched.
    """

    local_field_ppm: np.ndarray
    mask: np.ndarray
    background_field_ppm: Optional[np.ndarray]
    info: Dict[str, Any] = field(default_factory=dict)


def faces_touched(mask: np.ndarray) -> List[str]:
    """The volume faces (``axis0-low`` … ``axis2-high``) the mask touches, where the field is less reliable."""
    out = []
    for ax in range(3):
        for side, idx in (("low", 0), ("high", -1)):
            if np.take(mask, idx, axis=ax).any():
                out.append(f"axis{ax}-{side}")
    return out


def check_radius(name: str, radius_mm: float, vox: np.ndarray) -> None:
    """A kernel radius must reach the neighbouring voxels (at least the largest voxel size)."""
    if radius_mm < float(vox.max()) - 1e-9:
        raise QSMInputError(
            f"{name}={radius_mm:g} mm is below the voxel size {float(vox.max()):g} mm: the kernel would not reach "
            "the neighbouring voxels"
        )


def margin(radius_mm: float, vox: np.ndarray, extra: int = 2) -> List[int]:
    """Work-grid margin (voxels per axis) for a kernel of ``radius_mm``."""
    return [int(np.ceil(radius_mm / v)) + extra for v in vox]


def distance_inside(mask_c: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) from each mask voxel to the nearest voxel outside the mask (0 outside)."""
    return distance_mm(mask_c, vox).astype(np.float32)


def eroded(dist: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels whose whole sphere of ``radius_mm`` (voxel centres within the radius) lies inside the mask."""
    return dist > radius_mm * (1.0 + 1e-6)


def result(method: str, crop: FFTCrop, field_c: Optional[np.ndarray], local_c: np.ndarray, eroded_c: np.ndarray,
           mask: np.ndarray, info: Dict[str, Any]) -> BackgroundResult:
    """The :class:`BackgroundResult` of a work-grid solution: local field zero outside the kept (eroded) mask,
    background = total − local there (None without a total field), eroded voxel count and faces touched."""
    local_c = np.where(eroded_c, local_c, 0).astype(np.float32)
    local = crop.put(local_c)
    em = crop.put(eroded_c, dtype=bool)
    bg = None
    if field_c is not None:
        bg = crop.put(np.where(eroded_c, field_c - local_c, 0).astype(np.float32))
    info = dict(info)
    info.update(method=method, eroded_voxels=int(np.count_nonzero(mask) - np.count_nonzero(em)),
                mask_touches_faces=faces_touched(mask))
    return BackgroundResult(local_field_ppm=local, mask=em, background_field_ppm=bg, info=info)


def local_field_nrmse(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """‖(est − mean) − (true − mean)‖ / ‖true − mean‖ inside ``mask`` (means over the mask), as a fraction."""
    m = np.asarray(mask, dtype=bool)
    e = np.asarray(estimate, dtype=np.float64)[m]
    t = np.asarray(truth, dtype=np.float64)[m]
    e = e - e.mean()
    t = t - t.mean()
    return float(np.linalg.norm(e - t) / np.linalg.norm(t))


def edge_loss_mm(mask: np.ndarray, eroded_mask: np.ndarray, voxel_size_mm: Sequence[float]) -> float:
    """Depth (mm) of the brain edge a method gives up: the largest distance from a removed voxel to the outside."""
    m = np.asarray(mask, dtype=bool)
    lost = m & ~np.asarray(eroded_mask, dtype=bool)
    if not lost.any():
        return 0.0
    d = ndimage.distance_transform_edt(np.pad(m, 1), sampling=check_voxel_size(voxel_size_mm))[1:-1, 1:-1, 1:-1]
    return float(d[lost].max())


__all__ = ["BackgroundResult", "PURPOSE", "faces_touched", "check_radius", "margin", "distance_inside", "eroded",
           "result", "local_field_nrmse", "edge_loss_mm"]
