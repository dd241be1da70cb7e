"""MRML adapter and node-level runs on real MRML nodes (slicer-core): geometry, B0 direction, new result nodes,
storage round trips, echo times / B0 from attributes, a (stand-in) DICOM database and BIDS sidecars, sequence
inputs, segmentation masks, colour legends and the QSM/SWI runs on the head phantom."""
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

from SusceptibilityMRILib import mrml_adapter as ad  # noqa: E402
from SusceptibilityMRILib import runner  # noqa: E402


from QSMLogic.errors import QSMCancelled, QSMInputError  # noqa: E402
from QSMLogic.pipeline import PipelineConfig  # noqa: E402
from QSMLogic.worker import parse_worker_line  # noqa: E402
from QSMLogic.geometry import b0_direction_from_affine, reverse_axes_affine, rotation_matrix  # noqa: E402

SPACING = (0.8, 1.1, 2.5)
ORIGIN = (12.0, -30.5, 45.25)


class FakeDicomDatabase:
    """Stand-in for Slicer's ctkDICOMDatabase: ``instanceValue(uid, "gggg,eeee")`` and ``fileForInstance(uid)``."""

    def __init__(self, values=None, files=None):
        self.values = dict(values or {})
        self.files = dict(files or {})
        self.asked = []

    def instanceValue(self, uid, tag):
        self.asked.append((uid, tag))
        return self.values.get((uid, tag), "")

    def fileForInstance(self, uid):
        return self.files.get(uid, "")


def oblique_affine() -> np.ndarray:
    """IJK-to-RAS rotated about two axes (x by 20°, then z by -35°), anisotropic spacing, non-zero origin."""
    r = rotation_matrix((0, 0, 1), -35.0) @ rotation_matrix((1, 0, 0), 20.0)
    a = np.eye(4)
    a[:3, :3] = r * np.asarray(SPACING)[None, :]
    a[:3, 3] = ORIGIN
    return a


def add_volume(scene, array_ijk: np.ndarray, affine: np.ndarray, name: str, cls: str = "vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(cls, name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(array_ijk).transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(affine))
    return node


def test_oblique_volume_arrays_voxel_size_and_b0(scene):
    rng = np.random.default_rng(1)
    arr = rng.standard_normal((7, 6, 5)).astype(np.float32)  # (i, j, k)
    aff = oblique_affine()
    node = add_volume(scene, arr, aff, "oblique")
    va = ad.volume_arrays(node)
    assert va.array.shape == (7, 6, 5)
    np.testing.assert_array_equal(va.array, arr)
    np.testing.assert_allclose(va.affine, aff, atol=1e-12)
    np.testing.assert_allclose(va.voxel_size_mm, SPACING, rtol=1e-12)
    # direct computation: unit direction matrix R, b0 = R^T (0, 0, 1), in (i, j, k) order
    r = aff[:3, :3] / np.asarray(SPACING)[None, :]
    direct = r.T @ np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(va.b0_direction, direct, atol=1e-12)
    np.testing.assert_allclose(va.b0_direction, b0_direction_from_affine(aff), atol=1e-12)
    assert abs(va.b0_direction[2]) < 0.95 and abs(va.b0_direction[1]) > 0.3  # really oblique
    # back in world space the direction is the scanner's z axis
    np.testing.assert_allclose(r @ np.asarray(va.b0_direction), [0, 0, 1], atol=1e-12)
    # the same volume in Slicer's (k, j, i) order has the reversed B0 direction and voxel size
    np.testing.assert_allclose(b0_direction_from_affine(reverse_axes_affine(aff)), direct[::-1], atol=1e-12)
    # the view is read-only: the library cannot write into the node's memory
    with pytest.raises(ValueError):
        va.array[0, 0, 0] = 1.0


def test_result_node_has_input_geometry_and_input_is_untouched(scene):
    rng = np.random.default_rng(2)
    arr = rng.random((9, 8, 6)).astype(np.float32)
    aff = oblique_affine()
    src = add_volume(scene, arr, aff, "input")
    before_arr = slicer.util.arrayFromVolume(src).copy()
    before_mat = ad.ijk_to_ras(src).copy()
    n_volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")

    chi = (arr - 0.5).astype(np.float32)
    out = ad.outputs_to_nodes(scene, {"chi_ppm": chi, "mask": arr > 0.5}, src, "run A", {"stages": ["x"]})
    node, mask = out["chi_ppm"], out["mask"]
    assert node is not src and node.GetID() != src.GetID()
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == n_volumes + 2  # label maps are scalar too
    np.testing.assert_array_equal(ad.ijk_to_ras(node), before_mat)  # bit-exact copy of IJK-to-RAS
    assert node.GetSpacing() == src.GetSpacing() and node.GetOrigin() == src.GetOrigin()
    d_src, d_out = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    src.GetIJKToRASDirectionMatrix(d_src)
    node.GetIJKToRASDirectionMatrix(d_out)
    assert all(d_src.GetElement(i, j) == d_out.GetElement(i, j) for i in range(4) for j in range(4))
    np.testing.assert_array_equal(ad.array_ijk(node), chi)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(src), before_arr)
    np.testing.assert_array_equal(ad.ijk_to_ras(src), before_mat)
    # display: QSM grey, window -0.15..+0.25 ppm; mask as label map
    disp = node.GetDisplayNode()
    assert disp.GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    assert disp.GetWindow() == pytest.approx(0.40) and disp.GetLevel() == pytest.approx(0.05)
    assert disp.GetLevel() - disp.GetWindow() / 2 == pytest.approx(-0.15)
    assert mask.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(ad.array_ijk(mask), (arr > 0.5).astype(np.int16))
    # provenance and subject hierarchy folder
    assert ad.read_provenance(node) == {"stages": ["x"], "output": "chi_ppm"}
    assert json.loads(mask.GetAttribute(ad.PROVENANCE_ATTRIBUTE))["output"] == "mask"
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.GetItemParent(sh.GetItemByDataNode(node))
    assert sh.GetItemName(folder) == "run A" and sh.GetItemParent(sh.GetItemByDataNode(mask)) == folder


