"""SWI: susceptibility-weighted imaging (Haacke et al., MRM 2004) and minimum-intensity projection.

Thin Slicer scripted module over the SWI stage of the QSMLogic library; MRML work is done by the extension's shared
package SusceptibilityMRILib, so this file holds only the module, parameter node, widget, logic and test classes.
"""
from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Dict, Optional, Sequence, Union

import slicer
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceNode,
)
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
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
import QSMLogic as qsmlib  # the library (importable once SusceptibilityMRILib is)
from SusceptibilityMRILib import mrml_adapter, widgets
from SusceptibilityMRILib.binding import ParameterNodeBinding
from SusceptibilityMRILib.logic import EchoInputsLogicMixin
from SusceptibilityMRILib.module_info import describe_module
from SusceptibilityMRILib.mrml_adapter import PHASE_SCALING_CHOICES


class SWI(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        describe_module(
            self.parent, "SWI",
            "Susceptibility-weighted imaging from GRE magnitude and wrapped phase: homodyne high-pass filter, "
            "paramagnetic phase mask raised to a power, and an optional sliding minimum-intensity projection "
            "(Haacke et al., MRM 2004).")


@parameterNodeWrapper
class SWIParameterNode:
    """GUI state saved with the scene; ``paramsJson`` holds the SWI method's parameters. A sequence (4D) node per
    role, when set, is used instead of the checked echo volumes; the mask is a label map or a segmentation."""

    magnitudeVolumes: list[vtkMRMLScalarVolumeNode]
    phaseVolumes: list[vtkMRMLScalarVolumeNode]
    magnitudeSequence: vtkMRMLSequenceNode
    phaseSequence: vtkMRMLSequenceNode
    echoTimesMs: str = ""
    phaseScaling: Annotated[str, Choice(list(PHASE_SCALING_CHOICES))] = "auto"
    flipPhase: bool = False
    maskVolume: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    runName: str = "SWI"
    showResults: bool = True
    paramsJson: str = ""


class SWIWidget(widgets.EchoInputsWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: inputs, the SWI parameter form generated from the declaration, Apply."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[SWILogic] = None
        self._parameterNode: Optional[SWIParameterNode] = None
        self._binding: Optional[ParameterNodeBinding] = None
        self._params: Dict[str, Any] = {}
        self._method = None
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("UI/SWI.ui", SWILogic())
        self.connectEchoInputs()
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self._updateDependencyState()
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRequested = True  # a run in progress stops at its next check and adds nothing
        self.setParameterNode(None)

    def _checkCanApply(self, caller=None, event=None) -> None:
        self.ui.applyButton.enabled = bool(mrml_adapter.inputs_ready(self._parameterNode, need_magnitude=True)
                                           and self._method)

    def _updateInputInfo(self) -> None:
        """Show the phase scaling the "auto" rule detects (overridable with the phase scaling choice)."""
        try:
            mags, phases = self._selectedInputs()
            self.ui.phaseScalingLabel.text = self.logic.describeInputs(mags, phases) if phases else ""
        except ImportError as exc:  # echo ordering may read BIDS sidecars, which needs the packages
            self.ui.phaseScalingLabel.text = (f"Install the Python packages ({exc.name or exc} is missing) to check "
                                              "the inputs.")
        except qsmlib.QSMInputError as exc:
            self.ui.phaseScalingLabel.text = f"Inputs: {exc}"

    def _updateDependencyState(self) -> None:
        widgets.show_dependency_state(self.ui.dependenciesLabel, self.ui.installDependenciesButton,
                                      self.logic.missingDependencies())

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to install Python packages.", waitCursor=True):
            if self._ensureDependencies():
                self._updateDependencyState()
                self._buildForm()
                self._checkCanApply()

    def _refreshFromParameterNode(self) -> None:
        self._buildForm()

    def _buildForm(self) -> None:
        """SWI method combo and parameter form from the declaration (once the library can be imported)."""
        import json

        if self.logic.missingDependencies() or not self._parameterNode:
            return
        from SusceptibilityMRILib import param_forms, runner

        stage = param_forms.stage_specs()["swi"]
        methods = runner.swi_module_methods()
        self._method = stage.method(methods[0])
        combo = self.ui.swiMethodComboBox
        combo.clear()
        for key in methods:
            combo.addItem(stage.method(key).label, key)
        stored = json.loads(self._parameterNode.paramsJson) if self._parameterNode.paramsJson else {}
        self._params = self._method.resolve(stored)  # the library's defaults (16 mm mIP slab) unless stored
        widgets.fill_parameter_form(self.ui.swiParametersFrame, param_forms.method_form(self._method), self._params,
                                    self.onParameterChanged)

    def onParameterChanged(self, spec, raw) -> None:
        import json

        from SusceptibilityMRILib import param_forms

        with slicer.util.tryWithErrorDisplay(f"Invalid value for {spec.label}."):
            value = param_forms.value_from_widget(spec, raw)
            self._params = self._method.resolve(dict(self._params, **{spec.name: value}))
            self._parameterNode.paramsJson = json.dumps(self._params)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to compute SWI.", waitCursor=True):
            if not self._ensureDependencies():
                return
            if self._method is None:
                self._buildForm()
            p = self._parameterNode
            mags, phases = self._selectedInputs()
            echoTimes = mrml_adapter.parse_echo_times_ms(p.echoTimesMs) if p.echoTimesMs.strip() else None
            self._cancelRequested = False
            try:
                nodes = widgets.run_with_progress("SWI", lambda progress, cancel: self.logic.run(
                    mags, phases, echoTimes, method=self._method.key, params=self._params, mask_node=p.maskVolume,
                    run_name=p.runName, phase_rule=p.phaseScaling, phase_sign=-1 if p.flipPhase else 1,
                    progress=progress, cancel=cancel), lambda: self._cancelRequested)
            except qsmlib.QSMCancelled:  # the user asked for it: a status message, not an error box
                self.ui.statusLabel.text = "Cancelled; no results were added."
                return
            self.ui.statusLabel.text = "Created: " + ", ".join(n.GetName() for n in nodes.values())
            if p.showResults:
                self.logic.showResults(dict(nodes, magnitude=mrml_adapter.as_node_list(mags)[-1]))


class SWILogic(EchoInputsLogicMixin, ScriptedLoadableModuleLogic):
    """Module logic, usable from the Python console::

        import SWI
        nodes = SWI.SWILogic().run(magnitude_nodes, phase_nodes, echo_times_s=[0.02], params={"mip_slab_mm": 16})
    """

    requester = "SusceptibilityMRI (SWI)"

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SWIParameterNode(super().getParameterNode())

    def run(self, magnitude_nodes, phase_nodes, echo_times_s=None, method: str = "homodyne",
            params: Optional[Dict[str, Any]] = None, mask_node=None, run_name: str = "SWI",
            phase_rule: str = "auto", phase_sign: int = 1, progress=None, cancel=None) -> Dict[str, Any]:
        """SWI (and its mIP, the library's 16 mm slab unless ``params`` say otherwise) as new volume nodes in a
        subject-hierarchy folder, with optional ``progress(fraction, label)`` / ``cancel()`` callbacks
        (``QSMCancelled``). Only the SWI stage of the pipeline runs (``PipelineConfig.swi_only``), so no B0 is
        needed; ``method`` is one that works from the wrapped phase (``runner.swi_module_methods()``)."""
        from QSMLogic.pipeline import PipelineConfig
        from SusceptibilityMRILib import runner

        if not mrml_adapter.as_node_list(magnitude_nodes):
            raise qsmlib.QSMInputError("SWI needs magnitude volumes (one per echo)")
        return runner.run_qsm_on_nodes(
            slicer.mrmlScene, magnitude_nodes, phase_nodes, echo_times_s, None,
            PipelineConfig.swi_only(method, **(params or {})), mask_node, progress=progress, cancel=cancel,
            run_name=run_name, phase_rule=phase_rule, phase_sign=phase_sign, output_names=runner.SWI_OUTPUTS)

    def showResults(self, nodes: Dict[str, Any]) -> Dict[str, str]:
        return widgets.show_results(nodes)


class SWITest(ScriptedLoadableModuleTest):
    """In-Slicer test: SWI of the head phantom (64³); veins darker than white matter, geometry kept."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SWI_phantom()

    def test_SWI_phantom(self, echoes: Sequence[float] = (0.01, 0.02)):
        import numpy as np

        logic = SWILogic()
        self.assertTrue(logic.ensureDependencies(confirm=lambda message: True))  # running the test is the consent
        from QSMLogic.phantom import label_of, make_head_model, simulate_acquisition
        from SusceptibilityMRILib.testing import add_echo_volumes

        model = make_head_model(shape=(64, 64, 64), voxel_size_mm=(3.0, 3.0, 3.0), seed=0)
        acq = simulate_acquisition(model, te_s=echoes, b0_tesla=3.0, snr=100.0, seed=0)
        g = acq.gre
        mags, phs = add_echo_volumes(g)
        nodes = logic.run(mags, phs, list(echoes), params={"mip_slab_mm": 12.0})
        swi = np.asarray(mrml_adapter.array_ijk(nodes["swi"]))
        self.assertTrue(np.allclose(mrml_adapter.ijk_to_ras(nodes["mip"]), g.affine, atol=0))
        veins, wm = acq.labels == label_of("veins"), acq.labels == label_of("WM")
        self.assertLess(swi[veins].mean(), 0.9 * swi[wm].mean())
        self.delayDisplay("SWI self-test passed")
