"""Per-region, per-hemisphere susceptibility measures with the reference stated on every row.

Statistics of χ (ppm) inside each region: mean, median, SD, 10th and 90th percentiles, voxel count and volume
(mm³), after subtracting the chosen reference (DESIGN.md §7: every value states its reference, hemisphere and the
region's source):

* ``whole_brain``: the mean over the brain mask (Deistung et al., NeuroImage 65 (2013) 299–314);
* ``csf``: the mean over a CSF/ventricle region given as label values (Straub et al., Magn Reson Med 78 (2017)
  204–214 recommend lateral-ventricle CSF);
* ``region:<name>``: the mean over the atlas/user regions whose name contains ``<name>`` (e.g. an internal-capsule
  or white-matter label);
* ``none``: the map's own zero.

``erosion_mm`` removes the region's outer shell (voxels closer than that to the region's edge, in millimetres)
against partial volume with the surroundings. Regions without a side are split at the mid-sagittal plane
``midline_x_mm`` (RAS x) when ``split_hemispheres`` is on. A region that cannot be measured gets a row with empty
statistics and a ``flag`` saying why (no voxel, outside the field of view, outside the mask, emptied by the
erosion) — never a silent NaN.

When source separation ran (:mod:`QSMLogic.separation`), ``chi_para_ppm`` (χ⁺ ≥ 0) and ``chi_dia_ppm`` (|χ⁻| ≥ 0,
the diamagnetic part as a positive magnitude) add per-region columns ``chi_para_*`` and ``chi_dia_*`` (mean, median,
SD) over the same voxels as χ that the separation kept (``chi_sources_n_voxels``), with the convention on every row
(``chi_sources_convention``: net χ = χ⁺ − |χ⁻|). They are not shifted by the χ reference offset: the separation
already took them relative to the pipeline's χ reference (zero for its ``joint`` method). Without the maps these
columns are absent.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..errors import QSMInputError
from .atlas import Region

#: Fewest voxels of the reference region accepted.
MIN_REFERENCE_VOXELS = 10
#: A region whose covered fraction (warped volume over expected volume) is below this is flagged as partly outside
#: the field of view.
MIN_COVERAGE = 0.9
#: Statement of the source columns' sign convention, on every row that has them.
SOURCES_CONVENTION = ("chi_para = χ⁺ ≥ 0 (paramagnetic), chi_dia = |χ⁻| ≥ 0 (diamagnetic magnitude); "
                      "net χ = chi_para − chi_dia; relative to the run's χ reference")
#: Numeric source columns, in order (the text column ``chi_sources_convention`` follows them).
SOURCE_NUMERIC_COLUMNS = ("chi_para_mean_ppm", "chi_para_median_ppm", "chi_para_sd_ppm", "chi_dia_mean_ppm",
                          "chi_dia_median_ppm", "chi_dia_sd_ppm", "chi_sources_n_voxels")


@dataclass
class RegionMeasure:
    """One row: a region (one hemisphere) of one χ map. Statistics are None when ``flag`` says it was not measured."""

    region: str
    structure: str
    side: str
    label: int
    source: str
    reference: str
    reference_offset_ppm: float
    n_voxels: int
    volume_mm3: float
    mean_ppm: Optional[float]
    median_ppm: Optional[float]
    sd_ppm: Optional[float]
    p10_ppm: Optional[float]
    p90_ppm: Optional[float]
    erosion_mm: float
    coverage: Optional[float] = None
    flag: str = ""
    #: Source-separation columns (``chi_para_mean_ppm`` …, see the module docstring); empty when it did not run.
    sources: Dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict:
        """The row as one flat record: the source columns (if any) after the χ columns."""
        d = asdict(self)
        d.update(d.pop("sources"))
        return d


def _reference(chi: np.ndarray, mask: np.ndarray, labels: np.ndarray, regions: Dict[int, Region],
               reference: str, csf_labels: Sequence[int]) -> tuple:
    if reference == "none":
        return 0.0, "none"
    if reference == "whole_brain":
        return float(np.mean(chi[mask], dtype=np.float64)), "whole_brain (mean over the brain mask)"
    if reference == "csf":
        if not csf_labels:
            raise QSMInputError("the csf reference needs the CSF/ventricle label values (csf_labels)")
        sel = np.isin(labels, list(csf_labels)) & mask
        what = "csf (labels " + ",".join(str(k) for k in csf_labels) + ")"
    elif reference.startswith("region:"):
        key = reference.split(":", 1)[1].strip().lower()
        ks = [k for k, r in regions.items() if key and key in r.name.lower()]
        if not ks:
            raise QSMInputError(f"reference region {key!r} matches no region; regions are "
                                f"{sorted(r.name for r in regions.values())}")
        sel = np.isin(labels, ks) & mask
        what = f"region {key!r} (labels " + ",".join(str(k) for k in ks) + ")"
    else:
        raise QSMInputError(f"unknown reference {reference!r}: use whole_brain, csf, region:<name> or none")
    n = int(sel.sum())
    if n < MIN_REFERENCE_VOXELS:
        raise QSMInputError(f"the reference {what} has {n} voxels inside the mask (fewer than {MIN_REFERENCE_VOXELS})")
    return float(np.mean(chi[sel], dtype=np.float64)), what


def split_by_midline(labels: np.ndarray, regions: Dict[int, Region], affine: np.ndarray,
                     midline_x_mm: float = 0.0) -> tuple:
    """Split regions without a side at the plane RAS x = ``midline_x_mm``: returns (new labels, new regions); sided
    regions keep their label, each unsided region k becomes two labels (right keeps k, left gets a new number above
    every label in use)."""
    lab = np.asarray(labels)
    out = lab.astype(np.int32, copy=True)
    new: Dict[int, Region] = {}
    nxt = int(max([0, int(lab.max(initial=0))] + list(regions)) + 1)
    idx = np.indices(lab.shape, dtype=np.float32)
    x = affine[0, 0] * idx[0] + affine[0, 1] * idx[1] + affine[0, 2] * idx[2] + affine[0, 3]
    for k, r in regions.items():
        if r.side:
            new[k] = r
            continue
        sel = lab == k
        left = sel & (x < midline_x_mm)
        out[left] = nxt
        new[nxt] = Region(nxt, f"L {r.name}", r.structure, "L", r.color)
        new[k] = Region(k, f"R {r.name}", r.structure, "R", r.color)
        nxt += 1
    return out, new


def measure_regions(
    chi_ppm: np.ndarray,
    labels: np.ndarray,
    regions: Dict[int, Region],
    voxel_size_mm: Sequence[float],
    mask: Optional[np.ndarray] = None,
    reference: str = "whole_brain",
    csf_labels: Sequence[int] = (),
    reference_labels: Optional[np.ndarray] = None,
    reference_regions: Optional[Dict[int, Region]] = None,
    erosion_mm: float = 0.0,
    source: str = "label map",
    expected_volume_mm3: Optional[Dict[int, float]] = None,
    chi_para_ppm: Optional[np.ndarray] = None,
    chi_dia_ppm: Optional[np.ndarray] = None,
    separation_mask: Optional[np.ndarray] = None,
) -> List[RegionMeasure]:
    """One :class:`RegionMeasure` per region of ``regions`` (labels in ``labels``, same shape as ``chi_ppm``).

    ``mask``: the brain mask (default: finite, non-zero χ). ``reference``: see the module docstring; its region comes
    from ``reference_labels``/``reference_regions`` when given (e.g. a tissue map), else from ``labels``/``regions``.
    ``expected_volume_mm3`` (label → volume the region should have, e.g. the atlas volume carried through the
    registration's scaling) adds the covered fraction and flags regions partly or wholly outside the field of view.
    ``chi_para_ppm``/``chi_dia_ppm`` (both or neither, on χ's grid) add the source columns, over the region's voxels
    inside ``separation_mask`` (default: every voxel; the pipeline's ``separation_mask`` output leaves out voxels
    the separation could not use).
    """
    chi = np.asarray(chi_ppm, dtype=np.float32)
    lab = np.asarray(labels)
    if chi.ndim != 3:
        raise QSMInputError(f"the χ map must be 3D, got shape {chi.shape}")
    if lab.shape != chi.shape:
        raise QSMInputError(f"label map shape {lab.shape} differs from the χ map's {chi.shape}: resample the labels "
                            "onto the χ grid first (roi.registration.resample_labels_to_grid)")
    if not np.issubdtype(lab.dtype, np.integer):
        raise QSMInputError(f"label map must hold integers, got {lab.dtype}")
    vox = np.asarray(voxel_size_mm, np.float64)
    if vox.shape != (3,) or np.any(vox <= 0):
        raise QSMInputError(f"voxel_size_mm must be 3 positive sizes, got {voxel_size_mm!r}")
    if erosion_mm < 0:
        raise QSMInputError(f"erosion_mm must be ≥ 0, got {erosion_mm}")
    m = (np.isfinite(chi) & (chi != 0)) if mask is None else np.asarray(mask, bool)
    if m.shape != chi.shape:
        raise QSMInputError(f"mask shape {m.shape} differs from the χ map's {chi.shape}")
    if not m.any():
        raise QSMInputError("the mask is empty")
    if not np.all(np.isfinite(chi[m])):
        raise QSMInputError("the χ map has NaN or Inf values inside the mask")
    ref_lab = lab if reference_labels is None else np.asarray(reference_labels)
    ref_reg = regions if reference_regions is None else reference_regions
    if ref_lab.shape != chi.shape:
        raise QSMInputError(f"reference label map shape {ref_lab.shape} differs from the χ map's {chi.shape}")
    offset, ref_name = _reference(chi, m, ref_lab, ref_reg, reference, csf_labels)
    sources = _source_maps(chi.shape, chi_para_ppm, chi_dia_ppm, separation_mask)
    vox_mm3 = float(np.prod(vox))
    objects = ndi.find_objects(np.clip(lab, 0, None).astype(np.int64))
    rows: List[RegionMeasure] = []
    for k in sorted(regions):
        r = regions[k]
        base = dict(region=r.name, structure=r.structure, side=r.side, label=int(k), source=source,
                    reference=ref_name, reference_offset_ppm=offset, erosion_mm=float(erosion_mm))
        sl = objects[k - 1] if 0 < k <= len(objects) else None
        exp = None if expected_volume_mm3 is None else expected_volume_mm3.get(k)
        if sl is None:
            flag = "outside the field of view" if exp else "no voxel of this label"
            rows.append(_empty(base, flag, 0.0 if exp else None))
            continue
        sel = lab[sl] == k
        n_all = int(sel.sum())
        coverage = None if not exp else min(1.0, n_all * vox_mm3 / exp)
        inside = sel & m[sl]
        if not inside.any():
            rows.append(_empty(base, "outside the mask", coverage))
            continue
        if erosion_mm > 0:
            padded = np.pad(inside, 1)
            dist = ndi.distance_transform_edt(padded, sampling=vox)[1:-1, 1:-1, 1:-1]
            inside = inside & (dist > erosion_mm)
            if not inside.any():
                rows.append(_empty(base, f"no voxel left after {erosion_mm:g} mm erosion", coverage))
                continue
        x = chi[sl][inside].astype(np.float64) - offset
        row_sources = {} if sources is None else _source_columns(sources, sl, inside)
        flags = []
        if n_all > int(inside.sum()) and erosion_mm == 0:
            flags.append(f"{n_all - int(inside.sum())} voxels outside the mask left out")
        if coverage is not None and coverage < MIN_COVERAGE:
            flags.append(f"partly outside the field of view ({100 * coverage:.0f}% covered)")
        p10, med, p90 = np.percentile(x, [10, 50, 90])
        rows.append(RegionMeasure(
            **base, n_voxels=int(x.size), volume_mm3=x.size * vox_mm3, mean_ppm=float(x.mean()),
            median_ppm=float(med), sd_ppm=float(x.std()), p10_ppm=float(p10), p90_ppm=float(p90),
            coverage=coverage, flag="; ".join(flags), sources=row_sources))
    if sources is not None:
        for r in rows:
            if not r.sources:   # a row not measured: the same columns, empty
                r.sources = _source_columns(None, None, None)
    return rows


def _source_maps(shape: tuple, para: Optional[np.ndarray], dia: Optional[np.ndarray],
                 separation_mask: Optional[np.ndarray]) -> Optional[tuple]:
    """(χ⁺, |χ⁻|, mask) checked against χ's grid and sign convention, or None without the maps."""
    if para is None and dia is None:
        return None
    if para is None or dia is None:
        raise QSMInputError("the source columns need both chi_para_ppm (χ⁺) and chi_dia_ppm (|χ⁻|)")
    p = np.asarray(para, dtype=np.float32)
    d = np.asarray(dia, dtype=np.float32)
    sm = np.ones(shape, bool) if separation_mask is None else np.asarray(separation_mask, bool)
    for name, a in (("chi_para_ppm", p), ("chi_dia_ppm", d), ("separation_mask", sm)):
        if a.shape != shape:
            raise QSMInputError(f"{name} shape {a.shape} differs from the χ map's {shape}")
    for name, a in (("chi_para_ppm", p), ("chi_dia_ppm", d)):
        vals = a[sm]
        if not np.all(np.isfinite(vals)):
            raise QSMInputError(f"{name} has NaN or Inf values inside the separation mask")
        if vals.size and float(vals.min()) < -1e-6:
            raise QSMInputError(f"{name} has negative values ({float(vals.min()):.3g} ppm): χ⁺ and |χ⁻| are both ≥ 0 "
                                "(give the diamagnetic part as its magnitude)")
    return p, d, sm


def _source_columns(sources: Optional[tuple], sl, inside: Optional[np.ndarray]) -> Dict[str, object]:
    """The source columns of one region (``None`` statistics when not measured or no voxel was separated)."""
    cols: Dict[str, object] = {}
    sel = None
    if sources is not None:
        sel = inside & sources[2][sl]
    n = 0 if sel is None else int(sel.sum())
    for key, idx in (("chi_para", 0), ("chi_dia", 1)):
        x = sources[idx][sl][sel].astype(np.float64) if n else None
        cols[f"{key}_mean_ppm"] = None if x is None else float(x.mean())
        cols[f"{key}_median_ppm"] = None if x is None else float(np.median(x))
        cols[f"{key}_sd_ppm"] = None if x is None else float(x.std())
    cols["chi_sources_n_voxels"] = n
    cols["chi_sources_convention"] = SOURCES_CONVENTION
    return cols


def _empty(base: dict, flag: str, coverage: Optional[float]) -> RegionMeasure:
    return RegionMeasure(**base, n_voxels=0, volume_mm3=0.0, mean_ppm=None, median_ppm=None, sd_ppm=None,
                         p10_ppm=None, p90_ppm=None, coverage=coverage, flag=flag)