def test_result_shape_mismatch_is_an_error(scene):
    src = add_volume(scene, np.zeros((4, 5, 6), np.float32), np.eye(4), "ref")
    with pytest.raises(QSMInputError, match="shape"):
        ad.add_result_volume(scene, np.zeros((6, 5, 4), np.float32), src, "bad", "chi_ppm")


def test_mismatched_echo_geometry_names_the_nodes(scene):
    aff = oblique_affine()
    a = add_volume(scene, np.zeros((6, 5, 4), np.float32), aff, "echo1")
    shifted = aff.copy()
    shifted[:3, 3] += (0.0, 0.5, 0.0)
    b = add_volume(scene, np.zeros((6, 5, 4), np.float32), shifted, "echo2")
    c = add_volume(scene, np.zeros((6, 5, 3), np.float32), aff, "echo3")
    with pytest.raises(QSMInputError, match="'echo2' and 'echo1' have different geometry"):
        ad.check_same_geometry([a, b])
    with pytest.raises(QSMInputError, match=r"'echo3' has dimensions \(6, 5, 3\)"):
        ad.stack_echoes([a, c], "phase volumes")
    with pytest.raises(QSMInputError, match="no echo volumes"):
        ad.check_same_geometry([])
    model = scene.AddNewNodeByClass("vtkMRMLModelNode", "surface")
    with pytest.raises(QSMInputError, match="'surface' is a vtkMRMLModelNode"):
        ad.check_same_geometry([a, model])


@pytest.mark.parametrize("ext", ["nrrd", "nii.gz"])
def test_storage_round_trip_keeps_geometry_and_values(scene, tmp_path, ext):
    rng = np.random.default_rng(3)
    arr = rng.standard_normal((8, 7, 5)).astype(np.float32)
    aff = oblique_affine()
    src = add_volume(scene, arr, aff, "map")
    path = str(tmp_path / f"map.{ext}")
    ad.save_volume(src, path)
    back = ad.load_volume(scene, path, "map back")
    np.testing.assert_array_equal(ad.array_ijk(back), arr)
    np.testing.assert_allclose(ad.ijk_to_ras(back), aff, atol=1e-5)
    # a label map too
    lab = add_volume(scene, (arr > 0).astype(np.int16), aff, "lab", "vtkMRMLLabelMapVolumeNode")
    lpath = str(tmp_path / f"lab.{ext}")
    ad.save_volume(lab, lpath)
    lback = ad.load_volume(scene, lpath, "lab back", label=True)
    assert lback.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(ad.array_ijk(lback), (arr > 0).astype(np.int16))
    np.testing.assert_allclose(ad.ijk_to_ras(lback), aff, atol=1e-5)
    with pytest.raises(OSError, match="could not read"):
        ad.load_volume(scene, str(tmp_path / "missing.nrrd"))


def _echo_nodes(scene, n=3, shape=(10, 9, 8), te_ms=(5.0, 10.0, 15.0), with_attributes=True):
    rng = np.random.default_rng(4)
    aff = oblique_affine()
    field_hz = rng.uniform(-20, 20, shape)
    mags, phs = [], []
    for e in range(n):
        ph = np.angle(np.exp(2j * np.pi * field_hz * te_ms[e] * 1e-3)).astype(np.float32)
        m = add_volume(scene, rng.uniform(50, 100, shape).astype(np.float32), aff, f"mag{e}")
        p = add_volume(scene, ph, aff, f"phase{e}")
        if with_attributes:
            for node in (m, p):
                node.SetAttribute("DICOM.EchoTime", str(te_ms[e]))
                node.SetAttribute("DICOM.MagneticFieldStrength", "2.89")
        mags.append(m)
        phs.append(p)
    return mags, phs


