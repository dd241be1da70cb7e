"""Background field removal: separate the field of the tissue's own susceptibility from the background field.

Stage ``background`` (inputs ``field_ppm, mask, voxel_size_mm, b0_direction, weight``; HARPERELLA also takes
``phase_rad, te_s, b0_tesla``). Every method returns a :class:`BackgroundResult`. Review of the methods: Schweser et
al., NMR Biomed 2017.

Methods
-------
``sharp``      SHARP, Schweser et al., NeuroImage 2011: spherical-mean-value (SMV) high-pass, then truncated (TSVD)
               deconvolution of the SMV operator.
``vsharp``     V-SHARP, Li et al., NeuroImage 2011; Wu et al., MRM 2012: SMV radii from a maximum down to about one
               voxel, the largest radius that fits at each voxel, deconvolved with the largest kernel.
``resharp``    RESHARP, Sun & Wilman, MRM 2014: Tikhonov-regularised SMV deconvolution solved by conjugate gradients.
``pdf``        PDF, Liu et al., NMR Biomed 2011: dipole sources outside the mask fitted to the field inside it,
               noise weighted, by CG on the normal equations with an FFT dipole operator on a padded grid.
``lbv``        LBV, Zhou et al., NMR Biomed 2014: the background is the solution of Laplace's equation inside the
               mask with the field as Dirichlet boundary (solved by SSOR-preconditioned CG on the physical grid).
``ismv``       iSMV, Wen et al., MRM 2014: iterated SMV with the field held on the boundary shell; the fixed point of
               the iteration is found with CG on the same (symmetric) system.
``harperella`` HARPERELLA, Li et al., NMR Biomed 2015: unwrapping and background removal in one step from the
               Laplacian of the *wrapped* phase (input ``phase_rad`` + ``te_s`` + ``b0_tesla``).

Conventions and choices
-----------------------
- Fields in ppm, float32 in and out; the local field is zero outside the returned (eroded) mask.
- SMV kernels are discrete spheres on the physical voxel grid (voxel centres within ``radius_mm``, so anisotropic
  voxels give the right ellipsoid in index space), normalised to unit sum, applied by ``rfftn`` in k-space. The
  mask erosion that belongs to a kernel is exact: a voxel is kept when every voxel of its sphere lies in the mask,
  i.e. when its Euclidean distance to the nearest voxel outside the mask exceeds the radius.
- All methods use only the field inside the mask, so they work on the mask's bounding box plus a margin. A mask
  that touches the volume faces is accepted: the volume is zero padded (outside the field of view counts as
  outside the mask) and ``info["mask_touches_faces"]`` lists the faces, since the field there is less reliable.
- Bad input raises :class:`QSMInputError`: empty mask, NaN/Inf in the field inside the mask (NaN outside the mask
  is ignored), shape mismatch, kernel radius below the largest voxel size.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from ._background_laplace import MaskedPoisson
from ._distance import distance_mm
from .constants import GAMMA_BAR_HZ_PER_T
from .dipole import FFT_WORKERS, dipole_kernel
from .errors import QSMInputError
from .geometry import check_b0_direction, check_voxel_size
from .params import MethodSpec, Param, register_method


@dataclass
class BackgroundResult:
    """Output of a background removal method.

    ``local_field_ppm``: the tissue (local) field, zero outside ``mask``. ``mask``: the eroded mask in which the
    local field is valid. ``background_field_ppm``: total − local inside ``mask`` (``None`` where the method never
    sees the unwrapped total field, as HARPERELLA on wrapped phase). ``info``: method, parameters in effect,
    iterations, residuals, eroded voxel count, faces touched.
    """

    local_field_ppm: np.ndarray
    mask: np.ndarray
    background_field_ppm: Optional[np.ndarray]
    info: Dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- input handling

_FACES = ("axis0-low", "axis0-high", "axis1-low", "axis1-high", "axis2-low", "axis2-high")


def _check_mask(mask: np.ndarray, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    m = np.asarray(mask)
    if m.ndim != 3:
        raise QSMInputError(f"mask must be 3D, got shape {m.shape}")
    if shape is not None and m.shape != tuple(shape):
        raise QSMInputError(f"mask shape {m.shape} does not match the field shape {tuple(shape)}")
    m = m.astype(bool)
    if not m.any():
        raise QSMInputError("mask is empty: no voxel to remove the background field in")
    return m


def _check_field(name: str, field_arr: Any, mask: np.ndarray) -> np.ndarray:
    if field_arr is None:
        raise QSMInputError(f"{name} is missing")
    f = np.asarray(field_arr)
    if f.ndim != 3:
        raise QSMInputError(f"{name} must be 3D (x, y, z), got shape {f.shape}")
    if np.iscomplexobj(f):
        raise QSMInputError(f"{name} is complex; give the real field in ppm")
    m = _check_mask(mask, f.shape)
    bad = m & ~np.isfinite(f)
    nbad = int(np.count_nonzero(bad))
    if nbad:
        raise QSMInputError(f"{name} contains {nbad} NaN/Inf voxel(s) inside the mask; mask or replace them")
    out = np.where(m, f, 0).astype(np.float32)
    return out


def _faces_touched(mask: np.ndarray) -> List[str]:
    out = []
    for ax in range(3):
        for side, idx in (("low", 0), ("high", -1)):
            if np.take(mask, idx, axis=ax).any():
                out.append(f"axis{ax}-{side}")
    return out


def _check_radius(name: str, radius_mm: float, vox: np.ndarray) -> None:
    if radius_mm < float(vox.max()) - 1e-9:
        raise QSMInputError(
            f"{name}={radius_mm:g} mm is below the voxel size {float(vox.max()):g} mm: the kernel would not reach "
            "the neighbouring voxels"
        )


class _Crop:
    """The mask's bounding box plus a margin, enlarged to a fast FFT size; the volume is zero padded as needed."""

    def __init__(self, mask: np.ndarray, margin_vox: Sequence[int], fft_size: bool = True) -> None:
        self.full_shape = mask.shape
        nz = np.nonzero(mask)
        lo = [int(a.min()) - int(m) for a, m in zip(nz, margin_vox)]
        hi = [int(a.max()) + 1 + int(m) for a, m in zip(nz, margin_vox)]
        shape = []
        for i in range(3):
            n = hi[i] - lo[i]
            n2 = sfft.next_fast_len(n, real=True) if fft_size else n
            lo[i] -= (n2 - n) // 2
            shape.append(n2)
        self.lo = lo
        self.shape = tuple(shape)
        # overlap of crop and volume, in volume and crop coordinates
        self.src = tuple(slice(max(l, 0), min(l + n, N)) for l, n, N in zip(lo, shape, self.full_shape))
        self.dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(self.src, lo))

    def take(self, a: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        out = np.zeros(self.shape, dtype=dtype)
        out[self.dst] = a[self.src]
        return out

    def put(self, a: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        out = np.zeros(self.full_shape, dtype=dtype)
        out[self.src] = a[self.dst]
        return out


def _margin(radius_mm: float, vox: np.ndarray, extra: int = 2) -> List[int]:
    return [int(np.ceil(radius_mm / v)) + extra for v in vox]


def _distance_inside(mask_c: np.ndarray, vox: np.ndarray) -> np.ndarray:
    """Euclidean distance (mm) from each mask voxel to the nearest voxel outside the mask (0 outside)."""
    return distance_mm(mask_c, vox).astype(np.float32)


def _eroded(dist: np.ndarray, radius_mm: float) -> np.ndarray:
    """Voxels whose whole sphere of ``radius_mm`` (voxel centres within the radius) lies inside the mask."""
    return dist > radius_mm * (1.0 + 1e-6)


def smv_kernel_spectrum(shape: Sequence[int], voxel_size_mm: Sequence[float], radius_mm: float) -> np.ndarray:
    """rfftn spectrum (real, float32) of the unit-sum spherical mean value kernel of ``radius_mm`` on ``shape``.

    The sphere holds the voxel centres within ``radius_mm`` in physical units (ellipsoidal in index space for
    anisotropic voxels), centred on voxel 0 with periodic wrap, so the spectrum is real and ``S(0) = 1``.
    """
    vox = check_voxel_size(voxel_size_mm)
    half = [int(np.floor(radius_mm / v * (1 + 1e-9))) for v in vox]
    axes = [np.arange(-h, h + 1) for h in half]
    d2 = sum((ax.reshape([-1 if i == j else 1 for j in range(3)]) * v) ** 2 for i, (ax, v) in enumerate(zip(axes, vox)))
    ball = (d2 <= radius_mm**2 * (1 + 1e-6)).astype(np.float64)
    if any(2 * h + 1 > n for h, n in zip(half, shape)):
        raise QSMInputError(f"SMV radius {radius_mm:g} mm does not fit in a grid of shape {tuple(shape)}")
    buf = np.zeros(tuple(shape), dtype=np.float32)
    idx = np.ix_(*[ax % n for ax, n in zip(axes, shape)])
    buf[idx] = (ball / ball.sum()).astype(np.float32)
    return np.ascontiguousarray(sfft.rfftn(buf, workers=FFT_WORKERS).real, dtype=np.float32)


def _rfftn(a: np.ndarray) -> np.ndarray:
    return sfft.rfftn(a, workers=FFT_WORKERS)


def _irfftn(spec: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    return sfft.irfftn(spec, s=shape, workers=FFT_WORKERS).astype(np.float32, copy=False)


def _tsvd_inverse(c: np.ndarray, threshold: float) -> np.ndarray:
    """1/c where |c| > threshold, 0 elsewhere (truncated SVD of a diagonal operator)."""
    out = np.zeros_like(c)
    keep = np.abs(c) > threshold
    out[keep] = 1.0 / c[keep]
    return out


def _result(method: str, crop: _Crop, field_c: Optional[np.ndarray], local_c: np.ndarray, eroded_c: np.ndarray,
            mask: np.ndarray, info: Dict[str, Any]) -> BackgroundResult:
    local_c = np.where(eroded_c, local_c, 0).astype(np.float32)
    local = crop.put(local_c)
    em = crop.put(eroded_c, dtype=bool)
    bg = None
    if field_c is not None:
        bg = crop.put(np.where(eroded_c, field_c - local_c, 0).astype(np.float32))
    info = dict(info)
    info.update(method=method, eroded_voxels=int(np.count_nonzero(mask) - np.count_nonzero(em)),
                mask_touches_faces=_faces_touched(mask))
    return BackgroundResult(local_field_ppm=local, mask=em, background_field_ppm=bg, info=info)


# ----------------------------------------------------------------------------------------------- SMV methods


def _smv_setup(field_ppm: Any, mask: Any, voxel_size_mm: Sequence[float], radius_mm: float):
    vox = check_voxel_size(voxel_size_mm)
    m = _check_mask(mask)
    f = _check_field("field_ppm", field_ppm, m)
    crop = _Crop(m, _margin(radius_mm, vox))
    m_c = crop.take(m, dtype=bool)
    f_c = crop.take(f)
    return vox, m, crop, m_c, f_c


def sharp(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], radius_mm: float = 6.0,
          threshold: float = 0.05) -> BackgroundResult:
    """SHARP (Schweser et al., NeuroImage 2011).

    The background field is harmonic in the mask, so it equals its own spherical mean: ``(I − S)δ = (I − S)δ_local``
    on the mask eroded by ``radius_mm``. The local field is recovered by dividing by ``1 − S(k)`` where
    ``|1 − S(k)| > threshold`` (TSVD) and re-masking.
    """
    vox = check_voxel_size(voxel_size_mm)
    _check_radius("radius_mm", radius_mm, vox)
    vox, m, crop, m_c, f_c = _smv_setup(field_ppm, mask, vox, radius_mm)
    er = _eroded(_distance_inside(m_c, vox), radius_mm)
    if not er.any():
        raise QSMInputError(f"the mask is thinner than the SMV radius {radius_mm:g} mm: nothing is left")
    c = 1.0 - smv_kernel_spectrum(crop.shape, vox, radius_mm)
    hp = _irfftn(_rfftn(f_c) * c, crop.shape)
    hp *= er
    local = _irfftn(_rfftn(hp) * _tsvd_inverse(c, threshold), crop.shape)
    return _result("sharp", crop, f_c, local, er, m, {"radius_mm": radius_mm, "threshold": threshold})


def _vsharp_radii(max_radius_mm: float, min_radius_mm: float, radius_step_mm: float, vox: np.ndarray) -> List[float]:
    rmin = float(vox.max()) if min_radius_mm <= 0 else min_radius_mm
    _check_radius("min_radius_mm", rmin, vox)
    _check_radius("max_radius_mm", max_radius_mm, vox)
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
    dist = _distance_inside(m_c, vox)
    spec = _rfftn(f_c)
    hp = np.zeros(crop.shape, dtype=np.float32)
    done = np.zeros(crop.shape, dtype=bool)
    c_max = None
    used = []
    for r in radii:
        er = _eroded(dist, r)
        new = er & ~done
        c = 1.0 - smv_kernel_spectrum(crop.shape, vox, r)
        if c_max is None:
            c_max = c
        if not new.any():
            continue
        hp_r = _irfftn(spec * c, crop.shape)
        hp[new] = hp_r[new]
        done |= new
        used.append(r)
    if not done.any():
        raise QSMInputError(f"the mask is thinner than the smallest SMV radius {radii[-1]:g} mm: nothing is left")
    local = _irfftn(_rfftn(hp) * _tsvd_inverse(c_max, threshold), crop.shape)
    return _result("vsharp", crop, f_c, local, done, m,
                   {"radii_mm": used, "threshold": threshold})


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Inner product of two float32 arrays (BLAS; its blocked summation keeps float32 rounding small)."""
    return float(np.dot(a.reshape(-1), b.reshape(-1)))


def _cg(apply_a, b: np.ndarray, tol: float, max_iter: int, x0: Optional[np.ndarray] = None
        ) -> Tuple[np.ndarray, int, float]:
    """Conjugate gradients for a symmetric positive (semi-)definite operator on float32 arrays."""
    x = np.zeros_like(b) if x0 is None else x0.astype(b.dtype, copy=True)
    r = b - apply_a(x) if x0 is not None else b.copy()
    p = r.copy()
    rr = _dot(r, r)
    bn = np.sqrt(_dot(b, b)) or 1.0
    rel = np.sqrt(rr) / bn
    it = 0
    while it < max_iter and rel > tol:
        ap = apply_a(p)
        pap = _dot(p, ap)
        if pap <= 0:
            break
        alpha = np.float32(rr / pap)
        x += alpha * p
        ap *= alpha
        r -= ap
        rr_new = _dot(r, r)
        it += 1
        rel = np.sqrt(rr_new) / bn
        p *= np.float32(rr_new / rr)
        p += r
        rr = rr_new
    return x, it, float(rel)


def resharp(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], radius_mm: float = 4.0,
            tikhonov: float = 1e-4, tol: float = 1e-3, max_iter: int = 100) -> BackgroundResult:
    """RESHARP (Sun & Wilman, MRM 2014).

    ``argmin_x ‖M_e (I − S)(x − δ)‖² + tikhonov·‖x‖²`` with ``M_e`` the mask eroded by ``radius_mm``: the SMV
    deconvolution of SHARP with Tikhonov regularisation instead of truncation, solved by CG on the normal
    equations ``((I − S) M_e (I − S) + λ) x = (I − S) M_e (I − S) δ``.
    """
    vox = check_voxel_size(voxel_size_mm)
    _check_radius("radius_mm", radius_mm, vox)
    vox, m, crop, m_c, f_c = _smv_setup(field_ppm, mask, vox, radius_mm)
    er = _eroded(_distance_inside(m_c, vox), radius_mm)
    if not er.any():
        raise QSMInputError(f"the mask is thinner than the SMV radius {radius_mm:g} mm: nothing is left")
    c = 1.0 - smv_kernel_spectrum(crop.shape, vox, radius_mm)
    erf = er.astype(np.float32)

    def hp(x: np.ndarray) -> np.ndarray:
        return _irfftn(_rfftn(x) * c, crop.shape)

    def normal(x: np.ndarray) -> np.ndarray:
        return hp(erf * hp(x)) + np.float32(tikhonov) * x

    b = hp(erf * hp(f_c))
    x, it, rel = _cg(normal, b, tol, max_iter)
    return _result("resharp", crop, f_c, x, er, m,
                   {"radius_mm": radius_mm, "tikhonov": tikhonov, "iterations": it, "relative_residual": rel})


def ismv(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], radius_mm: float = 5.0,
         tol: float = 1e-3, max_iter: int = 200) -> BackgroundResult:
    """iSMV (Wen et al., MRM 2014).

    The background ``b`` is harmonic in the mask eroded by ``radius_mm`` (``M_e``), so it is the fixed point of
    ``b ← M_e·S(b) + (1 − M_e)·δ`` with the total field ``δ`` held on the boundary shell. Wen et al. iterate this
    map; the fixed point solves the symmetric positive definite system ``(I − M_e S M_e) b_e = M_e S (δ_shell)``
    for the values in ``M_e``, which we solve by CG (the same solution, far fewer SMV applications). The local
    field is ``δ − b`` in ``M_e``.
    """
    vox = check_voxel_size(voxel_size_mm)
    _check_radius("radius_mm", radius_mm, vox)
    vox, m, crop, m_c, f_c = _smv_setup(field_ppm, mask, vox, radius_mm)
    er = _eroded(_distance_inside(m_c, vox), radius_mm)
    if not er.any():
        raise QSMInputError(f"the mask is thinner than the SMV radius {radius_mm:g} mm: nothing is left")
    s = smv_kernel_spectrum(crop.shape, vox, radius_mm)
    erf = er.astype(np.float32)

    def smv(x: np.ndarray) -> np.ndarray:
        return _irfftn(_rfftn(x) * s, crop.shape)

    shell = np.where(er, 0, f_c).astype(np.float32)
    b = erf * smv(shell)

    def op(x: np.ndarray) -> np.ndarray:
        return x - erf * smv(erf * x)

    x0 = erf * f_c
    bg, it, rel = _cg(op, b, tol, max_iter, x0=x0)
    local = f_c - bg
    return _result("ismv", crop, f_c, local, er, m,
                   {"radius_mm": radius_mm, "iterations": it, "relative_residual": rel})


# ----------------------------------------------------------------------------------------------- PDF


def pdf(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float],
        b0_direction: Sequence[float] = (0.0, 0.0, 1.0), weight: Optional[np.ndarray] = None,
        pad_mm: float = 10.0, tol: float = 1e-4, max_iter: int = 40) -> BackgroundResult:
    """PDF, projection onto dipole fields (Liu et al., NMR Biomed 2011).

    Fits susceptibility sources ``χ_out`` outside the mask so that their dipole field matches the field inside it,
    weighted by ``weight`` (1/noise SD; uniform when ``None``): ``argmin ‖W M (δ − D χ_out)‖²``, solved by CG on
    the normal equations (CGNR). ``D`` is the unit dipole convolution by FFT on the mask's bounding box padded by
    ``pad_mm`` on each side (sources may sit anywhere outside the mask on that grid). The background field is
    ``D χ_out`` and the local field ``δ − D χ_out`` in the mask (no erosion).
    """
    vox = check_voxel_size(voxel_size_mm)
    b0 = check_b0_direction(b0_direction)
    m = _check_mask(mask)
    f = _check_field("field_ppm", field_ppm, m)
    if weight is None:
        w = m.astype(np.float32)
    else:
        w = np.asarray(weight, dtype=np.float32)
        if w.shape != m.shape:
            raise QSMInputError(f"weight shape {w.shape} does not match the field shape {m.shape}")
        if not np.all(np.isfinite(w[m])) or np.any(w[m] < 0):
            raise QSMInputError("weight must be finite and non-negative inside the mask (1/noise SD)")
        mw = float(w[m].mean())
        if mw <= 0:
            raise QSMInputError("weight is zero everywhere inside the mask")
        w = np.where(m, w / mw, 0).astype(np.float32)
    crop = _Crop(m, [int(np.ceil(pad_mm / v)) for v in vox])
    m_c = crop.take(m, dtype=bool)
    f_c = crop.take(f)
    w2 = crop.take(w) ** 2
    out = (~m_c).astype(np.float32)
    dk = dipole_kernel(crop.shape, vox, b0, real=True)

    def dconv(x: np.ndarray) -> np.ndarray:
        return _irfftn(_rfftn(x) * dk, crop.shape)

    def normal(x: np.ndarray) -> np.ndarray:
        return out * dconv(w2 * dconv(out * x))

    rhs = out * dconv(w2 * f_c)
    chi, it, rel = _cg(normal, rhs, tol, max_iter)
    bg = dconv(out * chi)
    local = f_c - bg
    return _result("pdf", crop, f_c, local, m_c, m,
                   {"pad_mm": pad_mm, "iterations": it, "relative_residual": rel, "weighted": weight is not None})


# ----------------------------------------------------------------------------------------------- Laplacian methods


def _laplace_setup(mask: np.ndarray, vox: np.ndarray, boundary_mm: float) -> Tuple[_Crop, np.ndarray, np.ndarray]:
    """Crop, cropped mask, and the Poisson solve's interior: the mask eroded by ``boundary_mm``, less one more
    face-connected layer that carries the Dirichlet values."""
    if not np.isfinite(boundary_mm) or boundary_mm < 0:
        raise QSMInputError(f"boundary_mm must be ≥ 0 mm, got {boundary_mm!r}")
    crop = _Crop(mask, [2, 2, 2], fft_size=False)
    m_c = crop.take(mask, dtype=bool)
    domain = m_c & _eroded(_distance_inside(m_c, vox), boundary_mm) if boundary_mm > 0 else m_c
    interior = ndimage.binary_erosion(domain, structure=ndimage.generate_binary_structure(3, 1))
    if not interior.any():
        raise QSMInputError(f"the mask has no interior voxel {boundary_mm:g} mm plus one voxel inside its edge "
                            "(it is too thin); lower boundary_mm")
    return crop, m_c, interior


def _peel(interior: np.ndarray, m_c: np.ndarray, vox: np.ndarray, peel_mm: float) -> np.ndarray:
    if peel_mm <= 0:
        return interior
    keep = interior & _eroded(_distance_inside(m_c, vox), peel_mm)
    if not keep.any():
        raise QSMInputError(f"peel_mm={peel_mm:g} removes the whole mask")
    return keep


#: Default depth (mm) of the Dirichlet boundary of the Laplacian methods. The outermost 1–2 mm of an intracranial
#: mask border skull and sinus air, where the background field is steepest and its 7-point Laplacian is far from
#: zero (the discrete Laplacian of a sampled harmonic field is harmonic only to O(h²·∂⁴b)); boundary values taken
#: there leak that error into the whole brain. Measured on the head phantom (3 T, 1 mm, noise-free field): LBV
#: local-field nRMSE 86 % with the boundary on the mask edge, 53 % at 1 mm, 36 % at 2 mm, 36 % at 3 mm.
LAPLACE_BOUNDARY_MM = 2.0


def lbv(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], peel_mm: float = 0.0,
        tol: float = 1e-4, max_iter: int = 500, boundary_mm: float = LAPLACE_BOUNDARY_MM) -> BackgroundResult:
    """LBV, Laplacian boundary value method (Zhou et al., NMR Biomed 2014).

    The background is harmonic inside the mask and equals the total field on its boundary, so ``∇²b = 0`` inside
    with ``b = δ`` on the boundary. Equivalently the local field ``x = δ − b`` solves ``−∇²x = −∇²δ`` inside with
    ``x = 0`` on the boundary; we solve that with the 7-point Laplacian on the physical (anisotropic) grid by
    SSOR-preconditioned CG to relative residual ``tol``. The boundary is the face-connected shell of voxels
    ``boundary_mm`` inside the mask edge (:data:`LAPLACE_BOUNDARY_MM`; 0 puts it on the mask's own outer layer, as
    in the paper); the output is valid inside it. ``peel_mm`` removes a further shell of the output (from the mask
    edge) without changing the solution, as the paper's peel option.
    """
    vox = check_voxel_size(voxel_size_mm)
    m = _check_mask(mask)
    f = _check_field("field_ppm", field_ppm, m)
    crop, m_c, interior = _laplace_setup(m, vox, boundary_mm)
    f_c = crop.take(f)
    op = MaskedPoisson(interior, vox)
    local, it, rel = op.solve(op.rhs_from_field(f_c), tol, max_iter)
    keep = _peel(interior, m_c, vox, peel_mm)
    return _result("lbv", crop, f_c, local, keep, m,
                   {"peel_mm": peel_mm, "boundary_mm": boundary_mm, "iterations": it, "relative_residual": rel})


def _wrapped_phase_laplacian(op: MaskedPoisson, crop: _Crop, m: np.ndarray, phase: np.ndarray, te: np.ndarray,
                             max_step_rad: float) -> Tuple[np.ndarray, int]:
    """−∇²(2π·Δf) (rad/s/mm²) at the interior voxels from wrapped multi-echo phase, and how many voxels were set to
    zero as possibly aliased.

    One echo: −∇²φ/TE (the transceiver phase φ0 taken as harmonic). Several echoes: the Laplacians of the wrapped
    consecutive-echo differences ψ_n = arg exp(i(φ_{n+1} − φ_n)) summed and divided by TE_N − TE_1. The differences
    hold no φ0 and grow only over ΔTE, so their neighbour steps are far below π where a single late echo's are not;
    the sum equals ∇²(φ_N − φ_1) wherever no step aliases (on the 1 mm head phantom at 3 T, 5 echoes: local-field
    nRMSE 37 % against 390 % from a TE fit of the per-echo Laplacians, whose late echoes alias next to the sinuses).
    A voxel whose largest wrapped neighbour step exceeds ``max_step_rad`` in any difference may be aliased (a 2π
    error there is a point source of 2π/h² in the Poisson problem): its right-hand side is set to zero, i.e. no
    local source is assumed there (2 echoes at TE 4/20 ms on the 2 mm phantom: nRMSE 0.78 with, 2.66 without).
    ``max_step_rad = π`` keeps every voxel.
    """
    def masked(a: np.ndarray) -> np.ndarray:
        return crop.take(np.where(m, a, np.float32(0)))

    if phase.shape[3] == 1:
        lap, step = op.rhs_from_wrapped_phase(masked(phase[..., 0]))
        lap /= te[0]
        worst = step
    else:
        lap = np.zeros(op.n)
        worst = np.zeros(op.n)
        for n in range(phase.shape[3] - 1):
            d = np.angle(np.exp(1j * (phase[..., n + 1] - phase[..., n]).astype(np.float32))).astype(np.float32)
            rhs, step = op.rhs_from_wrapped_phase(masked(d))
            lap += rhs
            np.maximum(worst, step, out=worst)
        lap /= float(te[-1] - te[0])
    bad = worst > max_step_rad
    lap[bad] = 0.0
    return lap, int(bad.sum())


def harperella(mask: np.ndarray, voxel_size_mm: Sequence[float], field_ppm: Optional[np.ndarray] = None,
               phase_rad: Optional[np.ndarray] = None, te_s: Optional[Any] = None,
               b0_tesla: Optional[float] = None, peel_mm: float = 0.0, tol: float = 1e-4,
               max_iter: int = 500, boundary_mm: float = LAPLACE_BOUNDARY_MM,
               max_step_rad: float = 0.75 * np.pi) -> BackgroundResult:
    """HARPERELLA (Li et al., NMR Biomed 2015): phase unwrapping and background removal in one step.

    The Laplacian of the true phase can be computed from the *wrapped* phase (discretely: the sum of the wrapped
    neighbour differences, exact where they are below π), and the background phase is harmonic in the brain, so
    its Laplacian vanishes there. The local phase is the solution of ``∇²x = ∇²φ`` inside the mask with ``x = 0``
    on its boundary (the paper's constraint that the local phase vanishes outside the brain); we solve it with the
    same SSOR-PCG Poisson solver and the same boundary depth ``boundary_mm`` as :func:`lbv` instead of the paper's
    iterative FFT scheme.

    Input: ``phase_rad`` wrapped, in the internal sign convention, either 3D (one echo, or an echo combination at
    one effective echo time: ``te_s`` a single value) or 4D ``(x, y, z, echo)`` with one ``te_s`` per echo, whose
    Laplacian comes from the consecutive-echo differences (:func:`_wrapped_phase_laplacian`: no φ0, few aliased
    steps; voxels with a wrapped step above ``max_step_rad`` get no source, counted in ``info["aliased_voxels"]``).
    ``b0_tesla`` converts to ppm. Without
    ``phase_rad``, ``field_ppm`` (unwrapped) is used and the method is LBV's Laplacian formulation. The background
    is then unavailable (``background_field_ppm`` is ``None`` for phase input).
    """
    vox = check_voxel_size(voxel_size_mm)
    m = _check_mask(mask)
    crop, m_c, interior = _laplace_setup(m, vox, boundary_mm)
    op = MaskedPoisson(interior, vox)
    f_c = None
    info: Dict[str, Any] = {"peel_mm": peel_mm, "boundary_mm": boundary_mm}
    if phase_rad is not None:
        ph = np.asarray(phase_rad)
        if ph.ndim == 3:
            ph = ph[..., None]
        if ph.ndim != 4 or ph.shape[:3] != m.shape:
            raise QSMInputError(f"phase_rad must be (x, y, z) or (x, y, z, echo) matching the mask {m.shape}, "
                                f"got shape {np.shape(phase_rad)}")
        if te_s is None:
            raise QSMInputError("harperella with phase_rad needs te_s (echo time(s) in seconds)")
        te = np.atleast_1d(np.asarray(te_s, dtype=np.float64))
        if te.size != ph.shape[3]:
            raise QSMInputError(f"phase_rad has {ph.shape[3]} echo(es) but te_s has {te.size} value(s); a combined "
                                "3D phase needs its single effective echo time")
        if not np.all(np.isfinite(te)) or np.any(te <= 0) or np.any(te > 1.0) or np.any(np.diff(te) <= 0):
            raise QSMInputError(f"te_s must be increasing positive echo times in seconds, got {te.tolist()}")
        if b0_tesla is None or not np.isfinite(b0_tesla) or b0_tesla <= 0:
            raise QSMInputError(f"harperella with phase_rad needs b0_tesla > 0, got {b0_tesla!r}")
        bad = m[..., None] & ~np.isfinite(ph)
        if bad.any():
            raise QSMInputError(f"phase_rad contains {int(bad.sum())} NaN/Inf voxel(s) inside the mask")
        if not 0 < max_step_rad <= np.pi:
            raise QSMInputError(f"max_step_rad must be in (0, π], got {max_step_rad!r}")
        lap, n_bad = _wrapped_phase_laplacian(op, crop, m, ph, te, max_step_rad)
        rhs_ppm = lap / (2 * np.pi * GAMMA_BAR_HZ_PER_T * float(b0_tesla)) * 1e6
        info.update(input="wrapped phase", max_step_rad=max_step_rad, aliased_voxels=n_bad)
    else:
        f = _check_field("field_ppm", field_ppm, m)
        f_c = crop.take(f)
        rhs_ppm = op.rhs_from_field(f_c)
        info["input"] = "field_ppm"
    local, it, rel = op.solve(rhs_ppm, tol, max_iter)
    info.update(iterations=it, relative_residual=rel)
    keep = _peel(interior, m_c, vox, peel_mm)
    return _result("harperella", crop, f_c, local, keep, m, info)


# ----------------------------------------------------------------------------------------------- metrics


def local_field_nrmse(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """‖(est − mean) − (true − mean)‖ / ‖true − mean‖ inside ``mask`` (means over the mask), as a fraction."""
    m = np.asarray(mask, dtype=bool)
    e = np.asarray(estimate, dtype=np.float64)[m]
    t = np.asarray(truth, dtype=np.float64)[m]
    e = e - e.mean()
    t = t - t.mean()
    return float(np.linalg.norm(e - t) / np.linalg.norm(t))


def edge_loss_mm(mask: np.ndarray, eroded_mask: np.ndarray, voxel_size_mm: Sequence[float]) -> float:
    """Depth (mm) of the brain edge a method gives up: the largest distance from a removed voxel to the outside."""
    m = np.asarray(mask, dtype=bool)
    lost = m & ~np.asarray(eroded_mask, dtype=bool)
    if not lost.any():
        return 0.0
    d = ndimage.distance_transform_edt(np.pad(m, 1), sampling=check_voxel_size(voxel_size_mm))[1:-1, 1:-1, 1:-1]
    return float(d[lost].max())


# ----------------------------------------------------------------------------------------------- registry

_THR = Param("threshold", float, 0.05, "TSVD threshold on |1 − S(k)|", minimum=1e-4, maximum=0.5)
_BOUNDARY = Param("boundary_mm", float, LAPLACE_BOUNDARY_MM,
                  "depth of the Dirichlet boundary inside the mask edge (0: the mask's outer layer)", unit="mm",
                  minimum=0.0, maximum=20.0)
_PEEL = Param("peel_mm", float, 0.0, "extra boundary shell removed", unit="mm", minimum=0.0, maximum=20.0)
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
    key="pdf", label="PDF", reference="Liu et al., NMR Biomed 2011", func=pdf,
    params=(Param("pad_mm", float, 10.0, "source region padding around the mask's bounding box", unit="mm",
                  minimum=0.0, maximum=200.0),
            Param("tol", float, 1e-4, "CG relative residual", minimum=1e-8, maximum=0.5),
            Param("max_iter", int, 40, "CG iterations at most", minimum=1, maximum=5000))))
register_method("background", MethodSpec(
    key="lbv", label="LBV", reference="Zhou et al., NMR Biomed 2014", func=lbv,
    params=(_BOUNDARY, _PEEL,
            Param("tol", float, 1e-4, "PCG relative residual", minimum=1e-10, maximum=0.5),
            Param("max_iter", int, 500, "PCG iterations at most", minimum=1, maximum=10000))))
register_method("background", MethodSpec(
    key="ismv", label="iSMV", reference="Wen et al., MRM 2014", func=ismv,
    params=(Param("radius_mm", float, 5.0, "SMV kernel radius", unit="mm", minimum=0.5, maximum=20.0),
            Param("tol", float, 1e-3, "CG relative residual", minimum=1e-8, maximum=0.5),
            Param("max_iter", int, 200, "CG iterations at most", minimum=1, maximum=5000))))
register_method("background", MethodSpec(
    key="harperella", label="HARPERELLA", reference="Li et al., NMR Biomed 2015", func=harperella,
    help="Takes wrapped phase_rad (+ te_s, b0_tesla) when the stage inputs hold it, else field_ppm.",
    params=(_BOUNDARY, _PEEL,
            Param("max_step_rad", float, float(0.75 * np.pi), "wrapped neighbour step above which a voxel counts as "
                  "aliased and gets no source", unit="rad", minimum=0.1, maximum=float(np.pi)),
            Param("tol", float, 1e-4, "PCG relative residual", minimum=1e-10, maximum=0.5),
            Param("max_iter", int, 500, "PCG iterations at most", minimum=1, maximum=10000))))

__all__ = ["BackgroundResult", "sharp", "vsharp", "resharp", "pdf", "lbv", "ismv", "harperella",
           "smv_kernel_spectrum", "local_field_nrmse", "edge_loss_mm"]
