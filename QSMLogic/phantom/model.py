"""The head model: tissue labels, susceptibility, R2* and proton density on any voxel grid.

World coordinates are MNI152 millimetres (RAS, origin at the anterior commissure); the field of view is centred on
the head (:data:`HEAD_CENTER_MNI_MM`). Objects the atlases do not provide are placed at anatomically plausible MNI
coordinates as soft-edged ellipsoids and tubes (:mod:`.shapes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np

from ..errors import QSMInputError
from .shapes import Canvas, Grid, ellipsoid_fraction, tube_fraction
from .tissues import BY_NAME, LABEL_NAMES, TISSUES

#: World (MNI mm) point at the centre of the field of view: the centre of the brain's bounding box.
HEAD_CENTER_MNI_MM: Tuple[float, float, float] = (0.0, -16.0, 6.0)


@dataclass
class HeadModel:
    """A head phantom on one voxel grid (all volumes share ``shape``; ``affine`` maps indices to RAS mm)."""

    chi_ppm: np.ndarray
    labels: np.ndarray
    label_names: Dict[int, str]
    brain_mask: np.ndarray
    r2star_hz: np.ndarray
    proton_density: np.ndarray
    affine: np.ndarray
    voxel_size_mm: Tuple[float, float, float]
    shape: Tuple[int, int, int]


def _check_grid(shape: Sequence[int], voxel_size_mm: Sequence[float]) -> Tuple[Tuple[int, ...], Tuple[float, ...]]:
    try:
        shp = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        raise QSMInputError(f"shape must be 3 positive integers, got {shape!r}") from None
    if len(shp) != 3 or min(shp) < 8:
        raise QSMInputError(f"shape must be 3 integers ≥ 8, got {shape!r}")
    v = np.asarray(voxel_size_mm, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)) or np.any(v <= 0) or np.any(v > 10):
        raise QSMInputError(f"voxel_size_mm must be 3 positive sizes ≤ 10 mm, got {voxel_size_mm!r}")
    return shp, tuple(float(x) for x in v)


def grid_for(shape: Sequence[int], voxel_size_mm: Sequence[float]) -> Tuple[Grid, np.ndarray]:
    """The voxel grid centred on :data:`HEAD_CENTER_MNI_MM` and its 4×4 index-to-RAS affine."""
    shp, v = _check_grid(shape, voxel_size_mm)
    origin = tuple(c - 0.5 * (n - 1) * d for c, n, d in zip(HEAD_CENTER_MNI_MM, shp, v))
    aff = np.eye(4)
    aff[:3, :3] = np.diag(v)
    aff[:3, 3] = origin
    return Grid(shp, v, origin), aff  # type: ignore[arg-type]


def _both(center: Sequence[float]) -> Tuple[Tuple[float, float, float], ...]:
    """A structure's left and right copies (mirrored in x)."""
    return ((-abs(center[0]), center[1], center[2]), (abs(center[0]), center[1], center[2]))


#: Geometric head layers (ellipsoid centre and semi-axes, MNI mm), outermost first.
_HEAD_CENTER = (0.0, -17.0, 4.0)
_LAYERS: Tuple[Tuple[str, Tuple[float, float, float]], ...] = (
    ("scalp", (74.0, 95.0, 87.0)),
    ("skull", (68.0, 89.0, 81.0)),
    ("CSF", (61.0, 82.0, 74.0)),
    ("GM", (58.0, 79.0, 71.0)),
    ("WM", (54.0, 75.0, 67.0)),
)

#: Deep grey nuclei as ellipsoids (centre of the right copy, semi-axes), MNI mm.
_NUCLEI: Tuple[Tuple[str, Tuple[float, float, float], Tuple[float, float, float]], ...] = (
    ("ventricles", (10.0, -5.0, 16.0), (6.0, 24.0, 8.0)),
    ("caudate", (13.0, 12.0, 10.0), (5.0, 9.0, 7.0)),
    ("nucleus accumbens", (9.0, 12.0, -8.0), (4.0, 4.0, 4.0)),
    ("putamen", (25.0, 2.0, 0.0), (5.0, 13.0, 9.0)),
    ("globus pallidus externa (GPe)", (20.0, -3.0, -1.0), (3.0, 8.0, 5.0)),
    ("globus pallidus interna (GPi)", (16.0, -5.0, -3.0), (2.5, 6.0, 4.0)),
    ("thalamus", (11.0, -18.0, 7.0), (8.0, 15.0, 8.0)),
    ("subthalamic nucleus", (12.0, -13.0, -5.0), (2.5, 4.5, 2.0)),
    ("substantia nigra", (11.0, -18.0, -12.0), (3.0, 7.0, 3.0)),
    ("red nucleus", (5.0, -20.0, -8.0), (3.0, 3.5, 3.5)),
    ("dentate nucleus", (15.0, -57.0, -35.0), (6.0, 8.0, 5.0)),
)

