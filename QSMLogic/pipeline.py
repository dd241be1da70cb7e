"""The QSM/SWI pipeline: the stages of :mod:`QSMLogic.params` chained on a :class:`QSMLogic.gre.GREData`.

``run_pipeline(gre, PipelineConfig.default())`` goes from (multi-coil, multi-echo) magnitude and wrapped phase to
the susceptibility map, R2*, SWI and every intermediate field, recording for each stage its method, parameters and
run time in the provenance, so any map can be reproduced. Progress is reported through a callback
``progress(fraction, label)`` and the run can be cancelled through ``cancel() -> bool`` (checked between stages and
passed to methods that accept it), which raises :class:`QSMLogic.errors.QSMCancelled`.
"""
from __future__ import annotations

import copy
import json
import platform
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import __version__
from .auto_params import actual_parameters
from .errors import QSMCancelled, QSMInputError
from .gre import GREData
from .params import load_all, run_method, stage

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
LogFn = Callable[[str], None]

#: Stage order and the share of the total run time each one roughly takes (for the progress bar).
STAGE_ORDER = (
    ("coil_combination", 0.10),
    ("mask", 0.03),
    ("unwrap", 0.15),
    ("field_mapping", 0.07),
    ("r2star", 0.05),
    ("background", 0.15),
    ("inversion", 0.35),
    ("reference", 0.01),
    ("source_separation", 0.01),
    ("swi", 0.09),
)

#: Stages that run only when asked for: choosing their method or setting their parameters (``from_dict``, ``set``,
#: the command line's ``--source-separation``) switches them on. Source separation needs an R2 map or an assumption.
OFF_BY_DEFAULT = frozenset({"source_separation"})

#: Methods of the "inversion" stage that take the total field and remove the background themselves.
SINGLE_STEP_INVERSIONS = frozenset({"sstv", "tfi"})

#: SWI methods built from a map of the QSM chain rather than from the wrapped phase, and the stage making that map.
SWI_NEEDS = {"unwrapped": "background", "swim": "reference"}

#: Depth (mm) of the brain-edge shell whose local field gets no weight in the dipole inversion's data term (the
#: susceptibility there is still estimated, from the field inside): background removal leaves its largest errors in
#: the outer millimetres, and data-heavy methods turn them into streaks across the brain. Regularised methods get a
#: thinner shell (the edge structures, veins above all, carry much of the χ error on independent-model heads) but
#: never under :data:`DATA_EDGE_VOXELS` voxels (PDF's boundary error spans about two voxels); methods with a weak
#: prior at the edge keep :data:`DATA_EDGE_MM_BY_METHOD`. Figures, including a ramped weight measured and rejected:
#: docs/benchmarks.md ("Measurements behind the library's defaults", "Independent forward model").
DATA_EDGE_MM = 3.0
DATA_EDGE_VOXELS = 2.25
DATA_EDGE_MM_BY_METHOD: Dict[str, float] = {"medi": 4.5, "cgls": 4.5, "lsqr": 4.5}


def data_edge_for(inversion_method: str, voxel_size_mm: Sequence[float]) -> float:
    """The edge shell depth (mm) the default chain uses for ``inversion_method`` on voxels of ``voxel_size_mm``
    (see :data:`DATA_EDGE_MM`)."""
    return shell_depth_mm(DATA_EDGE_MM_BY_METHOD.get(inversion_method, DATA_EDGE_MM), DATA_EDGE_VOXELS, voxel_size_mm)


def shell_depth_mm(depth_mm: float, depth_voxels: float, voxel_size_mm: Sequence[float]) -> float:
    """``depth_mm``, but at least ``depth_voxels`` voxels of the mean size of ``voxel_size_mm`` (mm)."""
    return max(depth_mm, depth_voxels * float(np.prod(voxel_size_mm)) ** (1.0 / 3.0))


#: Unwrapping-unreliable voxels leave the mask only within this depth (mm) of its edge. There, next to air and bone,
#: the field is steep and a wrong voxel would dominate background removal. Deeper, low ROMEO quality comes from CSF
#: sharing a voxel with tissue (two frequencies, so the phase is not linear in TE) and grows with slice thickness;
#: removing those voxels carved the third ventricle and cisterns next to the SN, RN and STN on thick-slice
#: independent-model heads (figures: docs/benchmarks.md, "Independent forward model").
RELIABLE_EDGE_DEPTH_MM = 10.0
#: The depth rule assumes the mask is the brain, with a few unreliable voxels in it. When more than this fraction of
#: the mask is unreliable, the mask holds noise (a magnitude threshold that took the background, a volume cropped
#: inside the head with a bad mask) and every unreliable voxel leaves it, at any depth.
RELIABLE_DEPTH_MAX_FRACTION = 0.25
#: Of the unreliable voxels that leave the mask, PDF keeps those deeper than this (mm, and at least
#: :data:`TISSUE_EDGE_VOXELS` voxels) inside the brain mask as source-free tissue (its ``tissue_mask``): there they
#: are mostly CSF of cisterns and ventricles next to the deep nuclei, and background sources in them absorbed the
#: nuclei's field. The shallower ones, next to sinuses and bone, stay open to background sources: keeping them as
#: tissue too left the sinus field in the local field and doubled SWI's false darkening near air on the project's
#: phantom (figures: docs/benchmarks.md, "Independent forward model").
TISSUE_EDGE_MM = 3.0
TISSUE_EDGE_VOXELS = 2.0

