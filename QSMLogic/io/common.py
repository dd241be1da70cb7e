"""Shared steps of the readers: file checks, NaN policy, and building a :class:`~QSMLogic.gre.GREData`."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from ..errors import QSMInputError
from ..gre import GREData
from .phase_scaling import phase_to_radians

PathLike = Union[str, "os.PathLike[str]"]
#: Accepted values of ``nan_policy``: "error" (default) raises naming the count of NaN/Inf voxels; "mask" sets
#: them to 0 and records ``metadata["valid_mask"]`` (bool, phase shape) and ``metadata["n_invalid_voxels"]``.
NAN_POLICIES = ("error", "mask")
#: Largest difference (mm) allowed between affines of images that must share a geometry.
AFFINE_TOL_MM = 1e-4


def as_path_list(paths: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """One path or a sequence of paths as a list of strings."""
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    out = [os.fspath(p) for p in paths]
    if not out:
        raise QSMInputError("an empty list of files was given")
    return out


def max_input_bytes() -> int:
    """Largest image (as float32) a reader accepts: half the machine's physical memory (16 GiB if unknown), or
    ``SUSCEPTIBILITY_MRI_MAX_INPUT_BYTES``."""
    env = os.environ.get("SUSCEPTIBILITY_MRI_MAX_INPUT_BYTES")
    if env:
        return int(env)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        return 16 << 30


def check_image_size(shape: Sequence[int], what: str, bytes_per_value: int = 4) -> None:
    """Refuse, before reading any data, an image whose header gives a non-positive dimension or a size that cannot
    fit in memory (a corrupt header, or the wrong file)."""
    dims = [int(d) for d in shape]
    if any(d < 1 for d in dims):
        raise QSMInputError(f"{what}: the header gives dimensions {tuple(dims)}; every dimension must be ≥ 1")
    n = int(np.prod(np.asarray(dims, dtype=object))) * int(bytes_per_value)
    limit = max_input_bytes()
    if n > limit:
        raise QSMInputError(
            f"{what}: the header gives dimensions {tuple(dims)}, {n / 2**30:.3g} GiB as float32, more than this "
            f"machine can hold ({limit / 2**30:.3g} GiB allowed): a corrupt header or the wrong file?"
        )


def check_exists(path: str, what: str = "file") -> str:
    """Raise a QSMInputError naming ``path`` if it does not exist."""
    if not os.path.exists(path):
        raise QSMInputError(f"{what} {path!r} does not exist")
    return path


def check_same_geometry(name_a: str, shape_a: tuple, affine_a: np.ndarray, name_b: str, shape_b: tuple,
                        affine_b: np.ndarray) -> None:
    """Raise a QSMInputError naming both images if their spatial shapes or affines differ."""
    if tuple(shape_a[:3]) != tuple(shape_b[:3]):
        raise QSMInputError(
            f"geometry mismatch: {name_a} has spatial shape {tuple(shape_a[:3])} but {name_b} has {tuple(shape_b[:3])}"
        )
    diff = float(np.max(np.abs(np.asarray(affine_a) - np.asarray(affine_b))))
    if diff > AFFINE_TOL_MM:
        raise QSMInputError(
            f"geometry mismatch: the affines of {name_a} and {name_b} differ by up to {diff:.4g} mm "
            "(different position, orientation or voxel size)"
        )


def check_nan_policy(nan_policy: str) -> None:
    if nan_policy not in NAN_POLICIES:
        raise QSMInputError(f"nan_policy must be one of {list(NAN_POLICIES)}, got {nan_policy!r}")


def build_gre(
    phase_raw: Optional[np.ndarray],
    magnitude: Optional[np.ndarray],
    te_s: Optional[Sequence[float]],
    b0_tesla: Optional[float],
    affine: np.ndarray,
    phase_rule: str,
    phase_sign: int,
    nan_policy: str,
    metadata: Dict[str, Any],
    phase_name: str,
    te_hint: str,
    b0_hint: str,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    phase_rad: Optional[np.ndarray] = None,
) -> GREData:
    """Scale the phase, apply the NaN policy, check echoes and build the GREData.

    ``phase_raw`` holds stored phase values converted with :func:`phase_to_radians`; alternatively ``phase_rad``
    gives phase already in radians (e.g. the angle of complex data). ``te_hint``/``b0_hint`` say where the reader
    looked for echo times / field strength, for the error raised when they are missing.
    """
    check_nan_policy(nan_policy)
    if phase_rad is None:
        if phase_raw is None:
            raise QSMInputError("no phase image was given: QSM and SWI need the phase")
        valid = np.isfinite(phase_raw) if nan_policy == "mask" else None
        phase_rad, rule, description = phase_to_radians(
            phase_raw, phase_rule, rescale_slope, rescale_intercept, valid_mask=valid, name=phase_name
        )
        metadata["phase_scaling"] = {"rule": rule, "description": description}
        if valid is not None:
            metadata["valid_mask"] = valid
            metadata["n_invalid_voxels"] = int(valid.size - np.count_nonzero(valid))
    n_echo = 1 if phase_rad.ndim == 3 else int(phase_rad.shape[3])
    if magnitude is not None:
        m_echo = 1 if magnitude.ndim == 3 else int(magnitude.shape[3])
        if m_echo != n_echo:
            raise QSMInputError(f"echo count mismatch: magnitude has {m_echo} echoes but phase has {n_echo}")
        if nan_policy == "mask":
            bad = ~np.isfinite(magnitude)
            if np.any(bad):
                magnitude = np.where(bad, 0, magnitude)
                metadata["n_invalid_magnitude_voxels"] = int(np.count_nonzero(bad))
    if te_s is None:
        raise QSMInputError(f"echo times are missing for {n_echo} echo(es): give te_s (seconds) or {te_hint}")
    if b0_tesla is None:
        raise QSMInputError(f"the field strength is missing: give b0_tesla (tesla) or {b0_hint}")
    metadata["nan_policy"] = nan_policy
    metadata["phase_sign"] = int(phase_sign)
    return GREData(phase_rad=phase_rad, magnitude=magnitude, te_s=te_s, b0_tesla=b0_tesla, affine=affine,
                   phase_sign=phase_sign, metadata=metadata)
