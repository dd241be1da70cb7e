"""Declaration → widget specification: how each QSMLogic parameter appears in the QSM module's forms.

The widget builds its stage forms at run time from :func:`QSMLogic.params.load_all`; everything it needs to know
about a parameter (widget kind, label text, range, decimals, step, unit suffix, tooltip, choices) is decided here, in
pure Python, so pytest checks it for every registered parameter. The chosen methods and parameters are kept as a
JSON string in the parameter node (:func:`config_to_json` / :func:`config_from_json`) so a saved scene restores them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from QSMLogic.errors import QSMInputError
from QSMLogic.params import MethodSpec, Param, StageSpec, load_all
from QSMLogic.pipeline import PipelineConfig

#: Widget kinds: QDoubleSpinBox, QSpinBox, QCheckBox, QComboBox, QLineEdit; "scientific" is a line edit holding a
#: float in exponent notation, for values too small for a spin box's fixed decimals (e.g. tolerances of 1e-10).
WIDGET_CLASSES: Dict[str, str] = {
    "double": "QDoubleSpinBox", "int": "QSpinBox", "bool": "QCheckBox", "choice": "QComboBox", "text": "QLineEdit",
    "scientific": "QLineEdit",
}
#: Range used for a bound the declaration leaves open (Qt spin boxes need finite limits; QSpinBox is 32-bit).
OPEN_FLOAT_LIMIT = 1e9
INT_LIMIT = 2**31 - 1
MAX_DECIMALS = 6
#: A float parameter whose default or bounds has a non-zero magnitude below this is edited in exponent notation.
SCIENTIFIC_BELOW = 10.0 ** (2 - MAX_DECIMALS)
#: Name endings that repeat the unit and are left out of the label (the suffix shows the unit).
UNIT_ENDINGS = ("_mm", "_ms", "_s", "_hz", "_ppm", "_rad", "_tesla", "_deg", "_percent", "_voxels")
#: Stages whose pipeline entry can be switched off from the GUI.
OPTIONAL_STAGES = ("r2star", "swi")
#: Stages the Slicer module cannot feed, with the reason shown in their section (the form stays, read-only, so the
#: declaration still documents the method). Slicer volumes and sequences hold one coil-combined image per echo;
#: per-coil data (5D NIfTI: x, y, z, echo, coil) go through the command line, which runs coil combination.
UNAVAILABLE_STAGES: Dict[str, str] = {
    "coil_combination": (
        "Not used in Slicer: the echo volumes (or sequence items) are coil-combined images, so the pipeline skips "
        "this stage. Per-coil data (5D NIfTI: x, y, z, echo, coil) can be combined with the command line: "
        "susceptibility-mri run --magnitude mag.nii.gz --phase phase.nii.gz --out results (python -m QSMLogic)."),
}


@dataclass(frozen=True)
class WidgetSpec:
    """What the form shows for one parameter."""

    name: str
    kind: str
    label: str
    default: Any
    tooltip: str
    suffix: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    decimals: int = 0
    single_step: float = 1.0
    choices: Tuple[Any, ...] = ()

    @property
    def widget_class(self) -> str:
        return WIDGET_CLASSES[self.kind]


def stage_ui_name(stage_key: str) -> str:
    """camelCase prefix of a stage's widgets in QSM.ui (``coil_combination`` → ``coilCombination``)."""
    head, *rest = stage_key.split("_")
    return head + "".join(w.capitalize() for w in rest)


def stage_widget_names(stage_key: str) -> Dict[str, str]:
    """objectNames in QSM.ui of a stage's collapsible button, method combo box, parameter frame (and enable box)."""
    p = stage_ui_name(stage_key)
    names = {"collapsible": f"{p}CollapsibleButton", "method": f"{p}MethodComboBox",
             "parameters": f"{p}ParametersFrame"}
    if stage_key in OPTIONAL_STAGES:
        names["enabled"] = f"{p}EnabledCheckBox"
    if stage_key in UNAVAILABLE_STAGES:
        names["note"] = f"{p}NoteLabel"
    return names


def refill_from_data(current: Any, last_filled: Any, from_data: Any, empty: Any) -> Tuple[Any, Any]:
    """(new field value, new remembered fill) for an input field the widget fills from the data (echo times, B0).

    Called whenever the selected echoes change. ``current`` is the field's value, ``last_filled`` what the widget
    put there from the data last time (``None``: nothing), ``from_data`` what the new selection's data give
    (``None``: nothing), ``empty`` the field's "not set" value. New data values replace the field; the same data
    values leave it alone (so a user's override stays); without data values a stale fill is cleared while the
    user's own entry stays.
    """
    if from_data is not None:
        if from_data != last_filled:
            return from_data, from_data
        return current, last_filled
    if last_filled is not None and current == last_filled:
        return empty, None
    return current, None


def acquisition_text(acq: Any) -> str:
    """One line for the GUI on the echo times and B0 the data give (a mrml_adapter.AcquisitionInfo)."""
    if acq.te_s:
        te = "echo times " + ", ".join(f"{t * 1e3:g}" for t in acq.te_s) + f" ms ({acq.te_source})"
    else:
        te = "no echo times (enter them)"
    b0 = f"B0 {acq.b0_tesla:g} T ({acq.b0_source})" if acq.b0_tesla is not None else "no B0 (enter it)"
    return f"From the data: {te}; {b0}."


