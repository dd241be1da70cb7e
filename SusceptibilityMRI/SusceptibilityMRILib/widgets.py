"""Qt side of the GUI layer the extension's modules share: parameter widgets built from the library's declarations,
the echo-volume check boxes, the dependency prompt, runs with a progress dialog, and the timer that drives a
background run. Imported only inside Slicer (it needs ``qt``); everything these helpers decide (widget kinds,
ranges, values, which nodes are selected, what a run does) lives in the Qt-free modules of this package.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

import qt
import slicer
import vtk

from .binding import ParameterNodeBinding

def create_parameter_widget(spec: Any, value: Any, on_change: Callable[[Any, Any], None]) -> Any:
    """The widget a :class:`~.param_forms.WidgetSpec` describes, showing ``value``; edits call ``on_change(spec,
    raw)`` with what :func:`~.param_forms.value_from_widget` turns into the parameter's value."""
    if spec.kind == "double":
        w = qt.QDoubleSpinBox()
        w.decimals, w.singleStep, w.suffix = spec.decimals, spec.single_step, spec.suffix
        w.setRange(spec.minimum, spec.maximum)
        w.value = value
        w.connect("valueChanged(double)", lambda v: on_change(spec, v))
    elif spec.kind == "int":
        w = qt.QSpinBox()
        w.suffix = spec.suffix
        w.setRange(int(spec.minimum), int(spec.maximum))
        w.value = value
        w.connect("valueChanged(int)", lambda v: on_change(spec, v))
    elif spec.kind == "bool":
        w = qt.QCheckBox()
        w.checked = bool(value)
        w.connect("toggled(bool)", lambda v: on_change(spec, v))
    elif spec.kind == "choice":
        w = qt.QComboBox()
        for c in spec.choices:
            w.addItem(f"{c}{spec.suffix}")
        w.currentIndex = list(spec.choices).index(value)
        w.connect("currentIndexChanged(int)", lambda i: on_change(spec, i))
    else:
        w = qt.QLineEdit()  # free text, or a float in exponent notation ("scientific")
        w.text = f"{value:g}" if spec.kind == "scientific" else str(value)
        w.connect("editingFinished()", lambda: on_change(spec, w.text))
    w.toolTip = spec.tooltip
    return w


def fill_parameter_form(frame: Any, specs: Sequence[Any], values: Dict[str, Any],
                        on_change: Callable[[Any, Any], None]) -> Dict[str, Any]:
    """Replace the rows of ``frame``'s form layout by one widget per :class:`~.param_forms.WidgetSpec`; returns
    ``{parameter name: widget}``."""
    form = frame.layout()
    while form.count():
        item = form.takeAt(0)
        if item.widget():
            item.widget().deleteLater()
    widgets = {}
    for spec in specs:
        widgets[spec.name] = create_parameter_widget(spec, values[spec.name], on_change)
        form.addRow(spec.label + ":", widgets[spec.name])
    return widgets


def set_checked_nodes(combo: Any, nodes: Sequence[Any]) -> None:
    """Check exactly ``nodes`` in a qMRMLCheckableNodeComboBox, without emitting its change signal."""
    was_blocked = combo.blockSignals(True)
    for node in combo.checkedNodes():
        combo.setCheckState(node, qt.Qt.Unchecked)
    for node in nodes:
        if node is not None:
            combo.setCheckState(node, qt.Qt.Checked)
    combo.blockSignals(was_blocked)


def show_dependency_state(label: Any, button: Any, missing: List[str]) -> None:
    """Show which Python packages are still to be installed (label and install button hidden when none)."""
    label.text = "Python packages to install before first use: " + ", ".join(missing) if missing else ""
    label.visible = button.visible = bool(missing)


def run_with_progress(title: str, run: Callable[..., Any], cancel_requested: Callable[[], bool]) -> Any:
    """``run(progress=…, cancel=…)`` in this process with a progress dialog; the dialog's Cancel (or
    ``cancel_requested()``) makes the run raise ``QSMCancelled`` at its next check. Events are processed at
    each progress report so the dialog stays responsive."""
    dialog = slicer.util.createProgressDialog(windowTitle=title, labelText="Starting…", maximum=100)

    def progress(fraction: float, label: str) -> None:
        dialog.value, dialog.labelText = int(round(100 * fraction)), label
        slicer.app.processEvents()

    try:
        return run(progress=progress, cancel=lambda: dialog.wasCanceled or cancel_requested())
    finally:
        dialog.close()


class BackgroundProgress:
    """A progress dialog for a background run: ``progress`` updates it, its Cancel is read by ``cancel``."""

    def __init__(self, title: str) -> None:
        self.dialog = slicer.util.createProgressDialog(windowTitle=title, labelText="Starting…", maximum=100)

    def progress(self, fraction: float, label: str) -> None:
        self.dialog.value, self.dialog.labelText = int(round(100 * fraction)), label

    def cancel(self) -> bool:
        return bool(self.dialog.wasCanceled)

    def close(self) -> None:
        self.dialog.close()


_POLLING: List[Any] = []  # timers of running background runs (kept referenced until their run finishes)


