"""Automatic DBS targets from a nucleus label map: centroids or stated subregions, per hemisphere.

Direct targeting places the lead in the nucleus that QSM shows (Liu et al., Radiology 269 (2013) 216–223:
QSM depicts the STN better than T2-weighted imaging). The functional
("sweet spot") subregions proposed here are stated, simple geometric parts of the segmented nucleus:

* ``centroid``: the centre of mass of the nucleus's voxels;
* ``dorsolateral`` (STN, the sensorimotor part; Hamani et al., Brain 127 (2004) 4–20): the centroid of the third
  of the voxels furthest along the unit vector (lateral + dorsal)/√2;
* ``posteroventral`` (GPi, the sensorimotor part targeted for dystonia and Parkinson's disease; Laitinen et al.,
  J Neurosurg 76 (1992) 53–61): the centroid of the third furthest along (posterior + ventral)/√2.

Directions are those of the AC-PC frame when one is given, else of RAS. The Vim, which neither the phantom nor
the CIT168 atlas segments, gets the indirect AC-PC formula (:func:`vim_indirect_target`).

Arrays are indexed as given; ``affine`` maps array indices to RAS mm (any orientation).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from scipy import ndimage as ndi

from ..errors import QSMInputError
from ..geometry import check_affine
from .acpc import ACPCFrame, as_point

#: Subregion name → direction in (lateral, anterior, superior) units, "lateral" meaning toward the nucleus's side.
SUBREGIONS: Dict[str, Optional[Sequence[float]]] = {
    "centroid": None,
    "dorsolateral": (1.0, 0.0, 1.0),
    "posteroventral": (0.0, -1.0, -1.0),
}
#: Fraction of the nucleus's voxels a subregion keeps (those furthest along its direction).
SUBREGION_FRACTION = 1.0 / 3.0
SIDES = ("right", "left")


@dataclass(frozen=True)
class NucleusTarget:
    """One proposed target: nucleus, side, RAS position (mm), how it was found, and its number of voxels."""

    nucleus: str
    side: str
    ras_mm: np.ndarray
    method: str
    n_voxels: int

    @property
    def name(self) -> str:
        """Markup label, e.g. ``STN right``."""
        return f"{self.nucleus} {self.side}"


def _world(indices: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return indices @ affine[:3, :3].T + affine[:3, 3]


def _check_labels(labels: np.ndarray, affine: np.ndarray) -> tuple:
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise QSMInputError(f"labels must be a 3D label map, got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer) and not np.issubdtype(lab.dtype, np.bool_):
        raise QSMInputError(f"labels must be integers, got {lab.dtype}")
    return lab, check_affine(affine)


def hemisphere_voxels(
    mask: np.ndarray, affine: np.ndarray, acpc: Optional[ACPCFrame] = None, name: str = "nucleus",
) -> Dict[str, np.ndarray]:
    """RAS positions (N, 3) of the voxels of a bilateral structure ``mask``, split into right and left.

    With an AC-PC frame the split is its mid-sagittal plane (x > 0: right). Without one, the two largest connected
    parts of the mask are the two sides (the one further toward +R is right); a structure that is not two separate
    parts then raises :class:`QSMInputError`.
    """
    idx = np.argwhere(mask).astype(np.float64)
    if len(idx) == 0:
        raise QSMInputError(f"{name} has no voxels in the label map")
    pts = _world(idx, affine)
    if acpc is not None:
        x = acpc.to_acpc(pts)[:, 0]
        return {"right": pts[x > 0], "left": pts[x <= 0]}
    comp, n = ndi.label(mask)
    if n < 2:
        raise QSMInputError(f"{name} is one connected region; give an AC-PC frame to split it into hemispheres")
    sizes = np.bincount(comp.ravel())[1:]
    big = np.argsort(sizes)[::-1][:2] + 1
    parts = [_world(np.argwhere(comp == k).astype(np.float64), affine) for k in big]
    parts.sort(key=lambda p: p[:, 0].mean(), reverse=True)
    return {"right": parts[0], "left": parts[1]}


def subregion_point(
    points_ras_mm: np.ndarray, side: str, subregion: str, acpc: Optional[ACPCFrame] = None,
) -> np.ndarray:
    """Target point (RAS mm) of one side of a nucleus given its voxel positions: centroid or a stated subregion."""
    if subregion not in SUBREGIONS:
        raise QSMInputError(f"unknown subregion {subregion!r}; choose one of {sorted(SUBREGIONS)}")
    if side not in SIDES:
        raise QSMInputError(f"side must be 'right' or 'left', got {side!r}")
    direction = SUBREGIONS[subregion]
    if direction is None:
        return points_ras_mm.mean(axis=0)
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    if side == "left":
        d[0] = -d[0]
    rot = acpc.rotation if acpc is not None else np.eye(3)
    score = points_ras_mm @ (rot @ d)
    keep = score >= np.quantile(score, 1.0 - SUBREGION_FRACTION)
    return points_ras_mm[keep].mean(axis=0)


def nucleus_targets(
    labels: np.ndarray,
    affine: np.ndarray,
    nuclei: Mapping[str, Union[int, Sequence[int]]],
    subregions: Optional[Mapping[str, str]] = None,
    acpc: Optional[ACPCFrame] = None,
    min_voxels: int = 3,
) -> List[NucleusTarget]:
    """Right and left targets of each nucleus in ``nuclei`` (name → label value, or the values of its parts, e.g.
    an atlas's left and right labels) of the label map.

    ``subregions`` maps a nucleus name to ``centroid`` (the default), ``dorsolateral`` or ``posteroventral``.
    A side with fewer than ``min_voxels`` voxels raises :class:`QSMInputError` (the nucleus is missing there).
    """
    lab, aff = _check_labels(labels, affine)
    subregions = dict(subregions or {})
    unknown = sorted(set(subregions) - set(nuclei))
    if unknown:
        raise QSMInputError(f"subregions given for nuclei not in the list: {unknown}")
    out: List[NucleusTarget] = []
    for name, value in nuclei.items():
        sub = subregions.get(name, "centroid")
        sides = hemisphere_voxels(np.isin(lab, np.atleast_1d(value)), aff, acpc, name)
        for side in SIDES:
            pts = sides[side]
            if len(pts) < min_voxels:
                raise QSMInputError(f"{name} has {len(pts)} voxels on the {side} side (label {value}); "
                                    f"at least {min_voxels} are needed for a target")
            method = "centroid" if sub == "centroid" else \
                f"{sub} {SUBREGION_FRACTION:.2g} of the nucleus ({'AC-PC' if acpc is not None else 'RAS'} axes)"
            out.append(NucleusTarget(nucleus=name, side=side, ras_mm=subregion_point(pts, side, sub, acpc),
                                     method=method, n_voxels=len(pts)))
    return out


#: Indirect Vim coordinates (AC-PC frame): lateral distance from the midline, fraction of the AC-PC length
#: anterior to PC, height above the AC-PC plane — the classical values of thalamic DBS for tremor (e.g.
#: Papavassiliou et al., Neurosurgery 54 (2004) 1120–1130: 11 mm from the third ventricle wall ≈ 14–15 mm from
#: the midline, a quarter of AC-PC anterior to PC, at the AC-PC plane).
VIM_LATERAL_MM = 14.5
VIM_FRACTION_FROM_PC = 0.25
VIM_VERTICAL_MM = 0.0


def vim_indirect_target(
    acpc: ACPCFrame, side: str, lateral_mm: float = VIM_LATERAL_MM,
    fraction_from_pc: float = VIM_FRACTION_FROM_PC, vertical_mm: float = VIM_VERTICAL_MM,
) -> NucleusTarget:
    """Indirect (AC-PC formula) Vim target of one side, in RAS mm."""
    if side not in SIDES:
        raise QSMInputError(f"side must be 'right' or 'left', got {side!r}")
    if not 0.0 <= fraction_from_pc <= 1.0:
        raise QSMInputError(f"fraction_from_pc must be within 0..1, got {fraction_from_pc}")
    x = lateral_mm if side == "right" else -lateral_mm
    y = (fraction_from_pc - 0.5) * acpc.acpc_length_mm
    ras = acpc.to_ras([x, y, vertical_mm])[0]
    return NucleusTarget(nucleus="Vim", side=side, ras_mm=ras, n_voxels=0,
                         method=f"indirect AC-PC formula ({lateral_mm:g} mm lateral, {fraction_from_pc:g} of AC-PC "
                                f"anterior to PC, {vertical_mm:g} mm vertical)")


def check_inside(
    point_ras_mm: Sequence[float], mask: np.ndarray, affine: np.ndarray, name: str = "target",
    what: str = "the brain mask",
) -> None:
    """Raise :class:`QSMInputError` when ``point_ras_mm`` lies outside the volume or outside ``mask``."""
    p = as_point(point_ras_mm, name)
    m = np.asarray(mask)
    aff = check_affine(affine)
    ijk = np.linalg.solve(aff[:3, :3], p - aff[:3, 3])
    idx = np.round(ijk).astype(int)
    ras = ", ".join(f"{v:.1f}" for v in p)
    if np.any(idx < 0) or np.any(idx >= np.asarray(m.shape[:3])):
        raise QSMInputError(f"{name} at RAS ({ras}) mm is outside the volume")
    if not m[tuple(idx)]:
        raise QSMInputError(f"{name} at RAS ({ras}) mm is outside {what}")


#: Target nuclei and the (lower-case) name fragments that identify them in a label table: the phantom's tissue names
#: and the CIT168 atlas's region names ("L Subthalamic Nucleus", "R Globus Pallidus interna", …) both match.
NUCLEUS_NAME_PATTERNS: Dict[str, Sequence[str]] = {
    "STN": ("subthalamic",),
    "GPi": ("globus pallidus interna", "pallidus interna", "gpi"),
    "thalamus": ("thalamus",),
}


def nuclei_from_names(label_names: Mapping[int, str], wanted: Sequence[str] = ("STN", "GPi")) -> Dict[str, List[int]]:
    """Label values of each wanted nucleus found by name in a label table (value → name), e.g. a colour table.

    Raises :class:`QSMInputError` naming the nuclei no label matches.
    """
    out: Dict[str, List[int]] = {}
    for nucleus in wanted:
        if nucleus not in NUCLEUS_NAME_PATTERNS:
            raise QSMInputError(f"unknown nucleus {nucleus!r}; known: {sorted(NUCLEUS_NAME_PATTERNS)}")
        pats = NUCLEUS_NAME_PATTERNS[nucleus]
        values = sorted(int(v) for v, n in label_names.items() if v and any(p in str(n).lower() for p in pats))
        if values:
            out[nucleus] = values
    missing = [n for n in wanted if n not in out]
    if missing:
        raise QSMInputError(f"no label is named like {missing} in the label table")
    return out
