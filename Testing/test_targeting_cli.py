"""``susceptibility-mri target`` on phantom files: targets, frame coordinates, a vessel warning, bad input."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np

from QSMLogic.cli import main
from QSMLogic.phantom import HEAD_SCALE, label_of, make_head_model
from QSMLogic.phantom.model import VEINS
from QSMLogic.targeting.acpc import acpc_frame
from QSMLogic.targeting.targets import nucleus_targets


def test_target_command_from_files(tmp_path, capsys):
    h = make_head_model((96, 96, 64), (2.0, 2.0, 2.0))
    paths = {}
    for name, arr in (("labels", h.labels.astype(np.int16)), ("chi", h.chi_ppm), ("mask", h.brain_mask.astype(
            np.uint8))):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(np.asarray(arr), h.affine), paths[name])
    frame = np.eye(4)
    frame[:3, 3] = (-3.0, 2.0, -10.0)        # image RAS → frame-aligned RAS: a shift
    np.savetxt(tmp_path / "frame.txt", frame)
    ac, pc, mid = (",".join(str(HEAD_SCALE * v) for v in p) for p in ((0, 1.5, -3.5), (0, -25, -1.5), (0, -10, 50)))
    vein = HEAD_SCALE * np.mean(VEINS[4][0], axis=0)          # the left cortical vein parallel to B0
    out = tmp_path / "plan"
    args = ["target", "--labels", paths["labels"], "--qsm", paths["chi"], "--mask", paths["mask"], "--ac", ac,
            "--pc", pc, "--midline", mid, "--frame-transform", str(tmp_path / "frame.txt"), "--out", str(out)]
    # the left STN target the command will find, and an entry whose path to it crosses the vein
    acpc = acpc_frame(*(np.array([float(v) for v in p.split(",")]) for p in (ac, pc, mid)))
    stn_left = nucleus_targets(h.labels, h.affine, {"STN": [label_of("subthalamic nucleus")]},
                               {"STN": "dorsolateral"}, acpc)[1].ras_mm
    entry = stn_left + 1.6 * (vein - stn_left)
    assert main(args + ["--vim", "--entry", "STN left=" + ",".join(f"{v:.3f}" for v in entry)]) == 0
    rows = {r["name"]: r for r in csv.DictReader((out / "targets.csv").open())}
    np.testing.assert_allclose([float(rows["STN left"][k]) for k in ("R_mm", "A_mm", "S_mm")], stn_left, atol=1e-3)
    assert rows["STN left"]["side"] == "left" and 8 < float(rows["STN left"]["lateral_mm"]) < 16
    assert float(rows["Vim right"]["lateral_mm"]) == 14.5 and "indirect" in rows["Vim right"]["method"]
    assert float(rows["STN left"]["frame_X_mm"]) == round(100 - (stn_left[0] - 3.0), 3)
    printed = capsys.readouterr().out
    assert "WARNING STN left trajectory" in printed and "from a vessel" in printed
    traj = {r["trajectory"]: r for r in csv.DictReader((out / "trajectories.csv").open())}
    assert float(traj["STN left trajectory"]["min_vessel_distance_mm"]) < 2.0
    assert traj["STN right trajectory"]["warnings"] == "" and 0 < float(traj["STN right trajectory"]["arc_deg"]) < 90
    doc = json.loads((out / "STN_left_trajectory.mrk.json").read_text())
    np.testing.assert_allclose(doc["markups"][0]["controlPoints"][0]["position"], entry, atol=1e-3)
    assert (out / "vessels.nii.gz").exists() and (out / "targets.mrk.json").exists()
    # bad input: AC = PC, a missing landmark, an entry for an unknown target
    assert main([*args[:-2], "--pc", ac, "--out", str(out)]) == 2
    assert "AC = PC" in capsys.readouterr().err
    assert main(["target", "--labels", paths["labels"], "--ac", ac, "--pc", pc, "--out", str(out)]) == 2
    assert "--midline is missing" in capsys.readouterr().err
    assert main(args + ["--entry", "Vim right=1,2,3"]) == 2
    assert "no target named 'Vim right'" in capsys.readouterr().err
