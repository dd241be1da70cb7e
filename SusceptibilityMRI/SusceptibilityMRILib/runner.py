"""Node-level runs: echo volume nodes in, new result nodes out (the body of the QSM and SWI module logic).

:func:`run_qsm_on_nodes` runs the whole pipeline (:func:`QSMLogic.pipeline.run_pipeline`) in this process;
:func:`start_background_run` does the same in a background worker process (a :class:`BackgroundRun` to poll);
an SWI-only run is :func:`run_qsm_on_nodes` with ``PipelineConfig.swi_only()``. All take the scene explicitly
and never modify input nodes.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

import QSMLogic
from QSMLogic.params import stage
from QSMLogic.phase_sign import parse_phase_sign, run_with_phase_sign_choice
from QSMLogic.pipeline import SWI_NEEDS, PipelineConfig, check_stage_selection
from QSMLogic.worker import read_worker_output, worker_command, write_worker_input

from . import mrml_adapter as ad
from .process import WorkerProcess, python_executable, worker_environment

ConfigLike = Union[None, PipelineConfig, Dict[str, Any], str]
#: A phase-sign choice: "auto" (decided from the data, as the command line's default) or +1/−1 (as int or text).
PhaseSignChoice = Union[str, int]

#: Outputs added to the scene by default (the rest stay available through ``output_names``).
DEFAULT_OUTPUTS = ("magnitude", "chi_ppm", "local_field_ppm", "total_field_ppm", "r2star_hz", "swi", "mip",
                   "swi_phase_rad", "swi_phase_mask", "qsm_mask", "chi_para_ppm", "chi_dia_ppm")
#: Outputs of an SWI-only run (:meth:`QSMLogic.pipeline.PipelineConfig.swi_only`).
SWI_OUTPUTS = ("swi", "mip", "swi_phase_rad", "swi_phase_mask")


def swi_module_methods() -> Tuple[str, ...]:
    """SWI methods an SWI-only run can use: those that need nothing but magnitude and wrapped phase."""
    return tuple(m.key for m in stage("swi").methods if m.key not in SWI_NEEDS)


def needs_b0(config: PipelineConfig) -> bool:
    """Whether a run needs the field strength: the field-mapping stage and the QSM chain after it use it."""
    return bool(config.stages["field_mapping"].get("enabled", True))


def as_config(config: ConfigLike) -> PipelineConfig:
    """A validated PipelineConfig from ``None`` (the library's defaults), a PipelineConfig (used as it is), its dict
    or its JSON string (the library's defaults overridden by it)."""
    if config is None:
        return PipelineConfig.default()
    if isinstance(config, PipelineConfig):
        config.validate()
        return config
    if isinstance(config, str):
        config = json.loads(config) if config.strip() else {}
    return PipelineConfig.from_dict(config)


@dataclass
class PreparedInputs:
    """What a run needs once the nodes are read: the GRE data, the optional mask, the reference node, the
    optional R2 map (Hz) on the data's grid with what the provenance records about it, and whether the phase sign
    is decided from the data (``phase_sign_auto``; the GRE data are then read with +1, the convention's sign)."""

    gre: Any
    mask: Any
    reference_node: Any
    r2_hz: Any = None
    r2_input: Optional[Dict[str, Any]] = None
    phase_sign_auto: bool = False


def prepare_inputs(magnitude_nodes: Any, phase_nodes: Any, echo_times_s: Optional[Sequence[float]],
                   b0_tesla: Optional[float], mask_node: Any = None, phase_rule: str = "auto",
                   phase_sign: PhaseSignChoice = "auto", dicom_database: Any = None, require_b0: bool = True,
                   r2_node: Any = None, r2_quantity: str = "r2") -> PreparedInputs:
    """Read the echo volumes (and mask: label map or segmentation) into a GREData in (i, j, k) order with checked
    geometry. ``echo_times_s``/``b0_tesla`` ``None`` (or B0 <= 0): read from the data (see mrml_adapter); a B0 the
    data do not give stays ``None`` unless ``require_b0``. ``phase_sign``: "auto" (read with +1, the sign decided
    by the run) or +1/−1 (read with it, only checked). ``r2_node``: an R2 (``r2_quantity`` ``"r2"``, 1/s) or
    T2 (``"t2_ms"``, ``"t2_s"``) volume on any grid for source separation, resampled onto the echo grid
    (:func:`~.mrml_adapter.r2_from_node`)."""
    sign = parse_phase_sign(phase_sign)
    gre = ad.gre_from_nodes(magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, phase_rule,
                            1 if sign is None else sign, dicom_database=dicom_database, require_b0=require_b0)
    reference = ad.as_node_list(phase_nodes)[0]
    mask = ad.mask_from_node(mask_node, reference) if mask_node is not None else None
    if r2_node is None:
        return PreparedInputs(gre, mask, reference, phase_sign_auto=sign is None)
    r2 = ad.r2_from_node(r2_node, reference, r2_quantity)
    same_grid = r2_node.GetImageData().GetDimensions() == reference.GetImageData().GetDimensions() and bool(
        np.allclose(ad.ijk_to_ras(r2_node), ad.ijk_to_ras(reference), atol=1e-4))
    return PreparedInputs(gre, mask, reference, r2, {
        "node": r2_node.GetName(), "quantity": r2_quantity,
        "resampled": "no (on the echo grid)" if same_grid else "trilinear, through both IJK-to-RAS matrices"},
        phase_sign_auto=sign is None)


def _slicer_inputs(inp: PreparedInputs) -> Dict[str, Any]:
    """What the provenance records about the Slicer inputs (node names, phase scaling, where TE and B0 came from,
    the R2 map's node when given)."""
    out = {k: inp.gre.metadata.get(k) for k in (
        "phase_nodes", "magnitude_nodes", "phase_scaling", "te_source", "b0_source", "array_order")}
    if inp.r2_input is not None:
        out["r2_map"] = inp.r2_input
    return out


def _configured_inputs(config: ConfigLike, magnitude_nodes: Any, phase_nodes: Any,
                       echo_times_s: Optional[Sequence[float]], b0_tesla: Optional[float], mask_node: Any,
                       phase_rule: str, phase_sign: PhaseSignChoice, dicom_database: Any, r2_node: Any = None,
                       r2_quantity: str = "r2") -> Tuple[PipelineConfig, PreparedInputs]:
    """The validated configuration and the inputs read for it (a B0 required only when the configuration uses it;
    the R2 map when given): what both the in-process and the background run start from."""
    cfg = as_config(config)
    return cfg, prepare_inputs(magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, mask_node, phase_rule,
                               phase_sign, dicom_database, require_b0=needs_b0(cfg), r2_node=r2_node,
                               r2_quantity=r2_quantity)


def _add_result_nodes(scene: Any, outputs: Dict[str, Any], provenance: Dict[str, Any], reference_node: Any,
                      slicer_inputs: Dict[str, Any], run_name: str,
                      output_names: Optional[Sequence[str]]) -> Dict[str, Any]:
    """A finished run's outputs as new nodes (see :func:`run_qsm_on_nodes`), their provenance completed with the
    run name and the Slicer inputs: how both the in-process and the background run end."""
    prov = dict(provenance, run_name=run_name, slicer_inputs=slicer_inputs)
    return ad.outputs_to_nodes(scene, outputs, reference_node, run_name, prov, output_names)


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
    phase_sign: PhaseSignChoice = "auto",
    output_names: Optional[Sequence[str]] = DEFAULT_OUTPUTS,
    dicom_database: Any = None,
    r2_node: Any = None,
    r2_quantity: str = "r2",
) -> Dict[str, Any]:
    """Run the QSM pipeline on echo volume nodes (lists or sequence nodes) and add NEW result nodes to ``scene``.

    Returns ``{output name: node}`` (those of ``output_names`` the run produced; all outputs if ``None``), placed in
    a subject-hierarchy folder named ``run_name``; each node carries the run's provenance as JSON. Raises
    :class:`QSMLogic.errors.QSMCancelled` when ``cancel()`` turns true. A configuration without the QSM chain
    (:meth:`~QSMLogic.pipeline.PipelineConfig.swi_only`) needs no B0. ``r2_node``/``r2_quantity``: the R2 (or T2)
    map that source separation's ``r2prime`` and ``joint`` methods need (see :func:`prepare_inputs`).

    ``phase_sign`` "auto" (default) decides the sign as the command line does
    (:func:`QSMLogic.phase_sign.run_with_phase_sign`: the vendor prior from the nodes' manufacturer, else +1; the
    veins of the χ map tested; the whole pipeline rerun with the other sign when they come out diamagnetic, so
    progress runs twice then); +1/−1 use that sign and only check it (a WARNING naming the other one when the
    veins contradict it). The decision and its evidence go to ``log`` and the provenance (``phase_sign``).
    """
    cfg, inp = _configured_inputs(config, magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, mask_node,
                                  phase_rule, phase_sign, dicom_database, r2_node, r2_quantity)
    res = run_with_phase_sign_choice(inp.gre, cfg, auto=inp.phase_sign_auto, mask=inp.mask, progress=progress,
                                     cancel=cancel, log=log, r2_hz=inp.r2_hz)
    return _add_result_nodes(scene, res.outputs, res.provenance, inp.reference_node, _slicer_inputs(inp),
                             run_name, output_names)


class BackgroundRun:
    """A pipeline run in the background worker process (:mod:`QSMLogic.worker`), driven by :meth:`poll`.

    :func:`start_background_run` writes the inputs into a temporary folder and starts the worker. The caller calls
    :meth:`poll` from its event loop (the module logic from a ``QTimer``): it forwards progress and log lines to
    ``progress(fraction, label)`` / ``log(text)``, and once the worker has exited adds the result nodes to the scene
    (same nodes, geometry and provenance as :func:`run_qsm_on_nodes`), deletes the folder and calls
    ``on_done(nodes, error)`` once: ``nodes`` the ``{output name: node}`` dict and ``error`` None, or ``nodes``
    None and ``error`` the exception (:class:`QSMCancelled` after :meth:`cancel`, :class:`~.process.WorkerError`
    when the worker failed, with its standard error). :meth:`cancel` stops the whole process tree; no node is added.
    """

    def __init__(self, scene: Any, process: WorkerProcess, workdir: str, output_dir: str, reference_node: Any,
                 slicer_inputs: Dict[str, Any], run_name: str, output_names: Optional[Sequence[str]],
                 progress: Optional[Callable[[float, str], None]] = None, log: Optional[Callable[[str], None]] = None,
                 on_done: Optional[Callable[[Optional[Dict[str, Any]], Optional[BaseException]], None]] = None):
        self.scene, self.process, self.workdir, self.output_dir = scene, process, workdir, output_dir
        self.reference_node, self.slicer_inputs = reference_node, slicer_inputs
        self.run_name, self.output_names = run_name, output_names
        self.progress, self.log, self.on_done = progress, log, on_done
        self.nodes: Optional[Dict[str, Any]] = None
        self.error: Optional[BaseException] = None
        self.finished = False

    def poll(self) -> bool:
        """Hand out new progress/log lines; finish when the worker has exited. True once finished."""
        if self.finished:
            return True
        for event in self.process.poll():
            if event.kind == "progress" and self.progress is not None:
                self.progress(event.fraction, event.text)
            elif event.kind in ("log", "text") and event.text and self.log is not None:
                self.log(event.text)
        if self.process.finished:
            self._finish()
        return self.finished

    def cancel(self) -> None:
        """Stop the worker (its whole process tree) and finish with :class:`QSMCancelled`; nothing is added."""
        if not self.finished:
            self.process.cancel()
            self._finish()

    def _finish(self) -> None:
        try:
            self.process.check_result()
            outputs, provenance = read_worker_output(self.output_dir)
            self.nodes = _add_result_nodes(self.scene, outputs, provenance, self.reference_node, self.slicer_inputs,
                                           self.run_name, self.output_names)
        except Exception as exc:  # handed to on_done: the caller decides how to show it
            self.error = exc
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.finished = True
        if self.on_done is not None:
            self.on_done(self.nodes, self.error)


def start_background_run(
    scene: Any,
    magnitude_nodes: Any,
    phase_nodes: Any,
    echo_times_s: Optional[Sequence[float]],
    b0_tesla: Optional[float],
    config: ConfigLike = None,
    mask_node: Any = None,
    progress: Optional[Callable[[float, str], None]] = None,
    log: Optional[Callable[[str], None]] = None,
    on_done: Optional[Callable[[Optional[Dict[str, Any]], Optional[BaseException]], None]] = None,
    run_name: str = "QSM",
    phase_rule: str = "auto",
    phase_sign: PhaseSignChoice = "auto",
    output_names: Optional[Sequence[str]] = DEFAULT_OUTPUTS,
    dicom_database: Any = None,
    python: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    r2_node: Any = None,
    r2_quantity: str = "r2",
) -> BackgroundRun:
    """Read the nodes, write the worker's inputs and start it; returns the :class:`BackgroundRun` to poll.

    Arguments as :func:`run_qsm_on_nodes`; ``python`` (default: PythonSlicer, else this interpreter) runs the
    worker with environment ``env`` (default: this process's, with the folder holding QSMLogic on PYTHONPATH).
    Bad input raises here, before anything starts; so does a worker that cannot be started
    (:class:`~.process.WorkerError`).
    """
    cfg, inp = _configured_inputs(config, magnitude_nodes, phase_nodes, echo_times_s, b0_tesla, mask_node,
                                  phase_rule, phase_sign, dicom_database, r2_node, r2_quantity)
    # refused here, not in the worker: a missing R2 map (or other stage conflict) is an input error before the start
    check_stage_selection(cfg, inp.gre, mask_given=inp.mask is not None, r2_given=inp.r2_hz is not None)
    workdir = tempfile.mkdtemp(prefix="SusceptibilityMRI-")
    try:
        i, c, o = write_worker_input(workdir, inp.gre, cfg.to_dict(), inp.mask, r2_hz=inp.r2_hz,
                                     phase_sign_auto=inp.phase_sign_auto)
        library_root = os.path.dirname(os.path.dirname(os.path.abspath(QSMLogic.__file__)))
        process = WorkerProcess(worker_command(i, c, o, python or python_executable()),
                                env if env is not None else worker_environment(library_root))
        process.start()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return BackgroundRun(scene, process, workdir, o, inp.reference_node, _slicer_inputs(inp), run_name,
                         output_names, progress, log, on_done)


__all__ = ["BackgroundRun", "DEFAULT_OUTPUTS", "PreparedInputs", "SWI_OUTPUTS", "as_config", "prepare_inputs",
           "run_qsm_on_nodes", "start_background_run", "swi_module_methods"]
