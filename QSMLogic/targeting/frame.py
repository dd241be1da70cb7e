"""Leksell stereotactic frame coordinates and arc settings.

Frame coordinates (Leksell Stereotactic System G; the convention SlicerNetstim's StereotacticPlan module uses,
checked against its source in 2026-12): the frame centre is (X, Y, Z) = (100, 100, 100) mm; X increases toward
the patient's **left**, Y **anterior**, Z **inferior**. The frame registration is a rigid 4×4 matrix
``ras_to_frame`` mapping image RAS (mm) to *frame-aligned RAS*: RAS axes along the frame's axes with the origin at
the frame centre. Then ``X = 100 − R``, ``Y = 100 + A``, ``Z = 100 − S``.

Arc settings: a trajectory is set by the ring angle (rotation of the arc about the frame's mounting axis) and the
arc angle (position of the instrument carrier along the arc). Both are 90° for a vertical trajectory. With the
direction ``d`` from target to entry in frame-aligned RAS, the unit mounting axis ``w`` and the in-plane axis ``q``
of the mounting (:data:`MOUNTINGS`)::

    d = cos(arc)·w + sin(arc)·(cos(ring)·q + sin(ring)·ẑ)

so ``arc = arccos(d·w)`` and ``ring = atan2(d·ẑ, d·q)``: for the standard lateral-right mounting an arc angle
below 90° tilts the entry toward the patient's right and a ring angle below 90° tilts it anterior. (Derived from
the rotation sequence of StereotacticPlan's ``computeTrajectoryFromTargetMountingRingArc``.)

The frame registration can come from a transform or from localiser fiducials: points identified in the image
whose frame coordinates are known (e.g. the N-localiser rods); the rigid least-squares fit is Arun, Huang &
Blostein, IEEE TPAMI 9 (1987) 698–700 (SVD solution, with the reflection correction of Umeyama, IEEE TPAMI 13
(1991) 376–380).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

from ..errors import QSMInputError
from .acpc import as_point, as_points

#: Frame coordinates (mm) of the frame centre.
LEKSELL_CENTER_MM = (100.0, 100.0, 100.0)
#: Frame-aligned RAS (origin at the frame centre) → Leksell (X, Y, Z): X = 100 − R, Y = 100 + A, Z = 100 − S.
FRAME_RAS_TO_LEKSELL = np.array([
    [-1.0, 0.0, 0.0, 100.0],
    [0.0, 1.0, 0.0, 100.0],
    [0.0, 0.0, -1.0, 100.0],
    [0.0, 0.0, 0.0, 1.0],
])
#: Arc mountings: (mounting axis w, in-plane axis q) in frame-aligned RAS.
MOUNTINGS: Dict[str, Tuple[Tuple[float, float, float], Tuple[float, float, float]]] = {
    "lateral-right": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "lateral-left": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "sagittal-anterior": ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),
    "sagittal-posterior": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
}


def check_rigid(matrix: np.ndarray, name: str, tol: float = 1e-4) -> np.ndarray:
    """``matrix`` as a float64 4×4 after checking that it is a proper rigid transform (rotation + translation)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise QSMInputError(f"{name} must be a finite 4x4 matrix, got shape {m.shape}")
    r = m[:3, :3]
    if not np.allclose(m[3], (0.0, 0.0, 0.0, 1.0), atol=tol) or not np.allclose(r.T @ r, np.eye(3), atol=tol) \
            or np.linalg.det(r) < 0:
        raise QSMInputError(
            f"{name} is not rigid (it scales, shears or mirrors); a frame registration must be a rotation plus a "
            "translation")
    return m


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def leksell_coordinates(points_ras_mm: Sequence[Sequence[float]], ras_to_frame: np.ndarray) -> np.ndarray:
    """Leksell (X, Y, Z) mm of RAS points (N, 3) under the rigid frame registration ``ras_to_frame``."""
    m = check_rigid(ras_to_frame, "ras_to_frame")
    return _apply(FRAME_RAS_TO_LEKSELL @ m, as_points(points_ras_mm, "points_ras_mm"))


