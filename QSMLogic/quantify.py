"""ROI susceptibility statistics per label (deep gray nuclei from an atlas or a user segmentation).

With the source-separation maps, each row also has χ⁺ (``chi_para``) and |χ⁻| (``chi_dia``, the diamagnetic part
as a positive magnitude; net χ = χ⁺ − |χ⁻|) mean and SD over the label's separated voxels, and their true means on
the phantom; without them those columns are absent from the CSV and the printed table.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .errors import QSMInputError


@dataclass
class RoiStats:
    """Statistics of a map inside one label."""

    label: int
    name: str
    n_voxels: int
    volume_mm3: float
    mean: float
    sd: float
    median: float
    true_mean: Optional[float] = None
    chi_para_mean: Optional[float] = None
    chi_para_sd: Optional[float] = None
    chi_dia_mean: Optional[float] = None
    chi_dia_sd: Optional[float] = None
    true_chi_para_mean: Optional[float] = None
    true_chi_dia_mean: Optional[float] = None

    @property
    def error(self) -> Optional[float]:
        return None if self.true_mean is None else self.mean - self.true_mean


def roi_table(
    values: np.ndarray,
    labels: np.ndarray,
    label_names: Dict[int, str],
    voxel_size_mm: Sequence[float],
    mask: Optional[np.ndarray] = None,
    truth: Optional[np.ndarray] = None,
    only: Optional[Sequence[int]] = None,
    sources: Optional[Dict[str, np.ndarray]] = None,
) -> List[RoiStats]:
    """Mean, SD, median and volume of ``values`` in each named label (restricted to ``mask`` when given).

    ``truth`` (same shape) adds the true mean per label, for the phantom. Labels with no voxel inside the mask are
    left out. ``sources``: the separation's ``chi_para_ppm`` and ``chi_dia_ppm`` (|χ⁻|), optionally its
    ``separation_mask`` (voxels it kept) and the true ``true_chi_para_ppm``/``true_chi_dia_ppm``; adds their
    per-label mean (and SD) over the label's voxels inside both masks.
    """
    v = np.asarray(values)
    lab = np.asarray(labels)
    if v.shape != lab.shape:
        raise QSMInputError(f"map shape {v.shape} and label shape {lab.shape} differ")
    if truth is not None and np.shape(truth) != v.shape:
        raise QSMInputError(f"truth shape {np.shape(truth)} and map shape {v.shape} differ")
    src = _check_sources(sources, v.shape)
    vox_mm3 = float(np.prod(voxel_size_mm))
    rows: List[RoiStats] = []
    keys = sorted(label_names) if only is None else list(only)
    for k in keys:
        if k == 0:
            continue
        sel = lab == k
        if mask is not None:
            sel &= np.asarray(mask, dtype=bool)
        n = int(sel.sum())
        if n == 0:
            continue
        x = v[sel].astype(np.float64)
        row = RoiStats(
            label=int(k), name=label_names.get(k, str(k)), n_voxels=n, volume_mm3=n * vox_mm3,
            mean=float(x.mean()), sd=float(x.std()), median=float(np.median(x)),
            true_mean=None if truth is None else float(np.asarray(truth)[sel].astype(np.float64).mean()),
        )
        if src:
            sep = sel & src["separation_mask"]
            if sep.any():
                for key in ("chi_para", "chi_dia"):
                    y = src[f"{key}_ppm"][sep].astype(np.float64)
                    setattr(row, f"{key}_mean", float(y.mean()))
                    setattr(row, f"{key}_sd", float(y.std()))
                    if f"true_{key}_ppm" in src:
                        setattr(row, f"true_{key}_mean", float(src[f"true_{key}_ppm"][sep].astype(np.float64).mean()))
        rows.append(row)
    return rows


def _check_sources(sources: Optional[Dict[str, np.ndarray]], shape: tuple) -> Dict[str, np.ndarray]:
    """The source maps as arrays on the map's grid (``separation_mask`` defaults to every voxel); {} without."""
    if not sources:
        return {}
    known = ("chi_para_ppm", "chi_dia_ppm", "separation_mask", "true_chi_para_ppm", "true_chi_dia_ppm")
    unknown = sorted(set(sources) - set(known))
    if unknown:
        raise QSMInputError(f"unknown source maps {unknown}: expected some of {list(known)}")
    if "chi_para_ppm" not in sources or "chi_dia_ppm" not in sources:
        raise QSMInputError("the source columns need both chi_para_ppm (χ⁺) and chi_dia_ppm (|χ⁻|)")
    out = {k: np.asarray(a) for k, a in sources.items() if a is not None}
    out.setdefault("separation_mask", np.ones(shape, bool))
    out["separation_mask"] = out["separation_mask"].astype(bool)
    for k, a in out.items():
        if a.shape != shape:
            raise QSMInputError(f"{k} shape {a.shape} and map shape {shape} differ")
    return out


def _has_sources(rows: List[RoiStats]) -> bool:
    return any(r.chi_para_mean is not None for r in rows)


def _columns(rows: List[RoiStats]) -> List[str]:
    fields = list(asdict(rows[0]).keys())
    if not _has_sources(rows):
        fields = [f for f in fields if "chi_para" not in f and "chi_dia" not in f]
    return fields


def write_roi_table(rows: List[RoiStats], path: Union[str, Path]) -> Path:
    """Write the rows as CSV (with an ``error`` column when the truth is known; the χ⁺/|χ⁻| columns only when the
    separation ran)."""
    p = Path(path)
    fields = _columns(rows) + ["error"] if rows else ["label"]
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            d = {k: v for k, v in asdict(r).items() if k in fields}
            d["error"] = r.error
            w.writerow(d)
    return p


def format_roi_table(rows: List[RoiStats], unit: str = "ppm") -> str:
    """A fixed-width text table for the terminal."""
    has_truth = any(r.true_mean is not None for r in rows)
    sources = _has_sources(rows)
    head = f"{'structure':<34}{'voxels':>8}{'mean':>10}{'sd':>9}"
    if has_truth:
        head += f"{'truth':>10}{'error':>10}"
    if sources:
        head += f"{'χ⁺':>10}{'|χ⁻|':>10}"
        if any(r.true_chi_para_mean is not None for r in rows):
            head += f"{'χ⁺ true':>10}{'|χ⁻| true':>10}"
    out = [head + f"   ({unit})", "-" * len(head)]
    for r in rows:
        line = f"{r.name[:33]:<34}{r.n_voxels:>8}{r.mean:>10.4f}{r.sd:>9.4f}"
        if has_truth and r.true_mean is not None:
            line += f"{r.true_mean:>10.4f}{r.error:>10.4f}"
        if sources and r.chi_para_mean is not None:
            line += f"{r.chi_para_mean:>10.4f}{r.chi_dia_mean:>10.4f}"
            if r.true_chi_para_mean is not None:
                line += f"{r.true_chi_para_mean:>10.4f}{r.true_chi_dia_mean:>10.4f}"
        out.append(line)
    if sources:
        out.append("χ⁺ ≥ 0 paramagnetic, |χ⁻| ≥ 0 diamagnetic magnitude: net χ = χ⁺ − |χ⁻|")
    return "\n".join(out)
