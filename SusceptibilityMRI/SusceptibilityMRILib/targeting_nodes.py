"""MRML side of surgical targeting: markups, transforms, segmentations, tables and views for QSMLogic.targeting.

Like :mod:`.mrml_adapter` it takes the scene as an argument and imports no Qt, so pytest runs it on
``slicer-core``. Points are read and written in world RAS (``...PositionWorld``), so markups under a transform are
handled; matrices are 4×4 numpy arrays (RAS mm).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from QSMLogic.errors import QSMInputError
from QSMLogic.targeting.acpc import ACPCFrame, acpc_frame
from QSMLogic.targeting.export import target_rows

from .mrml_adapter import add_color_legend, place_in_folder

#: Control-point labels accepted for the AC-PC landmarks (case-insensitive) in one fiducial list.
LANDMARK_LABELS = {"AC": ("ac", "anterior commissure"), "PC": ("pc", "posterior commissure"),
                   "midline": ("midline", "ms", "mid", "midsagittal", "ih")}
#: Colour table of the QSM overlay: paramagnetic (iron, veins) warm, brightest for the veins.
QSM_OVERLAY_COLOR = "vtkMRMLColorTableNodeIron"
#: Colour range of the QSM overlay (ppm): from the usual threshold to above the iron-rich nuclei (GP ≈ 0.16),
#: so putamen, GP, STN and veins (≈ 0.4) get different colours.
QSM_OVERLAY_RANGE_PPM = (0.0, 0.3)
#: Node attribute with the JSON report of a target or trajectory (AC-PC and frame coordinates, distances).
REPORT_ATTRIBUTE = "SusceptibilityMRI.Targeting"


def _matrix_to_numpy(m: Any) -> np.ndarray:
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def _numpy_to_matrix(a: np.ndarray) -> Any:
    m = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            m.SetElement(i, j, float(a[i, j]))
    return m


def control_points_world(node: Any, what: str = "markups") -> List[Tuple[str, np.ndarray]]:
    """(label, world RAS position) of every defined control point of a markups node."""
    if node is None:
        raise QSMInputError(f"no {what} node selected")
    out = []
    for i in range(node.GetNumberOfControlPoints()):
        if hasattr(node, "GetNthControlPointPositionStatus") and \
                node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
            continue
        p = [0.0, 0.0, 0.0]
        node.GetNthControlPointPositionWorld(i, p)
        out.append((node.GetNthControlPointLabel(i), np.asarray(p, float)))
    return out


def landmarks_from_markups(node: Any) -> Dict[str, Optional[np.ndarray]]:
    """AC, PC and midline positions (world RAS) from a fiducial list whose points are labelled so.

    Labels are matched case-insensitively (:data:`LANDMARK_LABELS`); a landmark not found is ``None``, so that
    :func:`QSMLogic.targeting.acpc.acpc_frame` names it as missing.
    """
    found: Dict[str, Optional[np.ndarray]] = {k: None for k in LANDMARK_LABELS}
    for label, p in control_points_world(node, "AC-PC landmarks"):
        key = label.strip().lower()
        for name, aliases in LANDMARK_LABELS.items():
            if key in aliases:
                if found[name] is not None:
                    raise QSMInputError(f"two control points are labelled {name}; keep one")
                found[name] = p
    return found


def acpc_from_markups(node: Any) -> ACPCFrame:
    """The AC-PC frame of a fiducial list with points labelled AC, PC and midline."""
    lm = landmarks_from_markups(node)
    return acpc_frame(lm["AC"], lm["PC"], lm["midline"])


def transform_to_world(node: Any, what: str = "frame registration") -> np.ndarray:
    """4×4 matrix of a linear transform node (to world); a non-linear transform is refused."""
    if node is None:
        raise QSMInputError(f"no {what} transform selected")
    if hasattr(node, "IsLinear") and not node.IsLinear():
        raise QSMInputError(f"the {what} transform '{node.GetName()}' is not linear")
    m = vtk.vtkMatrix4x4()
    node.GetMatrixTransformToWorld(m)
    return _matrix_to_numpy(m)


def frame_registration_from_markups(scene: Any, fiducials_node: Any, name: str = "Frame registration") -> Any:
    """A NEW transform node (image RAS → frame-aligned RAS) fitted to localiser fiducials: each control point is
    placed where the localiser shows in the image, and its description holds its known Leksell coordinates
    ``X,Y,Z`` (mm). The fit's RMS and largest residuals are in the node's :data:`REPORT_ATTRIBUTE`."""
    from QSMLogic.targeting.frame import frame_registration_from_fiducials

    image, frame = [], []
    for i, (label, p) in enumerate(control_points_world(fiducials_node, "localiser fiducials")):
        text = fiducials_node.GetNthControlPointDescription(i)
        try:
            xyz = [float(v) for v in text.replace(";", ",").split(",")]
        except ValueError:
            xyz = []
        if len(xyz) != 3:
            raise QSMInputError(f"localiser fiducial '{label}': its description must be its Leksell coordinates "
                                f"'X,Y,Z' (mm), got {text!r}")
        image.append(p)
        frame.append(xyz)
    reg = frame_registration_from_fiducials(image, frame)
    node = add_transform(scene, reg.ras_to_frame, name)
    node.SetAttribute(REPORT_ATTRIBUTE, json.dumps({"fiducials": len(image), "rms_residual_mm": reg.rms_residual_mm,
                                                    "max_residual_mm": reg.max_residual_mm}))
    return node


def add_transform(scene: Any, matrix: np.ndarray, name: str, folder_item: Optional[int] = None) -> Any:
    """A NEW linear transform node whose transform-to-parent is ``matrix`` (4×4, RAS)."""
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", scene.GenerateUniqueName(name))
    node.SetMatrixTransformToParent(_numpy_to_matrix(np.asarray(matrix, float)))
    place_in_folder(scene, node, folder_item)
    return node


def place_under_transform(nodes: Sequence[Any], transform_node: Any) -> None:
    """Put ``nodes`` (GRE-space volumes: QSM, SWI, magnitude) under ``transform_node`` so they show fused."""
    for n in nodes:
        if n is not None:
            n.SetAndObserveTransformNodeID(transform_node.GetID() if transform_node is not None else None)


def add_points(
    scene: Any, points: Sequence[Tuple[str, Sequence[float]]], name: str,
    acpc: Optional[ACPCFrame] = None, ras_to_frame: Optional[np.ndarray] = None,
    color: Tuple[float, float, float] = (1.0, 0.9, 0.1), folder_item: Optional[int] = None,
) -> Any:
    """A NEW fiducial list with one labelled, editable control point per target; each point's description holds
    its AC-PC (and frame) coordinates, and the node attribute :data:`REPORT_ATTRIBUTE` the rows as JSON."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    if node.GetDisplayNode() is not None:
        node.GetDisplayNode().SetSelectedColor(*color)
    rows = target_rows(points, acpc, ras_to_frame)
    for (label, p), row in zip(points, rows):
        i = node.AddControlPointWorld(vtk.vtkVector3d(*[float(c) for c in p]), label)
        node.SetNthControlPointDescription(i, _describe(row))
    node.SetAttribute(REPORT_ATTRIBUTE, json.dumps(rows))
    place_in_folder(scene, node, folder_item)
    return node