def ras_from_leksell(points_xyz_mm: Sequence[Sequence[float]], ras_to_frame: np.ndarray) -> np.ndarray:
    """RAS points (N, 3) of Leksell (X, Y, Z) coordinates under the frame registration ``ras_to_frame``."""
    m = check_rigid(ras_to_frame, "ras_to_frame")
    return _apply(np.linalg.inv(FRAME_RAS_TO_LEKSELL @ m), as_points(points_xyz_mm, "points_xyz_mm"))


@dataclass(frozen=True)
class FrameRegistration:
    """A rigid image-RAS → frame-aligned-RAS registration fitted to localiser fiducials."""

    ras_to_frame: np.ndarray
    rms_residual_mm: float
    max_residual_mm: float


def frame_registration_from_fiducials(
    image_points_ras_mm: Sequence[Sequence[float]],
    frame_points_xyz_mm: Sequence[Sequence[float]],
) -> FrameRegistration:
    """Rigid least-squares fit (Arun 1987 / Umeyama 1991) of localiser fiducials to their Leksell coordinates.

    ``image_points_ras_mm`` are the fiducials as found in the image (RAS mm) and ``frame_points_xyz_mm`` the same
    fiducials' known Leksell coordinates, in the same order. At least 3 non-collinear points are needed; the
    residuals tell how well the localiser was identified.
    """
    src = as_points(image_points_ras_mm, "image_points_ras_mm")
    xyz = as_points(frame_points_xyz_mm, "frame_points_xyz_mm")
    if src.shape != xyz.shape:
        raise QSMInputError(f"{len(src)} image fiducials but {len(xyz)} frame coordinates; they must pair up")
    if len(src) < 3:
        raise QSMInputError(f"a frame registration needs at least 3 localiser fiducials, got {len(src)}")
    dst = _apply(np.linalg.inv(FRAME_RAS_TO_LEKSELL), xyz)
    cs, cd = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - cs, dst - cd
    sv = np.linalg.svd(a, compute_uv=False)
    if sv[1] < 1e-3 * max(sv[0], 1e-12) or sv[1] < 1.0:
        raise QSMInputError("the localiser fiducials are (nearly) collinear; a frame registration needs points "
                            "spread over a plane or volume")
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    r = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = cd - r @ cs
    res = np.linalg.norm(_apply(m, src) - dst, axis=1)
    return FrameRegistration(ras_to_frame=m, rms_residual_mm=float(np.sqrt(np.mean(res**2))),
                             max_residual_mm=float(res.max()))


def _mounting(mounting: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        w, q = MOUNTINGS[mounting]
    except KeyError:
        raise QSMInputError(f"unknown arc mounting {mounting!r}; choose one of {sorted(MOUNTINGS)}") from None
    return np.asarray(w), np.asarray(q)


def trajectory_direction(ring_deg: float, arc_deg: float, mounting: str = "lateral-right") -> np.ndarray:
    """Unit direction from target to entry in frame-aligned RAS for the given ring and arc angles (degrees)."""
    w, q = _mounting(mounting)
    ring, arc = np.deg2rad(float(ring_deg)), np.deg2rad(float(arc_deg))
    return np.cos(arc) * w + np.sin(arc) * (np.cos(ring) * q + np.sin(ring) * np.array([0.0, 0.0, 1.0]))


def ring_arc_angles(
    target_ras_mm: Sequence[float],
    entry_ras_mm: Sequence[float],
    ras_to_frame: np.ndarray,
    mounting: str = "lateral-right",
) -> Tuple[float, float]:
    """Ring and arc angles (degrees) of the trajectory entry → target under the frame registration.

    Raises :class:`QSMInputError` when entry and target coincide or the entry lies below the target in the frame
    (an arc trajectory enters from above).
    """
    m = check_rigid(ras_to_frame, "ras_to_frame")
    t = as_point(target_ras_mm, "target")
    e = as_point(entry_ras_mm, "entry")
    d = m[:3, :3] @ (e - t)
    n = float(np.linalg.norm(d))
    if n < 1.0:
        raise QSMInputError(f"entry and target are {n:.2f} mm apart; a trajectory needs two distinct points")
    d /= n
    w, q = _mounting(mounting)
    if d[2] <= 0:
        raise QSMInputError("the entry point is not above the target in the frame; ring and arc angles are defined "
                            "for entries superior to the target")
    arc = float(np.degrees(np.arccos(np.clip(d @ w, -1.0, 1.0))))
    ring = float(np.degrees(np.arctan2(d[2], d @ q)))
    return ring, arc