def test_gre_from_nodes_reads_echo_times_b0_and_phase_scaling(scene):
    mags, phs = _echo_nodes(scene)
    gre = ad.gre_from_nodes(mags, phs)
    assert gre.phase_rad.shape == (10, 9, 8, 3)
    np.testing.assert_allclose(gre.te_s, [0.005, 0.010, 0.015])
    assert gre.b0_tesla == pytest.approx(2.89)
    assert gre.metadata["te_source"] == "DICOM.EchoTime attributes"
    np.testing.assert_allclose(gre.b0_direction, b0_direction_from_affine(oblique_affine()), atol=1e-12)
    np.testing.assert_array_equal(gre.phase_rad[..., 1], ad.array_ijk(phs[1]))
    # user values win over attributes; phase sign flips
    gre2 = ad.gre_from_nodes(mags, phs, echo_times_s=[0.004, 0.008, 0.012], b0_tesla=7.0, phase_sign=-1)
    np.testing.assert_allclose(gre2.te_s, [0.004, 0.008, 0.012])
    assert gre2.b0_tesla == 7.0
    np.testing.assert_array_equal(gre2.phase_rad, -gre.phase_rad)


def test_gre_from_nodes_dicom_integer_phase(scene):
    mags, phs = _echo_nodes(scene)
    ref = ad.gre_from_nodes(mags, phs)
    ints = []
    for e, p in enumerate(phs):
        raw = np.round((np.asarray(ad.array_ijk(p)) + np.pi) * 4096 / (2 * np.pi)).clip(0, 4095).astype(np.float32)
        raw[0, 0, 0], raw[1, 0, 0] = 0.0, 4095.0  # full range, as real data
        ints.append(add_volume(scene, raw, oblique_affine(), f"int{e}"))
        ints[-1].SetAttribute("DICOM.EchoTime", str(5.0 * (e + 1)))
    gre = ad.gre_from_nodes(mags, ints, b0_tesla=3.0, phase_rule="dicom_uint12")
    assert gre.metadata["phase_scaling"]["rule"] == "dicom_uint12"
    d = np.angle(np.exp(1j * (gre.phase_rad - ref.phase_rad)))
    d[:2, 0, 0, :] = 0.0  # the two voxels forced to the range ends
    assert np.abs(d).max() < 2 * np.pi / 4096 + 1e-6


def test_gre_from_sequence_node_with_echo_time_index(scene):
    mags, phs = _echo_nodes(scene, with_attributes=False)
    seqs = []
    for nodes, name in ((mags, "magnitude"), (phs, "phase")):
        seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
        seq.SetIndexName("EchoTime")
        seq.SetIndexUnit("ms")
        for e, n in enumerate(nodes):
            seq.SetDataNodeAtValue(n, str(5.0 * (e + 1)))
        seqs.append(seq)
    gre = ad.gre_from_nodes(seqs[0], seqs[1], b0_tesla=3.0)
    np.testing.assert_allclose(gre.te_s, [0.005, 0.010, 0.015])
    assert gre.metadata["te_source"] == "sequence index"
    ref = ad.gre_from_nodes(mags, phs, echo_times_s=[0.005, 0.010, 0.015], b0_tesla=3.0)
    np.testing.assert_array_equal(gre.phase_rad, ref.phase_rad)
    np.testing.assert_array_equal(gre.magnitude, ref.magnitude)
    empty = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "empty")
    with pytest.raises(QSMInputError, match="sequence 'empty' is empty"):
        ad.gre_from_nodes(None, empty, [0.005], 3.0)


def test_gre_from_nodes_bad_inputs(scene):
    mags, phs = _echo_nodes(scene, with_attributes=False)
    with pytest.raises(QSMInputError, match="echo times are missing"):
        ad.gre_from_nodes(mags, phs, b0_tesla=3.0)
    with pytest.raises(QSMInputError, match="B0 is missing"):
        ad.gre_from_nodes(mags, phs, echo_times_s=[0.005, 0.01, 0.015])
    with pytest.raises(QSMInputError, match="2 magnitude volumes but 3 phase volumes"):
        ad.gre_from_nodes(mags[:2], phs, [0.005, 0.01, 0.015], 3.0)
    with pytest.raises(QSMInputError, match="no phase volumes"):
        ad.gre_from_nodes(mags, [], [0.005], 3.0)
    with pytest.raises(QSMInputError, match="look like milliseconds"):
        ad.gre_from_nodes(mags, phs, [5.0, 10.0, 15.0], 3.0)
    phs[2].SetAttribute("DICOM.EchoTime", "abc")
    assert ad.echo_times_from_nodes_s(phs[:2]) is None
    with pytest.raises(QSMInputError, match="DICOM.EchoTime='abc' is not a number"):
        ad.echo_times_from_nodes_s(phs)


def _write_dicom(path, uid, echo_time_ms, b0_t, image_type):
    pydicom = pytest.importorskip("pydicom")
    from dicom_helpers import dicom_dataset

    ds = dicom_dataset(instance_uid=uid)  # MR Image Storage
    ds.EchoTime, ds.MagneticFieldStrength, ds.ImageType = echo_time_ms, b0_t, image_type
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)


