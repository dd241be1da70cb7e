"""QSM: quantitative susceptibility mapping (and R2*, SWI) from multi-echo gradient-echo magnitude and phase.

Slicer scripted module (ExtensionWizard layout): QSM (module), QSMParameterNode, QSMWidget (thin GUI), QSMLogic
(module logic, usable from the Python console) and QSMTest. All MRML work lives in the extension's shared package
SusceptibilityMRILib (no Qt, tested with pytest on slicer-core); all processing lives in the pure library
``QSMLogic`` (imported here as ``qsmlib`` — the module logic class below is also called ``QSMLogic``, as Slicer's
naming convention requires).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Annotated, Any, Dict, List, Optional, Sequence, Union

import qt
import slicer
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

try:
    import SusceptibilityMRILib  # noqa: F401  (installed next to the module; makes QSMLogic importable)
except ImportError:  # source checkout: the shared package is a sibling of the module folders
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import SusceptibilityMRILib  # noqa: F401
import QSMLogic as qsmlib  # the library package, bound before the module logic class of the same name
from QSMLogic.phase_sign import PHASE_SIGN_CHOICES
from SusceptibilityMRILib import mrml_adapter, widgets
from SusceptibilityMRILib.binding import ParameterNodeBinding
from SusceptibilityMRILib.logic import EchoInputsLogicMixin
from SusceptibilityMRILib.module_info import describe_module
from SusceptibilityMRILib.mrml_adapter import PHASE_SCALING_CHOICES, R2_QUANTITIES

#: Atlases "Measure nuclei" offers (QSMLogic.roi.atlas.load_atlas): CIT168 shipped, PD25 from the user's folder.
NUCLEI_ATLASES = ("cit168", "pd25")


#
# QSM
#


class QSM(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        describe_module(
            self.parent, "QSM",
            "Quantitative susceptibility mapping from multi-echo GRE magnitude and phase: coil combination, brain "
            "mask, phase unwrapping, field fit, R2*, background removal, dipole inversion, referencing and SWI. "
            "Every method's parameters and reference are shown as tooltips. Results are new volumes in a "
            "subject-hierarchy folder with their provenance (node attribute SusceptibilityMRI.Provenance).",
            "Methods are cited where they are offered (tooltips, provenance); see docs/slicer.md.")


#
# QSMParameterNode
#


@parameterNodeWrapper
class QSMParameterNode:
    """GUI state saved with the scene. ``configJson`` holds the chosen methods/parameters of every stage.

    Inputs are the checked echo volumes, or a sequence (4D) node per role, which takes precedence when set.
    ``b0Tesla`` 0 means "from the data"; ``echoTimesMs`` empty likewise. ``phaseSign`` "auto" decides the phase
    sign from the data as the command line does (vendor prior, then the veins of the χ map; flipped and rerun when
    they come out diamagnetic); "+1"/"-1" force it (only checked). Scenes saved with the former ``flipPhase`` check
    box are brought to it by :func:`SusceptibilityMRILib.mrml_adapter.migrate_flip_phase`. ``maskVolume`` is a
    label map or a segmentation. ``r2Volume`` is the R2 (or T2, as ``r2Quantity`` says) map for source
    separation, on any grid.
    The ``nuclei…`` fields feed "Measure nuclei" (:meth:`QSMLogic.measureNuclei`): the χ volume, its brain mask,
    the regions (a label map or segmentation; none: the atlas registered to χ), the atlas and PD25's folder, the
    reference (``whole_brain``, ``region:<name>`` or ``none``), the erosion and the name of the result folder.
    """

    magnitudeVolumes: list[vtkMRMLScalarVolumeNode]
    phaseVolumes: list[vtkMRMLScalarVolumeNode]
    magnitudeSequence: vtkMRMLSequenceNode
    phaseSequence: vtkMRMLSequenceNode
    echoTimesMs: str = ""
    b0Tesla: Annotated[float, WithinRange(0.0, 21.1)] = 0.0
    phaseScaling: Annotated[str, Choice(list(PHASE_SCALING_CHOICES))] = "auto"
    phaseSign: Annotated[str, Choice(list(PHASE_SIGN_CHOICES))] = "auto"
    maskVolume: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    r2Volume: vtkMRMLScalarVolumeNode
    r2Quantity: Annotated[str, Choice(list(R2_QUANTITIES))] = "r2"
    runName: str = "QSM"
    runInBackground: bool = True
    allOutputs: bool = False
    showResults: bool = True
    configJson: str = ""
    nucleiChiVolume: vtkMRMLScalarVolumeNode
    nucleiMaskVolume: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    nucleiRegions: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    nucleiAtlas: Annotated[str, Choice(list(NUCLEI_ATLASES))] = "cit168"
    nucleiAtlasFolder: str = ""
    nucleiReference: str = "whole_brain"
    nucleiErosionMm: Annotated[float, WithinRange(0.0, 10.0)] = 0.0
    nucleiRunName: str = "Nuclei"


#
# QSMWidget
#


class QSMWidget(widgets.EchoInputsWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: reads parameters, calls the logic (in a background process), shows results."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[QSMLogic] = None
        self._parameterNode: Optional[QSMParameterNode] = None
        self._binding: Optional[ParameterNodeBinding] = None
        self._config = None
        self._stages: Dict[str, Any] = {}
        self._paramWidgets: Dict[str, Dict[str, Any]] = {}
        self._updatingForms = False
        self._job = None  # the background run in progress (SusceptibilityMRILib.runner.BackgroundRun)
        self._progress = None  # its progress dialog
        self._cancelRequested = False
        #: Echo-time text and B0 last filled in from the data: a field still holding it was not edited by the user.
        self._autoEchoTimesMs: Optional[str] = None
        self._autoB0Tesla: Optional[float] = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("UI/QSM.ui", QSMLogic())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.connectEchoInputs()
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.resetParametersButton.connect("clicked(bool)", self.onResetParameters)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.measureNucleiButton.connect("clicked(bool)", self.onMeasureNucleiButton)

        self._updateDependencyState()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
        super().cleanup()

    def onSceneStartClose(self, caller, event) -> None:
        # A run must not outlive its scene: stop the background worker (its whole process tree) and discard its
        # files, and make a run in this process stop at its next cancel check (its results would reference nodes
        # of the closed scene).
        self._cancelRequested = True
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = "Stopped: the scene was closed during the run; no results were added."
        self._autoEchoTimesMs = self._autoB0Tesla = None
        self.setParameterNode(None)

    def onSceneEndImport(self, caller, event) -> None:
        self.initializeParameterNode()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = (mrml_adapter.inputs_ready(self._parameterNode) and self._config is not None
                 and self._job is None)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = ("Compute QSM" if ready else
                                       "Select phase echo volumes or a phase sequence (and install dependencies)")
        p = self._parameterNode
        canMeasure = p is not None and p.nucleiChiVolume is not None
        self.ui.measureNucleiButton.enabled = canMeasure
        self.ui.measureNucleiButton.toolTip = ("Measure χ per nucleus and hemisphere" if canMeasure else
                                               "Select the χ volume to measure")

    # ---- inputs

    def _refreshFromParameterNode(self) -> None:
        self._loadConfig()

    def _updateInputInfo(self) -> None:
        """Phase scaling, echo times and B0 of the selected echoes, refreshed on every selection change.

        The echo-time and B0 fields are filled from the data whenever the data's values change; a value the user
        typed stays (and overrides the data) until the selected data give different values. Without packages this
        degrades to a prompt to install them instead of an exception.
        """
        p = self._parameterNode
        try:
            from SusceptibilityMRILib import param_forms

            mags, phases = self._selectedInputs()
            if not phases:
                self.ui.phaseScalingLabel.text = self.ui.acquisitionLabel.text = ""
                return
            self.ui.phaseScalingLabel.text = self.logic.describeInputs(mags, phases)
            acq = self.logic.acquisitionFromNodes(mags, phases)
        except ImportError as exc:
            self.ui.acquisitionLabel.text = (f"Install the Python packages ({exc.name or exc} is missing) to read echo "
                                             "times and B0 from BIDS sidecars; or enter them.")
            return
        except qsmlib.QSMInputError as exc:
            self.ui.acquisitionLabel.text = f"Echo times / B0: {exc}"
            return
        dataTe = ", ".join(f"{t * 1e3:g}" for t in acq.te_s) if acq.te_s else None
        p.echoTimesMs, self._autoEchoTimesMs = param_forms.refill_from_data(
            p.echoTimesMs.strip(), self._autoEchoTimesMs, dataTe, "")
        b0, self._autoB0Tesla = param_forms.refill_from_data(
            float(p.b0Tesla), self._autoB0Tesla, None if acq.b0_tesla is None else round(acq.b0_tesla, 2), 0.0)
        p.b0Tesla = b0
        self.ui.acquisitionLabel.text = param_forms.acquisition_text(acq)

    def _userEchoTimesS(self) -> Optional[List[float]]:
        """Echo times the user entered (s); ``None`` when the field is empty or holds the data's values."""
        text = self._parameterNode.echoTimesMs.strip()
        if not text or text == self._autoEchoTimesMs:
            return None
        return mrml_adapter.parse_echo_times_ms(text)

    def _userB0Tesla(self) -> Optional[float]:
        """B0 the user entered (T); ``None`` for 0 ("from the data") or the data's own value."""
        b0 = float(self._parameterNode.b0Tesla)
        if b0 <= 0 or (self._autoB0Tesla is not None and b0 == self._autoB0Tesla):
            return None
        return b0

    # ---- dependencies and stage forms

    def _updateDependencyState(self) -> None:
        missing = self.logic.missingDependencies()
        widgets.show_dependency_state(self.ui.dependenciesLabel, self.ui.installDependenciesButton, missing)
        if not missing and not self._stages:
            self._buildStageForms()

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to install Python packages.", waitCursor=True):
            if self._ensureDependencies():
                self._updateDependencyState()
                self._loadConfig()
                self._checkCanApply()
                if self._parameterNode:
                    self._updateInputInfo()

    def _buildStageForms(self) -> None:
        from SusceptibilityMRILib import param_forms

        self._stages = param_forms.stage_specs()
        for key, stage in self._stages.items():
            names = param_forms.stage_widget_names(key)
            getattr(self.ui, names["collapsible"]).toolTip = stage.help
            if "note" in names:  # a stage the module cannot feed: the form stays visible, read-only, with the reason
                getattr(self.ui, names["note"]).text = param_forms.UNAVAILABLE_STAGES[key]
                getattr(self.ui, names["method"]).enabled = False
                getattr(self.ui, names["parameters"]).enabled = False
            combo = getattr(self.ui, names["method"])
            wasBlocked = combo.blockSignals(True)
            combo.clear()
            for label, methodKey in param_forms.method_items(stage):
                combo.addItem(label, methodKey)
                combo.setItemData(combo.count - 1, stage.method(methodKey).reference, qt.Qt.ToolTipRole)
            combo.blockSignals(wasBlocked)
            combo.connect("currentIndexChanged(int)", lambda index, k=key: self.onMethodChanged(k))
            if "enabled" in names:
                getattr(self.ui, names["enabled"]).connect("toggled(bool)",
                                                           lambda on, k=key: self.onStageEnabled(k, on))

    def _loadConfig(self) -> None:
        """Config from the parameter node's JSON (a restored scene) into the stage forms."""
        if not self._stages or not self._parameterNode:
            return
        from SusceptibilityMRILib import param_forms

        try:
            self._config = param_forms.config_from_json(self._parameterNode.configJson)
        except (ValueError, qsmlib.QSMInputError) as exc:
            logging.warning(f"QSM: stored configuration ignored ({exc}); using defaults")
            self._config = param_forms.config_from_json("")
        self._updatingForms = True
        try:
            for key in self._stages:
                names = param_forms.stage_widget_names(key)
                combo = getattr(self.ui, names["method"])
                index = combo.findData(self._config.stages[key]["method"])
                wasBlocked = combo.blockSignals(True)
                combo.currentIndex = max(index, 0)
                combo.blockSignals(wasBlocked)
                if "enabled" in names:
                    getattr(self.ui, names["enabled"]).checked = bool(self._config.stages[key].get("enabled", True))
                self._rebuildParameterForm(key)
        finally:
            self._updatingForms = False

    def _storeConfig(self) -> None:
        from SusceptibilityMRILib import param_forms

        if self._parameterNode and self._config is not None and not self._updatingForms:
            self._parameterNode.configJson = param_forms.config_to_json(self._config)

    def onMethodChanged(self, stageKey: str) -> None:
        from SusceptibilityMRILib import param_forms

        combo = getattr(self.ui, param_forms.stage_widget_names(stageKey)["method"])
        self._config.set(stageKey, method=combo.currentData)
        self._rebuildParameterForm(stageKey)
        self._storeConfig()

    def onStageEnabled(self, stageKey: str, enabled: bool) -> None:
        self._config.stages[stageKey]["enabled"] = bool(enabled)
        self._storeConfig()

    def _rebuildParameterForm(self, stageKey: str) -> None:
        from SusceptibilityMRILib import param_forms

        frame = getattr(self.ui, param_forms.stage_widget_names(stageKey)["parameters"])
        method = self._stages[stageKey].method(self._config.stages[stageKey]["method"])
        self._paramWidgets[stageKey] = widgets.fill_parameter_form(
            frame, param_forms.method_form(method), self._config.resolved(stageKey),
            lambda spec, raw: self.onParameterChanged(stageKey, spec, raw))

    def onParameterChanged(self, stageKey: str, spec, raw) -> None:
        from SusceptibilityMRILib import param_forms

        if self._updatingForms:
            return
        with slicer.util.tryWithErrorDisplay(f"Invalid value for {spec.label}."):
            self._config.set(stageKey, **{spec.name: param_forms.value_from_widget(spec, raw)})
            self._storeConfig()

    def onResetParameters(self) -> None:
        if self._parameterNode:
            self._parameterNode.configJson = ""
            self._loadConfig()

    # ---- run

    def _runArguments(self) -> Dict[str, Any]:
        p = self._parameterNode
        mags, phases = self._selectedInputs()
        return dict(
            magnitude_nodes=mags, phase_nodes=phases, echo_times_s=self._userEchoTimesS(),
            b0_tesla=self._userB0Tesla(), config=self._config, mask_node=p.maskVolume, phase_rule=p.phaseScaling,
            phase_sign=p.phaseSign, r2_node=p.r2Volume, r2_quantity=p.r2Quantity)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to compute QSM.", waitCursor=True):
            if not self._ensureDependencies():
                return
            self._updateDependencyState()
            if self._config is None:
                self._loadConfig()
            p = self._parameterNode
            outputs = None if p.allOutputs else self.logic.defaultOutputs()
            self._cancelRequested = False
            if p.runInBackground:
                self._startBackgroundRun(outputs)
                return
            try:
                nodes = widgets.run_with_progress("QSM", lambda progress, cancel: self.logic.run(
                    **self._runArguments(), progress=progress, cancel=cancel, log=logging.info,
                    run_name=p.runName, output_names=outputs), lambda: self._cancelRequested)
            except qsmlib.QSMCancelled:  # the user asked for it: a status message, not an error box
                self.ui.statusLabel.text = "Cancelled; no results were added."
                return
            self._showResults(nodes)

    def _startBackgroundRun(self, outputs: Optional[Sequence[str]]) -> None:
        self._progress = widgets.BackgroundProgress("QSM")
        try:
            self._job = self.logic.run(
                **self._runArguments(), background=True, progress=self._progress.progress, log=logging.info,
                cancel=self._progress.cancel, on_done=self._onBackgroundDone, run_name=self._parameterNode.runName,
                output_names=outputs)
        except Exception:
            self._progress.close()
            self._progress = None
            raise
        self._checkCanApply()

    def _onBackgroundDone(self, nodes: Optional[Dict[str, Any]], error: Optional[BaseException]) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        self._job = None
        self._checkCanApply()
        if isinstance(error, qsmlib.QSMCancelled):
            self.ui.statusLabel.text = "Cancelled; no results were added."
        elif error is not None:
            self.ui.statusLabel.text = "Failed: " + (str(error).strip().splitlines() or ["see the log"])[0]
            slicer.util.errorDisplay("QSM failed.", detailedText=str(error))
        else:
            self._showResults(nodes)

    def _showResults(self, nodes: Dict[str, Any]) -> None:
        self.ui.statusLabel.text = f"Created {len(nodes)} volumes: " + ", ".join(sorted(nodes))
        if self._parameterNode.showResults:
            self.logic.showResults(nodes)

    # ---- deep grey nuclei

    def _nucleiArguments(self) -> Dict[str, Any]:
        p = self._parameterNode
        return dict(chi_node=p.nucleiChiVolume, mask_node=p.nucleiMaskVolume, regions_node=p.nucleiRegions,
                    atlas_name=p.nucleiAtlas, atlas_folder=p.nucleiAtlasFolder.strip() or None,
                    reference=p.nucleiReference.strip() or "whole_brain", erosion_mm=float(p.nucleiErosionMm),
                    run_name=p.nucleiRunName.strip() or "Nuclei")

    def onMeasureNucleiButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to measure the nuclei.", waitCursor=True):
            if not self._ensureDependencies():
                return
            self._cancelRequested = False
            try:
                result = widgets.run_with_progress("Measure nuclei", lambda progress, cancel: self.logic.measureNuclei(
                    **self._nucleiArguments(), progress=progress, cancel=cancel), lambda: self._cancelRequested)
            except qsmlib.QSMCancelled:
                self.ui.nucleiStatusLabel.text = "Cancelled; no nodes were added."
                return
            self.ui.nucleiStatusLabel.text = self.logic.describeNuclei(result)
            self.logic.showNuclei(result)


