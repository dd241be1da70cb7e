"""Preconditioned total field inversion, TFI (Liu Z, Kee Y, Zhou D, Wang Y, Spincemaille P, Magn Reson Med 78
(2017) 303–315).

A single-step inversion: χ is solved from the TOTAL field f (ppm) on an extended region, the brain mask M plus a
margin of ``margin_mm`` around it (on the FFT work grid), with data weight W only in M:

    min_y (λ/2)·‖W(f − D P y)‖² + ‖M_G ∇(P y)‖₁,      χ = P y,

so the large background sources outside the brain (air, bone; several ppm) are fitted together with the brain's
χ and background removal is not a separate step. P is the paper's preconditioner: 1 in M and P_B
(``precond_outside``, 30 in the paper) in the margin, 0 beyond; it makes the background susceptibility, ~30 times
larger than the brain's, as cheap for conjugate gradients to reach as the brain's. M_G is MEDI's gradient mask
from the magnitude (:func:`QSMLogic.inversion.common.edge_mask`, as in :mod:`.medi`); the prior
acts in the brain mask only, as MEDI's (folded with the mask): the margin's χ is held by P alone (below).
Solved as in the paper by lagged diffusivity (the
L1 weight frozen at the current χ), each linearised step by the shared conjugate gradients
(:func:`QSMLogic.utils.solvers.cg`) in the preconditioned variable y, started from the previous y (the step from
0); the outer loop stops when ‖Δχ‖/‖χ‖ < ``tol``. The data term is the linear one.

Solver choice, measured on the qsm-forward 2 mm head (:mod:`QSMLogic.bench.independent`) from its TRUE total field
in the true brain mask, uniform W, χ nRMSE in the brain (2 cores):

* With data only in the brain, any brain χ whose field inside the brain is harmonic can be cancelled by margin
  sources, so the objective alone does not pin the brain's χ: what picks the brain-sparing solution is P, through
  the bias of CG started at y = 0 towards small ‖y‖ (χ outside 30 times cheaper). ADMM (``admm_tv``: closed-form
  k-space χ update, pointwise data step with weight W in the brain and 0 in the margin), which needs no
  preconditioner, converges towards the unpinned minimiser: 1,185–3,091 % (α 1e-4–3e-4, μ₂ 0.3–30, 50–300
  iterations, plain TV, or M_G-weighted TV with α/30 in the margin through a trial extension of the shrinkage
  step, not kept). The same CG with P_B = 1: 1,380 %. So ADMM was
  dropped and the paper's preconditioned lagged-diffusivity CG kept.
* Regularising the margin as well (M_G = 1 there) pulls the background into the brain: 126 % (λ 2e4, 8 outer × 60
  CG), 47 % with TV switched off (λ 1e9), and worse with more iterations (λ 2e6: 68 % at 8 × 60, 212 % at 20 × 150).
  With the prior in the brain only it converges: λ 2e4 34.5 % (8 × 60) → 21.8 % (15 × 100); λ 5e3 27.9 % (8 × 60)
  → 21.5 % (10 × 100, 31 s) → 22.6 % (20 × 150, 88 s); λ 2e3 27.3 %; P_B 10 34.9 % (10 × 100).
* Defaults (λ 5e3 at 3 T, P_B 30, 24 mm, 10 × 100, CG tolerance 1e-3, outer 0.01): 21.7 %, slope 0.93, 39 s;
  looser stopping (1e-2 / 0.05) 32.0 % in 16 s. (2 mm voxels get no coarse start, below.)

Coarse start, measured on the pipeline's fitted total field of qsm-forward heads (χ nRMSE in the chain's mask,
2 cores, unloaded): the fine-grid iterations converge slowly (at 1×1×1.5 mm: 10 × 100 36.4 %, slope 0.89, 209 s;
5 × 100 38.1 %; 10 × 40 45.2 %; 4 × 50 47.9 %), because CG needs many steps to reach the smooth background χ of the
margin. Solving first on 2×2×2 block means (10 × 100 at 2×2×3 mm) and refining with 3 × 100 on the data's grid
gives 30.7 %, slope 0.91, 84 s (3 × 50: 31.0 %, 0.87, 53 s); at 1 mm 12.1 %, 0.97, 157 s (fine only, 10 × 100:
9.3 %, 0.98, ~450 s). The coarse solve itself was not converged at 10 outer iterations, and what it leaves shows
as low slope on oblique data (1×1×1.5 mm, B0 15°: 43.6 %, slope 0.88): 20 coarse iterations 42.5 %, 0.90; 40
42.1 %, 0.91 (straight 29.1 %, 0.93; 1 mm 11.1 %, 0.98), 60 the same as 40; so ``coarse_max_iter`` is 40, at
about 40 % more inversion time (1 mm: ~200 s). Other knobs measured on the oblique head, none the fix: λ 2.5e3
42.7 %, 0.89, λ 1e4 46.3 %, 0.86; margin 36 mm 43.5 %, 0.88; uniform weight 44.6 %; P_B 100 49.5 %, 0.69;
edge fraction 0.5 47.4 %, 0.86; 2 fine iterations 42.2 %, 0.87; the header's geometry replaced by the simulator's
(its affine is not rotation × voxel size: 1.472 mm slices, B0 14.7°) 42.6 %, 0.89.
The coarse χ is carried up by linear interpolation within the brain and within the margin separately:
interpolating across the mask edge mixed the margin's background χ into the brain's edge (145.8 %).
A coarse voxel over 3 mm costs accuracy (2 mm data from a 4 mm start: 34.9 % against 21.9 % fine only), so the
coarse start is used only when two or more axes can be doubled within 3 mm (:func:`coarse_factors`). On the
project's own phantom at 1.5 mm (true total field, uniform weight) the start costs accuracy instead: 23.8 % in
42 s (10 coarse iterations; 26.3 % in 72 s with 40) against 15.7 % in 93 s from zero (10 × 100);
``coarse_start=False`` keeps the slower fine-only solve. The own phantom's whole chain at 1 mm gains from the
start all the same (module :mod:`QSMLogic.bench.pipeline`: 16.1 % with 10 coarse iterations, 15.1 % with 40).

Pipeline note: like :mod:`.single_step` (SSTV), TFI takes ``total_field_ppm`` and ignores ``local_field_ppm`` (the
pipeline still runs background removal when enabled, for the local field as an output to inspect); χ is returned in
the brain mask (the margin's background χ is dropped). It is the default inversion: on qsm-forward heads it lowers
χ nRMSE from 37.5 to 11.1 % at 1 mm, 50.3 to 29.1 % at 1×1×1.5 mm and 55.3 to 42.1 % with B0 tilted 15°, against
PDF + FANSI nonlinear TV (docs/benchmarks.md, "Total field inversion").
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .._distance import distance_mm
from ..errors import QSMInputError
from ..geometry import check_voxel_size
from ..params import MethodSpec, Param, register_method
from ..utils.resample import block_mean, upsample_linear
from ..utils.solvers import CancelFn, cg, dot
from .common import InversionProblem, divergence, edge_mask, gradient, prepare_problem, weight_for_field
from .medi import L1_SMOOTHING

#: Data weight λ at 3 T (MEDI's scaling; ``lambda_ = 0`` scales it with the field strength as MEDI's λ); chosen on
#: the qsm-forward 2 mm head (module docs).
LAMBDA_3T = 5.0e3
#: Coarsest voxel edge (mm) of the coarse start; measured: a 4 mm start for 2 mm data cost accuracy (module docs).
COARSE_MAX_VOXEL_MM = 3.0


def tfi_lambda(lambda_: float, b0_tesla: Optional[float]) -> float:
    """The data weight λ used: ``lambda_`` when positive, else :data:`LAMBDA_3T` scaled to ``b0_tesla`` as MEDI's."""
    return float(lambda_) if lambda_ > 0 else float(weight_for_field(LAMBDA_3T, b0_tesla, data_weight=True))


