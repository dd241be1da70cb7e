"""Export of targets and trajectories: Slicer markups JSON (``.mrk.json``) and CSV with RAS, AC-PC and frame columns.

The JSON follows Slicer's markups schema v1.0.3 (``Modules/Loadable/Markups/Resources/Schema`` in the Slicer
source): one file holds one markups node, here a ``Fiducial`` list of targets or a ``Line`` (entry → target).
Positions are written in RAS (``coordinateSystem: "RAS"``), which Slicer reads as is.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import QSMInputError
from .acpc import ACPCFrame, as_point
from .frame import leksell_coordinates

SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
          "markups-schema-v1.0.3.json#")
PathLike = Union[str, Path]


def _control_point(index: int, label: str, position: np.ndarray, description: str = "") -> Dict[str, object]:
    return {
        "id": str(index + 1), "label": label, "description": description, "associatedNodeID": "",
        "position": [float(c) for c in position], "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
        "selected": True, "locked": False, "visibility": True, "positionStatus": "defined",
    }


def markups_document(
    kind: str, points_ras_mm: Sequence[Tuple[str, Sequence[float]]], name: str,
    descriptions: Optional[Sequence[str]] = None,
) -> Dict[str, object]:
    """A markups JSON document of ``kind`` ``Fiducial`` or ``Line`` from (label, RAS point) pairs."""
    if kind not in ("Fiducial", "Line"):
        raise QSMInputError(f"markups kind must be 'Fiducial' or 'Line', got {kind!r}")
    if kind == "Line" and len(points_ras_mm) != 2:
        raise QSMInputError(f"a line markup needs 2 points (entry, target), got {len(points_ras_mm)}")
    descriptions = list(descriptions or [""] * len(points_ras_mm))
    cps = [_control_point(i, label, as_point(p, label), descriptions[i])
           for i, (label, p) in enumerate(points_ras_mm)]
    return {"@schema": SCHEMA, "markups": [{
        "type": kind, "name": name, "coordinateSystem": "RAS", "coordinateUnits": "mm", "locked": False,
        "fixedNumberOfControlPoints": kind == "Line", "labelFormat": "%N-%d", "lastUsedControlPointNumber": len(cps),
        "controlPoints": cps, "measurements": [],
    }]}


def write_markups_json(path: PathLike, document: Mapping[str, object]) -> Path:
    """Write a markups document (from :func:`markups_document`) to ``path`` (``.mrk.json``)."""
    p = Path(path)
    if not p.name.endswith(".mrk.json"):
        raise QSMInputError(f"markups files end in .mrk.json, got {p.name!r}")
    p.write_text(json.dumps(document, indent=2))
    return p


def target_rows(
    points_ras_mm: Sequence[Tuple[str, Sequence[float]]],
    acpc: Optional[ACPCFrame] = None,
    ras_to_frame: Optional[np.ndarray] = None,
) -> List[Dict[str, object]]:
    """One row per named point: RAS, and when given AC-PC (lateral/AP/vertical with side) and Leksell X, Y, Z (mm)."""
    rows = []
    for label, p in points_ras_mm:
        ras = as_point(p, label)
        row: Dict[str, object] = {"name": label, "R_mm": ras[0], "A_mm": ras[1], "S_mm": ras[2]}
        if acpc is not None:
            d = acpc.describe(ras)
            row.update({"side": d["side"], "lateral_mm": d["lateral_mm"], "AP_mm": d["ap_mm"],
                        "vertical_mm": d["vertical_mm"]})
        if ras_to_frame is not None:
            x, y, z = leksell_coordinates(ras, ras_to_frame)[0]
            row.update({"frame_X_mm": x, "frame_Y_mm": y, "frame_Z_mm": z})
        rows.append({k: (round(float(v), 3) if isinstance(v, (float, np.floating)) else v) for k, v in row.items()})
    return rows


def write_csv(path: PathLike, rows: Sequence[Mapping[str, object]]) -> Path:
    """Write rows (dicts; the union of their keys, in first-seen order, as columns) to a CSV file."""
    if not rows:
        raise QSMInputError("nothing to write: no rows")
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    p = Path(path)
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return p
