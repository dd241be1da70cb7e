"""Writers for region measures: CSV (one row per region and hemisphere), JSON (rows plus provenance), PNG plot."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .measures import RegionMeasure

PathLike = Union[str, Path]


def write_csv(rows: List[RegionMeasure], path: PathLike) -> Path:
    """Every field of every row; statistics of flagged rows are empty cells (never NaN)."""
    p = Path(path)
    fields = list(rows[0].as_dict()) if rows else ["region"]
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.as_dict().items()})
    return p


def write_json(rows: List[RegionMeasure], path: PathLike, provenance: Optional[Dict[str, Any]] = None) -> Path:
    """``{"rows": [...], "provenance": {...}}``; statistics of flagged rows are null."""
    p = Path(path)
    p.write_text(json.dumps({"rows": [r.as_dict() for r in rows], "provenance": provenance or {}}, indent=1,
                            allow_nan=False))
    return p


def plot_png(rows: List[RegionMeasure], path: PathLike, title: str = "") -> Path:
    """Bar plot of the mean χ per region (left and right side by side) with 10th–90th percentile whiskers."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.mean_ppm is not None]
    structures = list(dict.fromkeys(r.structure for r in ok))
    sides = [s for s in ("L", "R", "") if any(r.side == s for r in ok)]
    width = 0.8 / max(1, len(sides))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(structures) + 2), 4.5), dpi=100)
    for j, side in enumerate(sides):
        xs, ys, lo, hi = [], [], [], []
        for i, s in enumerate(structures):
            r = next((r for r in ok if r.structure == s and r.side == side), None)
            if r is None:
                continue
            xs.append(i + (j - (len(sides) - 1) / 2) * width)
            ys.append(r.mean_ppm)
            lo.append(max(0.0, r.mean_ppm - r.p10_ppm))
            hi.append(max(0.0, r.p90_ppm - r.mean_ppm))
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label={"L": "left", "R": "right", "": "both"}[side])
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(range(len(structures)))
    ax.set_xticklabels(structures, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("χ (ppm), bars: mean, whiskers: 10th–90th percentile")
    ref = ok[0].reference if ok else ""
    ax.set_title((title + "\n" if title else "") + f"reference: {ref}", fontsize=9)
    if sides:
        ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p)
    plt.close(fig)
    return p
