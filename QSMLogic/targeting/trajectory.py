"""Safety distances along a straight entry → target trajectory: to vessels and to each nucleus boundary.

The path is sampled every ``step_mm`` (default 0.25 mm) from entry to target; each sample's distance to the
nearest voxel centre of the vessel segmentation (or of a nucleus's boundary voxels) is exact for those centres
(k-d tree in RAS mm, so any voxel orientation and anisotropy is right). Distances to voxel centres exceed the
distance to the voxel's edge by at most half a voxel diagonal; choose the margin with that in mind. A warning
is raised when the path comes closer to a vessel than ``margin_mm`` (default 2 mm, a common planning margin for
DBS lead trajectories, e.g. Elias et al., J Neurosurg 110 (2009) 201–207 on haemorrhage risk near sulci and
vessels).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ..errors import QSMInputError
from ..geometry import check_affine
from .acpc import as_point

DEFAULT_MARGIN_MM = 2.0


@dataclass
class NucleusClearance:
    """How a trajectory passes one nucleus: closest distance to its boundary, and whether the path enters it."""

    name: str
    min_distance_to_boundary_mm: float
    passes_through: bool
    path_length_inside_mm: float


@dataclass
class TrajectoryReport:
    """Distances along one trajectory, with the warnings the margin raises."""

    entry_ras_mm: np.ndarray
    target_ras_mm: np.ndarray
    length_mm: float
    margin_mm: float
    min_vessel_distance_mm: Optional[float]
    closest_vessel_point_ras_mm: Optional[np.ndarray]
    closest_vessel_depth_from_entry_mm: Optional[float]
    nuclei: List[NucleusClearance] = field(default_factory=list)
    target_depth_in_nucleus_mm: Optional[float] = None
    warnings: List[str] = field(default_factory=list)


def _centres(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]


def _sample_mask(mask: np.ndarray, affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    ijk = np.rint(np.linalg.solve(affine[:3, :3], (points - affine[:3, 3]).T).T).astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.asarray(mask.shape)), axis=1)
    out = np.zeros(len(points), bool)
    out[ok] = mask[tuple(ijk[ok].T)]
    return out


def boundary_voxels(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour outside it."""
    m = np.asarray(mask, bool)
    return m & ~ndi.binary_erosion(m, border_value=0)


def trajectory_report(
    entry_ras_mm: Sequence[float],
    target_ras_mm: Sequence[float],
    affine: np.ndarray,
    vessel_mask: Optional[np.ndarray] = None,
    nuclei: Optional[Mapping[str, np.ndarray]] = None,
    target_nucleus: Optional[str] = None,
    margin_mm: float = DEFAULT_MARGIN_MM,
    step_mm: float = 0.25,
) -> TrajectoryReport:
    """Distances from the segment entry → target to the vessels and to each nucleus (name → mask).

    All masks share the grid of ``affine`` (indices → RAS mm). ``target_nucleus`` names the nucleus the target
    should be in: its depth (distance from the target to that nucleus's boundary) is reported, and a target
    outside it is a warning.
    """
    aff = check_affine(affine)
    e = as_point(entry_ras_mm, "entry")
    t = as_point(target_ras_mm, "target")
    length = float(np.linalg.norm(t - e))
    if length < 1.0:
        raise QSMInputError(f"entry and target are {length:.2f} mm apart; a trajectory needs two distinct points")
    if not margin_mm >= 0:
        raise QSMInputError(f"margin_mm must be ≥ 0, got {margin_mm}")
    if not 0 < step_mm <= 1.0:
        raise QSMInputError(f"step_mm must be within (0, 1] mm, got {step_mm}")
    n = int(np.ceil(length / step_mm)) + 1
    s = np.linspace(0.0, 1.0, n)[:, None]
    path = e + s * (t - e)
    rep = TrajectoryReport(entry_ras_mm=e, target_ras_mm=t, length_mm=length, margin_mm=float(margin_mm),
                           min_vessel_distance_mm=None, closest_vessel_point_ras_mm=None,
                           closest_vessel_depth_from_entry_mm=None)
    if vessel_mask is not None:
        vm = np.asarray(vessel_mask, bool)
        if vm.ndim != 3:
            raise QSMInputError(f"vessel mask must be 3D, got shape {vm.shape}")
        if not vm.any():
            rep.warnings.append("the vessel segmentation is empty: no vessel distances")
        else:
            d, _ = cKDTree(_centres(vm, aff)).query(path)
            k = int(np.argmin(d))
            rep.min_vessel_distance_mm = float(d[k])
            rep.closest_vessel_point_ras_mm = path[k]
            rep.closest_vessel_depth_from_entry_mm = float(s[k, 0] * length)
            if d[k] < margin_mm:
                rep.warnings.append(
                    f"trajectory passes {d[k]:.1f} mm from a vessel (margin {margin_mm:g} mm) at "
                    f"{s[k, 0] * length:.1f} mm from the entry, RAS ({', '.join(f'{c:.1f}' for c in path[k])})")
    shapes = {np.shape(m) for m in (nuclei or {}).values()}
    if vessel_mask is not None:
        shapes.add(np.shape(vessel_mask))
    if len(shapes) > 1:
        raise QSMInputError(f"the vessel and nucleus masks must share one grid, got shapes {sorted(shapes)}")
    for name, mask in (nuclei or {}).items():
        m = np.asarray(mask, bool)
        if not m.any():
            raise QSMInputError(f"nucleus {name!r} has an empty mask")
        tree = cKDTree(_centres(boundary_voxels(m), aff))
        inside = _sample_mask(m, aff, path)
        rep.nuclei.append(NucleusClearance(
            name=name, min_distance_to_boundary_mm=float(tree.query(path)[0].min()),
            passes_through=bool(inside.any()), path_length_inside_mm=float(inside.sum() * length / (n - 1))))
        if name == target_nucleus:
            rep.target_depth_in_nucleus_mm = float(tree.query(t)[0])
            if not inside[-1]:
                rep.warnings.append(f"the target is outside {name}")
    if target_nucleus is not None and target_nucleus not in (nuclei or {}):
        raise QSMInputError(f"target nucleus {target_nucleus!r} is not among the nuclei given: {sorted(nuclei or {})}")
    return rep


