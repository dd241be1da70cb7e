"""ROI measures as MRML nodes on slicer-core: table, Segmentation node of the nuclei, bar plot; a Segmentation node
and a label map on another grid as region sources."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "SusceptibilityMRI"))

from SusceptibilityMRILib import roi_nodes  # noqa: E402

from QSMLogic.errors import QSMInputError  # noqa: E402
from QSMLogic.phantom import label_of, make_head_model  # noqa: E402


def _volume(scene, arr, affine, name, cls="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(cls, name)
    dtype = np.int16 if "LabelMap" in cls else np.float32
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(arr, dtype).transpose(2, 1, 0)))
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(affine[r, c]))
    node.SetIJKToRASMatrix(m)
    return node


def test_nodes_from_label_map_on_another_grid(scene):
    m = make_head_model((48, 56, 40), (3.0, 3.0, 3.0))
    chi = _volume(scene, m.chi_ppm, m.affine, "chi")
    mask = _volume(scene, m.brain_mask, m.affine, "mask", "vtkMRMLLabelMapVolumeNode")
    keep = np.isin(m.labels, [label_of("putamen"), label_of("caudate")])
    lab = np.where(keep, m.labels, 0)
    # the same labels on a grid shifted by whole voxels and with reversed i axis: identical after resampling
    aff2 = m.affine.copy()
    aff2[0, 0] = -3.0
    aff2[0, 3] = m.affine[0, 3] + 3.0 * (m.shape[0] - 1)
    lab_node = _volume(scene, lab[::-1], aff2, "labels", "vtkMRMLLabelMapVolumeNode")
    before = slicer.util.arrayFromVolume(chi).copy()
    out = roi_nodes.measure_nuclei(scene, chi, mask_node=mask, regions_node=lab_node, reference="none")
    assert np.array_equal(slicer.util.arrayFromVolume(chi), before)   # input untouched
    assert np.array_equal(out.regions.labels, lab)
    table = out.table
    assert table.GetNumberOfRows() == 2
    means = {table.GetCellText(i, 0): float(table.GetCellText(i, TEXT_COL + 3)) for i in range(2)}
    for k in (label_of("putamen"), label_of("caudate")):
        want = float(m.chi_ppm[(m.labels == k) & m.brain_mask].mean())
        assert means[f"label {k}"] == pytest.approx(want, abs=1e-5)
    seg = out.segmentation.GetSegmentation()
    assert seg.GetNumberOfSegments() == 2
    names = sorted(seg.GetNthSegment(i).GetName() for i in range(2))
    assert names == [f"label {label_of('caudate')}", f"label {label_of('putamen')}"]
    assert out.segmentation.GetDisplayNode().GetVisibility2DOutline()
    assert not out.segmentation.GetDisplayNode().GetVisibility2DFill()
    assert out.chart.GetNumberOfPlotSeriesNodes() == 1
    series = out.chart.GetNthPlotSeriesNode(0)
    assert series.GetPlotType() == slicer.vtkMRMLPlotSeriesNode.PlotTypeBar and series.GetYColumnName() == "mean_ppm"


TEXT_COL = len(roi_nodes.TEXT_COLUMNS)


def test_segmentation_node_as_regions(scene):
    m = make_head_model((40, 48, 32), (4.0, 4.0, 4.0))
    chi = _volume(scene, m.chi_ppm, m.affine, "chi")
    lab = np.where(m.labels == label_of("putamen"), 1, 0) + np.where(m.labels == label_of("thalamus"), 2, 0)
    lab_node = _volume(scene, lab, m.affine, "user", "vtkMRMLLabelMapVolumeNode")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "drawn")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(lab_node, seg)
    segmentation = seg.GetSegmentation()
    segmentation.GetNthSegment(0).SetName("L+R putamen")
    segmentation.GetNthSegment(1).SetName("thalamus")
    out = roi_nodes.measure_nuclei(scene, chi, regions_node=seg, reference="none")
    rows = {r.region: r for r in out.rows}
    assert set(rows) == {"L+R putamen", "thalamus"}
    want = float(m.chi_ppm[(m.labels == label_of("thalamus")) & (m.chi_ppm != 0)].mean())
    assert rows["thalamus"].mean_ppm == pytest.approx(want, abs=1e-5)
    assert rows["thalamus"].source == "segmentation drawn"
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(QSMInputError, match="no segments"):
        roi_nodes.measure_nuclei(scene, chi, regions_node=empty)
    with pytest.raises(QSMInputError, match="label map / segmentation node or an atlas"):
        roi_nodes.measure_nuclei(scene, chi)


def test_source_separation_columns(scene):
    """χ⁺ and |χ⁻| result nodes add their columns (issue 16); without them the table has none; off-grid refused."""
    m = make_head_model((48, 56, 40), (3.0, 3.0, 3.0))
    chi = _volume(scene, m.chi_ppm, m.affine, "chi")
    para = _volume(scene, m.chi_para_ppm, m.affine, "chi_para")
    dia = _volume(scene, m.chi_dia_ppm, m.affine, "chi_dia")
    keep = np.isin(m.labels, [label_of("putamen"), label_of("globus pallidus externa (GPe)")])
    lab_node = _volume(scene, np.where(keep, m.labels, 0), m.affine, "labels", "vtkMRMLLabelMapVolumeNode")
    out = roi_nodes.measure_nuclei(scene, chi, regions_node=lab_node, reference="none", chi_para_node=para,
                                   chi_dia_node=dia)
    table = out.table
    cols = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    assert "chi_sources_convention" in cols and "chi_para_mean_ppm" in cols and "chi_dia_sd_ppm" in cols
    for i in range(table.GetNumberOfRows()):
        k = int(float(table.GetCellText(i, cols.index("label"))))
        sel = (m.labels == k) & (m.chi_ppm != 0)
        for name, truth in (("chi_para_mean_ppm", m.chi_para_ppm), ("chi_dia_mean_ppm", m.chi_dia_ppm)):
            assert float(table.GetCellText(i, cols.index(name))) == pytest.approx(float(truth[sel].mean()), abs=1e-5)
        assert "net χ = chi_para − chi_dia" in table.GetCellText(i, cols.index("chi_sources_convention"))
    plain = roi_nodes.measure_nuclei(scene, chi, regions_node=lab_node, reference="none").table
    assert not [plain.GetColumnName(c) for c in range(plain.GetNumberOfColumns())
                if plain.GetColumnName(c).startswith("chi_")]
    shifted = m.affine.copy()
    shifted[0, 3] += 1.5
    with pytest.raises(QSMInputError, match="not on the χ volume's grid"):
        roi_nodes.measure_nuclei(scene, chi, regions_node=lab_node, chi_para_node=para,
                                 chi_dia_node=_volume(scene, m.chi_dia_ppm, shifted, "off"))
