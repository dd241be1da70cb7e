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
  looser stopping (1e-2 / 0.05) 32.0 % in 16 s.

Pipeline note: like :mod:`.single_step` (SSTV), TFI takes ``total_field_ppm`` (the pipeline skips background
removal for it) and ignores ``local_field_ppm``; χ is returned in the brain mask (the margin's background χ is
dropped). It is not the default chain (docs/benchmarks.md, "Independent forward model").
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .._distance import distance_mm
from ..errors import QSMInputError
from ..geometry import check_voxel_size
from ..params import MethodSpec, Param, register_method
from ..utils.solvers import CancelFn, cg, dot
from .common import divergence, edge_mask, gradient, prepare_problem, weight_for_field
from .medi import L1_SMOOTHING

#: Data weight λ at 3 T (MEDI's scaling; ``lambda_ = 0`` scales it with the field strength as MEDI's λ); chosen on
#: the qsm-forward 2 mm head (module docs).
LAMBDA_3T = 5.0e3


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
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """TFI (Liu et al., MRM 2017): χ (ppm, float32, 0 outside ``mask``) from the total field in ppm; see the module
    docs. ``weight`` is W (the first-echo magnitude when None and ``magnitude`` is given, else uniform);
    ``magnitude`` gives the edge mask M_G (plain TV without it); ``lambda_ = 0`` is automatic for ``b0_tesla``
    (:data:`LAMBDA_3T` scaled as MEDI's λ); ``local_field_ppm`` is ignored.
    """
    if total_field_ppm is None:
        raise QSMInputError("tfi is a single-step method: it needs total_field_ppm (the field before background "
                            "removal), not local_field_ppm")
    vox = check_voxel_size(voxel_size_mm)
    if weight is None and magnitude is not None:
        mg_in = np.asarray(magnitude, dtype=np.float32)
        weight = mg_in[..., 0] if mg_in.ndim == 4 else mg_in
    pad = [int(np.ceil(margin_mm / v)) + 2 for v in vox]
    prob = prepare_problem(total_field_ppm, mask, voxel_size_mm, b0_direction, weight, magnitude=magnitude,
                           pad_voxels=pad, b0_tesla=b0_tesla, field_kind="total")
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
    lam = np.float32(lambda_ if lambda_ > 0 else weight_for_field(LAMBDA_3T, b0_tesla, data_weight=True))

    chi = np.zeros(prob.shape, dtype=np.float32)  # P·y, y from 0
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
    return prob.to_input_grid(chi)


register_method("inversion", MethodSpec(
    key="tfi", label="Total field inversion (TFI, from the total field)",
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
        Param("max_iter", int, 10, "maximum lagged-diffusivity iterations", minimum=1, maximum=100),
        Param("cg_max_iter", int, 100, "maximum CG iterations per outer iteration", minimum=1, maximum=2000),
        Param("cg_tol", float, 1e-3, "relative residual tolerance of the inner CG", minimum=1e-6, maximum=0.5),
        Param("tol", float, 0.01, "stop when ‖Δχ‖/‖χ‖ falls below this", minimum=1e-4, maximum=1.0),
    ),
    help="single-step: takes total_field_ppm",
    func=tfi))

__all__ = ["tfi", "LAMBDA_3T"]