def test_echo_times_and_b0_from_slicer_dicom_database(scene, tmp_path):
    # Slicer's DICOM scalar-volume plugin sets only DICOM.instanceUIDs on the volume; the tags are in the database
    mags, phs = _echo_nodes(scene, with_attributes=False)
    values = {}
    for e, (m, p) in enumerate(zip(mags, phs)):
        for node, kind in ((m, "M"), (p, "P")):
            uids = [f"1.2.3.{kind}.{e}.{i}" for i in range(3)]
            node.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
            for uid in uids:
                values[(uid, "0018,0081")] = f"{5.0 * (e + 1):g}"
                values[(uid, "0018,0087")] = "2.89"
                values[(uid, "0008,0008")] = f"ORIGINAL\\PRIMARY\\{kind}\\ND"
    db = FakeDicomDatabase(values)
    assert ad.dicom_instance_uids(phs[0]) == ["1.2.3.P.0.0", "1.2.3.P.0.1", "1.2.3.P.0.2"]
    assert ad.echo_time_of_node_s(phs[1], db) == (pytest.approx(0.010), "DICOM database (EchoTime)")
    gre = ad.gre_from_nodes(mags, phs, dicom_database=db)
    np.testing.assert_allclose(gre.te_s, [0.005, 0.010, 0.015])
    assert gre.b0_tesla == pytest.approx(2.89)
    assert gre.metadata["te_source"] == "DICOM database (EchoTime)"
    assert gre.metadata["b0_source"] == "DICOM database (MagneticFieldStrength)"
    # the tags are looked up by the node's instance UIDs
    assert ("1.2.3.P.2.0", "0018,0081") in db.asked and ("1.2.3.P.2.2", "0018,0081") in db.asked
    # ordering by echo time works through the database too
    assert ad.sort_echo_nodes(phs[::-1], db) == phs
    # without a database (slicer-core has no slicer.dicomDatabase) nothing is found, and the user is asked
    assert ad.default_dicom_database() is None
    assert ad.echo_times_from_nodes_s(phs) is None
    with pytest.raises(QSMInputError, match="echo times are missing"):
        ad.gre_from_nodes(mags, phs)
    # ImageType: magnitude selected as phase is flagged
    assert ad.dicom_image_kind(phs[0], db) == "phase" and ad.dicom_image_kind(mags[0], db) == "magnitude"
    text = ad.describe_inputs(phs, mags, db)
    assert "Warning: 'mag0' is a magnitude image (DICOM ImageType) but is selected as phase." in text
    right = ad.describe_inputs(mags, phs, db)
    assert "Warning" not in right and right.startswith("Detected phase scaling: radians")
    # a volume mixing echo times across its instances (the echoes were not split into volumes) is an error
    values[("1.2.3.P.0.2", "0018,0081")] = "20"
    with pytest.raises(QSMInputError, match="'phase0' mixes EchoTime values \\(5 and 20\\)"):
        ad.echo_times_from_nodes_s(phs, FakeDicomDatabase(values))


def test_dicom_tags_read_from_the_instance_file_when_the_database_has_no_value(scene, tmp_path):
    node = add_volume(scene, np.zeros((4, 4, 3), np.float32), np.eye(4), "dicom phase")
    node.SetAttribute("DICOM.instanceUIDs", "1.2.826.0.1.3680043.2.1125.1")
    path = tmp_path / "im1.dcm"
    _write_dicom(path, "1.2.826.0.1.3680043.2.1125.1", "7.5", "1.5", ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"])
    db = FakeDicomDatabase(files={"1.2.826.0.1.3680043.2.1125.1": str(path)})
    assert ad.dicom_tag_value(node, "EchoTime", db) == "7.5"
    assert ad.echo_time_of_node_s(node, db) == (pytest.approx(0.0075), "DICOM database (EchoTime)")
    assert ad.field_strength_of_node_t(node, db) == (pytest.approx(1.5), "DICOM database (MagneticFieldStrength)")
    assert ad.dicom_image_kind(node, db) == "phase"


def test_bids_echo_time_is_seconds_and_sidecars_are_read(scene, tmp_path):
    mags, phs = _echo_nodes(scene, with_attributes=False)
    for e, n in enumerate(phs):  # BIDS-style attribute: seconds
        n.SetAttribute("EchoTime", str(0.005 * (e + 1)))
    assert ad.echo_times_and_source(phs) == (pytest.approx([0.005, 0.010, 0.015]), "EchoTime attributes (BIDS, s)")
    with pytest.raises(QSMInputError, match="look like milliseconds"):  # milliseconds there are caught, not used
        phs[0].SetAttribute("EchoTime", "5")
        ad.gre_from_nodes(mags, phs, b0_tesla=3.0)
    # files with BIDS JSON sidecars: EchoTime (s) and MagneticFieldStrength (T) next to the storage file
    loaded = []
    for e, n in enumerate(phs):
        path = tmp_path / f"sub-01_echo-{e + 1}_part-phase_MEGRE.nii.gz"
        ad.save_volume(n, str(path))
        (tmp_path / f"sub-01_echo-{e + 1}_part-phase_MEGRE.json").write_text(
            json.dumps({"EchoTime": 0.004 * (e + 1), "MagneticFieldStrength": 2.89}))
        loaded.append(ad.load_volume(scene, str(path), f"bids phase {e + 1}"))
    assert ad.storage_file(loaded[0]).endswith("echo-1_part-phase_MEGRE.nii.gz")
    acq = ad.acquisition_from_nodes(None, loaded)
    np.testing.assert_allclose(acq.te_s, [0.004, 0.008, 0.012])
    assert (acq.te_source, acq.b0_tesla, acq.b0_source) == ("BIDS JSON sidecars", 2.89, "BIDS JSON sidecar")
    gre = ad.gre_from_nodes(None, loaded)
    assert gre.metadata["te_source"] == "BIDS JSON sidecars" and gre.b0_tesla == pytest.approx(2.89)
    # a 4D file loaded as a sequence: the sequence's own sidecar lists the echo times; a "time" index is not one
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "bids 4D phase")
    seq.SetIndexName("time")
    seq.SetIndexUnit("s")
    for e, n in enumerate(phs):
        seq.SetDataNodeAtValue(n, str(float(e)))
    assert ad.echo_times_from_sequence_s(seq) is None
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeSequenceStorageNode")
    storage.SetFileName(str(tmp_path / "sub-01_part-phase_MEGRE.nii.gz"))
    seq.SetAndObserveStorageNodeID(storage.GetID())
    (tmp_path / "sub-01_part-phase_MEGRE.json").write_text(
        json.dumps({"EchoTime": [0.003, 0.006, 0.009], "MagneticFieldStrength": 7.0}))
    acq = ad.acquisition_from_nodes(None, seq)
    np.testing.assert_allclose(acq.te_s, [0.003, 0.006, 0.009])
    assert acq.te_source == "BIDS JSON sidecar" and acq.b0_tesla == 7.0