#
# QSMLogic
#


class QSMLogic(EchoInputsLogicMixin, ScriptedLoadableModuleLogic):
    """Module logic, usable from the Python console::

        import QSM
        nodes = QSM.QSMLogic().run(magnitude_nodes, phase_nodes, echo_times_s=[0.004, 0.008], b0_tesla=3.0)

    Plain arguments (nodes or sequence nodes, numbers), returns ``{output name: new volume node}``, raises
    ``QSMInputError`` for bad input and ``QSMCancelled`` when ``cancel()`` turns true; opens no dialogs, except the
    consent prompt of :meth:`ensureDependencies` when packages are missing and no ``confirm`` callback is given.
    """

    requester = "SusceptibilityMRI (QSM)"

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        node = super().getParameterNode()
        mrml_adapter.migrate_flip_phase(node)  # a scene saved with the former "Flip phase sign" check box
        return QSMParameterNode(node)

    # ---- dependencies

    def acquisitionFromNodes(self, magnitudeNodes: Any, phaseNodes: Any, database: Any = None):
        """Echo times (s) and B0 (T) the data give (node attributes, Slicer's DICOM database, sequence index, BIDS
        sidecar), each with its source: a ``SusceptibilityMRILib.mrml_adapter.AcquisitionInfo``."""
        return mrml_adapter.acquisition_from_nodes(magnitudeNodes, phaseNodes, database)

    def echoTimesFromNodesMs(self, nodes: Sequence[Any]) -> Optional[List[float]]:
        """Echo times (ms) the data give for these echo volumes, sorted; None if any volume has none."""
        te = mrml_adapter.echo_times_from_nodes_s(list(nodes))
        return sorted(t * 1e3 for t in te) if te else None

    def defaultOutputs(self) -> Sequence[str]:
        from SusceptibilityMRILib import runner

        return runner.DEFAULT_OUTPUTS

    # ---- run

    def run(self, magnitude_nodes, phase_nodes, echo_times_s=None, b0_tesla=None, config=None, mask_node=None,
            progress=None, log=None, cancel=None, run_name: str = "QSM", phase_rule: str = "auto",
            phase_sign: Union[str, int] = "auto", output_names: Optional[Sequence[str]] = None,
            background: bool = False, on_done=None, r2_node=None, r2_quantity: str = "r2"):
        """Run the QSM pipeline; returns ``{output name: new node}`` (see SusceptibilityMRILib.runner).

        ``echo_times_s``/``b0_tesla`` ``None``: taken from the data (DICOM attributes or database, sequence index,
        BIDS sidecar). ``mask_node``: a label map or a segmentation. ``config``: None for the library's defaults.
        ``phase_sign``: "auto" (default) decides it as the command line does (the manufacturer the nodes name as a
        prior, then the veins of the χ map; the run is repeated with the other sign when they come out
        diamagnetic); +1/-1 force it and only check it. The decision and its evidence are logged and kept in the
        provenance (``phase_sign``).
        ``r2_node``: the R2 map (``r2_quantity`` ``"r2"``, 1/s) or T2 map (``"t2_ms"``, ``"t2_s"``) that source
        separation's ``r2prime`` and ``joint`` methods need, on any grid (resampled onto the echoes' through both
        IJK-to-RAS matrices).

        ``background=True`` runs it in a separate process (``PythonSlicer -m QSMLogic.worker``) so Slicer stays
        responsive, and returns at once a ``BackgroundRun``: a timer polls it, calls ``progress``/``log`` from
        Slicer's event loop, stops it once ``cancel()`` turns true (or on ``run.cancel()``) and, when it ends,
        adds the result nodes and calls ``on_done(nodes, error)`` (``error`` None, ``QSMCancelled`` or the
        worker's failure with its standard error). Bad input still raises here, before anything starts.
        """
        from SusceptibilityMRILib import runner

        arguments = dict(progress=progress, log=log, run_name=run_name, phase_rule=phase_rule,
                         phase_sign=phase_sign, r2_node=r2_node, r2_quantity=r2_quantity,
                         output_names=runner.DEFAULT_OUTPUTS if output_names is None else output_names)
        if not background:
            return runner.run_qsm_on_nodes(slicer.mrmlScene, magnitude_nodes, phase_nodes, echo_times_s, b0_tesla,
                                           config, mask_node, cancel=cancel, **arguments)
        job = runner.start_background_run(slicer.mrmlScene, magnitude_nodes, phase_nodes, echo_times_s, b0_tesla,
                                          config, mask_node, on_done=on_done, **arguments)
        widgets.poll_until_finished(job, cancel)
        return job

    def showResults(self, nodes: Dict[str, Any]) -> Dict[str, str]:
        """Magnitude | QSM | SWI side by side in three axial views."""
        return widgets.show_results(nodes)

    # ---- deep grey nuclei

    def measureNuclei(self, chi_node, mask_node=None, regions_node=None, atlas_name: str = "cit168",
                      atlas_folder: Optional[str] = None, reference: str = "whole_brain", erosion_mm: float = 0.0,
                      progress=None, cancel=None, run_name: str = "Nuclei", chi_para_node=None, chi_dia_node=None,
                      separation_mask_node=None):
        """χ per nucleus and hemisphere: a table node, a Segmentation node of the nuclei and a bar plot (see
        SusceptibilityMRILib.roi_nodes). Regions from ``regions_node`` (label map or segmentation, any grid) or the
        atlas (``cit168`` shipped; ``pd25`` from ``atlas_folder``) registered to the χ map. The source-separation
        result nodes (χ⁺, |χ⁻|, its mask) add χ⁺ and |χ⁻| columns."""
        from SusceptibilityMRILib import roi_nodes

        from QSMLogic.roi.atlas import load_atlas

        atlas = None if regions_node is not None else load_atlas(atlas_name, atlas_folder)
        return roi_nodes.measure_nuclei(slicer.mrmlScene, chi_node, mask_node=mask_node, regions_node=regions_node,
                                        atlas=atlas, reference=reference, erosion_mm=erosion_mm, progress=progress,
                                        cancel=cancel, run_name=run_name, chi_para_node=chi_para_node,
                                        chi_dia_node=chi_dia_node, separation_mask_node=separation_mask_node)

    def describeNuclei(self, result) -> str:
        """One line on a measurement: regions measured and flagged, and the nodes it added."""
        from SusceptibilityMRILib import roi_nodes

        return roi_nodes.summary(result)

    def showNuclei(self, result) -> Dict[str, str]:
        """Plot/table layout with the measurement's table and bar plot, its nuclei outlined in the slice views."""
        from SusceptibilityMRILib import roi_nodes

        return roi_nodes.show_nuclei(slicer.mrmlScene, result, slicer.app.applicationLogic())


