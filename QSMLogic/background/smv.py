"""The spherical-mean-value (SMV) family of background removal: SHARP (Schweser et al., NeuroImage 2011), V-SHARP
(Li et al., NeuroImage 2011; Wu et al., MRM 2012), RESHARP (Sun & Wilman, MRM 2014) and iSMV (Wen et al., MRM 2014).

The background field is harmonic inside the brain, so it equals its own spherical mean there; each method removes it
with the SMV kernel (:func:`QSMLogic.utils.kernels.smv_kernel_spectrum`) on the mask eroded by the kernel radius.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from ..errors import QSMInputError
from ..geometry import check_voxel_size
from ..params import MethodSpec, Param, register_method
from ..utils.checks import check_field, check_mask
from ..utils.fft import irfft, rfft
from ..utils.grid import FFTCrop
from ..utils.kernels import smv_kernel_spectrum, truncated_inverse
from ..utils.solvers import CancelFn, blas_dot, cg
from .common import PURPOSE, BackgroundResult, check_radius, distance_inside, eroded, margin, result


def _smv_setup(field_ppm: Any, mask: Any, voxel_size_mm: Sequence[float], radius_mm: float):
    """Checked voxel size, mask and field, and the work grid (with the cropped mask and field) for ``radius_mm``."""
    vox = check_voxel_size(voxel_size_mm)
    m = check_mask(mask, purpose=PURPOSE)
    f = check_field("field_ppm", field_ppm, m, PURPOSE)
    crop = FFTCrop(m, margin(radius_mm, vox))
    m_c = crop.take(m, dtype=bool)
    f_c = crop.take(f)
    return vox, m, crop, m_c, f_c


def _one_radius_setup(field_ppm: Any, mask: Any, voxel_size_mm: Sequence[float], radius_mm: float):
    """Checked inputs on the work grid for a method with one SMV radius, and the mask eroded by that radius."""
    vox = check_voxel_size(voxel_size_mm)
    check_radius("radius_mm", radius_mm, vox)
    vox, m, crop, m_c, f_c = _smv_setup(field_ppm, mask, vox, radius_mm)
    er = eroded(distance_inside(m_c, vox), radius_mm)
    if not er.any():
        raise QSMInputError(f"the mask is thinner than the SMV radius {radius_mm:g} mm: nothing is left")
    return vox, m, crop, f_c, er


def sharp(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], radius_mm: float = 6.0,
          threshold: float = 0.05) -> BackgroundResult:
    """SHARP (Schweser et al., NeuroImage 2011).

    The background field is harmonic in the mask, so it equals its own spherical mean: ``(I − S)δ = (I − S)δ_local``
    on the mask eroded by ``radius_mm``. The local field is recovered by dividing by ``1 − S(k)`` where
    ``|1 − S(k)| > threshold`` (TSVD) and re-masking.
    """
    vox, m, crop, f_c, er = _one_radius_setup(field_ppm, mask, voxel_size_mm, radius_mm)
    c = 1.0 - smv_kernel_spectrum(crop.shape, vox, radius_mm)
    hp = irfft(rfft(f_c) * c, crop.shape)
    hp *= er
    local = irfft(rfft(hp) * truncated_inverse(c, threshold), crop.shape)
    return result("sharp", crop, f_c, local, er, m, {"radius_mm": radius_mm, "threshold": threshold})


def _vsharp_radii(max_radius_mm: float, min_radius_mm: float, radius_step_mm: float, vox: np.ndarray) -> List[float]:
    rmin = float(vox.max()) if min_radius_mm <= 0 else min_radius_mm
    check_radius("min_radius_mm", rmin, vox)
    check_radius("max_radius_mm", max_radius_mm, vox)
    if max_radius_mm < rmin:
        raise QSMInputError(f"max_radius_mm={max_radius_mm:g} is below min_radius_mm={rmin:g}")
    radii = list(np.arange(max_radius_mm, rmin - 1e-9, -radius_step_mm))
    if radii[-1] - rmin > 1e-6:
        radii.append(rmin)
    return [float(r) for r in radii]


def vsharp(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], max_radius_mm: float = 12.0,
           min_radius_mm: float = 0.0, radius_step_mm: float = 1.0, threshold: float = 0.05) -> BackgroundResult:
    """V-SHARP (Li et al., NeuroImage 2011; Wu et al., MRM 2012).

    Each voxel takes the SMV high-pass of the largest radius (from ``max_radius_mm`` down to ``min_radius_mm``, in
    steps of ``radius_step_mm``; ``min_radius_mm = 0`` means one voxel, the largest voxel dimension) whose sphere
    fits in the mask, so the brain edge is kept down to about one voxel; the combined high-passed field is then
    deconvolved with the largest kernel (TSVD at ``threshold``).
    """
    vox = check_voxel_size(voxel_size_mm)
    radii = _vsharp_radii(max_radius_mm, min_radius_mm, radius_step_mm, vox)
    vox, m, crop, m_c, f_c = _smv_setup(field_ppm, mask, vox, radii[0])
    dist = distance_inside(m_c, vox)
    spec = rfft(f_c)
    hp = np.zeros(crop.shape, dtype=np.float32)
    done = np.zeros(crop.shape, dtype=bool)
    c_max = None
    used = []
    for r in radii:
        er = eroded(dist, r)
        new = er & ~done
        c = 1.0 - smv_kernel_spectrum(crop.shape, vox, r)
        if c_max is None:
            c_max = c
        if not new.any():
            continue
        hp_r = irfft(spec * c, crop.shape)
        hp[new] = hp_r[new]
        done |= new
        used.append(r)
    if not done.any():
        raise QSMInputError(f"the mask is thinner than the smallest SMV radius {radii[-1]:g} mm: nothing is left")
    local = irfft(rfft(hp) * truncated_inverse(c_max, threshold), crop.shape)
    return result("vsharp", crop, f_c, local, done, m,
                   {"radii_mm": used, "threshold": threshold})


def resharp(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], radius_mm: float = 4.0,
            tikhonov: float = 1e-4, tol: float = 1e-3, max_iter: int = 100,
            cancel: Optional[CancelFn] = None) -> BackgroundResult:
    """RESHARP (Sun & Wilman, MRM 2014).

    ``argmin_x ‖M_e (I − S)(x − δ)‖² + tikhonov·‖x‖²`` with ``M_e`` the mask eroded by ``radius_mm``: the SMV
    deconvolution of SHARP with Tikhonov regularisation instead of truncation, solved by CG on the normal
    equations ``((I − S) M_e (I − S) + λ) x = (I − S) M_e (I − S) δ``; ``cancel()`` is checked every iteration.
    """
    vox, m, crop, f_c, er = _one_radius_setup(field_ppm, mask, voxel_size_mm, radius_mm)
    c = 1.0 - smv_kernel_spectrum(crop.shape, vox, radius_mm)
    erf = er.astype(np.float32)

    def hp(x: np.ndarray) -> np.ndarray:
        return irfft(rfft(x) * c, crop.shape)

    def normal(x: np.ndarray) -> np.ndarray:
        return hp(erf * hp(x)) + np.float32(tikhonov) * x

    b = hp(erf * hp(f_c))
    x, it, rel = cg(normal, b, max_iter=max_iter, tol=tol, cancel=cancel, what="RESHARP",
                   inner=blas_dot)
    return result("resharp", crop, f_c, x, er, m,
                   {"radius_mm": radius_mm, "tikhonov": tikhonov, "iterations": it, "relative_residual": rel})


def ismv(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], radius_mm: float = 5.0,
         tol: float = 1e-3, max_iter: int = 200, cancel: Optional[CancelFn] = None) -> BackgroundResult:
    """iSMV (Wen et al., MRM 2014).

    The background ``b`` is harmonic in the mask eroded by ``radius_mm`` (``M_e``), so it is the fixed point of
    ``b ← M_e·S(b) + (1 − M_e)·δ`` with the total field ``δ`` held on the boundary shell. Wen et al. iterate this
    map; the fixed point solves the symmetric positive definite system ``(I − M_e S M_e) b_e = M_e S (δ_shell)``
    for the values in ``M_e``, which we solve by CG (the same solution, far fewer SMV applications). The local
    field is ``δ − b`` in ``M_e``. ``cancel()`` is checked every CG iteration.
    """
    vox, m, crop, f_c, er = _one_radius_setup(field_ppm, mask, voxel_size_mm, radius_mm)
    s = smv_kernel_spectrum(crop.shape, vox, radius_mm)
    erf = er.astype(np.float32)

    def smv(x: np.ndarray) -> np.ndarray:
        return irfft(rfft(x) * s, crop.shape)

    shell = np.where(er, 0, f_c).astype(np.float32)
    b = erf * smv(shell)

    def op(x: np.ndarray) -> np.ndarray:
        return x - erf * smv(erf * x)

    x0 = erf * f_c
    bg, it, rel = cg(op, b, x0=x0, max_iter=max_iter, tol=tol, cancel=cancel, what="iSMV",
                    inner=blas_dot)
    local = f_c - bg
    return result("ismv", crop, f_c, local, er, m,
                   {"radius_mm": radius_mm, "iterations": it, "relative_residual": rel})


_THR = Param("threshold", float, 0.05, "TSVD threshold on |1 − S(k)|", minimum=1e-4, maximum=0.5)
register_method("background", MethodSpec(
    key="sharp", label="SHARP", reference="Schweser et al., NeuroImage 2011", func=sharp,
    params=(Param("radius_mm", float, 6.0, "SMV kernel radius", unit="mm", minimum=0.5, maximum=20.0), _THR)))
register_method("background", MethodSpec(
    key="vsharp", label="V-SHARP", reference="Li et al., NeuroImage 2011; Wu et al., MRM 2012", func=vsharp,
    params=(Param("max_radius_mm", float, 12.0, "largest SMV radius", unit="mm", minimum=0.5, maximum=30.0),
            Param("min_radius_mm", float, 0.0, "smallest SMV radius (0: one voxel)", unit="mm", minimum=0.0,
                  maximum=20.0),
            Param("radius_step_mm", float, 1.0, "radius decrement", unit="mm", minimum=0.1, maximum=10.0),
            _THR)))
register_method("background", MethodSpec(
    key="resharp", label="RESHARP", reference="Sun & Wilman, MRM 2014", func=resharp,
    params=(Param("radius_mm", float, 4.0, "SMV kernel radius", unit="mm", minimum=0.5, maximum=20.0),
            Param("tikhonov", float, 1e-4, "Tikhonov regularisation weight λ", minimum=0.0, maximum=1.0),
            Param("tol", float, 1e-3, "CG relative residual", minimum=1e-8, maximum=0.5),
            Param("max_iter", int, 100, "CG iterations at most", minimum=1, maximum=5000))))
register_method("background", MethodSpec(
    key="ismv", label="iSMV", reference="Wen et al., MRM 2014", func=ismv,
    params=(Param("radius_mm", float, 5.0, "SMV kernel radius", unit="mm", minimum=0.5, maximum=20.0),
            Param("tol", float, 1e-3, "CG relative residual", minimum=1e-8, maximum=0.5),
            Param("max_iter", int, 200, "CG iterations at most", minimum=1, maximum=5000))))

__all__ = ["sharp", "vsharp", "resharp", "ismv"]
