"""ROI susceptibility statistics per label (deep gray nuclei from an atlas or a user segmentation)."""
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
) -> List[RoiStats]:
    """Mean, SD, median and volume of ``values`` in each named label (restricted to ``mask`` when given).

    ``truth`` (same shape) adds the true mean per label, for the phantom. Labels with no voxel inside the mask are
    left out.
    """
    v = np.asarray(values)
    lab = np.asarray(labels)
    if v.shape != lab.shape:
        raise QSMInputError(f"map shape {v.shape} and label shape {lab.shape} differ")
    if truth is not None and np.shape(truth) != v.shape:
        raise QSMInputError(f"truth shape {np.shape(truth)} and map shape {v.shape} differ")
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
        rows.append(RoiStats(
            label=int(k), name=label_names.get(k, str(k)), n_voxels=n, volume_mm3=n * vox_mm3,
            mean=float(x.mean()), sd=float(x.std()), median=float(np.median(x)),
            true_mean=None if truth is None else float(np.asarray(truth)[sel].astype(np.float64).mean()),
        ))
    return rows


def write_roi_table(rows: List[RoiStats], path: Union[str, Path]) -> Path:
    """Write the rows as CSV (with an ``error`` column when the truth is known)."""
    p = Path(path)
    fields = list(asdict(rows[0]).keys()) + ["error"] if rows else ["label"]
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            d = asdict(r)
            d["error"] = r.error
            w.writerow(d)
    return p


def format_roi_table(rows: List[RoiStats], unit: str = "ppm") -> str:
    """A fixed-width text table for the terminal."""
    has_truth = any(r.true_mean is not None for r in rows)
    head = f"{'structure':<34}{'voxels':>8}{'mean':>10}{'sd':>9}"
    if has_truth:
        head += f"{'truth':>10}{'error':>10}"
    out = [head + f"   ({unit})", "-" * len(head)]
    for r in rows:
        line = f"{r.name[:33]:<34}{r.n_voxels:>8}{r.mean:>10.4f}{r.sd:>9.4f}"
        if has_truth and r.true_mean is not None:
            line += f"{r.true_mean:>10.4f}{r.error:>10.4f}"
        out.append(line)
    return "\n".join(out)