def test_segmentation_mask_is_exported_onto_the_echo_grid(scene):
    aff = oblique_affine()
    ref = add_volume(scene, np.zeros((12, 10, 8), np.float32), aff, "ref")
    m = np.zeros((12, 10, 8), np.int16)
    m[3:8, 2:7, 2:6] = 1
    m[9:11, 7:9, 5:7] = 2  # a second segment
    lab = add_volume(scene, m, aff, "labels", "vtkMRMLLabelMapVolumeNode")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "brain segmentation")
    assert slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(lab, seg)
    assert seg.GetSegmentation().GetNumberOfSegments() == 2
    n_labelmaps = scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode")
    mask = ad.mask_from_node(seg, ref)
    np.testing.assert_array_equal(mask, m > 0)  # union of all segments, on the reference grid
    assert scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == n_labelmaps  # temporary node removed
    # a segmentation drawn on another grid (coarser, shifted) is resampled onto the echo grid
    coarse = np.eye(4)
    coarse[:3, :3] = aff[:3, :3] * 2.0
    coarse[:3, 3] = aff[:3, 3]
    c = np.zeros((6, 5, 4), np.int16)
    c[1:4, 1:4, 1:3] = 1
    seg2 = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "coarse segmentation")
    slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
        add_volume(scene, c, coarse, "coarse labels", "vtkMRMLLabelMapVolumeNode"), seg2)
    mask2 = ad.mask_from_node(seg2, ref)
    assert mask2.shape == (12, 10, 8)
    fine_inside = np.argwhere(mask2)
    assert mask2.sum() == pytest.approx(c.sum() * 8, rel=0.35)  # each coarse voxel covers 2x2x2 fine voxels
    assert fine_inside.min(axis=0).tolist() >= [1, 1, 1] and fine_inside.max(axis=0).tolist() <= [8, 8, 6]
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty segmentation")
    with pytest.raises(QSMInputError, match="segmentation 'empty segmentation' has no segments"):
        ad.mask_from_node(empty, ref)


def test_qsm_results_get_a_colour_legend(scene):
    src = add_volume(scene, np.zeros((5, 4, 3), np.float32), np.eye(4), "ref")
    out = ad.outputs_to_nodes(scene, {"chi_ppm": np.zeros((5, 4, 3), np.float32),
                                      "swi": np.ones((5, 4, 3), np.float32)}, src, "legend run")
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(out["chi_ppm"])
    assert legend is not None and legend.IsA("vtkMRMLColorLegendDisplayNode")
    assert legend.GetTitleText() == "Susceptibility (ppm)" and legend.GetLabelFormat() == "%.2f"
    assert legend.GetVisibility() and legend.GetPrimaryDisplayNode() is out["chi_ppm"].GetDisplayNode()
    assert slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(out["swi"]) is None  # SWI: no quantitative scale
    # where colour legends are unavailable (no Colors module registering the node class), none is added
    bare = slicer.vtkMRMLScene()
    node = add_volume(bare, np.zeros((3, 3, 3), np.float32), np.eye(4), "bare")
    node.CreateDefaultDisplayNodes()
    assert ad.add_color_legend(node, "x") is None
    bare.Clear(1)


def test_parse_echo_times_ms():
    assert ad.parse_echo_times_ms("4, 8;12  16") == pytest.approx([0.004, 0.008, 0.012, 0.016])
    with pytest.raises(QSMInputError, match="cannot read echo times"):
        ad.parse_echo_times_ms("4, eight")
    with pytest.raises(QSMInputError, match="echo times are empty"):
        ad.parse_echo_times_ms("  ")