#: Sinus air (frontal, sphenoid) and ear canals: ellipsoids (centre, semi-axes), MNI mm.
_AIR: Tuple[Tuple[Tuple[float, float, float], Tuple[float, float, float]], ...] = (
    ((0.0, 68.0, -14.0), (14.0, 7.0, 10.0)),
    ((0.0, 18.0, -40.0), (10.0, 10.0, 8.0)),
    ((-66.0, -20.0, -30.0), (10.0, 4.0, 4.0)),
    ((66.0, -20.0, -30.0), (10.0, 4.0, 4.0)),
)

#: Veins as (polyline points, radius mm): superior sagittal sinus (curved, mostly ⟂ B0 at the vertex), straight
#: sinus (oblique), internal cerebral veins (⟂ B0) and cortical veins at 0°, 45° and 90° to B0.
_VEINS: Tuple[Tuple[Tuple[Tuple[float, float, float], ...], float], ...] = (
    (((0.0, 58.0, 38.0), (0.0, 38.0, 62.0), (0.0, 10.0, 74.0), (0.0, -25.0, 76.0), (0.0, -58.0, 64.0),
      (0.0, -84.0, 38.0), (0.0, -96.0, 8.0)), 3.5),
    (((0.0, -46.0, 8.0), (0.0, -70.0, 2.0), (0.0, -92.0, -6.0)), 2.5),
    (((-2.5, -2.0, 16.0), (-2.5, -40.0, 10.0)), 1.2),
    (((2.5, -2.0, 16.0), (2.5, -40.0, 10.0)), 1.2),
    (((-48.0, -12.0, 8.0), (-48.0, -12.0, 42.0)), 1.5),
    (((42.0, 16.0, 12.0), (42.0, 42.0, 38.0)), 1.5),
    (((18.0, -62.0, 34.0), (50.0, -62.0, 34.0)), 1.5),
)

_CALCIFICATION = ((28.0, -40.0, 28.0), 3.0)
_HEMORRHAGE = ((-28.0, 24.0, 20.0), 5.0)


def _paint_geometric_base(cv: Canvas) -> None:
    """Scalp, skull, CSF, GM and WM as nested ellipsoids, then sinus air."""
    for name, semi in _LAYERS:
        got = ellipsoid_fraction(cv.grid, _HEAD_CENTER, semi)
        if got is not None:
            cv.paint(got[0], got[1], BY_NAME[name])
    for c, semi in _AIR:
        got = ellipsoid_fraction(cv.grid, c, semi)
        if got is not None:
            cv.paint(got[0], got[1], BY_NAME["sinus air"])


def _paint_inclusions(cv: Canvas, seed: int, nuclei: bool) -> None:
    """Nuclei (optionally), veins, one calcification and one lobulated haemorrhage, inside the brain only."""
    brain_labels = np.array([t.label for t in TISSUES if t.in_brain], np.int16)
    intracranial = np.isin(cv.labels, brain_labels).astype(np.float32)
    if nuclei:
        for name, c, semi in _NUCLEI:
            for cc in _both(c):
                got = ellipsoid_fraction(cv.grid, cc, semi)
                if got is not None:
                    cv.paint(got[0], got[1], BY_NAME[name], intracranial)
    for pts, radius in _VEINS:
        got = tube_fraction(cv.grid, pts, radius)
        if got is not None:
            cv.paint(got[0], got[1], BY_NAME["veins"], intracranial)
    got = ellipsoid_fraction(cv.grid, _CALCIFICATION[0], (_CALCIFICATION[1],) * 3)
    if got is not None:
        cv.paint(got[0], got[1], BY_NAME["calcification"], intracranial)
    rng = np.random.default_rng(seed)
    c0, r0 = np.asarray(_HEMORRHAGE[0]), _HEMORRHAGE[1]
    for k in range(4):
        off = rng.normal(0.0, 0.35 * r0, 3) if k else np.zeros(3)
        semi = r0 * rng.uniform(0.6, 0.9, 3) if k else (r0,) * 3
        got = ellipsoid_fraction(cv.grid, c0 + off, semi)
        if got is not None:
            cv.paint(got[0], got[1], BY_NAME["hemorrhage"], intracranial)


def make_head_model(
    shape: Sequence[int] = (256, 256, 160),
    voxel_size_mm: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> HeadModel:
    """Build the head phantom on a grid of ``shape`` voxels of ``voxel_size_mm`` centred on the head.

    ``seed`` makes the random details (the lobulated haemorrhage's shape) reproducible. Tissue values come from
    :mod:`.tissues`. The brain mask is every intracranial label (CSF, ventricles, brain tissue, veins, lesions).
    """
    grid, aff = grid_for(shape, voxel_size_mm)
    cv = Canvas(grid)
    cv.chi_ppm[:] = BY_NAME["background/air"].chi_ppm
    _paint_geometric_base(cv)
    _paint_inclusions(cv, seed, nuclei=True)
    brain_labels = np.array([t.label for t in TISSUES if t.in_brain], np.int16)
    brain = np.isin(cv.labels, brain_labels)
    return HeadModel(
        chi_ppm=cv.chi_ppm, labels=cv.labels, label_names=dict(LABEL_NAMES), brain_mask=brain,
        r2star_hz=cv.r2star_hz, proton_density=cv.proton_density, affine=aff,
        voxel_size_mm=grid.voxel_size_mm, shape=grid.shape,
    )
