"""Voxel geometry: voxel size and B0 direction from an index-to-world affine.

Conventions (docs/conventions.md): the affine maps array indices, in the array's own axis order, to world millimetres
(RAS for NIfTI/Slicer, LPS for DICOM/ITK — the superior axis is +z in both). For a head-first supine scan B0 is
along world z, so the B0 direction in the array's axes is ``R^T (0, 0, 1)`` where ``R`` is the unit direction
matrix (columns = world directions of the array axes).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import QSMInputError


def check_affine(affine: np.ndarray) -> np.ndarray:
    """Return ``affine`` as a float64 4×4 array after checking that it is finite and non-singular."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4):
        raise QSMInputError(f"affine must be 4x4, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise QSMInputError("affine contains NaN or Inf")
    if abs(np.linalg.det(a[:3, :3])) < 1e-9:
        raise QSMInputError("affine is singular (a zero voxel size or collinear axes)")
    return a


def voxel_size_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis (the column norms of the affine's 3×3 part)."""
    a = check_affine(affine)
    return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))  # type: ignore[return-value]


def direction_matrix_from_affine(affine: np.ndarray) -> np.ndarray:
    """Unit direction matrix (3×3, columns = world direction of each array axis)."""
    a = check_affine(affine)
    return a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0)


def b0_direction_from_affine(
    affine: np.ndarray, b0_world: Sequence[float] = (0.0, 0.0, 1.0)
) -> tuple[float, float, float]:
    """Unit B0 direction in the array's own axes: ``R^T · b0_world`` (R the unit direction matrix).

    ``b0_world`` defaults to the scanner's superior axis (+z in RAS and LPS alike). The sign of B0 does not
    matter to the dipole kernel, which depends on ``(k·b̂)²``.
    """
    b = np.asarray(b0_world, dtype=np.float64)
    b = b / np.linalg.norm(b)
    r = direction_matrix_from_affine(affine)
    d = r.T @ b
    d = d / np.linalg.norm(d)
    return tuple(float(v) for v in d)  # type: ignore[return-value]


def check_b0_direction(b0_direction: Sequence[float], tol: float = 1e-3) -> np.ndarray:
    """Return ``b0_direction`` as a float64 3-vector after checking it has unit length."""
    b = np.asarray(b0_direction, dtype=np.float64).reshape(-1)
    if b.shape != (3,) or not np.all(np.isfinite(b)):
        raise QSMInputError(f"b0_direction must be 3 finite numbers, got {b0_direction!r}")
    n = float(np.linalg.norm(b))
    if abs(n - 1.0) > tol:
        raise QSMInputError(f"b0_direction must be a unit vector, its length is {n:.4g}")
    return b / n


def check_voxel_size(voxel_size_mm: Sequence[float], ndim: int = 3) -> np.ndarray:
    """Return ``voxel_size_mm`` as a float64 array after checking it is positive and finite."""
    v = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if v.shape != (ndim,) or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise QSMInputError(f"voxel_size_mm must be {ndim} positive numbers, got {voxel_size_mm!r}")
    return v


def affine_from_geometry(
    voxel_size_mm: Sequence[float],
    direction: np.ndarray | None = None,
    origin_mm: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Build an index-to-world affine from voxel size, unit direction matrix (columns) and origin."""
    v = check_voxel_size(voxel_size_mm)
    r = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    a = np.eye(4)
    a[:3, :3] = r * v[None, :]
    a[:3, 3] = np.asarray(origin_mm, dtype=np.float64)
    return a


def rotation_matrix(axis: Sequence[float], angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` about ``axis`` (Rodrigues' formula)."""
    u = np.asarray(axis, dtype=np.float64)
    u = u / np.linalg.norm(u)
    t = np.deg2rad(angle_deg)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * (k @ k)


def reverse_axes_affine(affine: np.ndarray) -> np.ndarray:
    """Affine for the same volume with array axes reversed: (i, j, k) order ↔ Slicer's (k, j, i) order."""
    a = check_affine(affine)
    p = np.zeros((4, 4))
    p[0, 2] = p[1, 1] = p[2, 0] = p[3, 3] = 1.0
    return a @ p
