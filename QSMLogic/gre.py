"""The GRE acquisition data model: one validated object for a (multi-echo, optionally multi-coil) GRE scan.

Array layout (docs/conventions.md): spatial axes first (in the array's own order, matching ``affine``), then echo, then
coil: ``(nx, ny, nz, n_echo)`` for coil-combined data, ``(nx, ny, nz, n_echo, n_coil)`` for uncombined data.
Phase is stored in radians in the project's internal convention (phase grows as ``+2π·Δf·TE``; paramagnetic
sources parallel to B0 give Δf > 0): ``phase = phase_sign · input_phase``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from .errors import QSMInputError
from .geometry import b0_direction_from_affine, check_affine, check_b0_direction, voxel_size_from_affine

#: Slack allowed on the [-π, π] check for phase that went through float32 and rescaling.
PHASE_RANGE_TOLERANCE_RAD = 1e-3
#: Echo times above this (in "seconds") are almost surely milliseconds.
MAX_PLAUSIBLE_TE_S = 1.0


def check_echo_times(te_s: Optional[Sequence[float]], n_echo: int) -> np.ndarray:
    """Validate echo times (seconds): present, one per echo, positive, strictly increasing, not milliseconds."""
    if te_s is None:
        raise QSMInputError("echo times are missing: give te_s (seconds), one per echo")
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
    if te.ndim != 1 or te.size != n_echo:
        raise QSMInputError(f"got {te.size} echo times for {n_echo} echoes")
    if not np.all(np.isfinite(te)):
        raise QSMInputError(f"echo times contain NaN/Inf: {te.tolist()}")
    if np.any(te <= 0):
        raise QSMInputError(f"echo times must be positive seconds, got {te.tolist()}")
    if np.any(te > MAX_PLAUSIBLE_TE_S):
        raise QSMInputError(
            f"echo times {te.tolist()} look like milliseconds: give them in seconds (e.g. 0.02 for 20 ms)"
        )
    if np.any(np.diff(te) <= 0):
        raise QSMInputError(f"echo times must be strictly increasing, got {te.tolist()}")
    return te


def _chunks(a: np.ndarray):
    """Views of ``a`` split along its first axis, ~64 MB each, so checks on 5D data need no full-size temporary."""
    step = max(1, int(64e6 // max(1, a[:1].nbytes)))
    for i in range(0, a.shape[0], step):
        yield a[i:i + step]


def check_finite(name: str, a: np.ndarray) -> None:
    """Raise a QSMInputError naming ``name`` and the count of bad voxels if ``a`` holds NaN or Inf."""
    n = sum(int(np.count_nonzero(~np.isfinite(c))) for c in _chunks(a))
    if n:
        first = np.argwhere(~np.isfinite(a))[0]
        raise QSMInputError(
            f"{name} contains {n} NaN/Inf voxel(s) (first at index {tuple(int(i) for i in first)});"
            " mask or replace them before processing"
        )


def _min_max(a: np.ndarray) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for c in _chunks(a):
        lo, hi = min(lo, float(c.min())), max(hi, float(c.max()))
    return lo, hi


@dataclass
class GREData:
    """A validated multi-echo GRE acquisition.

    Parameters
    ----------
    phase_rad
        Phase in radians as read (vendor convention), shape ``(x, y, z, echo[, coil])``; a 3D array is one echo.
    magnitude
        Magnitude of the same shape, or ``None`` if only phase is available.
    te_s
        Echo times in seconds, strictly increasing, one per echo.
    b0_tesla
        Main field strength in tesla (> 0), or ``None`` when it is unknown: only stages that do not need it (coil
        combination, mask, homodyne SWI: :meth:`QSMLogic.pipeline.PipelineConfig.swi_only`) can then run.
    affine
        4×4 index-to-world (RAS) matrix for the spatial axes of the arrays.
    phase_sign
        +1 if the input phase already grows as +2π·Δf·TE, −1 to flip it (vendor-dependent: in the final QSM,
        veins must come out positive).
    b0_direction
        Unit B0 direction in the array's axes; derived from ``affine`` (world +z) when ``None``.
    metadata
        Free-form provenance of the input (file names, scaling rule applied, vendor, ...).

    Arrays that are already float32 are kept by reference, not copied (a 32-coil, 5-echo scan is several GB); a
    phase that must be flipped or converted gets a new array. GREData and the pipeline never write into them.
    """

    phase_rad: np.ndarray
    magnitude: Optional[np.ndarray]
    te_s: Sequence[float]
    b0_tesla: Optional[float]
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    phase_sign: int = 1
    b0_direction: Optional[Sequence[float]] = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        ph = np.asarray(self.phase_rad)
        if np.iscomplexobj(ph):
            raise QSMInputError("phase_rad is complex: use GREData.from_complex for complex data")
        if ph.ndim == 3:
            ph = ph[..., None]
        if ph.ndim not in (4, 5):
            raise QSMInputError(
                f"phase must have shape (x, y, z, echo[, coil]), got {ph.ndim}D array of shape {ph.shape}"
            )
        check_finite("phase", ph)
        lim = np.pi + PHASE_RANGE_TOLERANCE_RAD
        lo, hi = _min_max(ph)
        if lo < -lim or hi > lim:
            raise QSMInputError(
                f"phase spans [{lo:.4g}, {hi:.4g}], outside [-π, π]: it is not in radians; convert it with "
                "QSMLogic.io.phase_to_radians (DICOM integers, degrees, ...) before building GREData"
            )
        if self.phase_sign not in (1, -1):
            raise QSMInputError(f"phase_sign must be +1 or -1, got {self.phase_sign!r}")
        flip = self.phase_sign == -1
        self.phase_rad = np.negative(ph, dtype=np.float32) if flip else ph.astype(np.float32, copy=False)
        if self.magnitude is not None:
            mag = np.asarray(self.magnitude)
            if mag.ndim == 3:
                mag = mag[..., None]
            if mag.shape != self.phase_rad.shape:
                raise QSMInputError(
                    f"magnitude shape {mag.shape} does not match phase shape {self.phase_rad.shape}"
                )
            check_finite("magnitude", mag)
            if _min_max(mag)[0] < 0:
                raise QSMInputError("magnitude has negative values: is it a phase image?")
            self.magnitude = mag.astype(np.float32, copy=False)
        self.te_s = check_echo_times(self.te_s, self.phase_rad.shape[3])
        if self.b0_tesla is not None:
            b0 = float(self.b0_tesla)
            if not np.isfinite(b0) or b0 <= 0:
                raise QSMInputError(f"b0_tesla must be a positive field strength in tesla, got {self.b0_tesla!r}")
            if b0 > 25:
                raise QSMInputError(f"b0_tesla={b0} is implausible for MRI (is it in another unit?)")
            self.b0_tesla = b0
        self.affine = check_affine(self.affine)
        if self.b0_direction is None:
            self.b0_direction = b0_direction_from_affine(self.affine)
        self.b0_direction = tuple(float(v) for v in check_b0_direction(self.b0_direction))

    @classmethod
    def from_complex(cls, signal: np.ndarray, te_s: Sequence[float], b0_tesla: Optional[float], **kwargs) -> GREData:
        """Build from complex data (phase taken as the complex angle, magnitude as its modulus)."""
        s = np.asarray(signal)
        if not np.iscomplexobj(s):
            raise QSMInputError("from_complex needs a complex array")
        check_finite("complex signal", s)
        return cls(phase_rad=np.angle(s), magnitude=np.abs(s), te_s=te_s, b0_tesla=b0_tesla, **kwargs)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape."""
        return tuple(self.phase_rad.shape[:3])  # type: ignore[return-value]

    @property
    def n_echoes(self) -> int:
        return int(self.phase_rad.shape[3])

    @property
    def n_coils(self) -> int:
        """Number of receive channels (1 for coil-combined data)."""
        return int(self.phase_rad.shape[4]) if self.phase_rad.ndim == 5 else 1

    @property
    def is_combined(self) -> bool:
        return self.phase_rad.ndim == 4

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        return voxel_size_from_affine(self.affine)

    def complex_signal(self) -> np.ndarray:
        """Complex signal ``magnitude · exp(i·phase)`` (unit magnitude when none is available), complex64."""
        mag = self.magnitude if self.magnitude is not None else np.float32(1.0)
        return (mag * np.exp(1j * self.phase_rad)).astype(np.complex64)