def test_mask_from_node(scene):
    aff = oblique_affine()
    ref = add_volume(scene, np.zeros((6, 5, 4), np.float32), aff, "ref")
    m = np.zeros((6, 5, 4), np.int16)
    m[2:4, 1:3, 1:3] = 1
    mask = add_volume(scene, m, aff, "mask", "vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(ad.mask_from_node(mask, ref), m > 0)
    empty = add_volume(scene, np.zeros((6, 5, 4), np.int16), aff, "empty mask", "vtkMRMLLabelMapVolumeNode")
    with pytest.raises(QSMInputError, match="mask 'empty mask' is empty"):
        ad.mask_from_node(empty, ref)
    other = add_volume(scene, m, np.eye(4), "moved mask", "vtkMRMLLabelMapVolumeNode")
    with pytest.raises(QSMInputError, match="'moved mask' and 'ref' have different geometry"):
        ad.mask_from_node(other, ref)


def test_parse_worker_line():
    e = parse_worker_line("PROGRESS 0.2500 Dipole inversion: fansi_nltv\n")
    assert (e.kind, e.fraction, e.text) == ("progress", 0.25, "Dipole inversion: fansi_nltv")
    assert parse_worker_line("PROGRESS 1.7 x").fraction == 1.0
    assert parse_worker_line("PROGRESS abc x").kind == "text"
    assert parse_worker_line("LOG [mask] done").text == "[mask] done"
    assert parse_worker_line("DONE").kind == "done"
    assert parse_worker_line("numba warning").kind == "text"


# ------------------------------------------------------------------------------------------ phantom, whole runs

@pytest.fixture(scope="module")
def phantom():
    phantom_mod = pytest.importorskip("QSMLogic.phantom")
    model = phantom_mod.make_head_model(shape=(64, 64, 48), voxel_size_mm=(3.0, 3.0, 3.0), seed=0)
    return phantom_mod.simulate_acquisition(model, te_s=(0.004, 0.008, 0.012, 0.016, 0.020), b0_tesla=3.0,
                                            snr=100.0, seed=0)


def _phantom_nodes(scene, acq):
    g = acq.gre
    mags = [add_volume(scene, g.magnitude[..., e], g.affine, f"mag{e}") for e in range(g.n_echoes)]
    phs = [add_volume(scene, g.phase_rad[..., e], g.affine, f"phase{e}") for e in range(g.n_echoes)]
    return mags, phs


@pytest.fixture(scope="module")
def direct_result(phantom):
    pipeline = pytest.importorskip("QSMLogic.pipeline")
    return pipeline.run_pipeline(phantom.gre, runner.as_config(None))  # the library defaults (16 mm mIP slab)


def test_qsm_run_on_nodes_matches_library_and_truth(scene, phantom, direct_result):
    mags, phs = _phantom_nodes(scene, phantom)
    events = []
    out = runner.run_qsm_on_nodes(scene, mags, phs, phantom.gre.te_s, 3.0, run_name="phantom run",
                                  progress=lambda f, label: events.append((f, label)))
    # the mIP included (the module asks for a 16 mm slab); source separation is off by default
    assert set(runner.DEFAULT_OUTPUTS) - {"chi_para_ppm", "chi_dia_ppm"} <= set(out)
    for key, node in out.items():  # exactly the library's maps, on the input grid
        np.testing.assert_array_equal(ad.array_ijk(node), direct_result.outputs[key].astype(np.asarray(
            ad.array_ijk(node)).dtype))
        np.testing.assert_allclose(ad.ijk_to_ras(node), phantom.gre.affine, atol=0)
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    chi = np.asarray(ad.array_ijk(out["chi_ppm"]))
    m = np.asarray(ad.array_ijk(out["qsm_mask"])) > 0
    truth = phantom.chi_ppm - phantom.chi_ppm[m].mean()
    assert np.corrcoef(chi[m], truth[m])[0, 1] > 0.5
    from QSMLogic.phantom import label_of

    gp = (phantom.labels == label_of("globus pallidus externa (GPe)")) & m
    wm = (phantom.labels == label_of("WM")) & m
    contrast, true_contrast = chi[gp].mean() - chi[wm].mean(), truth[gp].mean() - truth[wm].mean()
    assert contrast > 0.05 and abs(contrast - true_contrast) < 0.05  # iron-rich nucleus vs WM (ppm)
    prov = ad.read_provenance(out["chi_ppm"])
    assert prov["run_name"] == "phantom run" and prov["output"] == "chi_ppm"
    assert [s["stage"] for s in prov["stages"]][-1] == "swi"
    assert prov["slicer_inputs"]["phase_nodes"] == [f"phase{e}" for e in range(5)]
    swi_params = next(st for st in prov["stages"] if st["stage"] == "swi")["params"]
    assert swi_params["mip_slab_mm"] == 16.0  # the library's default slab
    assert out["mip"].GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    mip, swi = np.asarray(ad.array_ijk(out["mip"])), np.asarray(ad.array_ijk(out["swi"]))
    assert mip.shape == swi.shape and (mip <= swi + 1e-6).all()  # a minimum over a slab containing the voxel


def test_bad_config_is_rejected_before_running(scene, phantom):
    mags, phs = _phantom_nodes(scene, phantom)
    with pytest.raises(QSMInputError, match="no_such_param"):
        runner.run_qsm_on_nodes(scene, mags, phs, phantom.gre.te_s, 3.0,
                                config={"inversion": {"params": {"no_such_param": 1}}})


def test_swi_only_run_on_nodes_matches_library(scene, phantom):
    """The SWI module's run: the pipeline's SWI-only stage selection on nodes that carry no B0."""
    from QSMLogic.swi import swi_homodyne

    mags, phs = _phantom_nodes(scene, phantom)
    events = []
    out = runner.run_qsm_on_nodes(scene, mags, phs, phantom.gre.te_s, None,
                                  PipelineConfig.swi_only(mip_slab_mm=12.0), output_names=runner.SWI_OUTPUTS,
                                  progress=lambda f, label: events.append((f, label)))
    assert set(out) == set(runner.SWI_OUTPUTS)
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    g = phantom.gre
    ref = swi_homodyne(g.magnitude, g.phase_rad, g.voxel_size_mm, te_s=g.te_s, b0_direction=g.b0_direction,
                       affine=g.affine, mip_slab_mm=12.0)
    # the pipeline goes through the complex signal and back: equal to float32 rounding (a few voxels with phase
    # next to ±π move by up to 5e-4 of the maximum)
    for name, expected in (("swi", ref.swi), ("mip", ref.mip), ("swi_phase_mask", ref.phase_mask)):
        got = np.asarray(ad.array_ijk(out[name]))
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * scale)
        assert np.mean(np.abs(got - expected) > 1e-4 * scale) < 1e-4
    for name in runner.SWI_OUTPUTS:  # every output keeps the input geometry
        np.testing.assert_allclose(ad.ijk_to_ras(out[name]), g.affine, atol=1e-9)
    assert out["swi"].GetDisplayNode().GetColorNodeID() == "vtkMRMLColorTableNodeGrey"
    prov = ad.read_provenance(out["swi"])
    assert [st["stage"] for st in prov["stages"]] == ["swi"] and prov["stages"][0]["params"]["mip_slab_mm"] == 12.0
    assert prov["input"]["b0_tesla"] is None and prov["slicer_inputs"]["b0_source"] == "not needed by the stages run"
    # veins (paramagnetic) are darker than white matter in SWI
    from QSMLogic.phantom import label_of

    vein, wm = phantom.labels == label_of("veins"), phantom.labels == label_of("WM")
    assert vein.sum() > 20
    swi = np.asarray(ad.array_ijk(out["swi"]))
    assert swi[vein].mean() < 0.9 * swi[wm].mean()
    # the library's default: a 16 mm mIP slab when the caller does not choose one
    default = runner.run_qsm_on_nodes(scene, mags, phs, g.te_s, None, PipelineConfig.swi_only(),
                                      output_names=runner.SWI_OUTPUTS, run_name="SWI default")
    assert "mip" in default and ad.read_provenance(default["swi"])["stages"][0]["params"]["mip_slab_mm"] == 16.0
    # cancel: QSMCancelled at the next check, and no node is added
    n_nodes = scene.GetNumberOfNodes()
    with pytest.raises(QSMCancelled):
        runner.run_qsm_on_nodes(scene, mags, phs, g.te_s, None, PipelineConfig.swi_only(), cancel=lambda: True)
    assert scene.GetNumberOfNodes() == n_nodes
    assert runner.swi_module_methods() == ("homodyne",)
    # the full chain still needs B0 and says where to enter it
    with pytest.raises(QSMInputError, match="B0 is missing"):
        runner.run_qsm_on_nodes(scene, mags, phs, g.te_s, None)


