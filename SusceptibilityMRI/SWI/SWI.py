"""SWI: susceptibility-weighted imaging (Haacke et al., MRM 2004) and minimum-intensity projection.

Thin Slicer scripted module over the SWI stage of the QSMLogic library; MRML work is done by the extension's shared
package SusceptibilityMRILib, so this file holds only the module, parameter node, widget, logic and test classes.
"""
from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Callable, Dict, Optional, Sequence, Union

import qt
import slicer
import vtk
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
from SusceptibilityMRILib import dependencies

PHASE_SCALING_CHOICES = ["auto", "radians", "dicom_uint12", "dicom_int12", "degrees", "milliradians", "range"]


class SWI(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SWI"
        self.parent.categories = ["Susceptibility MRI"]
        self.parent.dependencies = []
        self.parent.contributors = ["SusceptibilityMRI contributors"]
        self.parent.helpText = (
            "Susceptibility-weighted imaging from GRE magnitude and wrapped phase: homodyne high-pass filter, "
            "paramagnetic phase mask raised to a power, and an optional sliding minimum-intensity projection "
            "(Haacke et al., MRM 2004).")
        self.parent.acknowledgementText = "See docs/slicer.md of the SusceptibilityMRI extension."


@parameterNodeWrapper
class SWIParameterNode:
    """GUI state saved with the scene; ``paramsJson`` holds the SWI method's parameters. A sequence (4D) node per
    role, when set, is used instead of the checked echo volumes; the mask is a label map or a segmentation."""

    magnitudeVolumes: list[vtkMRMLScalarVolumeNode]
    phaseVolumes: list[vtkMRMLScalarVolumeNode]
    magnitudeSequence: vtkMRMLSequenceNode
    phaseSequence: vtkMRMLSequenceNode
    echoTimesMs: str = ""
    phaseScaling: Annotated[str, Choice(PHASE_SCALING_CHOICES)] = "auto"
    flipPhase: bool = False
    maskVolume: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    runName: str = "SWI"
    showResults: bool = True
    paramsJson: str = ""


class SWIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: inputs, the SWI parameter form generated from the declaration, Apply."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[SWILogic] = None
        self._parameterNode: Optional[SWIParameterNode] = None
        self._parameterNodeGuiTag = None
        self._params: Dict[str, Any] = {}
        self._method = None
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SWI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SWILogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.magnitudeVolumesComboBox.connect("checkedNodesChanged()", self.onEchoVolumesChanged)
        self.ui.phaseVolumesComboBox.connect("checkedNodesChanged()", self.onEchoVolumesChanged)
        self.ui.magnitudeSequenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSequenceChanged)
        self.ui.phaseSequenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSequenceChanged)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self._updateDependencyState()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self._cancelRequested = True  # a run in progress stops at its next check and adds nothing
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[SWIParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            for combo, nodes in ((self.ui.magnitudeVolumesComboBox, self._parameterNode.magnitudeVolumes),
                                 (self.ui.phaseVolumesComboBox, self._parameterNode.phaseVolumes)):
                wasBlocked = combo.blockSignals(True)
                for node in nodes:
                    combo.setCheckState(node, qt.Qt.Checked)
                combo.blockSignals(wasBlocked)
            self._buildForm()
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        self.ui.applyButton.enabled = bool(p and (p.phaseVolumes or p.phaseSequence is not None)
                                           and (p.magnitudeVolumes or p.magnitudeSequence is not None)
                                           and self._method)

    def _selectedInputs(self):
        """(magnitude, phase) as the run gets them: a sequence node where one is chosen, else the checked echoes."""
        from SusceptibilityMRILib import mrml_adapter

        return mrml_adapter.selected_inputs(self._parameterNode)

    def onEchoVolumesChanged(self) -> None:
        if self._parameterNode:
            self._parameterNode.magnitudeVolumes = list(self.ui.magnitudeVolumesComboBox.checkedNodes())
            self._parameterNode.phaseVolumes = list(self.ui.phaseVolumesComboBox.checkedNodes())
            self._updateInputInfo()

    def onSequenceChanged(self, node=None) -> None:
        if self._parameterNode:
            self._updateInputInfo()

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
        missing = self.logic.missingDependencies()
        self.ui.dependenciesLabel.text = ("Python packages to install before first use: " + ", ".join(missing)
                                          if missing else "")
        self.ui.dependenciesLabel.visible = self.ui.installDependenciesButton.visible = bool(missing)

    def onInstallDependencies(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to install Python packages.", waitCursor=True):
            if self.logic.ensureDependencies(confirm=slicer.util.confirmOkCancelDisplay):
                self._updateDependencyState()
                self._buildForm()
                self._checkCanApply()

    def _buildForm(self) -> None:
        """SWI method combo and parameter form from the declaration (once the library can be imported)."""
        import json

        if self.logic.missingDependencies() or not self._parameterNode:
            return
        from SusceptibilityMRILib import param_forms, runner

        stage = param_forms.stage_specs()["swi"]
        self._method = stage.method(runner.SWI_MODULE_METHODS[0])
        combo = self.ui.swiMethodComboBox
        combo.clear()
        for key in runner.SWI_MODULE_METHODS:
            combo.addItem(stage.method(key).label, key)
        stored = json.loads(self._parameterNode.paramsJson) if self._parameterNode.paramsJson else {}
        defaults = param_forms.module_defaults_for("swi", self._method.key)  # a 16 mm mIP slab unless stored
        self._params = self._method.resolve(dict(defaults, **stored))
        formLayout = self.ui.swiParametersFrame.layout()
        while formLayout.count():
            item = formLayout.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        for spec in param_forms.method_form(self._method):
            formLayout.addRow(spec.label + ":", self._createParameterWidget(spec, self._params[spec.name]))

    def _createParameterWidget(self, spec, value):
        if spec.kind == "double":
            w = qt.QDoubleSpinBox()
            w.decimals, w.singleStep, w.suffix = spec.decimals, spec.single_step, spec.suffix
            w.setRange(spec.minimum, spec.maximum)
            w.value = value
            w.connect("valueChanged(double)", lambda v, s=spec: self.onParameterChanged(s, v))
        elif spec.kind == "int":
            w = qt.QSpinBox()
            w.suffix = spec.suffix
            w.setRange(int(spec.minimum), int(spec.maximum))
            w.value = value
            w.connect("valueChanged(int)", lambda v, s=spec: self.onParameterChanged(s, v))
        elif spec.kind == "bool":
            w = qt.QCheckBox()
            w.checked = bool(value)
            w.connect("toggled(bool)", lambda v, s=spec: self.onParameterChanged(s, v))
        elif spec.kind == "choice":
            w = qt.QComboBox()
            for c in spec.choices:
                w.addItem(f"{c}{spec.suffix}")
            w.currentIndex = list(spec.choices).index(value)
            w.connect("currentIndexChanged(int)", lambda i, s=spec: self.onParameterChanged(s, i))
        else:
            w = qt.QLineEdit()  # free text, or a float in exponent notation ("scientific")
            w.text = f"{value:g}" if spec.kind == "scientific" else str(value)
            w.connect("editingFinished()", lambda s=spec, le=w: self.onParameterChanged(s, le.text))
        w.toolTip = spec.tooltip
        return w

    def onParameterChanged(self, spec, raw) -> None:
        import json

        from SusceptibilityMRILib import param_forms

        with slicer.util.tryWithErrorDisplay(f"Invalid value for {spec.label}."):
            value = param_forms.value_from_widget(spec, raw)
            self._params = self._method.resolve(dict(self._params, **{spec.name: value}))
            self._parameterNode.paramsJson = json.dumps(self._params)

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to compute SWI.", waitCursor=True):
            if not self.logic.ensureDependencies():  # asks the user (Slicer's prompt) before installing anything
                return
            if self._method is None:
                self._buildForm()
            from SusceptibilityMRILib import mrml_adapter

            p = self._parameterNode
            mags, phases = self._selectedInputs()
            self._cancelRequested = False
            dialog = slicer.util.createProgressDialog(windowTitle="SWI", labelText="Starting…", maximum=100)
            try:
                def progress(fraction: float, label: str) -> None:
                    dialog.value, dialog.labelText = int(round(100 * fraction)), label
                    slicer.app.processEvents()

                nodes = self.logic.run(
                    mags, phases, mrml_adapter.parse_echo_times_ms(p.echoTimesMs) if p.echoTimesMs.strip() else None,
                    params=self._params, mask_node=p.maskVolume, run_name=p.runName, phase_rule=p.phaseScaling,
                    phase_sign=-1 if p.flipPhase else 1, progress=progress,
                    cancel=lambda: dialog.wasCanceled or self._cancelRequested)
            except qsmlib.QSMCancelled:  # the user asked for it: a status message, not an error box
                self.ui.statusLabel.text = "Cancelled; no results were added."
                return
            finally:
                dialog.close()
            self.ui.statusLabel.text = "Created: " + ", ".join(n.GetName() for n in nodes.values())
            if p.showResults:
                self.logic.showResults(dict(nodes, magnitude=mrml_adapter.as_node_list(mags)[-1]))


class SWILogic(ScriptedLoadableModuleLogic):
    """Module logic, usable from the Python console::

        import SWI
        nodes = SWI.SWILogic().run(magnitude_nodes, phase_nodes, echo_times_s=[0.02], params={"mip_slab_mm": 16})
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return SWIParameterNode(super().getParameterNode())

    def missingDependencies(self):
        return dependencies.missing_requirements()

    def ensureDependencies(self, confirm: Optional[Callable[[str], bool]] = None) -> bool:
        """Same first-use install as the QSM module: ``confirm(message)`` decides when given, else the user is
        asked (slicer.packaging.pip_ensure on Slicer >= 5.12, slicer.util.confirmOkCancelDisplay before)."""
        return dependencies.ensure_requirements(confirm=confirm, requester="SusceptibilityMRI (SWI)")

    def sortEchoNodes(self, nodes: Sequence[Any]):
        from SusceptibilityMRILib import mrml_adapter

        return mrml_adapter.sort_echo_nodes(list(nodes))

    def describeInputs(self, magnitudeNodes: Any, phaseNodes: Any) -> str:
        """Detected phase scaling and DICOM ImageType warnings (see ``mrml_adapter.describe_inputs``)."""
        from SusceptibilityMRILib import mrml_adapter

        return mrml_adapter.describe_inputs(magnitudeNodes, phaseNodes)

    def run(self, magnitude_nodes, phase_nodes, echo_times_s=None, method: str = "homodyne",
            params: Optional[Dict[str, Any]] = None, mask_node=None, run_name: str = "SWI",
            phase_rule: str = "auto", phase_sign: int = 1, progress=None, cancel=None) -> Dict[str, Any]:
        """SWI (and mIP, 16 mm slab unless ``params`` say otherwise) as new volume nodes in a subject-hierarchy
        folder, with optional ``progress(fraction, label)`` / ``cancel()`` callbacks (``QSMCancelled``); see
        SusceptibilityMRILib.runner.run_swi_on_nodes."""
        from SusceptibilityMRILib import runner

        return runner.run_swi_on_nodes(slicer.mrmlScene, magnitude_nodes, phase_nodes, echo_times_s, method,
                                       params, mask_node, run_name, phase_rule, phase_sign, progress=progress,
                                       cancel=cancel)

    def showResults(self, nodes: Dict[str, Any]) -> Dict[str, str]:
        from SusceptibilityMRILib import mrml_adapter

        shown = mrml_adapter.show_side_by_side(slicer.mrmlScene, nodes)
        slicer.util.resetSliceViews()
        return shown


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
        from SusceptibilityMRILib import mrml_adapter
        from QSMLogic.phantom import label_of, make_head_model, simulate_acquisition

        model = make_head_model(shape=(64, 64, 64), voxel_size_mm=(3.0, 3.0, 3.0), seed=0)
        acq = simulate_acquisition(model, te_s=echoes, b0_tesla=3.0, snr=100.0, seed=0)
        g = acq.gre
        mags = [slicer.util.addVolumeFromArray(np.ascontiguousarray(g.magnitude[..., e].transpose(2, 1, 0)),
                                               ijkToRAS=g.affine, name=f"mag {e}") for e in range(len(echoes))]
        phs = [slicer.util.addVolumeFromArray(np.ascontiguousarray(g.phase_rad[..., e].transpose(2, 1, 0)),
                                              ijkToRAS=g.affine, name=f"phase {e}") for e in range(len(echoes))]
        nodes = logic.run(mags, phs, list(echoes), params={"mip_slab_mm": 12.0})
        swi = np.asarray(mrml_adapter.array_ijk(nodes["swi"]))
        self.assertTrue(np.allclose(mrml_adapter.ijk_to_ras(nodes["mip"]), g.affine, atol=0))
        veins, wm = acq.labels == label_of("veins"), acq.labels == label_of("WM")
        self.assertLess(swi[veins].mean(), 0.9 * swi[wm].mean())
        self.delayDisplay("SWI self-test passed")
