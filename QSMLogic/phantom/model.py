"""The head model: tissue labels, susceptibility, R2* and proton density on any voxel grid.

The anatomy is the shipped 1 mm label map derived from the MNI152 2009a template and the CIT168 atlas
(:mod:`.build_data`; the construction follows the QSM Challenge 2.0 head model idea of Marques et al., Magn Reson
Med 86 (2021) 526–542: segmented tissue classes with literature susceptibility, R2* and proton density). It is
resampled to the requested grid with anti-aliasing, separately inside and outside the intracranial space so that
the brain mask edge stays sharp and brain voxels never mix with skull or air. The paramagnetic and diamagnetic
parts of χ and the irreversible rate R2 (χ-separation ground truth, :mod:`.tissues`) are resampled and painted the
same way, so χ⁺ − |χ⁻| = χ in every voxel. Veins, a calcification and a haemorrhage are then painted as soft-edged
tubes and ellipsoids (:mod:`.shapes`), so they keep their partial volume at any resolution.

World coordinates (RAS mm) are MNI152 coordinates times :data:`HEAD_SCALE` (origin at the anterior commissure);
the field of view is centred on the intracranial space.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage as ndi

from ..errors import QSMInputError
from .shapes import Canvas, Grid, ellipsoid_fraction, tube_fraction
from .tissues import BY_NAME, LABEL_NAMES, TISSUES

#: World millimetres per MNI millimetre: the MNI152 template is larger than an average adult head (its intracranial
#: volume is ≈ 1.95 L); 0.92 brings it to ≈ 1.5 L (typical adult, e.g. Ritchie et al., Cereb Cortex 2018).
HEAD_SCALE = 0.92
#: World (MNI mm, before scaling) point at the centre of the field of view: the centre of the intracranial box.
HEAD_CENTER_MNI_MM: Tuple[float, float, float] = (0.0, -17.0, 10.0)
#: The shipped anatomy (see :mod:`.build_data`).
DATA_FILE = Path(__file__).resolve().parent.parent / "data" / "head_labels_1mm.npz"


@dataclass
class HeadModel:
    """A head phantom on one voxel grid (all volumes share ``shape``; ``affine`` maps indices to RAS mm).

    ``chi_para_ppm`` (χ⁺ ≥ 0) and ``chi_dia_ppm`` (the magnitude |χ⁻| ≥ 0 of the diamagnetic part) are the sources
    with ``chi_ppm = chi_para_ppm − chi_dia_ppm``; ``r2_hz`` is the irreversible transverse relaxation rate at 3 T,
    so that R2' = R2* − R2 = Dr·(χ⁺ + |χ⁻|) in tissue with sub-voxel sources (:mod:`.tissues`). They are None for
    models built elsewhere.
    """

    chi_ppm: np.ndarray
    labels: np.ndarray
    label_names: Dict[int, str]
    brain_mask: np.ndarray
    r2star_hz: np.ndarray
    proton_density: np.ndarray
    affine: np.ndarray
    voxel_size_mm: Tuple[float, float, float]
    shape: Tuple[int, int, int]
    chi_para_ppm: Optional[np.ndarray] = None
    chi_dia_ppm: Optional[np.ndarray] = None
    r2_hz: Optional[np.ndarray] = None


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
    """The voxel grid centred on the head and its 4×4 index-to-RAS affine.

    The origin is rounded to whole millimetres (the head centre is within half a millimetre of the grid centre).
    """
    shp, v = _check_grid(shape, voxel_size_mm)
    origin = tuple(float(np.round(HEAD_SCALE * c - 0.5 * (n - 1) * d)) for c, n, d in zip(HEAD_CENTER_MNI_MM, shp, v))
    aff = np.eye(4)
    aff[:3, :3] = np.diag(v)
    aff[:3, 3] = origin
    return Grid(shp, v, origin), aff  # type: ignore[arg-type]


def _mni(point: Sequence[float]) -> Tuple[float, float, float]:
    """World position of an MNI point."""
    return tuple(HEAD_SCALE * float(c) for c in point)  # type: ignore[return-value]


#: Veins as (polyline points in MNI mm, radius mm): superior sagittal sinus (along the midline under the skull,
#: ⟂ B0 at the vertex and ∥ B0 at the back), straight sinus (oblique), internal cerebral veins (⟂ B0) and three
#: cortical veins at 0°, 45° and 90° to B0.
VEINS: Tuple[Tuple[Tuple[Tuple[float, float, float], ...], float], ...] = (
    (((0.0, 58.0, 24.0), (0.0, 47.0, 44.0), (0.0, 25.0, 57.0), (0.0, 5.0, 67.0), (0.0, -16.0, 72.0),
      (0.0, -39.0, 70.0), (0.0, -60.0, 60.0), (0.0, -77.0, 43.0), (0.0, -91.0, 21.0), (0.0, -93.0, 0.0)), 3.5),
    (((0.0, -44.0, 10.0), (0.0, -70.0, 2.0), (0.0, -92.0, -4.0)), 2.5),
    (((-2.5, -4.0, 16.0), (-2.5, -40.0, 10.0)), 1.2),
    (((2.5, -4.0, 16.0), (2.5, -40.0, 10.0)), 1.2),
    (((-52.0, -12.0, 8.0), (-52.0, -12.0, 40.0)), 1.5),
    (((44.0, 14.0, 12.0), (44.0, 40.0, 38.0)), 1.5),
    (((18.0, -66.0, 36.0), (48.0, -66.0, 36.0)), 1.5),
)
#: Calcification: centre (MNI mm), radius (mm), in the right parietal white matter.
CALCIFICATION: Tuple[Tuple[float, float, float], float] = ((26.0, -40.0, 30.0), 3.0)
#: Haemorrhage: centre (MNI mm), radius (mm) of its main lobe, in the left frontal white matter.
HEMORRHAGE: Tuple[Tuple[float, float, float], float] = ((-26.0, 24.0, 22.0), 4.5)


@lru_cache(maxsize=1)
def _labels_1mm() -> Tuple[np.ndarray, np.ndarray]:
    """The shipped uint8 label map on the MNI 1 mm grid and the MNI position (mm) of its voxel (0, 0, 0)."""
    if not DATA_FILE.exists():
        raise FileNotFoundError(f"phantom anatomy {DATA_FILE} is missing; run python -m QSMLogic.phantom.build_data")
    with np.load(DATA_FILE) as f:
        return f["labels"], np.asarray(f["origin_mm"], np.float64)


def _lut(attr: str) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for t in TISSUES:
        lut[t.label] = getattr(t, attr)
    return lut


@lru_cache(maxsize=4)
def _anatomy(shape: Tuple[int, int, int], voxel_size_mm: Tuple[float, float, float]):
    """Labels, χ, χ⁺, R2*, R2, PD and brain mask of the template anatomy on the grid (cached; read-only arrays)."""
    grid, _ = grid_for(shape, voxel_size_mm)
    lab1, origin1 = _labels_1mm()
    step = np.asarray(grid.voxel_size_mm) / HEAD_SCALE  # template voxels per output voxel
    offset = (np.asarray(grid.origin_mm) / HEAD_SCALE - origin1)
    sigma = 0.42 * np.sqrt(np.maximum(step**2 - 1.0, 0.0))  # anti-aliasing for coarser grids

    def resample(vol: np.ndarray, order: int = 1) -> np.ndarray:
        if order == 1 and np.any(sigma > 0.05):
            vol = ndi.gaussian_filter(vol, sigma, mode="nearest")
        return ndi.affine_transform(vol, step, offset=offset, output_shape=grid.shape, order=order, mode="nearest",
                                    prefilter=False)

    brain_lut = np.zeros(256, np.float32)
    brain_lut[[t.label for t in TISSUES if t.in_brain]] = 1.0
    icv1 = brain_lut[lab1]
    chi1 = _lut("chi_ppm")[lab1]
    icv = resample(icv1)
    brain = icv >= 0.5

    def resample_split(vol1: np.ndarray) -> np.ndarray:
        """Resampled separately inside and outside the intracranial space (brain voxels never mix with skull)."""
        inside = resample(vol1 * icv1)
        outside = resample(vol1 * (1.0 - icv1))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(brain, inside / icv, outside / (1.0 - icv)).astype(np.float32)

    chi = resample_split(chi1)
    chi_para = resample_split(_lut("chi_para_ppm")[lab1])
    r2 = resample(_lut("r2star_hz")[lab1]).astype(np.float32)
    r2_irr = resample(_lut("r2_or_r2star_hz")[lab1]).astype(np.float32)
    pd = resample(_lut("proton_density")[lab1]).astype(np.float32)
    labels = resample(lab1, order=0).astype(np.int16)
    in_brain = brain_lut[labels] > 0
    labels[brain & ~in_brain] = BY_NAME["CSF"].label
    labels[~brain & in_brain] = BY_NAME["skull"].label
    for a in (labels, chi, chi_para, r2, r2_irr, pd, brain):
        a.setflags(write=False)
    return labels, chi, chi_para, r2, r2_irr, pd, brain


def _paint_inclusions(cv: Canvas, brain: np.ndarray, seed: int) -> None:
    """Veins, one calcification and one lobulated haemorrhage, inside the brain mask only."""
    within = brain.astype(np.float32)
    for pts, radius in VEINS:
        got = tube_fraction(cv.grid, [_mni(p) for p in pts], radius)
        if got is not None:
            cv.paint(got[0], got[1], BY_NAME["veins"], within)
    got = ellipsoid_fraction(cv.grid, _mni(CALCIFICATION[0]), (CALCIFICATION[1],) * 3)
    if got is not None:
        cv.paint(got[0], got[1], BY_NAME["calcification"], within)
    rng = np.random.default_rng(seed)
    c0, r0 = np.asarray(_mni(HEMORRHAGE[0])), HEMORRHAGE[1]
    for k in range(4):
        off = rng.normal(0.0, 0.35 * r0, 3) if k else np.zeros(3)
        semi = r0 * rng.uniform(0.6, 0.9, 3) if k else (r0,) * 3
        got = ellipsoid_fraction(cv.grid, c0 + off, semi)
        if got is not None:
            cv.paint(got[0], got[1], BY_NAME["hemorrhage"], within)


def make_head_model(
    shape: Sequence[int] = (256, 256, 160),
    voxel_size_mm: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
) -> HeadModel:
    """Build the head phantom on a grid of ``shape`` voxels of ``voxel_size_mm`` centred on the head.

    Any shape and voxel size (≤ 10 mm) work; parts of the head outside the field of view are cut off. ``seed``
    makes the random details (the lobulated haemorrhage's shape) reproducible. Tissue values come from
    :mod:`.tissues`. The brain mask is the intracranial space (CSF, ventricles, brain tissue, veins, lesions).
    """
    shp, v = _check_grid(shape, voxel_size_mm)
    grid, aff = grid_for(shp, v)
    labels, chi, chi_para, r2, r2_irr, pd, brain = _anatomy(shp, v)  # type: ignore[arg-type]
    cv = Canvas(grid)
    cv.labels[:] = labels
    cv.chi_ppm[:] = chi
    cv.chi_para_ppm[:] = chi_para
    cv.r2star_hz[:] = r2
    cv.r2_hz[:] = r2_irr
    cv.proton_density[:] = pd
    _paint_inclusions(cv, brain, seed)
    return HeadModel(
        chi_ppm=cv.chi_ppm, labels=cv.labels, label_names=dict(LABEL_NAMES), brain_mask=brain.copy(),
        r2star_hz=cv.r2star_hz, proton_density=cv.proton_density, affine=aff,
        voxel_size_mm=grid.voxel_size_mm, shape=grid.shape,
        chi_para_ppm=cv.chi_para_ppm, chi_dia_ppm=cv.chi_para_ppm - cv.chi_ppm, r2_hz=cv.r2_hz,
    )
