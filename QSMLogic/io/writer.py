"""Writing results: NIfTI (float32, 3D or 4D) with the input geometry plus a JSON provenance sidecar.

The sidecar (``<name>.json`` next to ``<name>.nii[.gz]``) records how the map was made — stage, method,
parameters, package version, reference region, run time, input files, timestamp, units — so it can be reproduced
(docs/conventions.md). Outputs never replace inputs: :func:`write_result` refuses any path (image or sidecar) that
is one of the input files, and it only opens the output paths for writing.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, Optional, Sequence

import nibabel as nib
import numpy as np

from .. import __version__
from ..errors import QSMInputError
from ..geometry import check_affine
from .common import PathLike
from .nifti import NIFTI_SUFFIXES, sidecar_path


def _json_safe(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and paths into JSON-serialisable values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def make_provenance(stage: str, method: str, params: Optional[Dict[str, Any]], seconds: float,
                    **extra: Any) -> Dict[str, Any]:
    """Provenance record of one processing step.

    ``extra`` adds free fields, e.g. ``reference_region="csf"``, ``input_files=[...]``, ``units="ppm"``,
    ``reference="Author et al., Journal Year"``. Values are made JSON-safe.
    """
    record: Dict[str, Any] = {
        "software": "SusceptibilityMRI (QSMLogic)",
        "version": __version__,
        "stage": stage,
        "method": method,
        "parameters": dict(params or {}),
        "run_time_s": float(seconds),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return _json_safe(record)


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def write_result(
    path: PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    provenance: Dict[str, Any],
    input_paths: Sequence[PathLike] = (),
    units: Optional[str] = None,
    reference_region: Optional[str] = None,
) -> str:
    """Write ``array`` (3D or 4D) as float32 NIfTI with ``affine`` (voxel → RAS) and a JSON provenance sidecar.

    ``provenance`` (e.g. from :func:`make_provenance`) is stored with ``input_files`` (``input_paths``),
    ``units``, ``reference_region`` (when given), the package ``version`` and a ``timestamp`` filled in if
    missing. Raises :class:`QSMInputError` if the image or sidecar path is one of ``input_paths`` (inputs are never
    overwritten). Returns the image path.
    """
    out = os.fspath(path)
    if not out.lower().endswith(NIFTI_SUFFIXES):
        raise QSMInputError(f"output path {out!r} must end with .nii or .nii.gz")
    side = sidecar_path(out)
    inputs = [os.fspath(p) for p in input_paths]
    for target in (out, side):
        for p in inputs:
            if _same_file(target, p):
                raise QSMInputError(f"refusing to overwrite input file {p!r} with output {target!r}")
    a = np.asarray(array)
    if a.ndim not in (3, 4):
        raise QSMInputError(f"write_result takes a 3D or 4D array, got shape {a.shape}")
    if np.iscomplexobj(a):
        raise QSMInputError("write_result writes real maps; split complex data into magnitude and phase")
    aff = check_affine(affine)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise QSMInputError(f"output folder {folder!r} does not exist")
    img = nib.Nifti1Image(a.astype(np.float32), aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units(xyz="mm", t="sec")
    nib.save(img, out)
    record = dict(provenance)
    record.setdefault("version", __version__)
    record.setdefault("timestamp", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    record["input_files"] = inputs or record.get("input_files", [])
    if units is not None:
        record["units"] = units
    if reference_region is not None:
        record["reference_region"] = reference_region
    record["shape"] = list(a.shape)
    with open(side, "w", encoding="utf-8") as f:
        json.dump(_json_safe(record), f, indent=2)
    return out
