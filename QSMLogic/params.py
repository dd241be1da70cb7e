"""One declaration of every stage's methods and parameters.

The stages are declared here (:class:`StageSpec`); each stage module declares its methods (:class:`MethodSpec`,
each with its :class:`Param` list and function) and registers them with :func:`register_method`. The Slicer
widgets, the command line (``susceptibility-mri run --help``) and the docs (``susceptibility-mri params
--markdown``) are all generated from these declarations, so they cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import importlib
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .errors import QSMInputError


@dataclass(frozen=True)
class Param:
    """One parameter: name (a valid Python identifier, with unit suffix), type, default, range, unit, help."""

    name: str
    type: type
    default: Any
    help: str
    unit: str = ""
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None

    def validate(self, value: Any) -> Any:
        """Coerce ``value`` to the declared type and check range/choices; raise QSMInputError naming the param."""
        try:
            v = self.type(value) if not (self.type is bool and isinstance(value, str)) else value.lower() in (
                "1", "true", "yes", "on")
        except (TypeError, ValueError) as exc:
            raise QSMInputError(f"parameter {self.name}: cannot read {value!r} as {self.type.__name__}") from exc
        if self.choices is not None and v not in self.choices:
            raise QSMInputError(f"parameter {self.name}: {v!r} is not one of {list(self.choices)}")
        if self.minimum is not None and v < self.minimum:
            raise QSMInputError(f"parameter {self.name}={v} is below its minimum {self.minimum} {self.unit}")
        if self.maximum is not None and v > self.maximum:
            raise QSMInputError(f"parameter {self.name}={v} is above its maximum {self.maximum} {self.unit}")
        return v


@dataclass(frozen=True)
class MethodSpec:
    """A method of a stage: its key, a display label, the paper it comes from and its parameters."""

    key: str
    label: str
    reference: str
    params: Tuple[Param, ...] = ()
    help: str = ""
    func: Optional[Callable[..., Any]] = field(default=None, compare=False, repr=False)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def defaults(self) -> Dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, values: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Defaults overridden by ``values``; unknown names are an error naming the method's parameters."""
        out = self.defaults()
        for k, v in (values or {}).items():
            if k not in out:
                raise QSMInputError(
                    f"method {self.key!r} has no parameter {k!r}; its parameters are {sorted(out)}"
                )
            out[k] = self.param(k).validate(v)
        return out


@dataclass
class StageSpec:
    """A pipeline stage: key, label, the inputs its methods receive, default method and the methods it offers."""

    key: str
    label: str
    inputs: str
    default_method: str
    help: str = ""
    methods: List[MethodSpec] = field(default_factory=list)

    def method(self, key: str) -> MethodSpec:
        for m in self.methods:
            if m.key == key:
                return m
        raise QSMInputError(
            f"stage {self.key!r} has no method {key!r}; choose one of {[m.key for m in self.methods]}"
        )

    @property
    def method_keys(self) -> List[str]:
        return [m.key for m in self.methods]


#: The stages of the pipeline, in order, with the inputs every method of the stage may take (by keyword; a method
#: function names the ones it uses and :func:`run_method` passes only those).
_REGISTRY: Dict[str, StageSpec] = {
    s.key: s
    for s in (
        StageSpec("coil_combination", "Coil combination",
                  "signal (x,y,z,echo,coil complex64), te_s, voxel_size_mm, reference_signal -> complex64",
                  "aspire", "Combine receive channels into one complex image per echo (Robinson, NMR Biomed 2017)."),
        StageSpec("mask", "Brain mask",
                  "magnitude (x,y,z,echo), phase (x,y,z,echo), te_s, voxel_size_mm, labels -> bool (x,y,z)",
                  "magnitude_threshold", "Brain (tissue) mask for all later stages."),
        StageSpec("unwrap", "Phase unwrapping",
                  "phase (x,y,z,echo), magnitude, mask, te_s, voxel_size_mm -> UnwrapResult",
                  "romeo", "Spatial phase unwrapping (Robinson et al. NMR Biomed 2017)."),
        StageSpec("field_mapping", "Echo combination / B0 field fit",
                  "phase (x,y,z,echo unwrapped), magnitude, mask, te_s, b0_tesla -> FieldMap",
                  "weighted_linear", "Frequency map (Hz, ppm) and its noise from the echoes."),
        StageSpec("r2star", "R2* / T2* mapping",
                  "magnitude (x,y,z,echo), te_s, mask -> r2star_hz (x,y,z)",
                  "arlo", "Transverse relaxation rate maps."),
        StageSpec("background", "Background field removal",
                  "field_ppm, mask, voxel_size_mm, b0_direction, weight -> BackgroundResult",
                  "pdf", "Separate the local field from the background field (Schweser et al. NMR Biomed 2017)."),
        StageSpec("inversion", "Dipole inversion",
                  "local_field_ppm, mask, voxel_size_mm, b0_direction, weight, magnitude -> chi_ppm",
                  "tfi", "Susceptibility from the local field, or from the total field in one step (single-step "
                  "methods such as the default, TFI)."),
        StageSpec("reference", "Susceptibility reference",
                  "chi_ppm, mask, labels -> ReferencedMap", "whole_brain",
                  "Susceptibility is relative: choose and record the reference region."),
        StageSpec("source_separation", "Susceptibility source separation",
                  "chi_ppm, r2star_hz, r2_hz, mask, b0_tesla -> SourceSeparation",
                  "r2prime", "Paramagnetic (χ⁺) and diamagnetic (|χ⁻|) susceptibility from χ and R2' "
                  "(χ-separation, Shin et al. NeuroImage 2021). Off unless chosen."),
        StageSpec("swi", "Susceptibility-weighted imaging",
                  "magnitude, phase, mask, voxel_size_mm, te_s, b0_tesla, b0_direction, affine -> SWIResult",
                  "homodyne", "SWI (Haacke et al. MRM 2004) and variants."),
    )
}