def test_selected_inputs_prefer_a_sequence_over_checked_volumes(scene):
    """A chosen sequence node wins over checked echo volumes; checked volumes come back ordered by echo time."""
    from types import SimpleNamespace

    vols = []
    for te_ms in (16.0, 8.0):
        n = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
        n.SetAttribute("DICOM.EchoTime", str(te_ms))
        vols.append(n)
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    p = SimpleNamespace(magnitudeSequence=None, magnitudeVolumes=vols, phaseSequence=seq, phaseVolumes=vols)
    mags, phases = ad.selected_inputs(p)
    assert [m.GetAttribute("DICOM.EchoTime") for m in mags] == ["8.0", "16.0"]
    assert phases is seq


# ------------------------------------------------------------------------------- source separation: R2/T2 input

def _oblique_cover(gre) -> np.ndarray:
    """IJK-to-RAS of a rotated 2.5 mm grid (128×128×112) centred on the echo grid and enclosing all of it."""
    a = np.eye(4)
    a[:3, :3] = (rotation_matrix((0, 0, 1), 25.0) @ rotation_matrix((1, 0, 0), -15.0)) * 2.5
    centre = gre.affine[:3, :3] @ ((np.asarray(gre.shape) - 1) / 2.0) + gre.affine[:3, 3]
    a[:3, 3] = centre - a[:3, :3] @ ((np.asarray((128, 128, 112)) - 1) / 2.0)
    return a


