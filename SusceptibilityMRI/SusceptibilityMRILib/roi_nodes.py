"""Deep-grey-nuclei measures as MRML nodes: a table node, a Segmentation node of the nuclei (named, coloured, shown
as outlines) and a bar plot (plot series + plot chart node), from the registered atlas, a label map node or a
Segmentation node (Segment Editor) on any grid.

No Qt: runs on slicer-core (pytest) as in Slicer. The scene needs a ``vtkSlicerSegmentationsModuleLogic`` attached
(as Slicer's Segmentations module does) for the Segmentation node parts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import slicer
import vtk

from QSMLogic.errors import QSMInputError
from QSMLogic.roi.atlas import Region
from QSMLogic.roi.measures import SOURCE_NUMERIC_COLUMNS, RegionMeasure, measure_regions
from QSMLogic.roi.regions import SubjectRegions, atlas_regions, user_regions

from .mrml_adapter import _node_name, array_ijk, create_folder, ijk_to_ras, mask_from_node, place_in_folder

#: Numeric columns of the table node (the rest are text).
NUMERIC_COLUMNS = ("label", "n_voxels", "volume_mm3", "mean_ppm", "median_ppm", "sd_ppm", "p10_ppm", "p90_ppm",
                   "erosion_mm", "reference_offset_ppm", "coverage")
TEXT_COLUMNS = ("region", "structure", "side", "source", "reference", "flag")


def measures_to_table(scene: Any, rows: Sequence[RegionMeasure], name: str) -> Any:
    """A NEW table node, one row per region; statistics of rows not measured are NaN with the reason in ``flag``.
    Rows measured with the source-separation maps add their χ⁺/|χ⁻| columns (and the sign convention)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    records = [r.as_dict() for r in rows]
    sources = bool(records) and all(r.sources for r in rows)
    text = TEXT_COLUMNS + (("chi_sources_convention",) if sources else ())
    numeric = NUMERIC_COLUMNS + (SOURCE_NUMERIC_COLUMNS if sources else ())
    for col in text:
        arr = vtk.vtkStringArray()
        arr.SetName(col)
        for d in records:
            arr.InsertNextValue(str(d[col]))
        table.AddColumn(arr)
    for col in numeric:
        arr = vtk.vtkDoubleArray()
        arr.SetName(col)
        for d in records:
            v = d[col]
            arr.InsertNextValue(float("nan") if v is None else float(v))
        table.AddColumn(arr)
    return table


def labels_to_segmentation(scene: Any, labels_ijk: np.ndarray, regions: Dict[int, Region], reference_node: Any,
                           name: str) -> Any:
    """A NEW Segmentation node with one segment per region present (named and coloured as the region), shown as
    outlines in the slice views, on ``reference_node``'s grid."""
    logic = getattr(slicer, "vtkSlicerSegmentationsModuleLogic", None)
    if logic is None:
        raise QSMInputError("a Segmentation node needs the Segmentations module logic")
    lab = np.asarray(labels_ijk)
    dims = tuple(reference_node.GetImageData().GetDimensions())
    if lab.shape != dims:
        raise QSMInputError(f"label map shape {lab.shape} differs from the reference volume {dims}")
    present = [k for k in sorted(regions) if np.any(lab == k)]
    compact = np.zeros(lab.shape, np.int16)
    for i, k in enumerate(present):   # consecutive values, so segment i+1 is region present[i]
        compact[lab == k] = i + 1
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName(f"{name} labels"))
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    try:
        slicer.util.updateVolumeFromArray(label_node, np.ascontiguousarray(compact.transpose(2, 1, 0)))
        m = vtk.vtkMatrix4x4()
        reference_node.GetIJKToRASMatrix(m)
        label_node.SetIJKToRASMatrix(m)
        seg.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
        if present and not logic.ImportLabelmapToSegmentationNode(label_node, seg):
            raise QSMInputError(f"the regions could not be imported into segmentation '{name}'")
    finally:
        scene.RemoveNode(label_node)
    segmentation = seg.GetSegmentation()
    ids = vtk.vtkStringArray()
    segmentation.GetSegmentIDs(ids)
    by_value = {}
    for i in range(ids.GetNumberOfValues()):
        s = segmentation.GetSegment(ids.GetValue(i))
        by_value[int(s.GetLabelValue())] = s
    for i, k in enumerate(present):
        s = by_value.get(i + 1)
        if s is None:
            continue
        r = regions[k]
        s.SetName(r.name)
        s.SetColor(*(c / 255.0 for c in r.color))
        s.SetTag("QSMLogic.label", str(k))
    seg.CreateDefaultDisplayNodes()
    disp = seg.GetDisplayNode()
    if disp is not None:
        disp.SetVisibility2DFill(False)
        disp.SetVisibility2DOutline(True)
    return seg


