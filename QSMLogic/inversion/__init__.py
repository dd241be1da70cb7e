"""Dipole inversion (stage ``inversion``): susceptibility χ (ppm) from the local field (ppm).

Methods register themselves with the stage on import (see :mod:`QSMLogic.params`):

* :mod:`.direct` — TKD (Shmueli et al. MRM 2009), TKD with underestimation correction (Schweser et al. MRM 2013),
  TSVD (Wharton et al. MRM 2010).
* :mod:`.lsqr` — weighted least squares with Tikhonov damping by CG/LSQR, and iLSQR (Li et al. NeuroImage 2015).
* :mod:`.medi` — MEDI (Liu et al. MRM 2012) and MEDI+0 (Liu et al. MRM 2018).
* :mod:`.tv`, :mod:`.hdqsm`, :mod:`.tgv`, :mod:`.single_step`, :mod:`.tfi` — STAR-QSM, FANSI, HD-QSM, TGV-QSM,
  and the single-step SSTV and TFI (Liu et al. MRM 2017).
* :mod:`.cosmos` — multi-orientation COSMOS (Liu et al. MRM 2009); not a single-orientation stage method.

Every method returns ``chi_ppm`` (float32, 0 outside the mask). :func:`invert_dipole` dispatches by method key.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..params import run_method
from . import common, cosmos, direct, lsqr, medi, selection  # noqa: F401  (methods register on import)
from . import tv, hdqsm, tgv, single_step, tfi  # noqa: F401  (registered after the others, in this order)
from .cosmos import cosmos as cosmos_inversion
from .selection import select_parameter


def invert_dipole(
    local_field_ppm: np.ndarray,
    mask: np.ndarray,
    voxel_size_mm: Sequence[float],
    b0_direction: Sequence[float],
    method: str = "tkd",
    weight: Optional[np.ndarray] = None,
    magnitude: Optional[np.ndarray] = None,
    **params: Any,
) -> np.ndarray:
    """Susceptibility (ppm, float32, 0 outside ``mask``) by the registered inversion ``method`` with ``params``.

    Extra inputs a method accepts (e.g. ``csf_mask`` for MEDI+0, ``b0_tesla`` and ``te_s`` as the pipeline passes
    them) may be passed in ``params`` as well: names that are not parameters of the method are handed to it as
    inputs. ``b0_tesla`` sets the automatic regularisation defaults (parameters of 0) and sharpens the
    Hz-versus-ppm check; ``te_s`` sets the effective TE of the nonlinear data terms.
    """
    from ..params import stage

    spec = stage("inversion").method(method)
    names = {p.name for p in spec.params}
    inputs = {"local_field_ppm": local_field_ppm, "mask": mask, "voxel_size_mm": voxel_size_mm,
              "b0_direction": b0_direction, "weight": weight, "magnitude": magnitude}
    inputs.update({k: v for k, v in params.items() if k not in names})
    return run_method("inversion", method, inputs, {k: v for k, v in params.items() if k in names})


__all__ = ["invert_dipole", "cosmos_inversion", "select_parameter"]
