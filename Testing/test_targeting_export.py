"""Export of targets and trajectories: markups JSON and CSV with RAS, AC-PC and Leksell columns."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from QSMLogic.errors import QSMInputError
from QSMLogic.targeting.acpc import acpc_frame
from QSMLogic.targeting.export import markups_document, target_rows, write_csv, write_markups_json


def test_markups_json_and_csv(tmp_path):
    acpc = acpc_frame((0, 12.5, 0), (0, -12.5, 0), (0, 0, 40))
    ras_to_frame = np.eye(4)
    ras_to_frame[:3, 3] = (1.0, 2.0, 3.0)
    targets = [("STN right", (12.0, -2.0, -4.0)), ("STN left", (-12.0, -2.0, -4.0))]
    p = write_markups_json(tmp_path / "targets.mrk.json", markups_document("Fiducial", targets, "Targets"))
    doc = json.loads(p.read_text())
    m = doc["markups"][0]
    assert doc["@schema"].endswith("markups-schema-v1.0.3.json#") and m["type"] == "Fiducial"
    assert m["coordinateSystem"] == "RAS" and [c["label"] for c in m["controlPoints"]] == ["STN right", "STN left"]
    assert m["controlPoints"][1]["position"] == [-12.0, -2.0, -4.0]
    line = markups_document("Line", [("entry", (30, 40, 60)), ("target", (12, -2, -4))], "STN right trajectory")
    assert line["markups"][0]["type"] == "Line" and len(line["markups"][0]["controlPoints"]) == 2
    rows = target_rows(targets, acpc, ras_to_frame)
    c = write_csv(tmp_path / "targets.csv", rows)
    got = list(csv.DictReader(c.open()))
    assert got[0]["side"] == "right" and float(got[1]["lateral_mm"]) == 12.0 and got[1]["side"] == "left"
    assert float(got[0]["AP_mm"]) == -2.0 and float(got[0]["vertical_mm"]) == -4.0
    # Leksell: X = 100 - R, Y = 100 + A, Z = 100 - S after the frame shift
    assert [float(got[0][k]) for k in ("frame_X_mm", "frame_Y_mm", "frame_Z_mm")] == [87.0, 100.0, 101.0]
    with pytest.raises(QSMInputError, match="2 points"):
        markups_document("Line", targets[:1], "x")
    with pytest.raises(QSMInputError, match=".mrk.json"):
        write_markups_json(tmp_path / "t.json", line)


def test_nuclei_from_names_and_proposed_entries():
    from QSMLogic.phantom import LABEL_NAMES, label_of
    from QSMLogic.targeting.targets import nuclei_from_names
    from QSMLogic.targeting.trajectory import entry_from_angles

    assert nuclei_from_names(LABEL_NAMES) == {"STN": [label_of("subthalamic nucleus")],
                                              "GPi": [label_of("globus pallidus interna (GPi)")]}
    cit = {31: "L Subthalamic Nucleus", 32: "R Subthalamic Nucleus", 11: "L Globus Pallidus interna",
           12: "R Globus Pallidus interna", 9: "L Globus Pallidus externa"}
    assert nuclei_from_names(cit) == {"STN": [31, 32], "GPi": [11, 12]}
    with pytest.raises(QSMInputError, match=r"\['GPi'\]"):
        nuclei_from_names({1: "subthalamic nucleus"})
    acpc = acpc_frame((0, 12.5, 0), (0, -12.5, 0), (0, 0, 40))
    e = entry_from_angles((12.0, -2.0, -4.0), acpc.rotation, "right", sagittal_deg=60, coronal_deg=15,
                          length_mm=70)
    d = (e - (12.0, -2.0, -4.0)) / 70.0
    assert np.linalg.norm(e - (12.0, -2.0, -4.0)) == pytest.approx(70.0)
    assert d[0] > 0 and np.degrees(np.arctan2(d[2], d[1])) == pytest.approx(60.0)
    assert np.degrees(np.arcsin(d[0])) == pytest.approx(15.0)


def test_reslice_is_exact_on_oblique_grids_and_views_are_written(tmp_path):
    from QSMLogic.targeting.figure import planning_figure, reslice

    # a volume whose value is the world R coordinate of each voxel, on an oblique anisotropic grid
    rot = np.array([[0.9, -0.3, 0.3], [0.3, 0.95, 0.0], [-0.3, 0.1, 0.95]])
    q, _ = np.linalg.qr(rot)
    aff = np.eye(4)
    aff[:3, :3] = q @ np.diag([1.2, 1.0, 1.5])
    aff[:3, 3] = (-30.0, -25.0, -20.0)
    ijk = np.indices((50, 50, 40)).reshape(3, -1)
    world_r = (aff[:3, :3] @ ijk + aff[:3, 3:4])[0].reshape(50, 50, 40).astype(np.float32)
    centre = aff[:3, :3] @ np.array([25.0, 25.0, 20.0]) + aff[:3, 3]
    img = reslice(world_r, aff, centre, (1, 0, 0), (0, 0, 1), half_size_mm=10.0, step_mm=1.0)
    expected_r = centre[0] + np.arange(-10.0, 10.5, 1.0)
    np.testing.assert_allclose(img, np.broadcast_to(expected_r, img.shape), atol=1e-3)   # linear data: exact
    assert np.isnan(reslice(world_r, aff, centre + 500.0, (1, 0, 0), (0, 1, 0), 5.0)).all()
    labels = np.zeros((50, 50, 40), np.int16)
    labels[20:30, 20:30, 15:25] = 15
    out = planning_figure(tmp_path / "views.png", centre, (world_r / 100.0, aff), labels=(labels, aff),
                          nuclei={"STN": [15]}, entry_ras_mm=centre + (10.0, 20.0, 40.0), title="test")
    assert out.stat().st_size > 10_000
    with pytest.raises(QSMInputError, match="coincide"):
        planning_figure(tmp_path / "x.png", centre, (world_r, aff), entry_ras_mm=centre)
