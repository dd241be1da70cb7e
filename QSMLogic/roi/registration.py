"""Template → subject registration with SimpleITK: rigid, then affine, then B-spline deformable.

Each stage maximises Mattes mutual information (Mattes et al., IEEE Trans Med Imaging 22 (2003) 120–128), so the
subject's magnitude, R2* or χ map can be matched to a template of another contrast; a two-level pyramid (shrink
4, 2 or 2, 1) and random sampling keep it fast. The deformable stage is a cubic B-spline free-form deformation
(Rueckert et al., IEEE Trans Med Imaging 18 (1999) 712–721) with control points every ``bspline_spacing_mm``,
optimised with L-BFGS-B. The subject is the fixed image and only the part of it that the template covers counts,
so the resulting transform maps subject points to template points: atlas labels are carried onto the subject grid by
nearest neighbour, probabilities by linear interpolation (:func:`warp_to_subject`).

Geometry: arrays are (i, j, k) with a 4×4 index → RAS affine (as everywhere in QSMLogic); SimpleITK images are
built in LPS with the same geometry.

The starting pose aligns the template's brain centre with the subject's (``subject_mask`` centroid, else the
centroid of the brightest half of the image), assuming a roughly standard head orientation in RAS.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import QSMCancelled, QSMInputError

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
_LPS = np.diag([-1.0, -1.0, 1.0])


def to_sitk(array: np.ndarray, affine: np.ndarray):
    """A SimpleITK image (float32, or the array's integer type) with the geometry of ``affine`` (index → RAS)."""
    import SimpleITK as sitk

    a = np.asarray(array)
    if a.ndim != 3:
        raise QSMInputError(f"expected a 3D volume, got shape {a.shape}")
    aff = np.asarray(affine, np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-9:
        raise QSMInputError("the volume has no valid geometry (4×4 index → RAS affine with a non-singular 3×3 part)")
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    direction = _LPS @ (aff[:3, :3] / spacing)
    if not np.issubdtype(a.dtype, np.integer):
        a = a.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(a.transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in _LPS @ aff[:3, 3]])
    img.SetDirection([float(v) for v in direction.reshape(-1)])
    return img


def from_sitk(img) -> np.ndarray:
    """The (i, j, k) array of a SimpleITK image."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(img).transpose(2, 1, 0)


@dataclass
class TemplateRegistration:
    """Result of :func:`register_template`: ``transform`` maps subject points (LPS) to template points."""

    transform: object
    seconds: float
    stages: List[Dict[str, float]] = field(default_factory=list)


def _centroid_ras(img: np.ndarray, affine: np.ndarray, mask: Optional[np.ndarray]) -> np.ndarray:
    if mask is None:
        finite = np.isfinite(img)
        vals = np.abs(img[finite])
        thr = np.median(vals) if vals.size else 0.0
        mask = finite & (np.abs(np.nan_to_num(img)) > thr)
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise QSMInputError("the subject image (or mask) is empty: nothing to register to")
    c = idx.mean(axis=0)
    return affine[:3, :3] @ c + affine[:3, 3]


def register_template(
    subject: np.ndarray,
    subject_affine: np.ndarray,
    template: np.ndarray,
    template_affine: np.ndarray,
    template_brain_centre_ras: Sequence[float],
    subject_mask: Optional[np.ndarray] = None,
    deformable: bool = True,
    bspline_spacing_mm: float = 25.0,
    iterations: Tuple[int, int, int] = (100, 100, 40),
    pyramid_mm: Sequence[float] = (4.0, 2.0),
    sampling_fraction: float = 0.08,
    seed: int = 1,
    threads: Optional[int] = 1,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
) -> TemplateRegistration:
    """Register ``template`` (moving) to ``subject`` (fixed): rigid → affine → (B-spline when ``deformable``).

    ``template_brain_centre_ras``: the RAS point of the template that should land on the subject's brain centre
    (the centroid of ``subject_mask``, or of the brighter half of the subject image) for the starting pose.
    ``iterations``: optimiser iterations per pyramid level for the rigid, affine and B-spline stages;
    ``pyramid_mm``: the voxel size (mm) each pyramid level works at (never finer than the subject's own voxels), so
    the cost does not grow with the subject's resolution.
    ``threads``: SimpleITK threads during the registration (the process-wide default is restored afterwards); the
    default 1 makes the result reproducible (with several threads the metric is summed in a varying order and the
    optimiser's path drifts between runs); None keeps SimpleITK's default.
    ``progress(fraction, message)`` is called per stage and level; ``cancel()`` returning True stops the optimiser
    at its next iteration and raises :class:`QSMCancelled`.
    """
    import SimpleITK as sitk

    t0 = time.perf_counter()
    progress = progress or (lambda f, s: None)
    cancelled = cancel or (lambda: False)
    subj = np.nan_to_num(np.asarray(subject, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if subject_mask is not None and np.shape(subject_mask) != subj.shape:
        raise QSMInputError(f"subject mask shape {np.shape(subject_mask)} differs from the image {subj.shape}")
    m = None if subject_mask is None else np.asarray(subject_mask, bool)
    if m is not None:
        subj = np.where(m, subj, 0.0).astype(np.float32)
    fixed = to_sitk(subj, subject_affine)
    moving = to_sitk(np.asarray(template, np.float32), template_affine)

    c_subj = _centroid_ras(subj, subject_affine, m)
    shift_lps = _LPS @ (np.asarray(template_brain_centre_ras, np.float64) - c_subj)
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter([float(v) for v in _LPS @ c_subj])
    rigid.SetTranslation([float(v) for v in shift_lps])

    stages: List[Dict[str, float]] = []
    n_stages = 3 if deformable else 2
    vmin = float(min(fixed.GetSpacing()))
    levels = [max(1, int(round(float(mm) / vmin))) for mm in pyramid_mm]

    def run(name: str, idx: int, init, fixed_img, moving_transform=None, optimizer: str = "gd", n_iter: int = 100,
            fixed_mask=None):
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling_fraction, seed)
        if fixed_mask is not None:
            reg.SetMetricFixedMask(fixed_mask)
        reg.SetInterpolator(sitk.sitkLinear)
        if optimizer == "lbfgsb":
            reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=n_iter,
                                     maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=2 * n_iter)
        else:
            reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=n_iter,
                                                         relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
            reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(levels)
        reg.SetSmoothingSigmasPerLevel([0.5 * s for s in levels])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        if moving_transform is not None:
            reg.SetMovingInitialTransform(moving_transform)
        reg.SetInitialTransform(init, inPlace=True)
        level = [0]

        def on_level():
            level[0] += 1
            progress((idx + (level[0] - 1) / len(levels)) / n_stages, f"{name} registration, level {level[0]}")

        n_calls = [0]

        def on_iter():
            n_calls[0] += 1
            if cancelled():
                reg.StopRegistration()

        reg.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
        reg.AddCommand(sitk.sitkIterationEvent, on_iter)
        reg.Execute(fixed_img, moving)
        if cancelled():
            raise QSMCancelled(f"registration cancelled during the {name} stage")
        stages.append({"stage": name, "metric": float(reg.GetMetricValue()), "iterations": n_calls[0],
                       "seconds": time.perf_counter() - t0})

    if cancelled():
        raise QSMCancelled("registration cancelled before it started")
    saved_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if threads is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        out = _stages(run, rigid, moving, fixed, m, subject_affine, deformable, iterations, bspline_spacing_mm)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(saved_threads)
    progress(1.0, "registration done")
    return TemplateRegistration(transform=out, seconds=time.perf_counter() - t0, stages=stages)


def _stages(run: Callable, rigid, moving, fixed, m, subject_affine, deformable, iterations, bspline_spacing_mm):
    import SimpleITK as sitk

    run("rigid", 0, rigid, fixed, n_iter=iterations[0])
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    # Where the template lies on the subject: only that part of the subject is sampled from now on.
    cover = sitk.Resample(sitk.Cast(moving * 0 + 1, sitk.sitkUInt8), fixed, affine, sitk.sitkNearestNeighbor, 0)
    if m is not None:
        cover = cover * sitk.Cast(to_sitk(m.astype(np.uint8), subject_affine), sitk.sitkUInt8)
    cover_arr = sitk.GetArrayViewFromImage(cover)
    if int(np.count_nonzero(cover_arr)) < 100:
        raise QSMInputError("after rigid alignment the template does not overlap the subject's image (fewer than "
                            "100 voxels): is the subject in a standard head orientation and does it show the brain?")
    # From here on the fixed image is cropped to the covered box (same physical geometry), which keeps the
    # B-spline grid and the sampling to the region the atlas can say anything about.
    nz = np.argwhere(cover_arr)  # (k, j, i)
    lo = np.maximum(nz.min(axis=0)[::-1] - 2, 0)
    hi = np.minimum(nz.max(axis=0)[::-1] + 3, np.array(fixed.GetSize()))
    box = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(int(lo[2]), int(hi[2])))
    fixed = fixed[box]
    cover = cover[box]

    run("affine", 1, affine, fixed, n_iter=iterations[1], fixed_mask=cover)
    if not deformable:
        out = affine
    else:
        mesh = [max(1, int(round(sz * sp / bspline_spacing_mm))) for sz, sp in zip(fixed.GetSize(), fixed.GetSpacing())]
        bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
        run("deformable", 2, bspline, fixed, moving_transform=affine, optimizer="lbfgsb", n_iter=iterations[2],
            fixed_mask=cover)
        out = sitk.CompositeTransform([affine, bspline])
    return out


def warp_to_subject(
    atlas_volume: np.ndarray,
    atlas_affine: np.ndarray,
    transform,
    subject_shape: Sequence[int],
    subject_affine: np.ndarray,
    interpolation: str = "nearest",
) -> np.ndarray:
    """Carry an atlas volume onto the subject grid through ``transform`` (subject → template points):
    ``"nearest"`` for label maps (int32 out), ``"linear"`` for probability maps (float32 out). Outside the atlas: 0.
    """
    import SimpleITK as sitk

    if interpolation not in ("nearest", "linear"):
        raise QSMInputError(f"interpolation must be 'nearest' or 'linear', got {interpolation!r}")
    vol = np.asarray(atlas_volume)
    src = to_sitk(vol.astype(np.int32) if interpolation == "nearest" else vol.astype(np.float32), atlas_affine)
    ref = to_sitk(np.zeros(tuple(int(n) for n in subject_shape), np.uint8), subject_affine)
    interp = sitk.sitkNearestNeighbor if interpolation == "nearest" else sitk.sitkLinear
    out = from_sitk(sitk.Resample(src, ref, transform, interp, 0.0))
    return out.astype(np.int32 if interpolation == "nearest" else np.float32)


def resample_labels_to_grid(
    labels: np.ndarray,
    labels_affine: np.ndarray,
    target_shape: Sequence[int],
    target_affine: np.ndarray,
) -> np.ndarray:
    """A label map on another grid (any orientation, spacing, origin) carried onto the target grid by nearest
    neighbour through both geometries (world RAS positions); voxels outside the label map's extent get 0."""
    import SimpleITK as sitk

    lab = np.asarray(labels)
    if not np.issubdtype(lab.dtype, np.integer):
        if not np.all(np.isfinite(lab)) or np.any(lab != np.round(lab)):
            raise QSMInputError("the label map has non-integer values: give integer labels")
        lab = lab.astype(np.int32)
    return warp_to_subject(lab, labels_affine, sitk.Transform(3, sitk.sitkIdentity),
                           target_shape, target_affine, "nearest")
