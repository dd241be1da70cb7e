"""The Laplacian family of background removal: LBV (Zhou et al., NMR Biomed 2014) and HARPERELLA (Li et al., NMR
Biomed 2015). The background field is harmonic in the brain, so the local field solves a Poisson problem inside the
mask with the field (LBV) or nothing (HARPERELLA) on its boundary; both use the masked Poisson solver of
:mod:`._poisson`."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..constants import GAMMA_BAR_HZ_PER_T
from ..errors import QSMInputError
from ..geometry import check_voxel_size
from ..params import MethodSpec, Param, register_method
from ..utils.checks import check_field, check_mask
from ..utils.grid import FFTCrop
from ..utils.solvers import CancelFn
from ._poisson import MaskedPoisson
from .common import PURPOSE, BackgroundResult, distance_inside, eroded, result


def _laplace_setup(mask: np.ndarray, vox: np.ndarray, boundary_mm: float) -> Tuple[FFTCrop, np.ndarray, np.ndarray]:
    """Crop, cropped mask, and the Poisson solve's interior: the mask eroded by ``boundary_mm``, less one more
    face-connected layer that carries the Dirichlet values."""
    if not np.isfinite(boundary_mm) or boundary_mm < 0:
        raise QSMInputError(f"boundary_mm must be ≥ 0 mm, got {boundary_mm!r}")
    crop = FFTCrop(mask, [2, 2, 2], fft_size=False)
    m_c = crop.take(mask, dtype=bool)
    domain = m_c & eroded(distance_inside(m_c, vox), boundary_mm) if boundary_mm > 0 else m_c
    interior = ndimage.binary_erosion(domain, structure=ndimage.generate_binary_structure(3, 1))
    if not interior.any():
        raise QSMInputError(f"the mask has no interior voxel {boundary_mm:g} mm plus one voxel inside its edge "
                            "(it is too thin); lower boundary_mm")
    return crop, m_c, interior


def _peel(interior: np.ndarray, m_c: np.ndarray, vox: np.ndarray, peel_mm: float) -> np.ndarray:
    if peel_mm <= 0:
        return interior
    keep = interior & eroded(distance_inside(m_c, vox), peel_mm)
    if not keep.any():
        raise QSMInputError(f"peel_mm={peel_mm:g} removes the whole mask")
    return keep


#: Default depth (mm) of the Dirichlet boundary of the Laplacian methods. The outermost 1–2 mm of an intracranial
#: mask border skull and sinus air, where the background field is steepest and its 7-point Laplacian is far from
#: zero (the discrete Laplacian of a sampled harmonic field is harmonic only to O(h²·∂⁴b)); boundary values taken
#: there leak that error into the whole brain (LBV's error against the depth: docs/benchmarks.md).
LAPLACE_BOUNDARY_MM = 2.0


def lbv(field_ppm: np.ndarray, mask: np.ndarray, voxel_size_mm: Sequence[float], peel_mm: float = 0.0,
        tol: float = 1e-4, max_iter: int = 500, boundary_mm: float = LAPLACE_BOUNDARY_MM,
        cancel: Optional[CancelFn] = None) -> BackgroundResult:
    """LBV, Laplacian boundary value method (Zhou et al., NMR Biomed 2014).

    The background is harmonic inside the mask and equals the total field on its boundary, so ``∇²b = 0`` inside
    with ``b = δ`` on the boundary. Equivalently the local field ``x = δ − b`` solves ``−∇²x = −∇²δ`` inside with
    ``x = 0`` on the boundary; we solve that with the 7-point Laplacian on the physical (anisotropic) grid by
    SSOR-preconditioned CG to relative residual ``tol``. The boundary is the face-connected shell of voxels
    ``boundary_mm`` inside the mask edge (:data:`LAPLACE_BOUNDARY_MM`; 0 puts it on the mask's own outer layer, as
    in the paper); the output is valid inside it. ``peel_mm`` removes a further shell of the output (from the mask
    edge) without changing the solution, as the paper's peel option. ``cancel()`` is checked every PCG iteration.
    """
    vox = check_voxel_size(voxel_size_mm)
    m = check_mask(mask, purpose=PURPOSE)
    f = check_field("field_ppm", field_ppm, m, PURPOSE)
    crop, m_c, interior = _laplace_setup(m, vox, boundary_mm)
    f_c = crop.take(f)
    op = MaskedPoisson(interior, vox)
    local, it, rel = op.solve(op.rhs_from_field(f_c), tol, max_iter, cancel, "LBV")
    keep = _peel(interior, m_c, vox, peel_mm)
    return result("lbv", crop, f_c, local, keep, m,
                   {"peel_mm": peel_mm, "boundary_mm": boundary_mm, "iterations": it, "relative_residual": rel})


def _wrapped_phase_laplacian(op: MaskedPoisson, crop: FFTCrop, m: np.ndarray, phase: np.ndarray, te: np.ndarray,
                             max_step_rad: float) -> Tuple[np.ndarray, int]:
    """−∇²(2π·Δf) (rad/s/mm²) at the interior voxels from wrapped multi-echo phase, and how many voxels were set to
    zero as possibly aliased.

    One echo: −∇²φ/TE (the transceiver phase φ0 taken as harmonic). Several echoes: the Laplacians of the wrapped
    consecutive-echo differences ψ_n = arg exp(i(φ_{n+1} − φ_n)) summed and divided by TE_N − TE_1. The differences
    hold no φ0 and grow only over ΔTE, so their neighbour steps are far below π where a single late echo's are not;
    the sum equals ∇²(φ_N − φ_1) wherever no step aliases, far more often than a TE fit of the per-echo Laplacians,
    whose late echoes alias next to the sinuses. A voxel whose largest wrapped neighbour step exceeds
    ``max_step_rad`` in any difference may be aliased (a 2π error there is a point source of 2π/h² in the Poisson
    problem): its right-hand side is set to zero, i.e. no local source is assumed there. (Both choices' effect on
    the phantom: docs/benchmarks.md.)
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
               max_step_rad: float = 0.75 * np.pi, cancel: Optional[CancelFn] = None) -> BackgroundResult:
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
    is then unavailable (``background_field_ppm`` is ``None`` for phase input). ``cancel()`` is checked every PCG
    iteration.
    """
    vox = check_voxel_size(voxel_size_mm)
    m = check_mask(mask, purpose=PURPOSE)
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
        f = check_field("field_ppm", field_ppm, m, PURPOSE)
        f_c = crop.take(f)
        rhs_ppm = op.rhs_from_field(f_c)
        info["input"] = "field_ppm"
    local, it, rel = op.solve(rhs_ppm, tol, max_iter, cancel, "HARPERELLA")
    info.update(iterations=it, relative_residual=rel)
    keep = _peel(interior, m_c, vox, peel_mm)
    return result("harperella", crop, f_c, local, keep, m, info)


_BOUNDARY = Param("boundary_mm", float, LAPLACE_BOUNDARY_MM,
                  "depth of the Dirichlet boundary inside the mask edge (0: the mask's outer layer)", unit="mm",
                  minimum=0.0, maximum=20.0)
_PEEL = Param("peel_mm", float, 0.0, "extra boundary shell removed", unit="mm", minimum=0.0, maximum=20.0)
register_method("background", MethodSpec(
    key="lbv", label="LBV", reference="Zhou et al., NMR Biomed 2014", func=lbv,
    params=(_BOUNDARY, _PEEL,
            Param("tol", float, 1e-4, "PCG relative residual", minimum=1e-10, maximum=0.5),
            Param("max_iter", int, 500, "PCG iterations at most", minimum=1, maximum=10000))))
register_method("background", MethodSpec(
    key="harperella", label="HARPERELLA", reference="Li et al., NMR Biomed 2015", func=harperella,
    help="Takes wrapped phase_rad (+ te_s, b0_tesla) when the stage inputs hold it, else field_ppm.",
    params=(_BOUNDARY, _PEEL,
            Param("max_step_rad", float, float(0.75 * np.pi), "wrapped neighbour step above which a voxel counts as "
                  "aliased and gets no source", unit="rad", minimum=0.1, maximum=float(np.pi)),
            Param("tol", float, 1e-4, "PCG relative residual", minimum=1e-10, maximum=0.5),
            Param("max_iter", int, 500, "PCG iterations at most", minimum=1, maximum=10000))))

__all__ = ["LAPLACE_BOUNDARY_MM", "lbv", "harperella"]
