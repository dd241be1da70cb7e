"""MRML helpers of the targeting module on real MRML nodes (slicer-core): AC-PC from markups under a transform,
target and trajectory markups, the markups JSON the library writes read back by Slicer's storage node, nucleus
segmentations, tables, the QSM overlay, the probe's-eye reslice and the whole planning workflow on phantom nodes."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "SusceptibilityMRI"))

from SusceptibilityMRILib import targeting_nodes as tn  # noqa: E402

from QSMLogic.errors import QSMInputError  # noqa: E402
from QSMLogic.targeting.export import markups_document, write_markups_json  # noqa: E402


def rigid(deg: float, axis, shift) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(deg)
    m = np.eye(4)
    m[:3, :3] = np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * k @ k
    m[:3, 3] = shift
    return m


def test_acpc_from_markups_under_a_transform(scene):
    pose = rigid(23.0, (0.3, -0.5, 0.8), (10.0, -20.0, 35.0))
    moved = tn.add_transform(scene, pose, "head pose")
    np.testing.assert_allclose(tn.transform_to_world(moved), pose, atol=1e-12)
    lm = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "landmarks")
    for label, p in (("AC", (0, 12.5, 0)), ("pc", (0, -12.5, 0)), ("Midline", (0, 0, 40))):
        lm.AddControlPoint(vtk.vtkVector3d(*p), label)
    lm.SetAndObserveTransformNodeID(moved.GetID())      # the landmarks seen in a rotated head
    frame = tn.acpc_from_markups(lm)
    target = pose[:3, :3] @ np.array([12.0, -2.0, -4.0]) + pose[:3, 3]
    np.testing.assert_allclose(frame.to_acpc(target)[0], (12.0, -2.0, -4.0), atol=1e-6)   # float32 markups
    lm.RemoveNthControlPoint(2)
    with pytest.raises(QSMInputError, match="midline point is missing"):
        tn.acpc_from_markups(lm)
    with pytest.raises(QSMInputError, match="no AC-PC landmarks node"):
        tn.acpc_from_markups(None)


def test_frame_registration_from_localiser_markups(scene):
    ras_to_frame = rigid(4.0, (0.1, 0.2, 1.0), (3.0, -2.0, 10.0))
    xyz = np.array([[5, 40, 40], [5, 160, 40], [5, 100, 140], [195, 40, 40], [195, 160, 40], [195, 100, 140]], float)
    frame_ras = np.column_stack([100 - xyz[:, 0], xyz[:, 1] - 100, 100 - xyz[:, 2]])
    image = frame_ras @ np.linalg.inv(ras_to_frame)[:3, :3].T + np.linalg.inv(ras_to_frame)[:3, 3]
    fid = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "localiser")
    for k, (p, f) in enumerate(zip(image, xyz)):
        i = fid.AddControlPoint(vtk.vtkVector3d(*p), f"rod {k}")
        fid.SetNthControlPointDescription(i, ",".join(f"{v:g}" for v in f))
    node = tn.frame_registration_from_markups(scene, fid)
    np.testing.assert_allclose(tn.transform_to_world(node), ras_to_frame, atol=1e-4)   # float32 markups
    assert json.loads(node.GetAttribute(tn.REPORT_ATTRIBUTE))["rms_residual_mm"] < 1e-3
    fid.SetNthControlPointDescription(0, "")
    with pytest.raises(QSMInputError, match="Leksell coordinates 'X,Y,Z'"):
        tn.frame_registration_from_markups(scene, fid)


def test_targets_trajectory_and_markups_json_round_trip(scene, tmp_path):
    frame = tn.acpc_frame((0, 12.5, 0), (0, -12.5, 0), (0, 0, 40))
    targets = [("STN right", (12.0, -2.0, -4.0)), ("STN left", (-12.0, -2.0, -4.0))]
    node = tn.add_points(scene, targets, "Targets", acpc=frame, ras_to_frame=np.eye(4))
    assert node.GetNumberOfControlPoints() == 2 and node.GetNthControlPointLabel(1) == "STN left"
    assert "AC-PC 12.0 left, AP -2.0, vertical -4.0 mm" in node.GetNthControlPointDescription(1)
    assert "frame X 112.0, Y 98.0, Z 104.0" in node.GetNthControlPointDescription(1)
    rows = json.loads(node.GetAttribute(tn.REPORT_ATTRIBUTE))
    assert rows[0]["side"] == "right" and rows[0]["lateral_mm"] == 12.0
    line = tn.add_trajectory(scene, (40.0, 30.0, 60.0), targets[0][1], "STN right trajectory")
    entry, target = tn.trajectory_points(line)
    np.testing.assert_allclose(entry, (40, 30, 60)) and np.testing.assert_allclose(target, targets[0][1])
    # the library's .mrk.json files load in Slicer's own markups JSON reader, positions intact
    for kind, pts, cls in (("Fiducial", targets, "vtkMRMLMarkupsFiducialNode"),
                           ("Line", [("entry", entry), ("target", target)], "vtkMRMLMarkupsLineNode")):
        path = write_markups_json(tmp_path / f"{kind}.mrk.json", markups_document(kind, pts, kind))
        loaded = scene.AddNewNodeByClass(cls)
        storage = scene.AddNode(slicer.vtkMRMLMarkupsJsonStorageNode())   # the Markups module registers it
        storage.SetFileName(str(path))
        assert storage.ReadData(loaded)
        got = tn.control_points_world(loaded)
        assert [g[0] for g in got] == [p[0] for p in pts]
        np.testing.assert_allclose([g[1] for g in got], [p[1] for p in pts], atol=1e-4)


def test_segmentation_table_overlay_and_probe_view(scene):
    labels = np.zeros((30, 32, 20), np.int16)
    labels[5:9, 10:14, 8:11] = 15
    labels[21:25, 10:14, 8:11] = 15
    labels[12:18, 20:26, 5:9] = 11
    ref = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "qsm")
    slicer.util.updateVolumeFromArray(ref, np.ascontiguousarray(labels.transpose(2, 1, 0).astype(np.float32)))
    ref.SetSpacing(1.5, 1.5, 2.0)
    ref.SetOrigin(-20.0, -25.0, -20.0)
    seg = tn.nuclei_segmentation(scene, ref, {"STN": [15], "GPi": [11]})
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == ["STN", "GPi"]
    assert segmentation.GetNthSegment(1).GetColor() == pytest.approx(tn.nucleus_colors(["STN", "GPi"])["GPi"],
                                                                     abs=0.003)
    assert seg.GetDisplayNode().GetVisibility2DOutline() and not seg.GetDisplayNode().GetVisibility2DFill()
    assert segmentation.ContainsRepresentation("Closed surface")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segmentation.GetSegmentIdBySegmentName("STN"))
    exported = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg, ids, exported, ref)
    assert np.count_nonzero(slicer.util.arrayFromVolume(exported)) == 2 * 48     # both STN blobs, voxel exact
    with pytest.raises(QSMInputError, match="'Vim' has no voxels"):
        tn.nuclei_segmentation(scene, ref, {"Vim": [12]})
    table = tn.add_table(scene, [{"trajectory": "STN right", "min_vessel_distance_mm": 3.5, "warnings": ""},
                                 {"trajectory": "STN left", "min_vessel_distance_mm": 0.7,
                                  "warnings": "passes 0.7 mm from a vessel"}], "Trajectories")
    assert table.GetNumberOfColumns() == 3 and table.GetNumberOfRows() == 2
    assert table.GetCellText(1, 2) == "passes 0.7 mm from a vessel" and table.GetCellText(1, 1) == "0.7"
    comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    anatomy = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "T1")
    tn.show_overlay(scene, anatomy, ref, opacity=0.6, lower_threshold=0.05)
    assert comp.GetBackgroundVolumeID() == anatomy.GetID() and comp.GetForegroundVolumeID() == ref.GetID()
    assert comp.GetForegroundOpacity() == pytest.approx(0.6)
    disp = ref.GetDisplayNode()
    assert disp.GetApplyThreshold() and disp.GetLowerThreshold() == pytest.approx(0.05)
    assert disp.GetColorNodeID() == tn.QSM_OVERLAY_COLOR
    assert (disp.GetWindowLevelMin(), disp.GetWindowLevelMax()) == pytest.approx(tn.QSM_OVERLAY_RANGE_PPM)
    legend = scene.GetFirstNodeByClass("vtkMRMLColorLegendDisplayNode")
    assert legend is not None and legend.GetTitleText() == "χ (ppm)" and legend.GetVisibility()
    with pytest.raises(QSMInputError, match="opacity"):
        tn.show_overlay(scene, anatomy, ref, opacity=1.5)
    transform = tn.add_transform(scene, rigid(5.0, (0, 0, 1), (1, 2, 3)), "GRE to anatomy")
    tn.place_under_transform([ref], transform)
    assert ref.GetTransformNodeID() == transform.GetID()
    sl = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    entry, target = np.array([40.0, 30.0, 60.0]), np.array([12.0, -2.0, -4.0])
    tn.probe_eye_view(sl, entry, target, depth_from_target_mm=5.0)
    m = tn._matrix_to_numpy(sl.GetSliceToRAS())
    direction = (entry - target) / np.linalg.norm(entry - target)
    np.testing.assert_allclose(m[:3, 2], direction, atol=1e-9)          # slice normal along the probe
    np.testing.assert_allclose(m[:3, 3], target + 5.0 * direction, atol=1e-9)


def acpc_describe_lateral(landmarks, point) -> float:
    return tn.acpc_from_markups(landmarks).describe(point)["lateral_mm"]


def test_planning_workflow_on_phantom_nodes(scene, tmp_path):
    """Fusion → nuclei → AC-PC → targets → vessels → trajectory safety → export, all on MRML nodes."""
    from QSMLogic.phantom import HEAD_SCALE, label_of, make_head_model
    from QSMLogic.phantom.model import VEINS
    from QSMLogic.targeting.trajectory import entry_from_angles

    h = make_head_model((96, 96, 64), (2.0, 2.0, 2.0))
    rng = np.random.default_rng(1)
    t1_lut = np.zeros(256, np.float32)
    for name, v in (("scalp", 0.9), ("skull", 0.1), ("CSF", 0.15), ("ventricles", 0.15), ("GM", 0.55), ("WM", 0.85),
                    ("thalamus", 0.68), ("putamen", 0.62), ("caudate", 0.6)):
        t1_lut[label_of(name)] = v
    for name in ("globus pallidus externa (GPe)", "globus pallidus interna (GPi)", "subthalamic nucleus",
                 "substantia nigra", "red nucleus", "dentate nucleus", "nucleus accumbens", "veins"):
        t1_lut[label_of(name)] = 0.65

    def volume(arr, affine, name, cls="vtkMRMLScalarVolumeNode"):
        node = scene.AddNewNodeByClass(cls, name)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(arr.transpose(2, 1, 0)))
        node.SetIJKToRASMatrix(tn._numpy_to_matrix(affine))
        node.CreateDefaultDisplayNodes()
        return node

    # the GRE session sees the head moved by a known rigid transform (same voxels, moved affine)
    known = rigid(7.0, (0.2, 1.0, 0.3), (4.0, -6.0, 3.0))
    gre_aff = known @ h.affine
    anatomy = volume((t1_lut[h.labels] + rng.normal(0, 0.02, h.shape)).astype(np.float32), h.affine, "T1")
    magnitude = volume((h.proton_density * np.exp(-h.r2star_hz * 0.02) + rng.normal(0, 0.02, h.shape))
                       .astype(np.float32), gre_aff, "GRE magnitude")
    qsm = volume((h.chi_ppm + rng.normal(0, 0.01, h.shape)).astype(np.float32), gre_aff, "QSM")
    labels = volume(h.labels.astype(np.int16), gre_aff, "nuclei labels", "vtkMRMLLabelMapVolumeNode")
    brain = volume(h.brain_mask.astype(np.uint8), gre_aff, "brain", "vtkMRMLLabelMapVolumeNode")

    fused = tn.fuse_volumes(scene, anatomy, magnitude, [qsm, labels, brain], shrink_factors=(4, 2),
                            smoothing_sigmas_mm=(4.0, 2.0))   # two pyramid levels, to keep the test short
    angle_err = np.degrees(np.arccos(np.clip((np.trace((tn.transform_to_world(fused) @ known)[:3, :3]) - 1) / 2,
                                             -1, 1)))
    assert angle_err < 1.0 and qsm.GetParentTransformNode() is fused
    nuclei = tn.nuclei_of_label_node(labels)
    assert nuclei == {"STN": [label_of("subthalamic nucleus")], "GPi": [label_of("globus pallidus interna (GPi)")]}
    seg = tn.nuclei_segmentation(scene, labels, nuclei)
    assert seg.GetSegmentation().GetNumberOfSegments() == 2 and seg.GetParentTransformNode() is fused

    landmarks = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AC-PC")   # placed on the anatomy
    for label, p in (("AC", (0.0, 1.5, -3.5)), ("PC", (0.0, -25.0, -1.5)), ("midline", (0.0, -10.0, 50.0))):
        landmarks.AddControlPoint(vtk.vtkVector3d(*(HEAD_SCALE * np.asarray(p))), label)
    targets = tn.targets_from_label_node(scene, labels, nuclei, {"STN": "dorsolateral"}, landmarks, vim=True)
    pts = dict(tn.control_points_world(targets))
    assert sorted(pts) == ["GPi left", "GPi right", "STN left", "STN right", "Vim left", "Vim right"]
    assert acpc_describe_lateral(landmarks, pts["Vim left"]) == pytest.approx(14.5, abs=1e-3)
    with pytest.raises(QSMInputError, match="give the AC-PC landmarks"):
        tn.targets_from_label_node(scene, labels, nuclei, vim=True)
    # targets found in GRE space land on the anatomy's nuclei (fusion error + 2 mm voxels)
    anat_gpi = np.argwhere(h.labels == label_of("globus pallidus interna (GPi)")) @ h.affine[:3, :3].T \
        + h.affine[:3, 3]
    assert np.linalg.norm(pts["GPi right"] - anat_gpi[anat_gpi[:, 0] > 0].mean(axis=0)) < 1.0
    assert "dorsolateral" in targets.GetNthControlPointDescription(0) and "AC-PC" in \
        targets.GetNthControlPointDescription(0)

    vessels = tn.vessels_from_volume(scene, qsm, "frangi", 0.05, True, brain)
    assert "Frangi" in vessels.GetAttribute(tn.REPORT_ATTRIBUTE)
    # one proposed trajectory, one through the cortical vein parallel to B0 (in anatomy space)
    acpc = tn.acpc_from_markups(landmarks)
    safe = tn.add_trajectory(scene, entry_from_angles(pts["GPi right"], acpc.rotation, "right"), pts["GPi right"],
                             "GPi right trajectory")
    vein_point = HEAD_SCALE * np.mean(VEINS[4][0], axis=0)    # fused, GRE-space structures are back in place
    risky = tn.add_trajectory(scene, pts["STN left"] + 1.6 * (vein_point - pts["STN left"]), pts["STN left"],
                              "STN left trajectory")
    table, reports = tn.evaluate_trajectories(scene, [safe, risky], vessels, labels, nuclei, margin_mm=2.0)
    assert reports["STN left trajectory"].warnings and "vessel" in reports["STN left trajectory"].warnings[0]
    assert reports["STN left trajectory"].target_depth_in_nucleus_mm is not None
    assert table.GetNumberOfRows() == 2 and "vessel" in table.GetCellText(1, table.GetNumberOfColumns() - 1)
    files = tn.export_plan(str(tmp_path / "plan"), targets, [safe, risky], landmarks, None)
    assert sorted(os.path.basename(f) for f in files) == ["GPi_right_trajectory.mrk.json",
                                                          "STN_left_trajectory.mrk.json", "targets.csv",
                                                          "targets.mrk.json"]
    assert "lateral_mm" in open(files[-1]).readline()
    views = tn.planning_views(str(tmp_path / "plan"), [risky], qsm, anatomy, labels, nuclei, vessels)
    assert os.path.basename(views[0]) == "STN_left_trajectory_views.png" and os.path.getsize(views[0]) > 50_000
