"""QSM Targeting: QSM/SWI fused on the planning anatomy, nucleus outlines, targets in AC-PC and frame coordinates,
and vessel-aware trajectories for functional neurosurgery planning.

Thin Slicer scripted module over QSMLogic.targeting; the MRML work is in the extension's shared package
(SusceptibilityMRILib.targeting_nodes), so this file holds only the module, parameter node, widget, logic and test
classes.
"""
from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Callable, Dict, List, Optional, Sequence

import slicer
import vtk
from slicer import (
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLLinearTransformNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsLineNode,
    vtkMRMLScalarVolumeNode,
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
from SusceptibilityMRILib import widgets
from SusceptibilityMRILib.binding import ParameterNodeBinding
from SusceptibilityMRILib.logic import DependenciesLogicMixin
from SusceptibilityMRILib.module_info import describe_module


class QSMTargeting(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        describe_module(
            self.parent, "QSM Targeting",
            "Surgical-targeting overlays: rigid fusion of the GRE space onto the planning anatomy, QSM or SWI as a "
            "coloured overlay, STN/GPi outlines, automatic targets reported in RAS, AC-PC (lateral, AP, vertical "
            "from the mid-commissural point) and Leksell frame coordinates, vessel segmentation and trajectory "
            "distances to vessels and nuclei with a margin warning, probe's-eye view, and .mrk.json/CSV export. "
            "Planning aid only: verify every target and trajectory.")


@parameterNodeWrapper
class QSMTargetingParameterNode:
    """GUI state saved with the scene."""

    anatomyVolume: vtkMRMLScalarVolumeNode
    magnitudeVolume: vtkMRMLScalarVolumeNode
    qsmVolume: vtkMRMLScalarVolumeNode
    swiVolume: vtkMRMLScalarVolumeNode
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    overlayThresholdPpm: float = 0.05
    useSwiOverlay: bool = False
    nucleiLabels: vtkMRMLLabelMapVolumeNode
    landmarks: vtkMRMLMarkupsFiducialNode
    frameTransform: vtkMRMLLinearTransformNode
    stnSubregion: Annotated[str, Choice(["dorsolateral", "centroid"])] = "dorsolateral"
    gpiSubregion: Annotated[str, Choice(["posteroventral", "centroid"])] = "posteroventral"
    vesselMethod: Annotated[str, Choice(["frangi", "threshold"])] = "frangi"
    vesselThreshold: float = 0.05
    marginMm: Annotated[float, WithinRange(0.0, 10.0)] = 2.0
    trajectory: vtkMRMLMarkupsLineNode
    exportFolder: str = ""


class QSMTargetingWidget(widgets.ModuleWidgetMixin, ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: node selectors and one button per planning step; every step is a logic call."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: Optional[QSMTargetingLogic] = None
        self._parameterNode: Optional[QSMTargetingParameterNode] = None
        self._binding: Optional[ParameterNodeBinding] = None
        self._vessels = None
        self._targets = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        self.setupModuleUI("UI/QSMTargeting.ui", QSMTargetingLogic())
        for button, slot in ((self.ui.fuseButton, self.onFuse), (self.ui.showOverlayButton, self.onShowOverlay),
                             (self.ui.targetsButton, self.onTargets), (self.ui.vesselsButton, self.onVessels),
                             (self.ui.evaluateButton, self.onEvaluate), (self.ui.probeViewButton, self.onProbeView),
                             (self.ui.exportButton, self.onExport)):
            button.connect("clicked(bool)", slot)
        self.initializeParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._vessels = self._targets = None

    def _step(self, title: str, action: Callable[[], str]) -> None:
        """Run one planning step with dependency check, error display and a status line."""
        with slicer.util.tryWithErrorDisplay(f"{title} failed.", waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.ui.statusLabel.text = action()

    def onFuse(self) -> None:
        p = self._parameterNode
        self._step("Fusion", lambda: "Fused: " + self.logic.fuse(
            p.anatomyVolume, p.magnitudeVolume, [p.qsmVolume, p.swiVolume, p.nucleiLabels]).GetName())

    def onShowOverlay(self) -> None:
        p = self._parameterNode

        def show() -> str:
            self.logic.showOverlay(p.anatomyVolume, p.swiVolume if p.useSwiOverlay else p.qsmVolume,
                                   p.overlayOpacity, None if p.useSwiOverlay else p.overlayThresholdPpm,
                                   swi=p.useSwiOverlay)
            return "Overlay shown."
        self._step("Overlay", show)

    def onTargets(self) -> None:
        p = self._parameterNode

        def targets() -> str:
            self._targets, lines = self.logic.proposeTargets(
                p.nucleiLabels, {"STN": p.stnSubregion, "GPi": p.gpiSubregion}, p.landmarks, p.frameTransform)
            return f"{self._targets.GetNumberOfControlPoints()} targets and {len(lines)} trajectories proposed."
        self._step("Targets", targets)

    def onVessels(self) -> None:
        p = self._parameterNode

        def vessels() -> str:
            self._vessels = self.logic.segmentVessels(p.qsmVolume, p.vesselMethod, p.vesselThreshold)
            return "Vessels: " + self._vessels.GetName()
        self._step("Vessel segmentation", vessels)

    def onEvaluate(self) -> None:
        p = self._parameterNode

        def evaluate() -> str:
            lines = slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")
            table, reports = self.logic.checkTrajectories(lines, self._vessels, p.nucleiLabels, p.marginMm)
            warnings = [f"{name}: {w}" for name, r in reports.items() for w in r.warnings]
            slicer.app.applicationLogic().GetSelectionNode().SetActiveTableID(table.GetID())
            slicer.app.applicationLogic().PropagateTableSelection()
            return "\n".join(warnings) if warnings else f"{len(reports)} trajectories: no warning."
        self._step("Trajectory check", evaluate)

    def onProbeView(self) -> None:
        p = self._parameterNode
        self._step("Probe's-eye view", lambda: self.logic.probeView(p.trajectory))

    def onExport(self) -> None:
        p = self._parameterNode

        def export() -> str:
            lines = slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")
            files = self.logic.export(p.exportFolder, self._targets, lines, p.landmarks, p.frameTransform)
            if p.qsmVolume is not None and lines:
                files += self.logic.saveViews(p.exportFolder, lines, p.qsmVolume, p.anatomyVolume, p.nucleiLabels,
                                              self._vessels)
            return "Written: " + ", ".join(files)
        self._step("Export", export)


class QSMTargetingLogic(DependenciesLogicMixin, ScriptedLoadableModuleLogic):
    """Module logic, usable from the Python console::

        import QSMTargeting
        logic = QSMTargeting.QSMTargetingLogic()
        transform = logic.fuse(t1Node, magnitudeNode, [qsmNode, swiNode, labelNode])
        targets, lines = logic.proposeTargets(labelNode, {"STN": "dorsolateral"}, landmarksNode)
        vessels = logic.segmentVessels(qsmNode)
        table, reports = logic.checkTrajectories(lines, vessels, labelNode, margin_mm=2.0)
        logic.export("/tmp/plan", targets, lines, landmarksNode)
    """

    requester = "SusceptibilityMRI (QSM Targeting)"

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return QSMTargetingParameterNode(super().getParameterNode())

    def fuse(self, anatomy_node, magnitude_node, gre_nodes: Sequence[Any] = (), **options: Any):
        """Rigid MI registration GRE magnitude → anatomy; returns the new transform node, under which the
        magnitude and ``gre_nodes`` are placed."""
        from SusceptibilityMRILib import targeting_nodes

        return targeting_nodes.fuse_volumes(slicer.mrmlScene, anatomy_node, magnitude_node,
                                            [n for n in gre_nodes if n is not None], **options)

    def frameFromLocalizer(self, fiducials_node):
        """Frame registration transform node fitted to localiser fiducials whose descriptions hold their Leksell
        coordinates ``X,Y,Z``; select it as the frame registration to get frame coordinates and arc angles."""
        from SusceptibilityMRILib import targeting_nodes

        return targeting_nodes.frame_registration_from_markups(slicer.mrmlScene, fiducials_node)

    def showOverlay(self, anatomy_node, overlay_node, opacity: float = 0.5, threshold_ppm: Optional[float] = 0.05,
                    swi: bool = False) -> None:
        """QSM (coloured, thresholded, with a legend) or the SWI mIP (grey) over the anatomy in the slice views."""
        from SusceptibilityMRILib import targeting_nodes

        if overlay_node is None:
            raise ValueError("select the QSM (or SWI mIP) volume to overlay")
        if swi:
            targeting_nodes.show_overlay(slicer.mrmlScene, anatomy_node, overlay_node, opacity, None,
                                         _auto_range(overlay_node), "vtkMRMLColorTableNodeInvertedGrey", None)
        else:
            targeting_nodes.show_overlay(slicer.mrmlScene, anatomy_node, overlay_node, opacity, threshold_ppm)

    def proposeTargets(self, label_node, subregions: Optional[Dict[str, str]] = None, landmarks_node=None,
                       frame_transform_node=None, propose_trajectories: bool = True, vim: bool = True):
        """Nucleus outlines/surfaces, right/left STN and GPi targets (editable points) and, with AC-PC landmarks,
        the indirect Vim targets (``vim``) and one proposed entry → target line per target; returns (targets node,
        line nodes)."""
        from SusceptibilityMRILib import targeting_nodes

        from QSMLogic.targeting.trajectory import entry_from_angles

        if label_node is None:
            raise ValueError("select the nucleus label map")
        scene = slicer.mrmlScene
        nuclei = targeting_nodes.nuclei_of_label_node(label_node)
        targeting_nodes.nuclei_segmentation(scene, label_node, nuclei)
        targets = targeting_nodes.targets_from_label_node(scene, label_node, nuclei, subregions, landmarks_node,
                                                          frame_transform_node, vim=vim and landmarks_node is not None)
        lines: List[Any] = []
        if propose_trajectories and landmarks_node is not None:
            acpc = targeting_nodes.acpc_from_markups(landmarks_node)
            for name, p in targeting_nodes.control_points_world(targets):
                side = "right" if name.endswith("right") else "left"
                entry = entry_from_angles(p, acpc.rotation, side)
                lines.append(targeting_nodes.add_trajectory(scene, entry, p, f"{name} trajectory"))
        return targets, lines

    def segmentVessels(self, volume_node, method: str = "frangi", threshold: float = 0.05, bright: bool = True,
                       mask_node=None):
        """Vessel label map from QSM (bright vessels) or SWI (``bright=False``)."""
        from SusceptibilityMRILib import targeting_nodes

        if volume_node is None:
            raise ValueError("select the QSM volume to segment vessels in")
        return targeting_nodes.vessels_from_volume(slicer.mrmlScene, volume_node, method, threshold, bright,
                                                   mask_node)

    def checkTrajectories(self, line_nodes: Sequence[Any], vessel_node=None, label_node=None,
                          margin_mm: float = 2.0):
        """Trajectory safety table (distances to vessels and nuclei, warnings) and the reports by name."""
        from SusceptibilityMRILib import targeting_nodes

        nuclei = targeting_nodes.nuclei_of_label_node(label_node) if label_node is not None else None
        return targeting_nodes.evaluate_trajectories(slicer.mrmlScene, list(line_nodes), vessel_node, label_node,
                                                     nuclei, margin_mm)

    def probeView(self, line_node, slice_name: str = "Red", depth_from_target_mm: float = 0.0) -> str:
        """Reslice a slice view perpendicular to the trajectory at the target (probe's-eye view)."""
        from SusceptibilityMRILib import targeting_nodes

        if line_node is None:
            raise ValueError("select a trajectory")
        entry, target = targeting_nodes.trajectory_points(line_node)
        slice_node = slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{slice_name}")
        targeting_nodes.probe_eye_view(slice_node, entry, target, depth_from_target_mm)
        return f"{slice_name} view along '{line_node.GetName()}'"

    def export(self, folder: str, targets_node=None, line_nodes: Sequence[Any] = (), landmarks_node=None,
               frame_transform_node=None) -> List[str]:
        """Targets and trajectories as .mrk.json and CSV (RAS, AC-PC, frame) in ``folder``; returns the paths."""
        from SusceptibilityMRILib import targeting_nodes

        if not folder:
            raise ValueError("choose an export folder")
        return targeting_nodes.export_plan(folder, targets_node, list(line_nodes), landmarks_node,
                                           frame_transform_node)

    def saveViews(self, folder: str, line_nodes: Sequence[Any], qsm_node, anatomy_node=None, label_node=None,
                  vessel_node=None) -> List[str]:
        """Planning views (axial, coronal, sagittal, probe's eye through each trajectory's target) as PNG files:
        anatomy, thresholded QSM overlay, nucleus and vessel outlines, the trajectory."""
        from SusceptibilityMRILib import targeting_nodes

        if not folder:
            raise ValueError("choose an export folder")
        nuclei = targeting_nodes.nuclei_of_label_node(label_node) if label_node is not None else None
        return targeting_nodes.planning_views(folder, list(line_nodes), qsm_node, anatomy_node, label_node, nuclei,
                                              vessel_node)


def _auto_range(node) -> tuple:
    """The 1st–99th percentile of a volume (display range of an SWI overlay)."""
    import numpy as np

    values = slicer.util.arrayFromVolume(node)
    return tuple(float(v) for v in np.percentile(values, (1, 99)))


class QSMTargetingTest(ScriptedLoadableModuleTest):
    """In-Slicer test: targets, vessels, trajectory check and export on the head phantom (2 mm)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_QSMTargeting_phantom()

    def test_QSMTargeting_phantom(self):
        import tempfile

        import numpy as np

        logic = QSMTargetingLogic()
        self.assertTrue(logic.ensureDependencies(confirm=lambda message: True))  # running the test is the consent
        from QSMLogic.phantom import HEAD_SCALE, make_head_model

        h = make_head_model((96, 96, 64), (2.0, 2.0, 2.0))
        qsm = slicer.util.addVolumeFromArray(np.ascontiguousarray(h.chi_ppm.transpose(2, 1, 0)), ijkToRAS=h.affine,
                                             name="QSM")
        labels = slicer.util.addVolumeFromArray(np.ascontiguousarray(h.labels.transpose(2, 1, 0)),
                                                ijkToRAS=h.affine, name="labels",
                                                nodeClassName="vtkMRMLLabelMapVolumeNode")
        landmarks = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AC-PC")
        for label, p in (("AC", (0.0, 1.5, -3.5)), ("PC", (0.0, -25.0, -1.5)), ("midline", (0.0, -10.0, 50.0))):
            landmarks.AddControlPoint(vtk.vtkVector3d(*(HEAD_SCALE * np.asarray(p))), label)
        targets, lines = logic.proposeTargets(labels, {"STN": "dorsolateral"}, landmarks)
        self.assertEqual(targets.GetNumberOfControlPoints(), 6)   # STN, GPi, Vim; right and left
        vessels = logic.segmentVessels(qsm)
        table, reports = logic.checkTrajectories(lines, vessels, labels)
        self.assertEqual(table.GetNumberOfRows(), 6)
        logic.showOverlay(None, qsm, 0.6, 0.05)
        logic.probeView(lines[0])
        folder = tempfile.mkdtemp()
        files = logic.export(folder, targets, lines, landmarks)
        self.assertTrue(any(f.endswith("targets.csv") for f in files))
        self.assertEqual(len(logic.saveViews(folder, lines[:1], qsm, None, labels, vessels)), 1)
        self.delayDisplay("QSM Targeting self-test passed")