def table_to_bar_plot(scene: Any, table: Any, name: str, value_column: str = "mean_ppm") -> Any:
    """A NEW plot chart node with a bar series of ``value_column`` per region (label column ``region``)."""
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(f"{name} {value_column}"))
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
    series.SetLabelColumnName("region")
    series.SetYColumnName(value_column)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle(name)
    chart.SetYAxisTitle("χ (ppm)")
    chart.SetXAxisTitle("region")
    return chart


@dataclass
class RoiNodes:
    """The nodes one measurement made, and its rows."""

    table: Any
    segmentation: Any
    chart: Any
    rows: List[RegionMeasure]
    regions: SubjectRegions


def regions_from_node(node: Any, reference_node: Any) -> SubjectRegions:
    """Regions on ``reference_node``'s grid from a label map volume (any grid: resampled through both IJK-to-RAS
    matrices) or a Segmentation node (each segment a region, exported onto the reference grid)."""
    if node.IsA("vtkMRMLSegmentationNode"):
        logic = getattr(slicer, "vtkSlicerSegmentationsModuleLogic", None)
        scene = node.GetScene() or reference_node.GetScene()
        if logic is None or scene is None:
            raise QSMInputError("regions from a segmentation need the Segmentations module logic and a scene")
        segmentation = node.GetSegmentation()
        if segmentation is None or segmentation.GetNumberOfSegments() == 0:
            raise QSMInputError(f"segmentation '{_node_name(node)}' has no segments")
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(ids)
        label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName("roi export"))
        try:
            if not logic.ExportSegmentsToLabelmapNode(node, ids, label, reference_node,
                                                      slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
                raise QSMInputError(f"segmentation '{_node_name(node)}' could not be exported")
            lab = np.asarray(array_ijk(label)).astype(np.int32)
        finally:
            scene.RemoveNode(label)
        names = {i + 1: segmentation.GetSegment(ids.GetValue(i)).GetName() for i in range(ids.GetNumberOfValues())}
        return user_regions(lab, ijk_to_ras(reference_node), lab.shape, ijk_to_ras(reference_node), names,
                            source=f"segmentation {_node_name(node)}")
    lab = np.asarray(array_ijk(node))
    dims = tuple(reference_node.GetImageData().GetDimensions())
    return user_regions(lab, ijk_to_ras(node), dims, ijk_to_ras(reference_node), None,
                        source=f"label map {_node_name(node)}")


def _on_chi_grid(node: Any, chi_node: Any, what: str) -> np.ndarray:
    """A map node's voxels, refused unless it is on the χ node's grid (the pipeline writes its maps there)."""
    arr = np.asarray(array_ijk(node), np.float32)
    if arr.shape != tuple(chi_node.GetImageData().GetDimensions()) or not np.allclose(
            ijk_to_ras(node), ijk_to_ras(chi_node), atol=1e-4):
        raise QSMInputError(f"the {what} volume '{_node_name(node)}' is not on the χ volume's grid")
    return arr


def measure_nuclei(
    scene: Any,
    chi_node: Any,
    mask_node: Optional[Any] = None,
    regions_node: Optional[Any] = None,
    atlas: Optional[Any] = None,
    registration_node: Optional[Any] = None,
    contrast: str = "qsm",
    reference: str = "whole_brain",
    erosion_mm: float = 0.0,
    run_name: str = "Nuclei",
    progress: Optional[Callable[[float, str], None]] = None,
    cancel: Optional[Callable[[], bool]] = None,
    chi_para_node: Optional[Any] = None,
    chi_dia_node: Optional[Any] = None,
    separation_mask_node: Optional[Any] = None,
) -> RoiNodes:
    """Measure χ per nucleus and hemisphere and add a table, a Segmentation node and a bar plot (in a folder).

    Regions come from ``regions_node`` (label map or Segmentation node, any grid) or else from ``atlas``
    (a :class:`QSMLogic.roi.atlas.Atlas`) registered to ``registration_node`` (default the χ node) with the
    ``contrast`` template. ``chi_para_node``/``chi_dia_node`` (χ⁺ and |χ⁻| of source separation, both on the χ
    node's grid) add their columns, over the voxels of ``separation_mask_node`` when given. ``chi_node`` and the
    other inputs are not modified.
    """
    if chi_node is None:
        raise QSMInputError("select the χ volume to measure")
    chi = np.asarray(array_ijk(chi_node), np.float32)
    aff = ijk_to_ras(chi_node)
    mask = mask_from_node(mask_node, chi_node) if mask_node is not None else (np.isfinite(chi) & (chi != 0))
    if regions_node is not None:
        regs = regions_from_node(regions_node, chi_node)
    elif atlas is not None:
        image = chi if registration_node is None else np.asarray(array_ijk(registration_node), np.float32)
        if image.shape != chi.shape:
            raise QSMInputError("the registration image must be on the χ volume's grid")
        regs = atlas_regions(np.where(mask, image, 0.0), aff, atlas, contrast, subject_mask=mask, progress=progress,
                             cancel=cancel)
    else:
        raise QSMInputError("give a label map / segmentation node or an atlas")
    vox = tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))
    sources = {key: _on_chi_grid(node, chi_node, what) for key, node, what in (
        ("chi_para_ppm", chi_para_node, "χ⁺"), ("chi_dia_ppm", chi_dia_node, "|χ⁻|")) if node is not None}
    if separation_mask_node is not None:
        sources["separation_mask"] = mask_from_node(separation_mask_node, chi_node)
    rows = measure_regions(chi, regs.labels, regs.regions, vox, mask=mask, reference=reference, erosion_mm=erosion_mm,
                           source=regs.source, expected_volume_mm3=regs.expected_volume_mm3, **sources)
    folder = create_folder(scene, run_name)
    table = measures_to_table(scene, rows, f"{run_name} table")
    seg = labels_to_segmentation(scene, regs.labels, regs.regions, chi_node, f"{run_name} regions")
    chart = table_to_bar_plot(scene, table, f"{run_name} mean χ")
    for n in (table, seg, chart):
        place_in_folder(scene, n, folder)
    return RoiNodes(table, seg, chart, rows, regs)


