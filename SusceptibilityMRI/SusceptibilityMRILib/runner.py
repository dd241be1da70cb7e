"""Node-level runs: echo volume nodes in, new result nodes out (the body of the QSM and SWI module logic).

:func:`run_qsm_on_nodes` runs the whole pipeline (:func:`QSMLogic.pipeline.run_pipeline`) in this process;
:func:`prepare_worker_run` / :func:`import_worker_results` do the same through the background worker the GUI uses;
:func:`run_swi_on_nodes` runs only the SWI stage. All take the scene explicitly and never modify input nodes.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Union

from QSMLogic.errors import QSMCancelled, QSMInputError
from QSMLogic.params import run_method, stage
from QSMLogic.pipeline import PipelineConfig, run_pipeline

from . import mrml_adapter as ad
from .param_forms import apply_module_defaults, module_default_config, module_defaults_for
from .worker_protocol import read_worker_output, worker_command, write_worker_input

ConfigLike = Union[None, PipelineConfig, Dict[str, Any], str]

#: Outputs added to the scene by default (the rest stay available through ``output_names``).
DEFAULT_OUTPUTS = ("magnitude", "chi_ppm", "local_field_ppm", "total_field_ppm", "r2star_hz", "swi", "mip",
                   "swi_phase_rad", "swi_phase_mask", "qsm_mask")
#: SWI methods the SWI module offers: those that need nothing but magnitude and wrapped phase.
SWI_MODULE_METHODS = ("homodyne",)
#: B0 recorded for SWI-only runs on nodes that carry no field strength (the SWI stage does not use it).
SWI_PLACEHOLDER_B0_T = 3.0


def as_config(config: ConfigLike) -> PipelineConfig:
    """A validated PipelineConfig from ``None`` (module defaults), a PipelineConfig (used as it is), its dict or its
    JSON string (library defaults overridden by it, then :data:`~.param_forms.MODULE_DEFAULTS` wherever it
    leaves a parameter unset — e.g. the 16 mm mIP slab of the SWI stage)."""
    if config is None:
        return module_default_config()
    if isinstance(config, PipelineConfig):
        config.validate()
        return config
    if isinstance(config, str):
        config = json.loads(config) if config.strip() else {}
    return apply_module_defaults(PipelineConfig.from_dict(config))


@dataclass
class PreparedInputs:
    """What a run needs once the nodes are read: the GRE data, the optional mask and the reference node."""

    gre: Any
    mask: Any
    reference_node: Any


def prepare_inputs(magnitude_nodes: Any, phase_nodes: Any, echo_times_s: Optional[Sequence[float]],
                   b0_tesla: Optional[float], mask_node: Any = None, phase_rule: str = "auto",
                   phase_sign: int = 1, dicom_database: Any = None) -> PreparedInputs:
    """Read the echo volumes (and mask: label map or segmentation) into a GREData in (i, j, k) order with checked
    geometry. ``echo_times_s``/``b0_tesla`` ``None`` (or B0 <= 0): read from the data (see mrml_adapter)."""
    gre = ad.gre_from_nodes(magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, phase_rule, phase_sign,
                            dicom_database=dicom_database)
    reference = ad.as_node_list(phase_nodes)[0]
    mask = ad.mask_from_node(mask_node, reference) if mask_node is not None else None
    return PreparedInputs(gre, mask, reference)


def _provenance_with_inputs(provenance: Dict[str, Any], gre: Any, run_name: str) -> Dict[str, Any]:
    prov = dict(provenance)
    prov["run_name"] = run_name
    prov["slicer_inputs"] = {k: gre.metadata.get(k) for k in (
        "phase_nodes", "magnitude_nodes", "phase_scaling", "te_source", "b0_source", "array_order")}
    return prov


def run_qsm_on_nodes(
    scene: Any,
    magnitude_nodes: Any,
    phase_nodes: Any,
    echo_times_s: Optional[Sequence[float]],
    b0_tesla: Optional[float],
    config: ConfigLike = None,
    mask_node: Any = None,
    progress: Optional[Callable[[float, str], None]] = None,
    log: Optional[Callable[[str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    run_name: str = "QSM",
    phase_rule: str = "auto",
    phase_sign: int = 1,
    output_names: Optional[Sequence[str]] = DEFAULT_OUTPUTS,
    dicom_database: Any = None,
) -> Dict[str, Any]:
    """Run the QSM pipeline on echo volume nodes (lists or sequence nodes) and add NEW result nodes to ``scene``.

    Returns ``{output name: node}`` (those of ``output_names`` the run produced; all outputs if ``None``), placed in
    a subject-hierarchy folder named ``run_name``; each node carries the run's provenance as JSON. Raises
    :class:`QSMLogic.errors.QSMCancelled` when ``cancel()`` turns true.
    """
    cfg = as_config(config)
    inp = prepare_inputs(magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, mask_node, phase_rule, phase_sign,
                         dicom_database)
    res = run_pipeline(inp.gre, cfg, mask=inp.mask, progress=progress, cancel=cancel, log=log)
    prov = _provenance_with_inputs(res.provenance, inp.gre, run_name)
    return ad.outputs_to_nodes(scene, res.outputs, inp.reference_node, run_name, prov, output_names)


@dataclass
class WorkerRun:
    """A background run prepared on disk: the command to start and where its results will appear."""

    command: list
    workdir: str
    output_dir: str
    reference_node: Any
    slicer_inputs: Dict[str, Any]


def prepare_worker_run(magnitude_nodes: Any, phase_nodes: Any, echo_times_s: Optional[Sequence[float]],
                       b0_tesla: Optional[float], config: ConfigLike = None, mask_node: Any = None,
                       phase_rule: str = "auto", phase_sign: int = 1, workdir: Optional[str] = None,
                       python: Optional[str] = None, dicom_database: Any = None) -> WorkerRun:
    """Write the inputs for ``python -m QSMLogic.worker`` and return the command line (nothing is started)."""
    cfg = as_config(config)
    inp = prepare_inputs(magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, mask_node, phase_rule, phase_sign,
                         dicom_database)
    wd = workdir or tempfile.mkdtemp(prefix="SusceptibilityMRI-")
    i, c, o = write_worker_input(wd, inp.gre, cfg.to_dict(), inp.mask)
    meta = {k: inp.gre.metadata.get(k) for k in ("phase_nodes", "magnitude_nodes", "phase_scaling", "te_source",
                                                  "b0_source", "array_order")}
    return WorkerRun(worker_command(i, c, o, python), wd, o, inp.reference_node, meta)


def import_worker_results(scene: Any, run: WorkerRun, run_name: str = "QSM",
                          output_names: Optional[Sequence[str]] = DEFAULT_OUTPUTS) -> Dict[str, Any]:
    """New result nodes from a finished worker run (same geometry and provenance as an in-process run)."""
    outputs, provenance = read_worker_output(run.output_dir)
    prov = dict(provenance, run_name=run_name, slicer_inputs=run.slicer_inputs)
    return ad.outputs_to_nodes(scene, outputs, run.reference_node, run_name, prov, output_names)


def run_swi_on_nodes(
    scene: Any,
    magnitude_nodes: Any,
    phase_nodes: Any,
    echo_times_s: Optional[Sequence[float]] = None,
    method: str = "homodyne",
    params: Optional[Dict[str, Any]] = None,
    mask_node: Any = None,
    run_name: str = "SWI",
    phase_rule: str = "auto",
    phase_sign: int = 1,
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    dicom_database: Any = None,
) -> Dict[str, Any]:
    """SWI (and mIP when ``mip_slab_mm > 0``; the module default is 16 mm) from magnitude and wrapped phase nodes,
    as NEW nodes.

    Only the SWI stage runs (``method`` one of :data:`SWI_MODULE_METHODS`). Echo times come from ``echo_times_s``
    or the data; B0 is not used by SWI (a placeholder is recorded when the nodes carry none). ``progress(fraction,
    label)`` is called between the steps (reading, filtering, writing nodes) and ``cancel()`` is checked there:
    :class:`QSMCancelled` is raised before any node is added.
    """
    if method not in SWI_MODULE_METHODS:
        raise QSMInputError(f"SWI method {method!r} needs QSM maps; the SWI module offers {list(SWI_MODULE_METHODS)}")
    report = progress or (lambda fraction, label: None)
    cancelled = cancel or (lambda: False)

    def step(fraction: float, label: str) -> None:
        if cancelled():
            raise QSMCancelled(f"SWI cancelled before: {label}")
        report(fraction, label)

    mags = ad.as_node_list(magnitude_nodes)
    if not mags:
        raise QSMInputError("SWI needs magnitude volumes (one per echo)")
    step(0.0, "Reading echo volumes")
    ph = ad.as_node_list(phase_nodes)
    b0 = ad.field_strength_from_nodes_t(ph + mags, dicom_database)
    inp = prepare_inputs(magnitude_nodes, phase_nodes, echo_times_s, b0 or SWI_PLACEHOLDER_B0_T, mask_node,
                         phase_rule, phase_sign, dicom_database)
    if b0 is None:
        inp.gre.metadata["b0_source"] = f"not needed by SWI ({SWI_PLACEHOLDER_B0_T} T placeholder)"
    gre = inp.gre
    chosen = dict(module_defaults_for("swi", method), **(params or {}))
    step(0.15, f"SWI: {stage('swi').method(method).label}")
    t0 = time.perf_counter()
    res = run_method("swi", method, {"magnitude": gre.magnitude, "phase": gre.phase_rad, "mask": inp.mask,
                                     "voxel_size_mm": gre.voxel_size_mm, "te_s": gre.te_s,
                                     "b0_direction": gre.b0_direction, "affine": gre.affine}, chosen)
    spec = stage("swi").method(method)
    prov = _provenance_with_inputs({
        "software": "SusceptibilityMRI (QSMLogic)",
        "stages": [{"stage": "swi", "method": method, "reference": spec.reference, "params": spec.resolve(chosen),
                    "seconds": round(time.perf_counter() - t0, 3)}],
        "input": {"shape": list(gre.shape), "te_s": [float(t) for t in gre.te_s],
                  "voxel_size_mm": list(gre.voxel_size_mm), "b0_direction": list(gre.b0_direction)},
    }, gre, run_name)
    outputs = {"swi": res.swi, "swi_phase_mask": res.phase_mask}
    if res.filtered_phase is not None:
        outputs["swi_phase_rad"] = res.filtered_phase
    if res.mip is not None:
        outputs["mip"] = res.mip
    step(0.9, "Creating result volumes")
    nodes = ad.outputs_to_nodes(scene, outputs, inp.reference_node, run_name, prov)
    report(1.0, "Done")
    return nodes


__all__ = ["DEFAULT_OUTPUTS", "PreparedInputs", "SWI_MODULE_METHODS", "WorkerRun", "as_config",
           "import_worker_results", "prepare_inputs", "prepare_worker_run", "run_qsm_on_nodes", "run_swi_on_nodes"]
