"""What the dipole inversion methods share beyond :mod:`QSMLogic.utils` (input checks, work grid, FFTs, SMV kernel,
CG and LSQR solvers): the field-unit checks, the field-strength rule of the regularisation defaults, the padded
problem with its dipole operator and the gradient operators.

Work grid. Every method solves on the mask's bounding box plus ``pad_voxels`` of zeros on each side, rounded up to
a fast real-FFT size (:class:`QSMLogic.utils.grid.FFTCrop`). :class:`InversionProblem` holds the cropped
and padded field, mask, data weight and magnitude, the unit dipole kernel on that grid in the ``rfftn`` half-spectrum
layout (:func:`QSMLogic.dipole.dipole_kernel` with ``real=True``) and maps results back to the input volume.

Physics (DESIGN.md §1): ``δ = F⁻¹{D·F{χ}}``, ``D(k) = 1/3 − (k·b̂)²/|k|²`` with k in 1/mm, fields and χ in ppm.
Gradients are forward differences with periodic wrap on the physical grid (1/mm); :func:`divergence` is minus their
adjoint, so ``<∇x, g> = −<x, div g>`` holds exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..dipole import dipole_kernel
from ..errors import QSMInputError
from ..geometry import check_b0_direction, check_voxel_size
from ..utils.checks import check_field, check_mask, normalise_weight
from ..utils.fft import convolve
from ..utils.grid import FFTCrop

#: Hz-versus-ppm check (see :func:`check_local_field_ppm`): the statistic is the 90th percentile of |field| in the
#: mask, which ignores veins, bleeds, calcifications and even a few per cent of unwrapping errors. A tissue (local)
#: field in ppm has it near 0.015 (phantom and in vivo values: docs/benchmarks.md); no local field in ppm reaches
#: MAX_LOCAL_FIELD_P90_PPM (that would put 10 % of the brain at a vein's field), whereas the same field in Hz is
#: γ̄·B0 = 64–298 times larger at 1.5–7 T (radians at TE 20 ms: 8–37 times).
TYPICAL_LOCAL_FIELD_P90_PPM = 0.015
MAX_LOCAL_FIELD_P90_PPM = 0.15
#: The same for a total field (single-step methods): background fields near the sinuses reach a few ppm inside the
#: brain; in Hz they are ≥ 64× larger.
TYPICAL_TOTAL_FIELD_P90_PPM = 0.7
MAX_TOTAL_FIELD_P90_PPM = 5.0
#: Kept for callers of the old check: the bound on a local field's 90th percentile (ppm) when B0 is unknown.
MAX_PLAUSIBLE_FIELD_PPM = MAX_LOCAL_FIELD_P90_PPM

#: Field strength the regularisation defaults are tuned at (tesla).
REFERENCE_B0_TESLA = 3.0
#: Exponent p of the field-strength rule of the regularisation defaults, weight(B0) = weight(3 T)·(3 T/B0)^p for a
#: prior weight (α of TV/TGV) and the inverse for a data weight (λ of MEDI); see :func:`weight_for_field`.
REGULARISATION_B0_EXPONENT = 0.6
#: Effective echo time used when the echo times are unknown (s).
FALLBACK_TE_EFF_S = 0.020


# --------------------------------------------------------------------------------------------------- input checks
def field_p90(field: np.ndarray, mask: np.ndarray) -> float:
    """90th percentile of |field| over ``mask`` (0 for an empty mask)."""
    vals = np.abs(np.asarray(field)[mask])
    return float(np.percentile(vals, 90.0)) if vals.size else 0.0


def hz_threshold_ppm(b0_tesla: Optional[float], kind: str = "local") -> float:
    """Largest 90th percentile of |field| (in the mask) accepted as ppm; above it the field is taken to be in Hz.

    Without ``b0_tesla`` this is the physical bound (0.15 ppm local, 5 ppm total). With it, the two readings of
    the value v are weighed on the log scale: as ppm the field would have v, as Hz v/(γ̄·B0·1e-6); the threshold is
    the geometric midpoint ``typical·sqrt(γ̄·B0·1e-6)`` between a typical field and its Hz image, never below the
    physical bound (1.5 T: 0.15, 3 T: 0.17, 7 T: 0.26 ppm for a local field), so a real ppm field is not flagged
    and a Hz field at any B0 ≥ 1.5 T is (the phantom's local field in Hz at 1.5 T has 0.86).
    """
    from ..constants import GAMMA_BAR_HZ_PER_T

    typical, bound = ((TYPICAL_LOCAL_FIELD_P90_PPM, MAX_LOCAL_FIELD_P90_PPM) if kind == "local"
                      else (TYPICAL_TOTAL_FIELD_P90_PPM, MAX_TOTAL_FIELD_P90_PPM))
    if b0_tesla is None or not b0_tesla > 0:
        return bound
    hz_per_ppm = GAMMA_BAR_HZ_PER_T * float(b0_tesla) * 1e-6
    return max(bound, typical * float(np.sqrt(hz_per_ppm)))


def check_local_field_ppm(local_field_ppm: np.ndarray, mask: np.ndarray, b0_tesla: Optional[float] = None,
                          kind: str = "local") -> np.ndarray:
    """The field as float32, 0 outside ``mask``, after the shared checks (:func:`QSMLogic.utils.checks.check_field`:
    3D, real, finite in the mask; the mask 3D, of the field's shape, not empty) and the unit check: raise
    :class:`QSMInputError` if it looks like Hz (or radians).

    The unit test is on the 90th percentile of |field| in the mask (robust to veins, bleeds and a few per cent of
    unwrapping errors) against :func:`hz_threshold_ppm` (``kind`` "local" or "total"; ``b0_tesla`` sharpens it
    and names the conversion).
    """
    name = "local_field_ppm" if kind == "local" else "total_field_ppm"
    f = check_field(name, local_field_ppm, mask, purpose="invert")
    p90 = field_p90(f, np.asarray(mask, dtype=bool))
    thr = hz_threshold_ppm(b0_tesla, kind)
    if p90 > thr:
        from ..constants import GAMMA_BAR_HZ_PER_T

        typical = TYPICAL_LOCAL_FIELD_P90_PPM if kind == "local" else TYPICAL_TOTAL_FIELD_P90_PPM
        as_hz = ""
        if b0_tesla is not None and b0_tesla > 0:
            as_hz = (f" Read as Hz at {float(b0_tesla):g} T it would be "
                     f"{p90 / (GAMMA_BAR_HZ_PER_T * float(b0_tesla) * 1e-6):.3g} ppm, a tissue-like value.")
        raise QSMInputError(
            f"{name}: the 90th percentile of |field| in the mask is {p90:.3g}, above {thr:.3g} ppm (a {kind} field "
            f"in ppm is near {typical:g}): it looks like Hz or radians.{as_hz} Convert Hz with "
            "QSMLogic.constants.hz_to_ppm(field_hz, b0_tesla) and radians with ppm = phase_rad / (2·π·TE_s·γ̄·B0_T) "
            "· 1e6"
        )
    return f


def weight_for_field(value_3t: float, b0_tesla: Optional[float], data_weight: bool = False,
                     exponent: float = REGULARISATION_B0_EXPONENT) -> float:
    """Default regularisation weight at ``b0_tesla`` from its value at 3 T: ``value_3t·(3 T/B0)^p`` (prior weights
    such as TV's α) or ``value_3t·(B0/3 T)^p`` (``data_weight``: MEDI's λ); 3 T when ``b0_tesla`` is None.

    Why it changes: the fields are in ppm, and for the same SNR and echo times the field noise in ppm falls with B0,
    so the balance between data and prior moves towards the data. A MAP argument would give p = 2 (weight ∝ σ²), but
    at SNR ≈ 100 the error of TV, TGV and MEDI maps of a head is dominated by the prior's bias rather than by noise;
    p = 0.6 matches the best weights found on the phantom at 3 and 7 T (docs/benchmarks.md).
    """
    b0 = REFERENCE_B0_TESLA if b0_tesla is None else float(b0_tesla)
    if not b0 > 0:
        raise QSMInputError(f"b0_tesla must be positive, got {b0_tesla}")
    ratio = REFERENCE_B0_TESLA / b0
    return float(value_3t * (ratio ** (-exponent) if data_weight else ratio**exponent))


def effective_te_s(te_s: Optional[Sequence[float]]) -> float:
    """Effective echo time (s) of a multi-echo field map, for turning ppm back into radians.

    ``Σ TE_n² / Σ TE_n``: the TE of a single echo for one echo; for several, the TE at which a 2π error common to
    all echoes (a spatial unwrapping error) moves a least-squares phase-vs-TE slope by exactly one period, and a
    value between the first and the last echo (14.7 ms for TE 4–20 ms). :data:`FALLBACK_TE_EFF_S` (20 ms) when
    ``te_s`` is None or empty.
    """
    if te_s is None:
        return FALLBACK_TE_EFF_S
    te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
    if te.size == 0:
        return FALLBACK_TE_EFF_S
    if not np.all(np.isfinite(te)) or np.any(te <= 0):
        raise QSMInputError(f"echo times must be positive, got {te.tolist()}")
    return float(np.sum(te**2) / np.sum(te))


# ------------------------------------------------------------------------------------------------ gradient operators
def gradient(x: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Forward differences (periodic) along each axis divided by the voxel size: shape (3, *x.shape), 1/mm."""
    g = np.empty((3,) + x.shape, dtype=np.float32)
    for ax in range(3):
        d = np.float32(1.0 / voxel_size_mm[ax])
        out = np.moveaxis(g[ax], ax, 0)
        xi = np.moveaxis(x, ax, 0)
        np.subtract(xi[1:], xi[:-1], out=out[:-1])
        np.subtract(xi[:1], xi[-1:], out=out[-1:])
        out *= d
    return g


def divergence(g: np.ndarray, voxel_size_mm: Sequence[float]) -> np.ndarray:
    """Backward-difference divergence, minus the adjoint of :func:`gradient`: ``<∇x, g> = −<x, div g>``."""
    out = np.zeros(g.shape[1:], dtype=np.float32)
    for ax in range(3):
        d = np.float32(1.0 / voxel_size_mm[ax])
        gi = np.moveaxis(g[ax], ax, 0)
        o = np.moveaxis(out, ax, 0)
        o[1:] += (gi[1:] - gi[:-1]) * d
        o[:1] += (gi[:1] - gi[-1:]) * d
    return out


def edge_mask(
    image: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], edge_fraction: float = 0.3
) -> np.ndarray:
    """Gradient mask M_G of MEDI (Liu et al., MRM 2012): 0 on the strongest ``edge_fraction`` of gradients.

    For each axis, the forward difference of ``image`` (e.g. the magnitude) is computed in the mask; the voxels
    whose |gradient| lies in the top ``edge_fraction`` of the in-mask values are anatomical edges (M_G = 0, not
    penalised by the regulariser) and all others get M_G = 1. Shape (3, *image.shape), float32.
    """
    if not 0.0 <= edge_fraction < 1.0:
        raise QSMInputError(f"edge_fraction must be in [0, 1), got {edge_fraction}")
    img = np.where(mask, np.asarray(image, dtype=np.float32), np.float32(0.0))
    g = np.abs(gradient(img, voxel_size_mm))
    out = np.ones_like(g)
    if edge_fraction > 0:
        for ax in range(3):
            vals = g[ax][mask]
            if vals.size:
                thr = np.quantile(vals, 1.0 - edge_fraction)
                out[ax][g[ax] > thr] = 0.0
    return out


# ------------------------------------------------------------------------------------------------------ work grid
@dataclass
class InversionProblem:
    """A field map on the cropped, padded work grid, with its dipole kernel; see the module docs.

    ``field``, ``mask``, ``weight`` and ``magnitude`` live on the work grid; ``kernel`` is D(k) in rfft layout;
    :meth:`to_input_grid` puts a work-grid map back into the input volume (float32, zero outside the input mask).
    """

    field: np.ndarray
    mask: np.ndarray
    weight: np.ndarray
    magnitude: Optional[np.ndarray]
    kernel: np.ndarray
    voxel_size_mm: np.ndarray
    b0_direction: np.ndarray
    input_mask: np.ndarray
    grid: FFTCrop

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.field.shape

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return self.grid.full_shape

    def dipole(self, x: np.ndarray) -> np.ndarray:
        """Forward model ``D x`` (field in ppm of χ in ppm) on the work grid; also its own adjoint."""
        return convolve(x, self.kernel)

    def embed(self, x: np.ndarray) -> np.ndarray:
        """An input-grid array placed on the work grid (zeros in the padding), float32."""
        return self.grid.take(x)

    def to_input_grid(self, x: np.ndarray) -> np.ndarray:
        """A work-grid map back on the input grid: float32, zero outside the input mask."""
        out = self.grid.put(x)
        out[~self.input_mask] = 0.0
        return out


def prepare_problem(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    magnitude: Optional[np.ndarray] = None,
    pad_voxels: Union[int, Sequence[int]] = 12,
    b0_tesla: Optional[float] = None,
    field_kind: str = "local",
) -> InversionProblem:
    """Check the inputs and build the work grid (mask bounding box + ``pad_voxels`` zeros, one number or one per
    axis, fast FFT size).

    Raises :class:`QSMInputError` for a field that is not 3D, not finite in the mask or not in ppm
    (:func:`check_local_field_ppm` with ``b0_tesla`` and ``field_kind`` "local" or "total"), a mask that is empty or
    of another shape, a voxel size that is not 3 positive numbers and a B0 direction that is not a unit vector.
    """
    f = check_local_field_ppm(local_field_ppm, mask, b0_tesla, field_kind)
    m = check_mask(mask, f.shape, purpose="invert")
    vox = check_voxel_size(voxel_size_mm)
    b0 = check_b0_direction(b0_direction)
    w_in = normalise_weight(weight, m)
    if magnitude is not None:
        magnitude = np.asarray(magnitude, dtype=np.float32)
        if magnitude.ndim == 4:
            magnitude = magnitude[..., 0]
        if magnitude.shape != f.shape:
            raise QSMInputError(f"magnitude shape {magnitude.shape} differs from the field shape {f.shape}")
    grid = FFTCrop(m, [max(int(p), 0) for p in np.broadcast_to(pad_voxels, (3,))])
    mw = grid.take(m, bool)
    field = np.where(mw, grid.take(f), np.float32(0.0))
    return InversionProblem(
        field=field.astype(np.float32),
        mask=mw,
        weight=grid.take(w_in),
        magnitude=None if magnitude is None else grid.take(magnitude),
        kernel=dipole_kernel(grid.shape, vox, b0, real=True),
        voxel_size_mm=vox,
        b0_direction=b0,
        input_mask=m,
        grid=grid,
    )


__all__ = [
    "MAX_PLAUSIBLE_FIELD_PPM", "MAX_LOCAL_FIELD_P90_PPM", "MAX_TOTAL_FIELD_P90_PPM", "REFERENCE_B0_TESLA",
    "REGULARISATION_B0_EXPONENT", "FALLBACK_TE_EFF_S", "field_p90", "hz_threshold_ppm", "weight_for_field",
    "effective_te_s", "InversionProblem", "prepare_problem", "check_local_field_ppm", "gradient", "divergence",
    "edge_mask",
]