def poll_until_finished(run: Any, cancel: Optional[Callable[[], bool]] = None, interval_ms: int = 250) -> None:
    """Drive ``run`` (a :class:`~.runner.BackgroundRun`) from Qt's event loop: a timer calls ``run.poll()`` every
    ``interval_ms`` until it finishes, cancelling it first once ``cancel()`` turns true."""
    timer = qt.QTimer()
    timer.setInterval(interval_ms)

    def tick() -> None:
        if cancel is not None and not run.finished and cancel():
            run.cancel()
        if run.poll():
            timer.stop()
            _POLLING.remove(timer)

    timer.connect("timeout()", tick)
    _POLLING.append(timer)
    timer.start()




def show_results(nodes: Dict[str, Any]) -> Dict[str, str]:
    """Switch to the results layout (magnitude | QSM | SWI, all axial) and fit the views to the volumes."""
    from .mrml_adapter import show_side_by_side

    shown = show_side_by_side(slicer.mrmlScene, nodes)
    slicer.util.resetSliceViews()
    return shown


class ModuleWidgetMixin:
    """The widget behaviour every module shares: its .ui loaded into the panel, its logic, the parameter node
    (connected once, see :mod:`.binding`) shown again on entering the module and after the scene was closed.

    The widget class lists it (or :class:`EchoInputsWidgetMixin`) before ``ScriptedLoadableModuleWidget,
    VTKObservationMixin``, calls :meth:`setupModuleUI` from ``setup()`` and defines ``onSceneStartClose(caller,
    event)`` (what it drops when the scene closes).
    """

    def setupModuleUI(self, ui_file: str, logic: Any) -> None:
        """Load ``ui_file`` (relative to the module's Resources folder) into the panel as ``self.ui``, set
        ``self.logic`` and the parameter-node binding, and observe the scene's start and end of closing."""
        uiWidget = slicer.util.loadUI(self.resourcePath(ui_file))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic
        self._binding = ParameterNodeBinding(self.ui)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        # The GUI stays connected to the parameter node while the module is hidden (see ParameterNodeBinding):
        # re-entering reconnects nothing when the node is the same, on Slicer 5.6 to 5.10 alike.
        self.initializeParameterNode()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode: Optional[Any]) -> None:
        if self._binding.bind(inputParameterNode) or inputParameterNode is None:
            self._parameterNode = self._binding.wrapper


class EchoInputsWidgetMixin(ModuleWidgetMixin):
    """What the modules reading echo volumes (QSM, SWI) add to :class:`ModuleWidgetMixin`: the parameter node's
    changes enable Apply, the echo check boxes and sequence selectors, echo volumes deleted from the scene, and the
    dependency prompt.

    The widget class lists it before ``ScriptedLoadableModuleWidget, VTKObservationMixin`` and defines
    ``_updateInputInfo()``, ``_checkCanApply()`` and ``_refreshFromParameterNode()`` (what else it shows of a
    newly set parameter node).
    """

    def connectEchoInputs(self) -> None:
        """Observe the scene's node removals and connect the echo check boxes and sequence selectors."""
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.NodeRemovedEvent, self.onNodeRemoved)
        self.ui.magnitudeVolumesComboBox.connect("checkedNodesChanged()", self.onEchoVolumesChanged)
        self.ui.phaseVolumesComboBox.connect("checkedNodesChanged()", self.onEchoVolumesChanged)
        self.ui.magnitudeSequenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSequenceChanged)
        self.ui.phaseSequenceSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSequenceChanged)

    def setParameterNode(self, inputParameterNode: Optional[Any]) -> None:
        if self._binding.bind(inputParameterNode) or inputParameterNode is None:
            if self._parameterNode:
                self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._parameterNode = self._binding.wrapper
            if self._parameterNode:
                self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        if self._parameterNode:
            set_checked_nodes(self.ui.magnitudeVolumesComboBox, self._parameterNode.magnitudeVolumes)
            set_checked_nodes(self.ui.phaseVolumesComboBox, self._parameterNode.phaseVolumes)
            self._refreshFromParameterNode()
            self._checkCanApply()

    def onNodeRemoved(self, caller, event) -> None:
        # The checkable combo boxes do not signal that a checked volume was deleted: drop it from the selection.
        from .mrml_adapter import drop_deleted_echoes

        if self._parameterNode and drop_deleted_echoes(self._parameterNode):
            self._updateInputInfo()
        self._checkCanApply()

    def onEchoVolumesChanged(self) -> None:
        if self._parameterNode:
            self._parameterNode.magnitudeVolumes = list(self.ui.magnitudeVolumesComboBox.checkedNodes())
            self._parameterNode.phaseVolumes = list(self.ui.phaseVolumesComboBox.checkedNodes())
            self._updateInputInfo()

    def onSequenceChanged(self, node=None) -> None:
        if self._parameterNode:
            self._updateInputInfo()

    def _selectedInputs(self):
        """(magnitude, phase) as the run gets them: a sequence node where one is chosen, else the checked echoes."""
        from .mrml_adapter import selected_inputs

        return selected_inputs(self._parameterNode)

    def _ensureDependencies(self) -> bool:
        """Install missing packages after asking (Slicer's prompt); a no is a status message, not an error."""
        if self.logic.ensureDependencies():
            return True
        self.ui.statusLabel.text = "The Python packages are not installed; nothing was computed."
        return False


__all__ = ["BackgroundProgress", "EchoInputsWidgetMixin", "ModuleWidgetMixin", "create_parameter_widget",
           "fill_parameter_form", "poll_until_finished", "run_with_progress", "set_checked_nodes",
           "show_dependency_state", "show_results"]
