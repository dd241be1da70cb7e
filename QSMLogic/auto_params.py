"""The values a method actually used for parameters left automatic (declared value 0), for the provenance.

A parameter of 0 means "automatic" for several methods: the regularisation weights scaled to the field strength
(FANSI/TV α, TGV α₁, HD-QSM α₂, STAR-QSM's two α, MEDI's λ; :func:`QSMLogic.inversion.common.weight_for_field`),
the effective echo time of nonlinear data terms (:func:`QSMLogic.inversion.common.effective_te_s`), MEDI's κ, the
noise SD of the field fit (estimated from the residuals) and the SWI echo time. The provenance would otherwise
store the 0; :func:`actual_parameters` computes what was used, with the same functions the methods call.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

Inputs = Dict[str, Any]


def _b0(inputs: Inputs) -> Optional[float]:
    return inputs.get("b0_tesla")


def _inversion_rules(method: str) -> Dict[str, Callable[[Inputs, Any], Any]]:
    from .inversion.common import effective_te_s
    from .inversion.medi import kappa_for, lambda_for
    from .inversion.tfi import tfi_lambda
    from .inversion.tv import STAR_ALPHA_LARGE, STAR_ALPHA_SMALL, default_alpha

    if method == "tfi":  # its λ has its own 3 T value
        return {"lambda_": lambda i, r: tfi_lambda(0.0, _b0(i))}
    return {
        "alpha": lambda i, r: default_alpha(0.0, _b0(i)),
        "alpha1": lambda i, r: default_alpha(0.0, _b0(i)),
        "alpha_l2": lambda i, r: default_alpha(0.0, _b0(i)),
        "alpha_large": lambda i, r: default_alpha(0.0, _b0(i), STAR_ALPHA_LARGE),
        "alpha_small": lambda i, r: default_alpha(0.0, _b0(i), STAR_ALPHA_SMALL),
        "lambda_": lambda i, r: lambda_for(0.0, _b0(i)),
        "rad_per_ppm": lambda i, r: kappa_for(0.0, _b0(i), i.get("te_s")),
        "te_eff_s": lambda i, r: effective_te_s(i.get("te_s")),
    }


def _rules(stage_key: str, method: str) -> Dict[str, Callable[[Inputs, Any], Any]]:
    if stage_key == "inversion":
        return _inversion_rules(method)
    if stage_key == "field_mapping":
        return {"noise_sd": lambda i, r: float(r.noise_sd)}
    if stage_key == "swi":
        return {"effective_te_s": lambda i, r: float(i["te_s"][-1]) if i.get("te_s") is not None else None}
    return {}


def actual_parameters(stage_key: str, params: Dict[str, Any], inputs: Inputs, result: Any,
                      method: str = "") -> Dict[str, Any]:
    """``{name: value used}`` for the parameters of ``params`` (as resolved) that are 0 = automatic for this stage's
    ``method``, computed from the stage ``inputs`` (``b0_tesla``, ``te_s``) and its ``result``; {} when none is
    automatic."""
    out: Dict[str, Any] = {}
    for name, rule in _rules(stage_key, method).items():
        if name in params and params[name] == 0:
            value = rule(inputs, result)
            if value is not None:
                out[name] = float(value)
    return out
