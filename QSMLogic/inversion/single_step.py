"""Single-step QSM with total variation, SSTV (Chatnuntawech et al., Magn Reson Med 77 (2017) 2264–2275).

Background removal and dipole inversion in one problem, from the TOTAL field φ (ppm) in the brain mask:

    min_χ ½‖M·W·(F⁻¹ S D F χ − F⁻¹ S F φ)‖² + α·TV(χ)

S = δ − SMV is the high-pass of the spherical mean value filter of radius r (V-SHARP's kernel; Wu et al., Magn
Reson Med 67 (2012) 137–147): a background field is harmonic inside the brain, so its spherical mean equals its
value and S removes it wherever the sphere lies inside the mask, i.e. in the mask eroded by r, which is M. The tissue
part keeps its dipole model, filtered by the same S on both sides, so χ is fitted to the background-free data. The
problem has the form ``min Φ(Kχ) + α TV`` with the real kernel K = S·D, solved by the ADMM of
:func:`QSMLogic.inversion.tv.admm_tv` (closed-form k-space χ update, pointwise weighted data step with weight M·W).

Pipeline note: single-step methods take ``total_field_ppm`` instead of ``local_field_ppm`` (the pipeline passes the
total field and skips background removal when ``sstv`` is chosen); ``local_field_ppm`` is accepted and ignored.
χ is returned in the whole mask; in the outer rim of width r it is determined only through its field in M and by
TV, so its error there is larger (the tests measure the error in M, the "local domain").

α: S attenuates the low spatial frequencies of the data, so the data term is weaker than in FANSI for the same χ
and the default α is smaller. Unlike FANSI's, the default does not change with the field strength: SSTV's error is
dominated by the background residue the single-radius SMV leaves (a field in ppm, the same at every B0), not by the
noise, and on the phantom lowering α for 7 T as FANSI does makes the map worse (docs/benchmarks.md).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..errors import QSMInputError
from ..params import MethodSpec, Param, register_method
from ..utils.fft import convolve, irfft, rfft
from ..utils.kernels import smv_kernel_spectrum
from ..utils.solvers import CancelFn
from .common import prepare_problem
from .tv import admm_params, admm_tv


def sstv(
    total_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    weight: Optional[np.ndarray] = None,
    local_field_ppm: Optional[np.ndarray] = None,
    radius_mm: float = 6.0,
    alpha: float = 3e-5,
    mu_grad_factor: float = 300.0,
    mu_data: float = 0.3,
    max_iter: int = 40,
    tol: float = 2e-3,
    pad_voxels: int = 6,
    b0_tesla: Optional[float] = None,
    cancel: Optional[CancelFn] = None,
) -> np.ndarray:
    """SSTV (Chatnuntawech et al., MRM 2017): χ (ppm, float32, 0 outside ``mask``) from the total field in ppm.

    ``radius_mm`` is the SMV radius (the mask is eroded by it); ``local_field_ppm`` is ignored (see module docs).
    """
    if total_field_ppm is None:
        raise QSMInputError("sstv is a single-step method: it needs total_field_ppm (the field before background "
                            "removal), not local_field_ppm")
    prob = prepare_problem(total_field_ppm, mask, voxel_size_mm, b0_direction, weight, pad_voxels=pad_voxels,
                           b0_tesla=b0_tesla, field_kind="total")
    if radius_mm < float(np.min(prob.voxel_size_mm)):
        raise QSMInputError(f"radius_mm={radius_mm} is smaller than a voxel ({np.min(prob.voxel_size_mm)} mm)")
    smv = smv_kernel_spectrum(prob.shape, prob.voxel_size_mm, radius_mm)
    high_pass = (1.0 - smv).astype(np.float32)
    eroded = convolve(prob.mask.astype(np.float32), smv) > 0.999
    eroded &= prob.mask
    if not eroded.any():
        raise QSMInputError(f"the mask eroded by radius_mm={radius_mm} is empty: use a smaller radius")
    data = irfft(rfft(prob.field) * high_pass, prob.shape)
    data[~eroded] = 0.0
    w = np.where(eroded, prob.weight, np.float32(0.0)).astype(np.float32)
    res = admm_tv(high_pass * prob.kernel, data, w, prob.voxel_size_mm, alpha=alpha, data_term="l2",
                  mu_grad=mu_grad_factor * alpha, mu_data=mu_data, max_iter=max_iter, tol=tol, eval_mask=eroded,
                  cancel=cancel, what="SSTV")
    return prob.to_input_grid(res.chi)


register_method("inversion", MethodSpec(
    key="sstv", label="Single-step TV (SSTV, from the total field)",
    reference="Chatnuntawech et al., Magn Reson Med 77 (2017) 2264-2275",
    params=(Param("radius_mm", float, 6.0, "SMV (background removal) radius", unit="mm", minimum=1.0, maximum=20.0),)
    + admm_params(alpha=3e-5, max_iter=40, alpha_min=1e-7,
                  alpha_help="TV weight α (fields in ppm, gradients in ppm/mm); the same at every field strength "
                             "(see the module docs); raise it for noisier data"),
    help="single-step: takes total_field_ppm",
    func=sstv))

__all__ = ["sstv"]