#: The stage whose result each output map is (for per-map provenance); names not listed belong to ``swi`` when they
#: start with "swi" or "mip", else to the pipeline as a whole.
OUTPUT_STAGE = {
    "magnitude": "coil_combination", "mask": "mask", "unwrap_quality": "unwrap", "field_mask": "unwrap",
    "field_hz": "field_mapping", "total_field_ppm": "field_mapping", "noise_sd_hz": "field_mapping",
    "r2star_hz": "r2star", "local_field_ppm": "background", "qsm_mask": "background", "chi_ppm": "reference",
    "chi_para_ppm": "source_separation", "chi_dia_ppm": "source_separation",
    "chi_sources_net_ppm": "source_separation", "r2prime_hz": "source_separation",
    "separation_mask": "source_separation",
}


def output_stage(name: str) -> Optional[str]:
    """The stage key that produced output ``name`` (None for pipeline-level outputs)."""
    if name in OUTPUT_STAGE:
        return OUTPUT_STAGE[name]
    return "swi" if name.startswith(("swi", "mip")) else None


def spatial_valid_mask(gre: GREData) -> Optional[np.ndarray]:
    """Voxels valid at every echo (and coil) when the reader masked NaN/Inf phase (``nan_policy="mask"``)."""
    valid = gre.metadata.get("valid_mask") if isinstance(gre.metadata, dict) else None
    if valid is None:
        return None
    v = np.asarray(valid, dtype=bool)
    while v.ndim > 3:
        v = v.all(axis=-1)
    if v.shape != gre.shape:
        raise QSMInputError(f"metadata['valid_mask'] has shape {v.shape}, not the data's spatial shape {gre.shape}")
    return v


