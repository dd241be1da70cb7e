"""NRRD input/output (pynrrd) with the geometry kept: space directions/origin ↔ RAS affine.

Arrays use pynrrd's Fortran index order, so the array axes are the file's axes in order (fastest first), as
Slicer and ITK write them. A non-spatial axis (kind ``list``/``vector``, direction ``none``; Slicer puts it first)
holds the echoes and is moved to the end on reading (→ (x, y, z, echo)). Both ``left-posterior-superior`` (LPS,
Slicer's default on disk) and ``right-anterior-superior`` (RAS) spaces are read; LPS is converted to RAS by
negating the first two world rows. Echo times and B0 can ride along as the key/value fields ``echo_times_s`` and
``b0_tesla`` (written by :func:`write_nrrd` when given).
"""
from __future__ import annotations

import os
import zlib
from typing import Any, Dict, Optional, Sequence, Tuple

import nrrd
import numpy as np

from ..errors import QSMInputError
from ..geometry import check_affine
from .common import PathLike, check_exists, check_image_size

NRRD_SUFFIXES = (".nrrd", ".nhdr")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SPACES = {"left-posterior-superior": "LPS", "lps": "LPS", "right-anterior-superior": "RAS", "ras": "RAS"}
_CUSTOM_FIELDS = {"echo_times_s": "double list", "b0_tesla": "double"}


def is_nrrd(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(NRRD_SUFFIXES)


def read_nrrd(path: PathLike) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Read a 3D or 4D NRRD: (data (x, y, z[, echo]) float32, voxel→RAS affine, header).

    The header's ``echo_times_s`` (list) and ``b0_tesla`` fields are parsed as numbers when present.
    """
    p = check_exists(os.fspath(path), "NRRD file")
    try:
        with open(p, "rb") as f:
            sizes = nrrd.read_header(f, custom_field_map=_CUSTOM_FIELDS).get("sizes")
        if sizes is None:
            raise QSMInputError(f"NRRD file {p!r} has no 'sizes' field")
        check_image_size(np.atleast_1d(sizes).tolist(), f"NRRD file {p!r}")
        data, header = nrrd.read(p, custom_field_map=_CUSTOM_FIELDS, index_order="F")
    except QSMInputError:
        raise
    except (OSError, ValueError, EOFError, TypeError, KeyError, IndexError, OverflowError, MemoryError, zlib.error,
            UnicodeDecodeError, StopIteration, nrrd.NRRDError) as exc:
        raise QSMInputError(f"cannot read NRRD file {p!r} (corrupt or not NRRD): {exc}") from exc
    if data.ndim not in (3, 4):
        raise QSMInputError(f"NRRD file {p!r} is {data.ndim}D with shape {data.shape}: expected 3D or 4D")
    space = str(header.get("space", "")).lower()
    if space not in _SPACES:
        raise QSMInputError(
            f"NRRD file {p!r} has space {header.get('space')!r}: only left-posterior-superior or "
            "right-anterior-superior world spaces are supported"
        )
    dirs = np.asarray(header.get("space directions"), dtype=np.float64)
    if dirs.ndim != 2 or dirs.shape != (data.ndim, 3):
        raise QSMInputError(f"NRRD file {p!r} lacks valid 'space directions' (got {header.get('space directions')})")
    spatial = [i for i in range(data.ndim) if np.all(np.isfinite(dirs[i]))]
    if len(spatial) != 3:
        raise QSMInputError(f"NRRD file {p!r} has {len(spatial)} spatial axes; expected 3")
    if data.ndim == 4:
        other = next(i for i in range(4) if i not in spatial)
        data = np.moveaxis(data, other, 3)
    try:
        origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        origin = np.full(1, np.nan)
    if origin.shape != (3,) or not np.all(np.isfinite(origin)):
        raise QSMInputError(f"NRRD file {p!r} has an invalid 'space origin' {header.get('space origin')!r}: "
                            "3 finite numbers are needed")
    affine = np.eye(4)
    affine[:3, :3] = dirs[spatial].T
    affine[:3, 3] = origin
    if _SPACES[space] == "LPS":
        affine = _LPS_TO_RAS @ affine
    return data.astype(np.float32, copy=False), check_affine(affine), header


def write_nrrd(
    path: PathLike,
    array: np.ndarray,
    affine: np.ndarray,
    space: str = "LPS",
    te_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
) -> str:
    """Write a 3D or 4D (x, y, z, echo) array to NRRD with the geometry of the voxel→RAS ``affine``.

    ``space`` is "LPS" (Slicer's default on disk) or "RAS". A 4D array's last axis is written first with kind
    ``list`` (Slicer's layout for multi-component volumes). ``te_s``/``b0_tesla`` are stored as key/value fields.
    Returns the path written.
    """
    a = np.asarray(array)
    if a.ndim not in (3, 4):
        raise QSMInputError(f"write_nrrd takes a 3D or 4D array, got shape {a.shape}")
    if space.upper() not in ("LPS", "RAS"):
        raise QSMInputError(f"space must be 'LPS' or 'RAS', got {space!r}")
    aff = check_affine(affine)
    if space.upper() == "LPS":
        aff = _LPS_TO_RAS @ aff
    dirs = aff[:3, :3].T
    header: Dict[str, Any] = {
        "space": "left-posterior-superior" if space.upper() == "LPS" else "right-anterior-superior",
        "space origin": aff[:3, 3],
        "encoding": "gzip",
    }
    if a.ndim == 4:
        a = np.moveaxis(a, 3, 0)
        header["space directions"] = np.vstack([np.full(3, np.nan), dirs])
        header["kinds"] = ["list", "domain", "domain", "domain"]
    else:
        header["space directions"] = dirs
        header["kinds"] = ["domain", "domain", "domain"]
    if te_s is not None:
        header["echo_times_s"] = [float(t) for t in te_s]
    if b0_tesla is not None:
        header["b0_tesla"] = float(b0_tesla)
    p = os.fspath(path)
    nrrd.write(p, a, header, custom_field_map=_CUSTOM_FIELDS,
               compression_level=1, index_order="F")
    return p