def _describe(row: Mapping[str, Any]) -> str:
    parts = [f"RAS ({row['R_mm']:.1f}, {row['A_mm']:.1f}, {row['S_mm']:.1f})"]
    if "lateral_mm" in row:
        parts.append(f"AC-PC {row['lateral_mm']:.1f} {row['side']}, AP {row['AP_mm']:.1f}, "
                     f"vertical {row['vertical_mm']:.1f} mm")
    if "frame_X_mm" in row:
        parts.append(f"frame X {row['frame_X_mm']:.1f}, Y {row['frame_Y_mm']:.1f}, Z {row['frame_Z_mm']:.1f}")
    return "; ".join(parts)


def add_trajectory(
    scene: Any, entry_ras_mm: Sequence[float], target_ras_mm: Sequence[float], name: str,
    folder_item: Optional[int] = None,
) -> Any:
    """A NEW line markup entry → target (control points labelled ``entry`` and ``target``)."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    node.AddControlPointWorld(vtk.vtkVector3d(*[float(c) for c in entry_ras_mm]), "entry")
    node.AddControlPointWorld(vtk.vtkVector3d(*[float(c) for c in target_ras_mm]), "target")
    place_in_folder(scene, node, folder_item)
    return node


def trajectory_points(node: Any) -> Tuple[np.ndarray, np.ndarray]:
    """(entry, target) world RAS of a line markup (first and last control points)."""
    pts = control_points_world(node, "trajectory")
    if len(pts) < 2:
        raise QSMInputError(f"trajectory '{node.GetName()}' needs an entry and a target point, has {len(pts)}")
    return pts[0][1], pts[-1][1]


def add_table(scene: Any, rows: Sequence[Mapping[str, Any]], name: str, folder_item: Optional[int] = None) -> Any:
    """A NEW table node with one row per dict (columns: the union of keys; numbers as double columns)."""
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    for c in cols:
        values = [r.get(c) for r in rows]
        numeric = all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)
                      for v in values if v is not None)
        arr = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        arr.SetName(c)
        for v in values:
            if numeric:
                arr.InsertNextValue(float("nan") if v is None else float(v))
            else:
                arr.InsertNextValue("" if v is None else str(v))
        table.AddColumn(arr)
    place_in_folder(scene, table, folder_item)
    return table


def show_overlay(
    scene: Any, background_node: Any, foreground_node: Any, opacity: float = 0.5,
    lower_threshold: Optional[float] = None, window_range: Tuple[float, float] = QSM_OVERLAY_RANGE_PPM,
    color_node_id: str = QSM_OVERLAY_COLOR, legend_title: Optional[str] = "χ (ppm)",
) -> None:
    """Show ``foreground_node`` (QSM, or the SWI mIP) coloured over ``background_node`` (planning anatomy) in
    every slice view: colour table, window ``window_range``, values below ``lower_threshold`` transparent,
    ``opacity`` 0–1 and a colour legend. Changes the display of ``foreground_node`` and the slice composites only."""
    if not 0.0 <= opacity <= 1.0:
        raise QSMInputError(f"overlay opacity must be within 0..1, got {opacity}")
    foreground_node.CreateDefaultDisplayNodes()
    disp = foreground_node.GetDisplayNode()
    if scene.GetNodeByID(color_node_id) is not None:
        disp.SetAndObserveColorNodeID(color_node_id)
    lo, hi = (float(v) for v in window_range)
    disp.AutoWindowLevelOff()
    disp.SetWindowLevelMinMax(lo, hi)
    if lower_threshold is not None:
        disp.SetApplyThreshold(True)
        disp.SetLowerThreshold(float(lower_threshold))
        disp.SetUpperThreshold(float(max(hi, np.finfo(np.float32).max)))
    else:
        disp.SetApplyThreshold(False)
    if legend_title:
        add_color_legend(foreground_node, legend_title)
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        comp = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        comp.SetBackgroundVolumeID(background_node.GetID() if background_node is not None else None)
        comp.SetForegroundVolumeID(foreground_node.GetID())
        comp.SetForegroundOpacity(float(opacity))


def probe_eye_view(slice_node: Any, entry_ras_mm: Sequence[float], target_ras_mm: Sequence[float],
                   depth_from_target_mm: float = 0.0) -> None:
    """Reslice ``slice_node`` perpendicular to the trajectory (probe's-eye view), centred on the point
    ``depth_from_target_mm`` above the target along the trajectory (0: at the target)."""
    e = np.asarray(entry_ras_mm, float)
    t = np.asarray(target_ras_mm, float)
    d = e - t
    n = float(np.linalg.norm(d))
    if n < 1.0:
        raise QSMInputError("entry and target coincide; no trajectory to reslice along")
    d /= n
    helper = np.array([0.0, 1.0, 0.0]) if abs(d[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    tx = np.cross(helper, d)
    tx /= np.linalg.norm(tx)
    p = t + depth_from_target_mm * d
    slice_node.SetSliceToRASByNTP(*d, *tx, *p, 0)
    slice_node.UpdateMatrices()


def nucleus_colors(names: Sequence[str]) -> Dict[str, Tuple[float, float, float]]:
    """Distinct display colours (RGB 0–1) for nucleus segments, in order."""
    palette = ((0.9, 0.3, 0.2), (0.2, 0.6, 0.9), (0.3, 0.8, 0.3), (0.9, 0.7, 0.1), (0.7, 0.4, 0.9),
               (0.1, 0.8, 0.8), (0.9, 0.5, 0.7), (0.6, 0.6, 0.6))
    return {n: palette[i % len(palette)] for i, n in enumerate(names)}


# ---------------------------------------------------------------------------------------------------------------
# Node-level steps of the planning workflow (what the module logic calls)


def world_affine(node: Any) -> np.ndarray:
    """Index → world RAS matrix of a volume node, including a linear parent transform (a fused GRE volume)."""
    from .mrml_adapter import ijk_to_ras

    aff = ijk_to_ras(node)
    parent = node.GetParentTransformNode()
    return aff if parent is None else transform_to_world(parent, "parent") @ aff


def label_names_of(node: Any) -> Dict[int, str]:
    """Label value → name from a label map's colour table (empty without one)."""
    disp = node.GetDisplayNode()
    colors = disp.GetColorNode() if disp is not None else None
    if colors is None:
        return {}
    return {i: colors.GetColorName(i) for i in range(colors.GetNumberOfColors()) if colors.GetColorName(i)}


def nuclei_of_label_node(node: Any, wanted: Sequence[str] = ("STN", "GPi")) -> Dict[str, List[int]]:
    """Label values of the wanted nuclei, by the names of the node's colour table, else by the phantom's names."""
    from QSMLogic.phantom import LABEL_NAMES
    from QSMLogic.targeting.targets import nuclei_from_names

    names = label_names_of(node)
    try:
        return nuclei_from_names(names, wanted)
    except QSMInputError:
        return nuclei_from_names(LABEL_NAMES, wanted)


def fuse_volumes(scene: Any, anatomy_node: Any, magnitude_node: Any, gre_nodes: Sequence[Any] = (),
                 name: str = "GRE to anatomy", **options: Any) -> Any:
    """Rigid MI registration of the GRE magnitude to the planning anatomy; a NEW transform node holds it and the
    magnitude and ``gre_nodes`` (QSM, SWI, …) are placed under it. ``options`` go to
    :func:`QSMLogic.targeting.fusion.rigid_register`."""
    from QSMLogic.targeting.fusion import rigid_register

    from .mrml_adapter import array_ijk, ijk_to_ras

    if anatomy_node is None or magnitude_node is None:
        raise QSMInputError("fusion needs the planning anatomy and the GRE magnitude volumes")
    res = rigid_register(array_ijk(anatomy_node), world_affine(anatomy_node), array_ijk(magnitude_node),
                         ijk_to_ras(magnitude_node), **options)
    node = add_transform(scene, res.moving_to_fixed, name)
    node.SetAttribute(REPORT_ATTRIBUTE, json.dumps({"method": "rigid Mattes mutual information",
                                                    "metric": res.metric_value, "iterations": res.iterations,
                                                    "stop": res.stop_condition}))
    place_under_transform([magnitude_node, *gre_nodes], node)
    return node


def nuclei_segmentation(scene: Any, label_node: Any, nuclei: Mapping[str, Sequence[int]],
                        name: str = "Nuclei") -> Any:
    """A NEW segmentation, one named, coloured segment per nucleus (all its label values, e.g. both sides), shown
    as outlines on the slice views (:func:`.roi_nodes.labels_to_segmentation`) and as closed surfaces in 3D; under
    the label map's transform (fused GRE space)."""
    from QSMLogic.roi.atlas import Region

    from .mrml_adapter import array_ijk
    from .roi_nodes import labels_to_segmentation

    lab = np.asarray(array_ijk(label_node))
    colors = nucleus_colors(list(nuclei))
    compact = np.zeros(lab.shape, np.int16)
    regions = {}
    for i, (nucleus, values) in enumerate(nuclei.items(), start=1):
        sel = np.isin(lab, np.atleast_1d(values))
        if not sel.any():
            raise QSMInputError(f"nucleus {nucleus!r} has no voxels (labels {list(np.atleast_1d(values))}) in "
                                f"'{label_node.GetName()}'")
        compact[sel] = i
        regions[i] = Region(i, nucleus, nucleus, "", tuple(int(round(255 * c)) for c in colors[nucleus]))
    seg = labels_to_segmentation(scene, compact, regions, label_node, name)
    seg.CreateClosedSurfaceRepresentation()
    if label_node.GetParentTransformNode() is not None:
        seg.SetAndObserveTransformNodeID(label_node.GetParentTransformNode().GetID())
    return seg


def targets_from_label_node(
    scene: Any, label_node: Any, nuclei: Mapping[str, Sequence[int]],
    subregions: Optional[Mapping[str, str]] = None, landmarks_node: Any = None, frame_transform_node: Any = None,
    name: str = "Targets", vim: bool = False,
) -> Any:
    """Proposed right/left targets of each nucleus (centroid or stated subregion) as an editable fiducial list, in
    world RAS, described in AC-PC coordinates when AC-PC landmarks are given and in Leksell coordinates when a
    frame registration transform (image RAS → frame-aligned RAS) is given. ``vim`` adds the indirect (AC-PC
    formula) Vim targets, which need the landmarks."""
    from QSMLogic.targeting.targets import nucleus_targets, vim_indirect_target

    from .mrml_adapter import array_ijk

    acpc = acpc_from_markups(landmarks_node) if landmarks_node is not None else None
    ras_to_frame = transform_to_world(frame_transform_node) if frame_transform_node is not None else None
    found = nucleus_targets(np.asarray(array_ijk(label_node)), world_affine(label_node), nuclei, subregions, acpc)
    if vim:
        if acpc is None:
            raise QSMInputError("the Vim target is placed by the AC-PC formula: give the AC-PC landmarks")
        found += [vim_indirect_target(acpc, side) for side in ("right", "left")]
    node = add_points(scene, [(t.name, t.ras_mm) for t in found], name, acpc, ras_to_frame)
    for i, t in enumerate(found):
        node.SetNthControlPointDescription(i, f"{t.method}; " + node.GetNthControlPointDescription(i))
    return node


def vessels_from_volume(
    scene: Any, volume_node: Any, method: str = "frangi", threshold: float = 0.05, bright: bool = True,
    mask_node: Any = None, name: str = "Vessels",
) -> Any:
    """A NEW label map (1 = vessel) on the volume's grid: Frangi vesselness above ``threshold`` or the volume
    thresholded (QSM ppm / SWI intensity); its method is stated in the node's :data:`REPORT_ATTRIBUTE`."""
    from QSMLogic.targeting.vessels import segment_vessels, threshold_vessels

    from QSMLogic.geometry import voxel_size_from_affine

    from .mrml_adapter import array_ijk, mask_from_node

    arr = np.asarray(array_ijk(volume_node), np.float32)
    mask = mask_from_node(mask_node, volume_node) if mask_node is not None else None
    vs = voxel_size_from_affine(world_affine(volume_node))
    if method == "frangi":
        vessels = segment_vessels(arr, vs, threshold=threshold, bright=bright, mask=mask)
        how = f"Frangi vesselness (Frangi 1998) > {threshold:g}, {'bright' if bright else 'dark'} vessels"
    elif method == "threshold":
        vessels = threshold_vessels(arr, vs, threshold, bright=bright, mask=mask)
        how = f"threshold {'>' if bright else '<'} {threshold:g}"
    else:
        raise QSMInputError(f"vessel method must be 'frangi' or 'threshold', got {method!r}")
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName(name))
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(vessels.transpose(2, 1, 0).astype(np.uint8)))
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    if volume_node.GetParentTransformNode() is not None:
        node.SetAndObserveTransformNodeID(volume_node.GetParentTransformNode().GetID())
    node.CreateDefaultDisplayNodes()
    node.SetAttribute(REPORT_ATTRIBUTE, json.dumps({"method": how, "source": volume_node.GetName(),
                                                    "voxels": int(vessels.sum())}))
    return node