#: Modules that register methods; :func:`load_all` imports them.
STAGE_MODULES: Tuple[str, ...] = (
    "QSMLogic.coil", "QSMLogic.mask", "QSMLogic.unwrap", "QSMLogic.echo", "QSMLogic.background",
    "QSMLogic.inversion", "QSMLogic.reference", "QSMLogic.separation", "QSMLogic.swi",
)


def register_method(stage_key: str, spec: MethodSpec) -> MethodSpec:
    """Add a method (with its ``func``) to a stage; re-registering a key replaces it (module reloads)."""
    if spec.func is None:
        raise ValueError(f"method {spec.key!r} has no func")
    st = stage(stage_key)
    st.methods[:] = [m for m in st.methods if m.key != spec.key] + [spec]
    return spec


def load_all() -> Dict[str, StageSpec]:
    """Import every stage module so that all methods are registered; return the stages in pipeline order."""
    for name in STAGE_MODULES:
        importlib.import_module(name)
    return dict(_REGISTRY)


def stages() -> Dict[str, StageSpec]:
    """All stages (methods registered so far; call :func:`load_all` to register all)."""
    return dict(_REGISTRY)


def stage(key: str) -> StageSpec:
    try:
        return _REGISTRY[key]
    except KeyError:
        raise QSMInputError(f"unknown stage {key!r}; stages are {sorted(_REGISTRY)}") from None


def run_method(stage_key: str, method_key: str, inputs: Dict[str, Any], params: Optional[Dict[str, Any]] = None):
    """Run a registered method: validated parameters plus those ``inputs`` its function's signature names."""
    m = stage(stage_key).method(method_key)
    resolved = m.resolve(params)
    sig = inspect.signature(m.func)  # type: ignore[arg-type]
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    kw = {k: v for k, v in inputs.items() if takes_all or k in sig.parameters}
    kw.update(resolved)
    return m.func(**kw)  # type: ignore[misc]


def markdown_table(specs: Sequence[StageSpec]) -> str:
    """Render the declarations as a Markdown reference (docs/parameters.md is generated from it)."""
    lines: List[str] = []
    for s in specs:
        lines.append(f"## {s.label} (`{s.key}`, default `{s.default_method}`)\n")
        if s.help:
            lines.append(s.help + "\n")
        for m in s.methods:
            lines.append(f"### `{m.key}` — {m.label}\n\n{m.reference}\n")
            if m.params:
                lines.append("| parameter | default | range | unit | meaning |\n|---|---|---|---|---|")
                for p in m.params:
                    rng = ", ".join(str(c) for c in p.choices) if p.choices else (
                        f"{'' if p.minimum is None else p.minimum}…{'' if p.maximum is None else p.maximum}")
                    lines.append(f"| `{p.name}` | {p.default} | {rng} | {p.unit} | {p.help} |")
                lines.append("")
    return "\n".join(lines)


__all__ = ["Param", "MethodSpec", "StageSpec", "register_method", "load_all", "stages", "stage", "run_method",
           "markdown_table"]