def test_r2_node_on_an_oblique_grid_gives_the_librarys_r2prime_result(scene, phantom):
    """An R2 volume on another, oblique grid is resampled onto the echo grid through both IJK-to-RAS matrices:
    the run on nodes equals run_pipeline given the map resampled by hand (scipy.ndimage.map_coordinates); a T2
    node in ms gives the same R2; the R2 map's node is in the provenance."""
    from scipy import ndimage as ndi

    from QSMLogic.phantom import make_head_model
    from QSMLogic.pipeline import run_pipeline

    g = phantom.gre
    model = make_head_model(shape=(64, 64, 48), voxel_size_mm=(3.0, 3.0, 3.0), seed=0)
    cover = _oblique_cover(g)
    # the true R2 on the oblique grid (trilinear, by hand): oblique index → RAS → echo index
    idx = np.indices((128, 128, 112), dtype=np.float64).reshape(3, -1)
    to_echo = np.linalg.solve(g.affine, cover)
    r2_oblique = ndi.map_coordinates(model.r2_hz, to_echo[:3, :3] @ idx + to_echo[:3, 3:], order=1, cval=0.0,
                                     prefilter=False).reshape(128, 128, 112).astype(np.float32)
    r2_node = add_volume(scene, r2_oblique, cover, "R2 oblique")
    # and back onto the echo grid by hand: echo index → RAS → oblique index
    idx = np.indices(g.shape, dtype=np.float64).reshape(3, -1)
    to_oblique = np.linalg.solve(cover, g.affine)
    by_hand = ndi.map_coordinates(r2_oblique, to_oblique[:3, :3] @ idx + to_oblique[:3, 3:], order=1,
                                  cval=np.nan, prefilter=False).reshape(g.shape).astype(np.float32)
    assert np.isfinite(by_hand).all()   # the oblique grid covers the echo grid
    mags, phs = _phantom_nodes(scene, phantom)
    prepared = runner.prepare_inputs(mags, phs, g.te_s, 3.0, r2_node=r2_node)
    np.testing.assert_allclose(prepared.r2_hz, by_hand, atol=1e-4)
    head = model.brain_mask
    assert np.median(np.abs(by_hand - model.r2_hz)[head]) < 0.5   # a faithful resampling (Hz)
    # a T2 node in milliseconds: the same R2 after conversion (voxels with T2 = ∞, R2 = 0, stay NaN/out)
    with np.errstate(divide="ignore"):
        t2_ms = np.where(r2_oblique > 0, 1000.0 / r2_oblique, 0.0).astype(np.float32)
    t2_node = add_volume(scene, t2_ms, cover, "T2 ms")
    from_t2 = runner.prepare_inputs(mags, phs, g.te_s, 3.0, r2_node=t2_node, r2_quantity="t2_ms").r2_hz
    inside = head & np.isfinite(from_t2)
    assert inside.sum() > 0.95 * head.sum()
    np.testing.assert_allclose(from_t2[inside], by_hand[inside], rtol=1e-4)
    before = slicer.util.arrayFromVolume(t2_node).copy()
    with pytest.raises(QSMInputError, match="quantity"):
        runner.prepare_inputs(mags, phs, g.te_s, 3.0, r2_node=t2_node, r2_quantity="t2")
    assert np.array_equal(slicer.util.arrayFromVolume(t2_node), before)   # input untouched
    # the whole run: the nodes' result equals the library's with the map resampled by hand
    cfg = PipelineConfig.default().set("source_separation", "r2prime")
    cfg.stages["source_separation"]["enabled"] = True
    cfg.stages["swi"]["enabled"] = False
    out = runner.run_qsm_on_nodes(scene, mags, phs, g.te_s, 3.0, cfg, r2_node=r2_node,
                                  output_names=("chi_para_ppm", "chi_dia_ppm", "separation_mask"))
    lib = run_pipeline(g, cfg, r2_hz=by_hand)
    for key in ("chi_para_ppm", "chi_dia_ppm"):
        np.testing.assert_allclose(ad.array_ijk(out[key]), lib.outputs[key], atol=1e-5)
    sep = np.asarray(ad.array_ijk(out["separation_mask"])) > 0
    assert np.array_equal(sep, lib.outputs["separation_mask"] > 0) and sep.sum() > 0.5 * head.sum()
    prov = ad.read_provenance(out["chi_para_ppm"])
    assert prov["slicer_inputs"]["r2_map"]["node"] == "R2 oblique"
    assert "IJK-to-RAS" in prov["slicer_inputs"]["r2_map"]["resampled"]
    assert next(s for s in prov["stages"] if s["stage"] == "source_separation")["method"] == "r2prime"
    # r2prime without an R2 node: a clear error before anything runs, in process and for the background worker
    for start in (runner.run_qsm_on_nodes, runner.start_background_run):
        with pytest.raises(QSMInputError, match="needs an R2 map"):
            start(scene, mags, phs, g.te_s, 3.0, cfg)
