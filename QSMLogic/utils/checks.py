"""Input checks shared by the field-processing methods; each raises :class:`QSMInputError` naming the problem."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..errors import QSMInputError


def check_mask(mask: Any, shape: Optional[Sequence[int]] = None, purpose: str = "process") -> np.ndarray:
    """``mask`` as a 3D bool array, after checking it is 3D, has ``shape`` (the field's, when given) and is not
    empty (the error says there is no voxel to ``purpose``)."""
    m = np.asarray(mask)
    if m.ndim != 3:
        raise QSMInputError(f"mask must be 3D, got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise QSMInputError(f"mask shape {m.shape} does not match the field shape {tuple(shape)}")
    m = m.astype(bool, copy=False)
    if not m.any():
        raise QSMInputError(f"mask is empty: no voxel to {purpose}")
    return m


def check_field(name: str, field: Any, mask: Any, purpose: str = "process") -> np.ndarray:
    """A real 3D field that is finite inside ``mask`` (checked with :func:`check_mask`), as float32 with zeros
    outside the mask (NaN there is ignored); never the caller's array."""
    if field is None:
        raise QSMInputError(f"{name} is missing")
    f = np.asarray(field)
    if f.ndim != 3:
        raise QSMInputError(f"{name} must be 3D (x, y, z), got shape {f.shape}")
    if np.iscomplexobj(f):
        raise QSMInputError(f"{name} is complex; give the real field in ppm")
    m = check_mask(mask, f.shape, purpose)
    nbad = int(np.count_nonzero(m & ~np.isfinite(f)))
    if nbad:
        raise QSMInputError(f"{name} contains {nbad} NaN/Inf voxel(s) inside the mask; mask or replace them")
    return np.where(m, f, 0).astype(np.float32)


def normalise_weight(weight: Optional[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """Data weight (e.g. 1/noise SD) as float32, 0 outside ``mask``, mean 1 inside (``None`` gives the mask
    itself)."""
    if weight is None:
        return mask.astype(np.float32)
    w = np.asarray(weight, dtype=np.float32)
    if w.shape != mask.shape:
        raise QSMInputError(f"weight shape {w.shape} does not match the field shape {mask.shape}")
    if not np.all(np.isfinite(w[mask])) or np.any(w[mask] < 0):
        raise QSMInputError("weight must be finite and non-negative inside the mask (e.g. 1/noise SD)")
    mean = float(np.mean(w[mask], dtype=np.float64))
    if mean <= 0:
        raise QSMInputError("weight is zero everywhere inside the mask")
    return np.where(mask, w / np.float32(mean), np.float32(0.0)).astype(np.float32)


__all__ = ["check_mask", "check_field", "normalise_weight"]