def summary(result: RoiNodes) -> str:
    """One line for the module's status label: rows measured, rows flagged (with their regions) and the nodes."""
    flagged = [f"{r.region}: {r.flag}" for r in result.rows if r.flag]
    measured = sum(r.mean_ppm is not None for r in result.rows)
    text = (f"{len(result.rows)} regions, {measured} measured; table "
            f"'{result.table.GetName()}', segmentation '{result.segmentation.GetName()}', plot "
            f"'{result.chart.GetName()}'.")
    return text + (f" Flagged: {'; '.join(flagged)}." if flagged else "")


def show_nuclei(scene: Any, result: RoiNodes, application_logic: Optional[Any] = None) -> Dict[str, str]:
    """Show a measurement: the four-up plot/table layout, its table and bar plot made the active ones (the
    application logic, when given, puts them into the table and plot views) and its nuclei outlined in the slice
    views. Works on what the scene has (layout node, selection node); returns the node IDs shown per role."""
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        layout.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    if selection is not None:
        selection.SetActiveTableID(result.table.GetID())
        selection.SetActivePlotChartID(result.chart.GetID())
    if application_logic is not None:
        application_logic.PropagateTableSelection()
        application_logic.PropagatePlotChartSelection()
    display = result.segmentation.GetDisplayNode()
    if display is not None:
        display.SetVisibility(True)
    return {"table": result.table.GetID(), "plot": result.chart.GetID(), "segmentation": result.segmentation.GetID()}