def report_rows(reports: Mapping[str, TrajectoryReport]) -> List[Dict[str, object]]:
    """Flat rows (one per trajectory) for a table or CSV: lengths, vessel distance, nucleus clearances, warnings."""
    rows = []
    for name, r in reports.items():
        row: Dict[str, object] = {
            "trajectory": name, "length_mm": round(r.length_mm, 2), "margin_mm": r.margin_mm,
            "min_vessel_distance_mm": None if r.min_vessel_distance_mm is None else round(r.min_vessel_distance_mm, 2),
            "target_depth_in_nucleus_mm": None if r.target_depth_in_nucleus_mm is None
            else round(r.target_depth_in_nucleus_mm, 2),
        }
        for c in r.nuclei:
            row[f"{c.name} distance_mm"] = round(c.min_distance_to_boundary_mm, 2)
            row[f"{c.name} inside_mm"] = round(c.path_length_inside_mm, 2)
        row["warnings"] = "; ".join(r.warnings)
        rows.append(row)
    return rows


def entry_from_angles(
    target_ras_mm: Sequence[float], acpc_rotation: np.ndarray, side: str, sagittal_deg: float = 60.0,
    coronal_deg: float = 15.0, length_mm: float = 70.0,
) -> np.ndarray:
    """An entry point ``length_mm`` from the target along a stated approach, in the AC-PC frame's axes.

    ``sagittal_deg``: elevation of the trajectory above the AC-PC line in the sagittal plane (anterior approach);
    ``coronal_deg``: tilt away from the mid-sagittal plane toward the target's side. The defaults (60°, 15°) are
    a typical precoronal approach to the STN; the proposal is a starting point the user edits.
    """
    if side not in ("right", "left"):
        raise QSMInputError(f"side must be 'right' or 'left', got {side!r}")
    if not 0 < length_mm <= 200:
        raise QSMInputError(f"length_mm must be within (0, 200] mm, got {length_mm}")
    t = as_point(target_ras_mm, "target")
    s, c = np.radians(float(sagittal_deg)), np.radians(float(coronal_deg))
    lateral = np.sin(c) * (1.0 if side == "right" else -1.0)
    d = np.array([lateral, np.cos(c) * np.cos(s), np.cos(c) * np.sin(s)])
    return t + length_mm * (np.asarray(acpc_rotation, float) @ d)