def coarse_factors(voxel_size_mm: Sequence[float]) -> Tuple[int, int, int]:
    """Block factors of the coarse start: 2 on every axis whose doubled voxel stays within
    :data:`COARSE_MAX_VOXEL_MM`, else 1 (all 1, no coarse start, when fewer than two axes would be coarsened)."""
    f = tuple(2 if 2.0 * float(v) <= COARSE_MAX_VOXEL_MM + 1e-6 else 1 for v in voxel_size_mm)
    return f if int(np.prod(f)) >= 4 else (1, 1, 1)  # type: ignore[return-value]


def tfi(
    total_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    magnitude: Optional[np.ndarray] = None,
    local_field_ppm: Optional[np.ndarray] = None,
    lambda_: float = 0.0,
    margin_mm: float = 24.0,
    precond_outside: float = 30.0,
    edge_fraction: float = 0.3,
    max_iter: int = 10,
    cg_max_iter: int = 100,
    cg_tol: float = 1e-3,
    tol: float = 0.01,
    coarse_start: bool = True,
    coarse_max_iter: int = 40,
    fine_max_iter: int = 3,
    fine_cg_max_iter: int = 100,
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """TFI (Liu et al., MRM 2017): χ (ppm, float32, 0 outside ``mask``) from the total field in ppm; see the module
    docs. ``weight`` is W (the first-echo magnitude when None and ``magnitude`` is given, else uniform);
    ``magnitude`` gives the edge mask M_G (plain TV without it); ``lambda_ = 0`` is automatic for ``b0_tesla``
    (:data:`LAMBDA_3T` scaled as MEDI's λ); ``local_field_ppm`` is ignored. With ``coarse_start`` the problem is
    first solved (``coarse_max_iter`` × ``cg_max_iter``) on a grid of block means (:func:`coarse_factors`) and the
    fine grid then refines that start (``fine_max_iter`` × ``fine_cg_max_iter``); without it (or when the voxels
    cannot be doubled) it is solved on the data's grid alone (``max_iter`` × ``cg_max_iter``).
    """
    if total_field_ppm is None:
        raise QSMInputError("tfi is a single-step method: it needs total_field_ppm (the field before background "
                            "removal), not local_field_ppm")
    vox = check_voxel_size(voxel_size_mm)
    if weight is None and magnitude is not None:
        mg_in = np.asarray(magnitude, dtype=np.float32)
        weight = mg_in[..., 0] if mg_in.ndim == 4 else mg_in
    prob = prepare_problem(total_field_ppm, mask, voxel_size_mm, b0_direction, weight, magnitude=magnitude,
                           pad_voxels=_margin_pad(margin_mm, vox), b0_tesla=b0_tesla, field_kind="total")
    lam = np.float32(tfi_lambda(lambda_, b0_tesla))
    opts = dict(lam=lam, margin_mm=margin_mm, precond_outside=precond_outside, edge_fraction=edge_fraction,
                cg_tol=cg_tol, tol=tol, cancel=cancel)
    f = coarse_factors(prob.voxel_size_mm)
    if not coarse_start or f == (1, 1, 1):
        return prob.to_input_grid(_solve(prob, None, max_iter, cg_max_iter, **opts))
    m_c = block_mean(prob.mask, f)
    keep = m_c >= 0.5
    field_c = np.where(keep, block_mean(prob.field * prob.mask, f) / np.maximum(m_c, 1e-6), np.float32(0.0))
    vox_c = prob.voxel_size_mm * np.asarray(f)
    coarse = prepare_problem(field_c, keep, vox_c, prob.b0_direction, block_mean(prob.weight, f),
                             magnitude=None if prob.magnitude is None else block_mean(prob.magnitude, f),
                             pad_voxels=_margin_pad(margin_mm, vox_c), b0_tesla=b0_tesla, field_kind="total")
    chi_c = coarse.grid.put(_solve(coarse, None, coarse_max_iter, cg_max_iter, **opts))
    chi0 = np.where(prob.mask, _upsample_in(chi_c, keep, f, prob.shape), _upsample_in(chi_c, ~keep, f, prob.shape))
    return prob.to_input_grid(_solve(prob, chi0, fine_max_iter, fine_cg_max_iter, **opts))


def _margin_pad(margin_mm: float, voxel_size_mm: Sequence[float]) -> List[int]:
    """Work-grid padding (voxels per axis) that holds the margin plus two voxels for the finite differences."""
    return [int(np.ceil(margin_mm / v)) + 2 for v in voxel_size_mm]


def _upsample_in(chi: np.ndarray, region: np.ndarray, f: Tuple[int, int, int], shape: Tuple[int, ...]) -> np.ndarray:
    """``chi`` interpolated from the coarse voxels of ``region`` only (normalised linear interpolation), so that
    the margin's background χ, tens of times the brain's, does not leak into the brain's edge and back."""
    num = upsample_linear(np.where(region, chi, np.float32(0.0)), f, shape)
    den = upsample_linear(region.astype(np.float32), f, shape)
    return np.where(den > 1e-3, num / np.maximum(den, np.float32(1e-3)), np.float32(0.0))


def _solve(prob: InversionProblem, chi0: Optional[np.ndarray], max_iter: int, cg_max_iter: int, *,
           lam: np.float32, margin_mm: float, precond_outside: float, edge_fraction: float, cg_tol: float,
           tol: float, cancel: Optional[CancelFn]) -> np.ndarray:
    """The lagged-diffusivity iterations on one work grid, from ``chi0`` (work grid; zero when None); returns χ on
    the work grid, margin included."""
    vox = prob.voxel_size_mm
    m = prob.mask
    ext = m | (distance_mm(~m, vox) <= margin_mm)
    p = np.where(m, np.float32(1.0), np.where(ext, np.float32(precond_outside), np.float32(0.0))).astype(np.float32)
    if prob.magnitude is not None:
        mg = edge_mask(prob.magnitude, m, vox, edge_fraction)
    else:
        mg = np.ones((3,) + prob.shape, dtype=np.float32)
    mg *= m  # the prior acts in the brain only (module docs: regularising the margin too is far worse)
    w2 = prob.weight * prob.weight

    chi = np.zeros(prob.shape, dtype=np.float32) if chi0 is None else np.where(ext, chi0, np.float32(0.0))
    for _ in range(max_iter):
        g = mg * gradient(chi, vox)
        diff = mg / np.sqrt(g * g + np.float32(L1_SMOOTHING))  # lagged diffusivity with M_G folded in
        diff *= mg
        del g

        def reg(x: np.ndarray, diff: np.ndarray = diff) -> np.ndarray:
            return -divergence(diff * gradient(x, vox), vox)

        def normal(dy: np.ndarray, reg=reg) -> np.ndarray:
            x = p * dy
            out = reg(x) + lam * prob.dipole(w2 * prob.dipole(x))
            out *= p
            return out

        rhs = lam * prob.dipole(w2 * (prob.field - prob.dipole(chi))) - reg(chi)
        rhs *= p
        dy, _, _ = cg(normal, rhs, max_iter=cg_max_iter, tol=cg_tol, cancel=cancel, what="TFI")
        step = p * dy
        chi += step
        if np.sqrt(dot(step, step)) < tol * np.sqrt(dot(chi, chi)):
            break
    return chi


register_method("inversion", MethodSpec(
    key="tfi", label="Total field inversion (TFI, from the total field; default)",
    reference="Liu et al., Magn Reson Med 78 (2017) 303-315",
    params=(
        Param("lambda_", float, 0.0, "data-fidelity weight λ (MEDI's scaling); 0 = automatic for the field "
              "strength: 5e3·(B0/3 T)^0.6", minimum=0.0, maximum=1e9),
        Param("margin_mm", float, 24.0, "width of the region outside the brain mask where background "
              "susceptibility is fitted", unit="mm", minimum=2.0, maximum=100.0),
        Param("precond_outside", float, 30.0, "preconditioner P_B outside the brain mask (1 inside)", minimum=1.0,
              maximum=1000.0),
        Param("edge_fraction", float, 0.3, "fraction of strongest magnitude gradients left unpenalised (M_G = 0)",
              minimum=0.0, maximum=0.9),
        Param("max_iter", int, 10, "maximum lagged-diffusivity iterations on the data's grid when there is no "
              "coarse start", minimum=1, maximum=100),
        Param("cg_max_iter", int, 100, "maximum CG iterations per outer iteration", minimum=1, maximum=2000),
        Param("cg_tol", float, 1e-3, "relative residual tolerance of the inner CG", minimum=1e-6, maximum=0.5),
        Param("tol", float, 0.01, "stop when ‖Δχ‖/‖χ‖ falls below this", minimum=1e-4, maximum=1.0),
        Param("coarse_start", bool, True, "solve first on a grid of 2×2 block means (voxels up to 3 mm), then "
              "refine on the data's grid"),
        Param("coarse_max_iter", int, 40, "maximum lagged-diffusivity iterations on the coarse grid",
              minimum=1, maximum=200),
        Param("fine_max_iter", int, 3, "lagged-diffusivity iterations on the data's grid after the coarse start",
              minimum=1, maximum=100),
        Param("fine_cg_max_iter", int, 100, "CG iterations per fine iteration after the coarse start", minimum=1,
              maximum=2000),
    ),
    help="single-step: takes total_field_ppm",
    func=tfi))

__all__ = ["tfi", "tfi_lambda", "coarse_factors", "LAMBDA_3T", "COARSE_MAX_VOXEL_MM"]
