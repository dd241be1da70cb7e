"""Rigid fusion of the GRE space (magnitude) onto the planning anatomy (T1 or T2) by mutual information.

Method: Mattes mutual information (Mattes et al., IEEE TMI 22 (2003) 120–128; MI registration after Wells et al.,
Med Image Anal 1 (1996) 35–51 and Maes et al., IEEE TMI 16 (1997) 187–198), a 6-parameter Euler rigid
transform initialised on the images' centres of mass, regular-step gradient descent on a three-level image pyramid
(SimpleITK's ImageRegistrationMethod). MI suits the different contrasts of GRE magnitude and T1/T2.

Arrays are in their own axis order with 4×4 index → RAS affines (Slicer/NIfTI). SimpleITK works in LPS; the
conversion happens here, and the result is a RAS 4×4 ``moving_to_fixed`` matrix: a GRE-space RAS point ``p`` lies
at ``moving_to_fixed @ p`` in the anatomy — Slicer's "transform to parent" for a transform node under which the
GRE-space volumes (QSM, SWI) are placed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import QSMInputError
from ..geometry import check_affine

_LPS = np.diag([-1.0, -1.0, 1.0])
_LPS_4 = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_sitk(volume: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A float32 SimpleITK image (LPS geometry) of an (i, j, k) array with an index → RAS affine."""
    v = np.asarray(volume)
    if v.ndim != 3:
        raise QSMInputError(f"fusion needs 3D volumes, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise QSMInputError("fusion volume has NaN or infinite values")
    a = check_affine(affine)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    img = sitk.GetImageFromArray(np.ascontiguousarray(v.astype(np.float32).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(o) for o in _LPS @ a[:3, 3]])
    img.SetDirection([float(d) for d in (_LPS @ (a[:3, :3] / spacing)).ravel()])
    return img


def _matrix(transform: sitk.Transform) -> np.ndarray:
    """4×4 (LPS) matrix of the rigid transform a registration returns (a composite holding one Euler transform)."""
    comp = sitk.CompositeTransform(transform)
    t = sitk.Euler3DTransform(comp.GetNthTransform(comp.GetNumberOfTransforms() - 1))
    r = np.asarray(t.GetMatrix()).reshape(3, 3)
    c = np.asarray(t.GetCenter())
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = np.asarray(t.GetTranslation()) + c - r @ c
    return m


@dataclass
class FusionResult:
    """A rigid registration: the RAS ``moving_to_fixed`` matrix, the final metric and how the optimiser stopped."""

    moving_to_fixed: np.ndarray
    metric_value: float
    iterations: int
    stop_condition: str


def rigid_register(
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed_mask: Optional[np.ndarray] = None,
    histogram_bins: int = 32,
    sampling_fraction: float = 0.2,
    shrink_factors: Sequence[int] = (4, 2, 1),
    smoothing_sigmas_mm: Sequence[float] = (4.0, 2.0, 0.0),
    max_iterations: int = 200,
    seed: int = 1,
) -> FusionResult:
    """Rigidly register ``moving`` (GRE magnitude) to ``fixed`` (planning T1/T2) by Mattes mutual information.

    ``fixed_mask`` (same grid as ``fixed``) restricts the metric, e.g. to the head. ``seed`` fixes the random
    metric sampling so a run is reproducible.
    """
    if len(shrink_factors) != len(smoothing_sigmas_mm):
        raise QSMInputError("shrink_factors and smoothing_sigmas_mm must have one entry per pyramid level")
    if not 0 < sampling_fraction <= 1:
        raise QSMInputError(f"sampling_fraction must be within (0, 1], got {sampling_fraction}")
    f_img = to_sitk(fixed, fixed_affine)
    m_img = to_sitk(moving, moving_affine)
    init = sitk.CenteredTransformInitializer(f_img, m_img, sitk.Euler3DTransform(),
                                             sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(float(sampling_fraction), int(seed))
    if fixed_mask is not None:
        fm = np.asarray(fixed_mask)
        if fm.shape != np.shape(fixed):
            raise QSMInputError(f"fixed_mask shape {fm.shape} differs from the fixed volume's {np.shape(fixed)}")
        mask_img = sitk.Cast(to_sitk(fm.astype(np.float32), fixed_affine) > 0.5, sitk.sitkUInt8)
        reg.SetMetricFixedMask(mask_img)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-4, numberOfIterations=int(max_iterations),
                                                 gradientMagnitudeTolerance=1e-8, relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([int(s) for s in shrink_factors])
    reg.SetSmoothingSigmasPerLevel([float(s) for s in smoothing_sigmas_mm])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    out = reg.Execute(f_img, m_img)
    fixed_to_moving_lps = _matrix(out)
    moving_to_fixed = _LPS_4 @ np.linalg.inv(fixed_to_moving_lps) @ _LPS_4
    return FusionResult(moving_to_fixed=moving_to_fixed, metric_value=float(reg.GetMetricValue()),
                        iterations=int(reg.GetOptimizerIteration()),
                        stop_condition=reg.GetOptimizerStopConditionDescription())



def rigid_difference(a: np.ndarray, b: np.ndarray, points_ras_mm: np.ndarray) -> Tuple[float, float]:
    """Rotation angle (degrees) and largest displacement (mm over ``points_ras_mm``) between two rigid matrices."""
    d = np.asarray(a) @ np.linalg.inv(np.asarray(b))
    angle = float(np.degrees(np.arccos(np.clip((np.trace(d[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
    p = np.asarray(points_ras_mm, np.float64)
    shift = float(np.linalg.norm(p @ d[:3, :3].T + d[:3, 3] - p, axis=1).max())
    return angle, shift