@dataclass
class PipelineConfig:
    """Chosen method and parameters per stage: ``stages[key] = {"method": str, "params": dict, "enabled": bool}``."""

    stages: Dict[str, Dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def default(cls) -> PipelineConfig:
        """Every stage with its default method and default parameters, on except :data:`OFF_BY_DEFAULT`."""
        specs = load_all()
        return cls({k: {"method": specs[k].default_method, "params": {}, "enabled": k not in OFF_BY_DEFAULT}
                    for k, _ in STAGE_ORDER})

    @classmethod
    def swi_only(cls, method: str = "homodyne", brain_mask: bool = False, **params: Any) -> PipelineConfig:
        """Only SWI (after coil combination for multi-coil data and, with ``brain_mask``, the mask stage): the
        QSM chain and R2* are off, so the acquisition needs no B0 (``GREData(b0_tesla=None)``). ``method`` must
        work from the wrapped phase (homodyne); ``params`` override its parameters. Without ``brain_mask`` (and
        without a mask given to :func:`run_pipeline`) the phase mask applies to the whole volume."""
        if method in SWI_NEEDS:
            raise QSMInputError(f"SWI method {method!r} needs the {SWI_NEEDS[method]} stage of the QSM chain; "
                                "swi_only runs methods that work from the wrapped phase, e.g. 'homodyne'")
        cfg = cls.default()
        for key, entry in cfg.stages.items():
            entry["enabled"] = key in ("coil_combination", "swi") or (key == "mask" and brain_mask)
        return cfg.set("swi", method, **params)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> PipelineConfig:
        """Defaults overridden by ``d`` (same layout as :meth:`to_dict`); validates methods and parameters."""
        cfg = cls.default()
        for key, entry in (d.get("stages", d) or {}).items():
            if key not in cfg.stages:
                raise QSMInputError(f"unknown stage {key!r} in configuration; stages are {list(cfg.stages)}")
            cur = cfg.stages[key]
            if "method" in entry and entry["method"] != cur["method"]:
                cur["method"] = entry["method"]
                cur["params"] = {}
            cur["params"].update(entry.get("params", {}))
            asked = key in OFF_BY_DEFAULT and ("method" in entry or bool(entry.get("params")))
            cur["enabled"] = bool(entry.get("enabled", cur["enabled"] or asked))
        cfg.validate()
        return cfg

    def to_dict(self) -> Dict[str, Any]:
        return {"stages": copy.deepcopy(self.stages)}

    def validate(self) -> None:
        """Check that every method exists and every parameter is known and in range."""
        for key, entry in self.stages.items():
            stage(key).method(entry["method"]).resolve(entry.get("params"))

    def set(self, stage_key: str, method: Optional[str] = None, **params: Any) -> PipelineConfig:
        """Choose ``method`` for a stage and/or override some of its parameters (which switches on a stage that is
        off by default); returns ``self``."""
        entry = self.stages[stage_key]
        if method is not None and method != entry["method"]:
            entry["method"], entry["params"] = method, {}
        entry["params"].update(params)
        if stage_key in OFF_BY_DEFAULT:
            entry["enabled"] = True
        stage(stage_key).method(entry["method"]).resolve(entry["params"])
        return self

    def resolved(self, stage_key: str) -> Dict[str, Any]:
        entry = self.stages[stage_key]
        return stage(stage_key).method(entry["method"]).resolve(entry.get("params"))


@dataclass
class PipelineResult:
    """3D maps by name (in the input's spatial axes and geometry) and the provenance of the run."""

    outputs: Dict[str, np.ndarray]
    provenance: Dict[str, Any]
    affine: np.ndarray
    details: Dict[str, Any] = field(default_factory=dict)

    def provenance_json(self) -> str:
        return json.dumps(self.provenance, indent=2, default=json_default)


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback for provenance values: numpy scalars and arrays as numbers and lists, else str."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _noop_progress(fraction: float, label: str) -> None:
    return None


class _Run:
    """The state one :func:`run_pipeline` call carries from step to step: the configuration, the callbacks, the
    outputs and details collected so far and the per-stage provenance records."""

    def __init__(self, gre: GREData, cfg: PipelineConfig, progress: ProgressFn, cancel: CancelFn, log: LogFn) -> None:
        self.gre = gre
        self.cfg = cfg
        self.progress = progress
        self.cancelled = cancel
        self.log = log
        self.records: List[Dict[str, Any]] = []
        self.outputs: Dict[str, np.ndarray] = {}
        self.details: Dict[str, Any] = {}
        self.total_w = sum(w for k, w in STAGE_ORDER if self.enabled(k))
        self.done_w = 0.0
        self.common = {"te_s": gre.te_s, "b0_tesla": gre.b0_tesla, "voxel_size_mm": gre.voxel_size_mm,
                       "b0_direction": gre.b0_direction, "cancel": cancel}

    def enabled(self, key: str) -> bool:
        return bool(self.cfg.stages[key].get("enabled", True))

    def stage(self, key: str, inputs: Dict[str, Any]) -> Any:
        """Run stage ``key``'s configured method on ``inputs`` (plus the acquisition parameters), reporting progress
        and recording method, parameters and run time."""
        if self.cancelled():
            raise QSMCancelled(f"cancelled before {stage(key).label}")
        entry = self.cfg.stages[key]
        label = f"{stage(key).label}: {entry['method']}"
        self.progress(self.done_w / self.total_w, label)
        self.log(f"[{key}] {entry['method']} …")
        t0 = time.perf_counter()
        all_inputs = {**self.common, **inputs}
        out = run_method(key, entry["method"], all_inputs, entry.get("params"))
        dt = time.perf_counter() - t0
        params = self.cfg.resolved(key)
        # parameters left automatic (0) are recorded with the value actually used, and named as automatic
        auto = actual_parameters(key, params, all_inputs, out, entry["method"])
        record = {"stage": key, "method": entry["method"], "reference": stage(key).method(entry["method"]).reference,
                  "params": {**params, **auto}, "seconds": round(dt, 3)}
        if auto:
            record["automatic_params"] = sorted(auto)
        self.records.append(record)
        self.log(f"[{key}] {entry['method']} done in {dt:.1f} s")
        self.done_w += dict(STAGE_ORDER)[key]
        self.progress(self.done_w / self.total_w, label)
        return out


def run_pipeline(
    gre: GREData,
    config: Optional[PipelineConfig] = None,
    mask: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    progress: Optional[ProgressFn] = None,
    cancel: Optional[CancelFn] = None,
    log: Optional[LogFn] = None,
    data_edge_mm: Optional[float] = None,
    r2_hz: Optional[np.ndarray] = None,
) -> PipelineResult:
    """Run the configured stages on ``gre`` and return every map with its provenance.

    ``mask`` (bool, spatial shape) replaces the mask stage; ``labels`` (int, spatial shape) lets the reference
    stage use a CSF/ventricle label. ``data_edge_mm``: the shell at the brain edge left out of the inversion's data
    term (None: :func:`data_edge_for` the inversion method; 0 keeps it). ``r2_hz``: an R2 map (Hz) on the data's
    grid for source separation's ``r2prime`` method (:func:`QSMLogic.separation.resample_to_grid` brings a map with
    its own geometry there). The input arrays are never modified.
    """
    cfg = config or PipelineConfig.default()
    cfg.validate()
    if r2_hz is not None and np.shape(r2_hz) != gre.shape:
        raise QSMInputError(f"the R2 map has shape {np.shape(r2_hz)} but the data {gre.shape}: bring it onto the "
                            "data's grid with its geometry (QSMLogic.separation.resample_to_grid, or --r2 with a "
                            "NIfTI/NRRD file, which is resampled through both affines)")
    check_stage_selection(cfg, gre, mask_given=mask is not None, r2_given=r2_hz is not None)
    if data_edge_mm is None:
        data_edge_mm = data_edge_for(cfg.stages["inversion"]["method"], gre.voxel_size_mm)
    run = _Run(gre, cfg, progress or _noop_progress, cancel or (lambda: False), log or (lambda s: None))
    t_start = time.perf_counter()
    magnitude, phase = combine_coils_step(run)
    m, valid = mask_step(run, magnitude, phase, mask, labels)
    reference_info = None
    # each QSM stage runs only after the one it needs (check_stage_selection)
    if run.enabled("unwrap"):
        unwrap, m = unwrap_step(run, phase, magnitude, m, valid)
    if run.enabled("field_mapping"):
        m, used, weight = field_mapping_step(run, unwrap, magnitude, m)
    r2star_step(run, magnitude, m)
    if run.enabled("field_mapping"):
        used_te = {"te_s": tuple(gre.te_s[n] for n in used)}  # later stages that model TE see the fitted echoes only
        chi, qsm_mask = local_field_and_inversion_step(run, phase, m, used, used_te, weight, labels, data_edge_mm)
        if chi is not None:
            reference_info = reference_step(run, chi, qsm_mask, labels)
            if run.enabled("source_separation"):
                separation_step(run, qsm_mask, r2_hz, reference_info)
    swi_step(run, magnitude, phase, m if m is not None else valid)
    run.progress(1.0, "done")
    provenance = build_provenance(gre, run.records, run.details, reference_info, data_edge_mm,
                                  time.perf_counter() - t_start)
    return PipelineResult(outputs=run.outputs, provenance=provenance, affine=gre.affine.copy(), details=run.details)


def check_stage_selection(cfg: PipelineConfig, gre: GREData, mask_given: bool = False,
                          r2_given: bool = False) -> None:
    """Raise :class:`QSMInputError` naming the problem when an enabled stage needs a disabled one (each stage of
    the QSM chain needs the one before it, a phase-free SWI method the map it is built from, R2* and unwrapping a
    mask, source separation χ and R2*) or data it lacks (B0 for the field mapping and everything after it;
    multi-echo magnitude and, for ``r2prime``, an R2 map for source separation)."""
    single_step = cfg.stages["inversion"]["method"] in SINGLE_STEP_INVERSIONS

    def on(key: str) -> bool:
        return bool(cfg.stages[key].get("enabled", True))

    needs = {"unwrap": "mask", "r2star": "mask", "field_mapping": "unwrap", "background": "field_mapping",
             "inversion": "field_mapping" if single_step else "background", "reference": "inversion"}
    if on("source_separation"):
        needs["source_separation"] = "reference"
    swi_method = cfg.stages["swi"]["method"]
    if swi_method in SWI_NEEDS:
        needs["swi"] = SWI_NEEDS[swi_method]
    for key, need in needs.items():
        if not on(key) or on(need) or (need == "mask" and mask_given):
            continue
        if need == "mask":
            raise QSMInputError(f"the {key} stage needs a brain mask: enable the mask stage or give a mask")
        raise QSMInputError(f"the {key} stage ({cfg.stages[key]['method']}) needs the {need} stage, which is "
                            "disabled")
    if on("inversion") and not on("reference"):
        raise QSMInputError("the reference stage cannot be disabled while the inversion runs: susceptibility is "
                            "relative and the map needs its reference")
    if on("source_separation"):
        check_separation_inputs(cfg.stages["source_separation"]["method"], gre, on("r2star"), r2_given, single_step)
    if gre.b0_tesla is None and on("field_mapping"):
        raise QSMInputError("the field strength is unknown (b0_tesla is None) but the field_mapping stage and the "
                            "QSM stages after it need it: give b0_tesla, or run SWI alone "
                            "(PipelineConfig.swi_only())")


def combine_coils_step(run: _Run) -> Tuple[np.ndarray, np.ndarray]:
    """Step 1: one complex image per echo (coil combination for multi-coil data); returns magnitude and phase
    (x,y,z,echo float32) and records the RMS-over-echoes magnitude output."""
    gre = run.gre
    if gre.is_combined:
        signal = gre.complex_signal()
    else:
        if not run.enabled("coil_combination"):
            raise QSMInputError("the data have several coils but coil combination is disabled")
        signal = run.stage("coil_combination", {"signal": gre.complex_signal()})
    magnitude = np.abs(signal).astype(np.float32)
    phase = np.angle(signal).astype(np.float32)
    del signal
    run.outputs["magnitude"] = np.sqrt(np.mean(magnitude.astype(np.float64) ** 2, axis=3)).astype(np.float32)
    return magnitude, phase


def mask_step(run: _Run, magnitude: np.ndarray, phase: np.ndarray, mask: Optional[np.ndarray],
              labels: Optional[np.ndarray]) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Step 2: the user's ``mask`` or the mask stage's, without the voxels the reader found NaN/Inf; returns the
    mask (None when the mask stage is off and no mask was given) and those valid voxels (None when the reader
    masked none)."""
    gre = run.gre
    valid = spatial_valid_mask(gre)
    if mask is None and not run.enabled("mask"):
        return None, valid
    if mask is not None:
        m = np.asarray(mask).astype(bool)
        if m.shape != gre.shape:
            raise QSMInputError(f"mask shape {m.shape} does not match the data's spatial shape {gre.shape}")
        if not m.any():
            raise QSMInputError("the given mask is empty")
        run.records.append({"stage": "mask", "method": "user", "params": {}, "seconds": 0.0})
    else:
        m = np.asarray(run.stage("mask", {"magnitude": magnitude, "phase": phase, "labels": labels}), dtype=bool)
    if valid is not None:  # NaN/Inf phase voxels (set to 0 by the reader) never enter the processing
        n_invalid = int(np.count_nonzero(m & ~valid))
        m = m & valid
        run.log(f"[mask] {n_invalid} voxel(s) with NaN/Inf phase removed from the mask")
        run.details["invalid_voxels_removed"] = n_invalid
        if not m.any():
            raise QSMInputError("no mask voxel has a finite phase at every echo (the NaN/Inf voxels cover the mask)")
    run.outputs["mask"] = m.astype(np.uint8)
    return m, valid


def unwrap_step(run: _Run, phase: np.ndarray, magnitude: np.ndarray, m: np.ndarray,
                valid: Optional[np.ndarray]) -> Tuple[Any, np.ndarray]:
    """Step 3: spatial unwrapping; returns its result and the mask without the voxels it could not trust."""
    unwrap = run.stage("unwrap", {"phase": phase, "magnitude": magnitude, "mask": m})
    run.outputs["unwrap_quality"] = np.asarray(unwrap.quality, dtype=np.float32)
    run.details["unwrap"] = unwrap
    # Voxels the unwrapping could not trust (low ROMEO quality: mostly the brain edge next to air, where the field
    # is steepest) leave the mask before background removal, whose error they would otherwise dominate.
    from ._distance import depth_mm

    vox = run.gre.voxel_size_mm
    tissue = m & (depth_mm(m, vox) > shell_depth_mm(TISSUE_EDGE_MM, TISSUE_EDGE_VOXELS, vox))
    m = reliable_mask(m, unwrap.unreliable, vox, RELIABLE_EDGE_DEPTH_MM)
    run.details["tissue_mask"] = m | tissue
    if valid is not None:  # hole filling must not put NaN voxels back
        m &= valid
    run.outputs["field_mask"] = m.astype(np.uint8)
    return unwrap, m


def field_mapping_step(run: _Run, unwrap: Any, magnitude: np.ndarray,
                       m: np.ndarray) -> Tuple[np.ndarray, List[int], np.ndarray]:
    """Step 4: the field fit from the echoes the unwrapping trusted; returns the mask without field outliers, the
    (0-based) echoes used and the inversion's data weight from the fit's noise."""
    gre = run.gre
    # A failed echo (noise-like phase) would bias the fit wherever its magnitude is not also low; all echoes are
    # used when none or only one passed.
    good = [n for n, ok in enumerate(getattr(unwrap, "echo_ok", ())) if ok]
    fit_inputs = {"phase": unwrap.unwrapped, "magnitude": magnitude, "mask": m}
    if 2 <= len(good) < gre.n_echoes:
        fit_inputs.update(phase=unwrap.unwrapped[..., good], magnitude=magnitude[..., good],
                          te_s=tuple(gre.te_s[n] for n in good))
        run.log(f"[field_mapping] echoes {[n + 1 for n in range(gre.n_echoes) if n not in good]} failed the "
                "unwrapping quality check and are left out of the field fit")
        run.details["field_mapping_echoes"] = [n + 1 for n in good]
    fmap = run.stage("field_mapping", fit_inputs)
    used = good if 2 <= len(good) < gre.n_echoes else list(range(gre.n_echoes))
    run.outputs["field_hz"] = np.asarray(fmap.field_hz, dtype=np.float32)
    run.outputs["total_field_ppm"] = np.asarray(fmap.field_ppm, dtype=np.float32)
    run.outputs["noise_sd_hz"] = np.asarray(fmap.noise_sd_hz, dtype=np.float32)
    # A 2π error at the template echo, carried to the others in proportion to TE, shifts the fitted frequency by
    # exactly 1/TE₁ with no residual; such voxels (and any whose field is aliased at the first echo) stand out from
    # their neighbours by more than 1/(2·TE₁) and would seed dipole-shaped artefacts in the inversion.
    outliers = field_outliers(run.outputs["field_hz"], m, float(min(gre.te_s[n] for n in used)))
    if outliers.any():
        m = m & ~outliers
        run.log(f"[field_mapping] {int(outliers.sum())} voxel(s) whose field jumps from their neighbours' by more "
                "than half the first echo's unambiguous range leave the mask")
        run.outputs["field_mask"] = m.astype(np.uint8)
    run.details["field_outliers_removed"] = int(outliers.sum())
    return m, used, _weight_from_noise(fmap.noise_sd_hz, m)


def r2star_step(run: _Run, magnitude: np.ndarray, m: Optional[np.ndarray]) -> None:
    """Step 5: R2* when enabled and the data have ≥ 2 echoes with magnitude (ARLO falls back to the exact
    two-point log-linear fit with 2 echoes)."""
    gre = run.gre
    if not (run.enabled("r2star") and gre.n_echoes >= 2 and gre.magnitude is not None):
        return
    if run.cfg.stages["r2star"]["method"] == "arlo" and gre.n_echoes < 3:
        run.cfg = PipelineConfig.from_dict(run.cfg.to_dict())
        run.cfg.set("r2star", "loglinear")
        run.log("[r2star] ARLO needs ≥ 3 echoes; 2 echoes: the log-linear (two-point) fit is used")
    r2 = run.stage("r2star", {"magnitude": magnitude, "mask": m})
    run.outputs["r2star_hz"] = np.asarray(r2, dtype=np.float32)


def local_field_and_inversion_step(run: _Run, phase: np.ndarray, m: np.ndarray, used: List[int],
                                   used_te: Dict[str, Any], weight: np.ndarray, labels: Optional[np.ndarray],
                                   data_edge_mm: float) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """Steps 6-7: background removal then dipole inversion of the local field, or a single-step inversion of the
    total field (background removal, when enabled, then still gives the local field as an output to inspect, not
    as the inversion's input); returns the susceptibility before referencing and the mask it is defined on (None,
    None when neither runs; None and the background step's mask when the inversion is off)."""
    outputs = run.outputs
    single_step = run.cfg.stages["inversion"]["method"] in SINGLE_STEP_INVERSIONS
    qsm_mask: Optional[np.ndarray] = None
    if run.enabled("background"):
        bg = run.stage("background", {"field_ppm": outputs["total_field_ppm"], "mask": m, "weight": weight,
                                      "phase_rad": phase[..., used], "tissue_mask": run.details.get("tissue_mask"),
                                      **used_te})
        outputs["local_field_ppm"] = np.asarray(bg.local_field_ppm, dtype=np.float32)
        qsm_mask = np.asarray(bg.mask, dtype=bool)
        if not qsm_mask.any():
            raise QSMInputError("background removal eroded the whole mask: use a smaller kernel radius")
    if not run.enabled("inversion"):
        if qsm_mask is not None:
            outputs["qsm_mask"] = qsm_mask.astype(np.uint8)
        return None, qsm_mask
    if single_step:
        chi = run.stage("inversion", {"total_field_ppm": outputs["total_field_ppm"], "local_field_ppm": None,
                                      "mask": m, "weight": weight, "magnitude": outputs["magnitude"], **used_te})
        qsm_mask = m
    else:
        inv_weight = inversion_weight(weight, qsm_mask, run.gre.voxel_size_mm, data_edge_mm)
        run.details["inversion_weight"] = inv_weight
        chi = run.stage("inversion", {"local_field_ppm": outputs["local_field_ppm"], "mask": qsm_mask,
                                      "weight": inv_weight, "magnitude": outputs["magnitude"], "labels": labels,
                                      **used_te})
    outputs["qsm_mask"] = qsm_mask.astype(np.uint8)
    return chi, qsm_mask


def reference_step(run: _Run, chi: np.ndarray, qsm_mask: np.ndarray,
                   labels: Optional[np.ndarray]) -> Dict[str, Any]:
    """Step 8: reference the susceptibility; returns the reference region and offset for the provenance."""
    ref = run.stage("reference", {"chi_ppm": np.asarray(chi, dtype=np.float32), "mask": qsm_mask, "labels": labels})
    run.outputs["chi_ppm"] = np.asarray(ref.chi_ppm, dtype=np.float32)
    return {"reference": ref.reference, "offset_ppm": float(ref.offset_ppm)}


def check_separation_inputs(method: str, gre: GREData, r2star_on: bool, r2_given: bool,
                            single_step: bool = False) -> None:
    """Source separation needs R2*, so the r2star stage and ≥ 2 echoes with magnitude; ``r2prime`` and ``joint`` an
    R2 map, ``joint`` the local field (a two-step inversion); checked before any computing."""
    if gre.magnitude is None or gre.n_echoes < 2:
        have = "no magnitude images" if gre.magnitude is None else f"{gre.n_echoes} echo"
        raise QSMInputError(f"source separation needs R2* from at least 2 echoes with their magnitude images; the "
                            f"data have {have}")
    if not r2star_on:
        raise QSMInputError("the source_separation stage needs the r2star stage, which is disabled")
    if method in ("r2prime", "joint") and not r2_given:
        raise QSMInputError(f"source separation's {method} method needs an R2 map (r2_hz; command line --r2 or "
                            "--t2); without one choose the r2star_only method and its stated assumption")
    if method == "joint" and single_step:
        raise QSMInputError("source separation's joint method inverts the local field, which a single-step "
                            "inversion does not produce: choose a two-step inversion or the r2prime method")


def separation_step(run: _Run, qsm_mask: np.ndarray, r2_hz: Optional[np.ndarray],
                    reference_info: Dict[str, Any]) -> None:
    """Step 8b: paramagnetic and diamagnetic susceptibility (:mod:`QSMLogic.separation`) from the referenced χ and
    R2* (and the R2 map); the counts of left-out and clipped voxels go into the stage's provenance record."""
    outputs = run.outputs
    sep = run.stage("source_separation", {"chi_ppm": outputs["chi_ppm"], "r2star_hz": outputs.get("r2star_hz"),
                                          "r2_hz": r2_hz, "mask": qsm_mask,
                                          "local_field_ppm": outputs.get("local_field_ppm"),
                                          "weight": run.details.get("inversion_weight")})
    outputs["chi_para_ppm"] = sep.chi_para_ppm
    outputs["chi_dia_ppm"] = sep.chi_dia_ppm
    outputs["chi_sources_net_ppm"] = sep.chi_sum_ppm
    outputs["r2prime_hz"] = sep.r2prime_hz
    outputs["separation_mask"] = sep.mask.astype(np.uint8)
    info = dict(sep.info)
    joint = info.get("method") == "joint"
    info["chi_reference"] = "none needed: R2' and the bounds fix the zero" if joint else reference_info["reference"]
    info["masked_from_qsm_mask"] = int(np.count_nonzero(qsm_mask)) - info["voxels"]
    run.records[-1]["result"] = info
    if not joint and not str(reference_info["reference"]).startswith("csf"):
        run.log("[source_separation] χ is referenced to the "
                f"{reference_info['reference']}; the sources are relative to it (a CSF reference, where they are "
                "absent, is the natural zero)")


def swi_step(run: _Run, magnitude: np.ndarray, phase: np.ndarray, m: Optional[np.ndarray]) -> None:
    """Step 9: SWI (and its mIP) when enabled, from the phase or from the local field or χ computed before;
    ``m`` None: the whole volume."""
    if not run.enabled("swi"):
        return
    outputs = run.outputs
    # the affine lets the mIP project along the requested world (patient) axis, whatever the acquisition
    sw = run.stage("swi", {"magnitude": magnitude, "phase": phase, "mask": m, "affine": run.gre.affine,
                           "local_field_ppm": outputs.get("local_field_ppm"), "chi_ppm": outputs.get("chi_ppm")})
    outputs["swi"] = np.asarray(sw.swi, dtype=np.float32)
    # the phase that built the mask (high-passed, or local field as phase; none for SWIM) and the mask f itself
    if getattr(sw, "filtered_phase", None) is not None:
        outputs["swi_phase_rad"] = np.asarray(sw.filtered_phase, dtype=np.float32)
    outputs["swi_phase_mask"] = np.asarray(sw.phase_mask, dtype=np.float32)
    if getattr(sw, "mip", None) is not None:
        outputs["mip"] = np.asarray(sw.mip, dtype=np.float32)
    run.records[-1]["result"] = dict(sw.info)  # mIP axis, its source, slices, actual slab; filter window, TE


def build_provenance(gre: GREData, records: List[Dict[str, Any]], details: Dict[str, Any],
                     reference_info: Optional[Dict[str, Any]], data_edge_mm: float,
                     total_seconds: float) -> Dict[str, Any]:
    """The run's provenance: software, input acquisition (and what was removed from it), every stage's record, the
    susceptibility reference, the units of the outputs and the total run time."""
    return {
        "software": "SusceptibilityMRI (QSMLogic)",
        "version": __version__,
        "python": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "input": {"shape": list(gre.shape), "n_echoes": gre.n_echoes, "n_coils": gre.n_coils,
                  "te_s": [float(t) for t in gre.te_s], "b0_tesla": gre.b0_tesla,
                  "voxel_size_mm": list(gre.voxel_size_mm), "b0_direction": list(gre.b0_direction),
                  "phase_sign": gre.phase_sign,
                  "metadata": {k: v for k, v in gre.metadata.items() if not isinstance(v, np.ndarray)},
                  "invalid_voxels_removed": details.get("invalid_voxels_removed", 0),
                  "field_outliers_removed": details.get("field_outliers_removed", 0),
                  "field_mapping_echoes": details.get("field_mapping_echoes",
                                                      [n + 1 for n in range(gre.n_echoes)])},
        "stages": records,
        "susceptibility_reference": reference_info,
        "inversion_data_edge_mm": float(data_edge_mm),
        "units": {"chi_ppm": "ppm", "local_field_ppm": "ppm", "total_field_ppm": "ppm", "field_hz": "Hz",
                  "noise_sd_hz": "Hz", "r2star_hz": "1/s", "swi": "a.u.", "mip": "a.u.",
                  "swi_phase_rad": "rad", "swi_phase_mask": "1 (0..1, before the power n)",
                  "chi_para_ppm": "ppm", "chi_dia_ppm": "ppm (magnitude |χ⁻| ≥ 0; net χ = chi_para − chi_dia)",
                  "chi_sources_net_ppm": "ppm", "r2prime_hz": "1/s", "separation_mask": "1"},
        "total_seconds": round(total_seconds, 3),
    }


def reliable_mask(mask: np.ndarray, unreliable: np.ndarray, voxel_size_mm: Optional[Sequence[float]] = None,
                  edge_depth_mm: Optional[float] = None) -> np.ndarray:
    """``mask`` without ``unreliable`` voxels, as one connected region with its interior holes filled.

    Dropping only the untrusted voxels would leave isolated holes inside the brain, which background removal treats
    as boundaries; filling interior holes puts the enclosed ones back. With ``edge_depth_mm`` (and
    ``voxel_size_mm``), only unreliable voxels within that distance of the mask's edge leave it (see
    :data:`RELIABLE_EDGE_DEPTH_MM`): deeper ones are kept, even when their hole reaches the edge through a cistern —
    unless more than :data:`RELIABLE_DEPTH_MAX_FRACTION` of the mask is unreliable (then the mask holds noise).
    """
    from scipy import ndimage as ndi

    m = np.asarray(mask, dtype=bool)
    drop = np.asarray(unreliable, dtype=bool)
    if edge_depth_mm is not None and np.count_nonzero(drop & m) <= RELIABLE_DEPTH_MAX_FRACTION * np.count_nonzero(m):
        if voxel_size_mm is None:
            raise QSMInputError("reliable_mask: edge_depth_mm needs voxel_size_mm")
        from ._distance import depth_mm

        drop = drop & (depth_mm(m, voxel_size_mm) <= edge_depth_mm)
    keep = m & ~drop
    lab, n = ndi.label(keep)
    if n == 0:
        raise QSMInputError("no voxel of the mask has a trustworthy unwrapped phase (unwrapping quality too low)")
    if n > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        keep = lab == int(np.argmax(sizes))
    return ndi.binary_fill_holes(keep)


def field_outliers(field_hz: np.ndarray, mask: np.ndarray, te_first_s: float) -> np.ndarray:
    """Mask voxels whose field differs from the median of their face neighbours in the mask by more than
    ``1/(2·TE₁)`` Hz: the phase step to the neighbourhood would exceed π at the first echo, so no unwrapping could
    place them; a template-echo 2π error shows up as exactly 1/TE₁ here."""
    m = np.asarray(mask, dtype=bool)
    f = np.pad(np.where(m, np.asarray(field_hz, dtype=np.float32), np.float32(np.nan)), 1, constant_values=np.nan)
    shape = f.shape
    idx = np.flatnonzero(np.pad(m, 1))
    strides = (shape[1] * shape[2], shape[2], 1)
    flat = f.ravel()
    nb = np.stack([flat[idx + sg * st] for st in strides for sg in (1, -1)], axis=1)
    out = np.zeros(m.shape, dtype=bool)
    has = np.isfinite(nb).any(axis=1)
    med = np.full(idx.size, np.nan, dtype=np.float32)
    with np.errstate(all="ignore"):
        med[has] = np.nanmedian(nb[has], axis=1)
    bad = has & (np.abs(flat[idx] - med) > 0.5 / te_first_s)
    out[np.nonzero(m)] = bad  # idx (padded, C order) enumerates the mask voxels in the same order
    return out


def inversion_weight(weight: np.ndarray, mask: np.ndarray, voxel_size_mm, edge_mm: float) -> np.ndarray:
    """``weight`` inside ``mask`` with the voxels within ``edge_mm`` of the mask edge set to 0 (see
    :data:`DATA_EDGE_MM`); unchanged when ``edge_mm`` ≤ 0 or when the shell would take every voxel."""
    from ._distance import depth_mm

    w = np.where(mask, weight, np.float32(0)).astype(np.float32)
    if edge_mm <= 0:
        return w
    deep = depth_mm(mask, voxel_size_mm) > edge_mm
    if not (deep & (w > 0)).any():
        return w
    return np.where(deep, w, np.float32(0))


def _weight_from_noise(noise_sd_hz: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Data weight for inversion: 1/σ of the fitted field, normalised to mean 1 in the mask, 0 outside."""
    sd = np.asarray(noise_sd_hz, dtype=np.float64)
    w = np.zeros(sd.shape, dtype=np.float32)
    good = mask & np.isfinite(sd) & (sd > 0)
    if good.any():
        inv = 1.0 / sd[good]
        w[good] = (inv / inv.mean()).astype(np.float32)
    return w