def label_text(name: str) -> str:
    """Human label from a parameter name: unit ending dropped, underscores to spaces, first letter upper case."""
    base = name
    for end in UNIT_ENDINGS:
        if base.endswith(end) and len(base) > len(end):
            base = base[: -len(end)]
            break
    words = base.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _decimals(values: List[float]) -> int:
    """Decimals that show every non-zero value with at least three significant digits (2..MAX_DECIMALS)."""
    need = 2
    for v in values:
        if v is None or v == 0 or not math.isfinite(v):
            continue
        need = max(need, int(math.ceil(-math.log10(abs(v)))) + 2)
    return min(need, MAX_DECIMALS)


def _step(default: float, minimum: Optional[float], maximum: Optional[float], integer: bool) -> float:
    """A step of about a tenth of the default's order of magnitude (1 for integers)."""
    if integer:
        return 1.0
    ref = abs(default) if default else (abs(maximum - minimum) / 100 if minimum is not None and maximum is not None
                                        else 0.1)
    if ref == 0:
        return 0.1
    return 10.0 ** math.floor(math.log10(ref)) / 10 if ref < 1 else 10.0 ** (math.floor(math.log10(ref)) - 1)


def _range_text(p: Param) -> str:
    if p.choices is not None:
        return "one of " + ", ".join(str(c) for c in p.choices)
    if p.minimum is None and p.maximum is None:
        return ""
    lo = "" if p.minimum is None else f"{p.minimum:g}"
    hi = "" if p.maximum is None else f"{p.maximum:g}"
    return " ".join(x for x in (lo, "…", hi, p.unit) if x)


def widget_spec(param: Param, method: MethodSpec) -> WidgetSpec:
    """The widget specification of ``param`` of ``method`` (tooltip = help + unit/range + method reference)."""
    parts = [param.help.strip() or param.name]
    rng = _range_text(param)
    if rng:
        parts.append(f"Range: {rng}")
    parts.append(f"Default: {param.default}{(' ' + param.unit) if param.unit else ''}")
    parts.append(f"Method: {method.label} — {method.reference}")
    tooltip = "\n".join(parts)
    suffix = f" {param.unit}" if param.unit else ""
    label = label_text(param.name)
    if param.choices is not None:
        return WidgetSpec(param.name, "choice", label, param.default, tooltip, suffix, choices=tuple(param.choices))
    if param.type is bool:
        return WidgetSpec(param.name, "bool", label, bool(param.default), tooltip)
    if param.type is int:
        lo = -INT_LIMIT if param.minimum is None else max(-INT_LIMIT, int(math.ceil(param.minimum)))
        hi = INT_LIMIT if param.maximum is None else min(INT_LIMIT, int(math.floor(param.maximum)))
        return WidgetSpec(param.name, "int", label, int(param.default), tooltip, suffix, lo, hi, 0, 1.0)
    if param.type is float:
        lo = -OPEN_FLOAT_LIMIT if param.minimum is None else float(param.minimum)
        hi = OPEN_FLOAT_LIMIT if param.maximum is None else float(param.maximum)
        values = [float(param.default), param.minimum, param.maximum]
        if any(v is not None and 0 < abs(v) < SCIENTIFIC_BELOW for v in values):
            return WidgetSpec(param.name, "scientific", label, float(param.default), tooltip, suffix, lo, hi)
        dec = _decimals(values)
        step = _step(float(param.default), param.minimum, param.maximum, False)
        return WidgetSpec(param.name, "double", label, float(param.default), tooltip, suffix, lo, hi, dec, step)
    return WidgetSpec(param.name, "text", label, "" if param.default is None else str(param.default), tooltip,
                      suffix)


def method_form(method: MethodSpec) -> List[WidgetSpec]:
    """Widget specifications of all parameters of ``method``, in declaration order."""
    return [widget_spec(p, method) for p in method.params]


def value_from_widget(spec: WidgetSpec, raw: Any) -> Any:
    """The parameter value for what the widget holds (for a choice: the combo box's current index)."""
    if spec.kind == "choice":
        return spec.choices[int(raw)]
    if spec.kind in ("int", "double", "scientific"):
        try:
            return int(raw) if spec.kind == "int" else float(raw)
        except (TypeError, ValueError):
            raise QSMInputError(f"{spec.label}: cannot read {raw!r} as a number") from None
    if spec.kind == "bool":
        return bool(raw)
    return str(raw)


def stage_specs() -> Dict[str, StageSpec]:
    """Every stage with all its registered methods (imports the stage modules)."""
    return load_all()


def method_items(stage: StageSpec) -> List[Tuple[str, str]]:
    """(label shown, method key) pairs for a stage's method combo box, the default method first."""
    items = [(f"{m.label}  [{m.key}]", m.key) for m in stage.methods]
    items.sort(key=lambda it: it[1] != stage.default_method)
    return items


def config_to_json(config: PipelineConfig) -> str:
    """The chosen methods/parameters as the JSON string stored in the parameter node."""
    return json.dumps(config.to_dict(), sort_keys=True)


def config_from_json(text: str) -> PipelineConfig:
    """A validated PipelineConfig from the parameter node's JSON (the library's defaults when the string is empty;
    they also fill what the JSON leaves unset)."""
    if not text or not text.strip():
        return PipelineConfig.default()
    return PipelineConfig.from_dict(json.loads(text))


__all__ = [
    "OPTIONAL_STAGES", "SCIENTIFIC_BELOW", "UNAVAILABLE_STAGES", "WIDGET_CLASSES", "WidgetSpec",
    "acquisition_text", "config_from_json", "config_to_json", "label_text", "method_form",
    "method_items", "refill_from_data", "stage_specs",
    "stage_ui_name", "stage_widget_names", "value_from_widget", "widget_spec",
]