#
# QSMTest
#


class QSMTest(ScriptedLoadableModuleTest):
    """In-Slicer test: the head phantom at 64³ through the module logic, in Slicer's process and in a background
    PythonSlicer process; checks output geometry and values, and that both runs agree."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_QSM_phantom()

    def test_QSM_phantom(self):
        import time

        import numpy as np

        self.delayDisplay("Checking Python dependencies")
        logic = QSMLogic()
        # running the self-test is the consent to install missing packages
        self.assertTrue(logic.ensureDependencies(confirm=lambda message: True), "dependencies could not be installed")
        from QSMLogic.phantom import label_of, make_head_model, simulate_acquisition
        from SusceptibilityMRILib.testing import add_echo_volumes

        self.delayDisplay("Simulating the head phantom (64³, 3 mm)")
        model = make_head_model(shape=(64, 64, 64), voxel_size_mm=(3.0, 3.0, 3.0), seed=0)
        acq = simulate_acquisition(model, te_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0, snr=100.0,
                                   seed=0)
        gre = acq.gre
        mags, phases = add_echo_volumes(gre)

        self.delayDisplay("Running QSM")
        fractions = []
        nodes = logic.run(mags, phases, None, 3.0, progress=lambda f, label: fractions.append(f),
                          run_name="QSM self-test")
        self.assertEqual(fractions[-1], 1.0)
        chiNode = nodes["chi_ppm"]
        self.assertTrue(np.allclose(mrml_adapter.ijk_to_ras(chiNode), gre.affine, atol=0))
        self.assertEqual(chiNode.GetImageData().GetDimensions(), phases[0].GetImageData().GetDimensions())
        self.assertAlmostEqual(chiNode.GetDisplayNode().GetWindow(), 0.40)
        self.assertIsNotNone(mrml_adapter.read_provenance(chiNode))
        self.assertIn("mip", nodes)  # the library's default 16 mm mIP slab
        self.assertIsNotNone(slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(chiNode))  # colour bar
        chi = np.asarray(mrml_adapter.array_ijk(chiNode))
        mask = np.asarray(mrml_adapter.array_ijk(nodes["qsm_mask"])) > 0
        truth = acq.chi_ppm - acq.chi_ppm[mask].mean()
        self.assertGreater(np.corrcoef(chi[mask], truth[mask])[0, 1], 0.5)
        gp = (acq.labels == label_of("globus pallidus externa (GPe)")) & mask
        wm = (acq.labels == label_of("WM")) & mask
        self.assertGreater(chi[gp].mean() - chi[wm].mean(), 0.05)  # iron-rich nucleus brighter than WM
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(phases[0]),
                                       np.ascontiguousarray(gre.phase_rad[..., 0].transpose(2, 1, 0))))
        logic.showResults(nodes)

        self.delayDisplay("Running QSM in a background process")
        done = []
        run = logic.run(mags, phases, None, 3.0, background=True, run_name="QSM background self-test",
                        on_done=lambda result, error: done.append((result, error)))
        started = time.monotonic()
        while not done and time.monotonic() - started < 900:
            slicer.app.processEvents()
            time.sleep(0.05)
        self.assertTrue(run.finished and done, "the background run did not finish")
        background, error = done[0]
        self.assertIsNone(error)
        self.assertTrue(np.array_equal(mrml_adapter.array_ijk(background["chi_ppm"]), chi))  # same result
        self.assertEqual(mrml_adapter.read_provenance(background["chi_ppm"])["input"]["phase_sign"], 1)
        self.delayDisplay("QSM self-test passed")