def _resampled_mask(mask_node: Any, values: Optional[Sequence[int]], shape: Tuple[int, ...],
                    affine: np.ndarray) -> np.ndarray:
    """A mask of ``mask_node`` (``values`` of it, or non-zero) on the grid (shape, affine), nearest neighbour."""
    from scipy import ndimage as ndi

    from .mrml_adapter import array_ijk

    arr = np.asarray(array_ijk(mask_node))
    sel = np.isin(arr, values) if values is not None else arr != 0
    src = world_affine(mask_node)
    if sel.shape == tuple(shape) and np.allclose(src, affine, atol=1e-4):
        return sel
    to_src = np.linalg.inv(src) @ affine
    return ndi.affine_transform(sel.astype(np.uint8), to_src[:3, :3], offset=to_src[:3, 3], output_shape=shape,
                                order=0, mode="constant", cval=0).astype(bool)


def evaluate_trajectories(
    scene: Any, line_nodes: Sequence[Any], vessel_node: Any = None, label_node: Any = None,
    nuclei: Optional[Mapping[str, Sequence[int]]] = None, margin_mm: float = 2.0, name: str = "Trajectory safety",
) -> Tuple[Any, Dict[str, Any]]:
    """Distances of each trajectory (line markup, entry → target) to the vessels and to each nucleus boundary,
    as a NEW table node (one row per trajectory, warnings included) and the reports by trajectory name. The
    target's nucleus is the one whose name starts the line's name (e.g. ``STN right trajectory``)."""
    from QSMLogic.targeting.trajectory import report_rows, trajectory_report

    from .mrml_adapter import array_ijk

    if not line_nodes:
        raise QSMInputError("no trajectories: place entry → target line markups first")
    grid = vessel_node if vessel_node is not None else label_node
    if grid is None:
        raise QSMInputError("give a vessel segmentation or a nucleus label map to measure distances to")
    shape = tuple(np.asarray(array_ijk(grid)).shape)
    aff = world_affine(grid)
    vessels = _resampled_mask(vessel_node, None, shape, aff) if vessel_node is not None else None
    masks = {n: _resampled_mask(label_node, v, shape, aff) for n, v in (nuclei or {}).items()} \
        if label_node is not None else {}
    reports = {}
    for line in line_nodes:
        entry, target = trajectory_points(line)
        title = line.GetName()
        target_nucleus = next((n for n in masks if title.startswith(n)), None)
        reports[title] = trajectory_report(entry, target, aff, vessels, masks, target_nucleus, margin_mm)
        line.SetAttribute(REPORT_ATTRIBUTE, json.dumps(report_rows({title: reports[title]})[0]))
    return add_table(scene, report_rows(reports), name), reports


