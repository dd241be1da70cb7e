"""AC-PC (Talairach-style) planning coordinates from the anterior and posterior commissures and a midline point.

Convention (DESIGN.md §7, as stereotactic planning systems report targets; Talairach & Tournoux, *Co-planar
stereotaxic atlas of the human brain*, Thieme 1988):

* origin at the mid-commissural point (MCP), halfway between AC and PC;
* +y along PC → AC (anterior positive);
* +z in the mid-sagittal plane through AC, PC and the midline point, perpendicular to y, toward the midline
  point (which must lie *above* the AC-PC line, e.g. on the interhemispheric fissure): superior positive;
* +x = y × z, which completes a right-handed frame and points to the patient's right.

A target is reported as lateral (|x|, with its side), AP (y) and vertical (z) in mm. All points are RAS
millimetres (Slicer's world frame); the frame is rigid, so AC-PC coordinates do not depend on the head's pose.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import QSMInputError

#: AC-PC distances below this are refused: adult AC-PC lengths are 23–30 mm (Talairach & Tournoux 1988), so a
#: shorter one means two misplaced points, not a small brain.
MIN_ACPC_LENGTH_MM = 10.0
#: The midline point must be at least this far from the AC-PC line, or the mid-sagittal plane is ill-defined.
MIN_MIDLINE_OFFSET_MM = 5.0


def as_point(point: Optional[Sequence[float]], name: str) -> np.ndarray:
    """``point`` as a float64 3-vector, or a :class:`QSMInputError` naming ``name`` when missing or malformed."""
    if point is None:
        raise QSMInputError(f"{name} is missing: place the {name} point")
    p = np.asarray(point, dtype=np.float64).reshape(-1)
    if p.shape != (3,):
        raise QSMInputError(f"{name} must be 3 coordinates (RAS mm), got {point!r}")
    if not np.all(np.isfinite(p)):
        raise QSMInputError(f"{name} has NaN or infinite coordinates: {point!r}; place the {name} point")
    return p


def as_points(points: Sequence[Sequence[float]], name: str) -> np.ndarray:
    """``points`` as a float64 (N, 3) array (a single point becomes (1, 3)), checked finite."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim == 1:
        p = p.reshape(1, -1)
    if p.ndim != 2 or p.shape[1] != 3:
        raise QSMInputError(f"{name} must be points of 3 coordinates (N, 3), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise QSMInputError(f"{name} contains NaN or infinite coordinates")
    return p


@dataclass(frozen=True)
class ACPCFrame:
    """An AC-PC coordinate frame in RAS mm.

    ``rotation`` has the unit x (right), y (anterior) and z (superior) axes of the AC-PC frame as its columns, in
    RAS; ``origin_ras_mm`` is the mid-commissural point.
    """

    ac_ras_mm: np.ndarray
    pc_ras_mm: np.ndarray
    midline_ras_mm: np.ndarray
    origin_ras_mm: np.ndarray
    rotation: np.ndarray

    @property
    def acpc_length_mm(self) -> float:
        """Distance from AC to PC in mm."""
        return float(np.linalg.norm(self.ac_ras_mm - self.pc_ras_mm))

    @property
    def ras_to_acpc(self) -> np.ndarray:
        """4×4 rigid matrix mapping RAS points to AC-PC coordinates."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T
        m[:3, 3] = -self.rotation.T @ self.origin_ras_mm
        return m

    @property
    def acpc_to_ras(self) -> np.ndarray:
        """4×4 rigid matrix mapping AC-PC coordinates to RAS (Slicer's transform-to-parent of the AC-PC frame)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.origin_ras_mm
        return m

    def to_acpc(self, points_ras_mm: Sequence[Sequence[float]]) -> np.ndarray:
        """AC-PC coordinates (N, 3) of RAS points (N, 3) (a single point gives a (1, 3) array)."""
        p = as_points(points_ras_mm, "points_ras_mm")
        return (p - self.origin_ras_mm) @ self.rotation

    def to_ras(self, points_acpc_mm: Sequence[Sequence[float]]) -> np.ndarray:
        """RAS points (N, 3) of AC-PC coordinates (N, 3)."""
        p = as_points(points_acpc_mm, "points_acpc_mm")
        return p @ self.rotation.T + self.origin_ras_mm

    def describe(self, point_ras_mm: Sequence[float]) -> Dict[str, object]:
        """Planning-system report of one RAS point: lateral (|x|) with side, AP (y) and vertical (z) in mm."""
        x, y, z = self.to_acpc(as_point(point_ras_mm, "point"))[0]
        return {
            "lateral_mm": float(abs(x)), "side": "right" if x >= 0 else "left",
            "ap_mm": float(y), "vertical_mm": float(z),
            "x_mm": float(x), "y_mm": float(y), "z_mm": float(z),
        }


def acpc_frame(
    ac_ras_mm: Optional[Sequence[float]],
    pc_ras_mm: Optional[Sequence[float]],
    midline_ras_mm: Optional[Sequence[float]],
) -> ACPCFrame:
    """The AC-PC frame defined by AC, PC and a mid-sagittal point above the AC-PC line (all RAS mm).

    Raises :class:`QSMInputError` when a point is missing or not finite, when AC and PC are closer than
    :data:`MIN_ACPC_LENGTH_MM` (the same point placed twice), or when the midline point lies within
    :data:`MIN_MIDLINE_OFFSET_MM` of the AC-PC line (no plane is defined).
    """
    ac = as_point(ac_ras_mm, "AC")
    pc = as_point(pc_ras_mm, "PC")
    mid = as_point(midline_ras_mm, "midline point")
    length = float(np.linalg.norm(ac - pc))
    if length < MIN_ACPC_LENGTH_MM:
        raise QSMInputError(
            f"AC and PC are {length:.2f} mm apart (AC = PC?); they must be at least {MIN_ACPC_LENGTH_MM:g} mm "
            "apart (adult AC-PC length is 23-30 mm)")
    origin = 0.5 * (ac + pc)
    y = (ac - pc) / length
    v = mid - origin
    z = v - (v @ y) * y
    offset = float(np.linalg.norm(z))
    if offset < MIN_MIDLINE_OFFSET_MM:
        raise QSMInputError(
            f"the midline point is {offset:.2f} mm from the AC-PC line; place it in the mid-sagittal plane at least "
            f"{MIN_MIDLINE_OFFSET_MM:g} mm above the AC-PC line (e.g. on the interhemispheric fissure)")
    z = z / offset
    x = np.cross(y, z)
    rot = np.column_stack([x, y, z])
    for a in (ac, pc, mid, origin, rot):
        a.setflags(write=False)
    return ACPCFrame(ac_ras_mm=ac, pc_ras_mm=pc, midline_ras_mm=mid, origin_ras_mm=origin, rotation=rot)