def export_plan(folder: str, target_node: Any = None, line_nodes: Sequence[Any] = (),
                landmarks_node: Any = None, frame_transform_node: Any = None) -> List[str]:
    """Write the targets and trajectories as ``.mrk.json`` (RAS) and one CSV (RAS, AC-PC and frame columns)."""
    import os

    from QSMLogic.targeting.export import markups_document, write_csv, write_markups_json

    if target_node is None and not line_nodes:
        raise QSMInputError("nothing to export: no targets or trajectories")
    os.makedirs(folder, exist_ok=True)
    acpc = acpc_from_markups(landmarks_node) if landmarks_node is not None else None
    ras_to_frame = transform_to_world(frame_transform_node) if frame_transform_node is not None else None
    written, points = [], []
    if target_node is not None:
        pts = control_points_world(target_node, "targets")
        written.append(write_markups_json(os.path.join(folder, "targets.mrk.json"),
                                          markups_document("Fiducial", pts, target_node.GetName())))
        points += pts
    for line in line_nodes:
        entry, target = trajectory_points(line)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in line.GetName())
        written.append(write_markups_json(os.path.join(folder, f"{safe}.mrk.json"), markups_document(
            "Line", [("entry", entry), ("target", target)], line.GetName())))
        points += [(f"{line.GetName()} entry", entry), (f"{line.GetName()} target", target)]
    written.append(write_csv(os.path.join(folder, "targets.csv"), target_rows(points, acpc, ras_to_frame)))
    return [str(p) for p in written]


def planning_views(folder: str, line_nodes: Sequence[Any], qsm_node: Any, anatomy_node: Any = None,
                   label_node: Any = None, nuclei: Optional[Mapping[str, Sequence[int]]] = None,
                   vessel_node: Any = None) -> List[str]:
    """One planning-views PNG per trajectory (axial, coronal, sagittal and probe's-eye planes through its target;
    :func:`QSMLogic.targeting.figure.planning_figure`), from the nodes in world RAS (fused volumes line up)."""
    import os

    from QSMLogic.targeting.figure import planning_figure

    from .mrml_adapter import array_ijk

    if qsm_node is None:
        raise QSMInputError("planning views need the QSM volume")

    def vol(node: Any) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        return None if node is None else (np.asarray(array_ijk(node)), world_affine(node))

    os.makedirs(folder, exist_ok=True)
    qsm, anatomy, labels, vessels = vol(qsm_node), vol(anatomy_node), vol(label_node), vol(vessel_node)
    written = []
    for line in line_nodes:
        entry, target = trajectory_points(line)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in line.GetName())
        written.append(str(planning_figure(os.path.join(folder, f"{safe}_views.png"), target, qsm, anatomy,
                                           labels if nuclei else None, nuclei, vessels, entry, line.GetName())))
    return written
