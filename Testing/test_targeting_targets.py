"""Automatic STN / GPi / Vim targets from the phantom's true labels, hemispheres, and out-of-anatomy targets."""
from __future__ import annotations

import numpy as np
import pytest
from roi_helpers import deform_head

from QSMLogic.errors import QSMInputError
from QSMLogic.phantom import label_of, make_head_model
from QSMLogic.phantom.model import HEAD_SCALE, _labels_1mm
from QSMLogic.roi.atlas import load_cit168
from QSMLogic.roi.regions import atlas_regions
from QSMLogic.targeting.acpc import acpc_frame
from QSMLogic.targeting.targets import check_inside, nucleus_targets, vim_indirect_target

STN, GPI, THAL = "subthalamic nucleus", "globus pallidus interna (GPi)", "thalamus"
# Commissures of the phantom: approximate MNI152 positions (typical values, not located on the template's images),
# times the phantom's scale; only orientation checks depend on them
AC = np.array([0.0, 1.5, -3.5]) * HEAD_SCALE
PC = np.array([0.0, -25.0, -1.5]) * HEAD_SCALE
MID = np.array([0.0, -10.0, 50.0]) * HEAD_SCALE


@pytest.fixture(scope="module")
def head():
    return make_head_model((128, 128, 80), (1.5, 1.5, 1.5))


def true_centroids(name: str) -> dict:
    """Centroids (RAS mm) of the nucleus in the shipped 1 mm anatomy the phantom is resampled from."""
    lab1, origin = _labels_1mm()
    w = (np.argwhere(lab1 == label_of(name)) + origin) * HEAD_SCALE
    return {"right": w[w[:, 0] > 0].mean(axis=0), "left": w[w[:, 0] <= 0].mean(axis=0)}


def test_stn_gpi_centroids_within_1mm_of_truth(head):
    nuclei = {"STN": label_of(STN), "GPi": label_of(GPI)}
    for acpc in (None, acpc_frame(AC, PC, MID)):
        targets = nucleus_targets(head.labels, head.affine, nuclei, acpc=acpc)
        assert [(t.nucleus, t.side) for t in targets] == [("STN", "right"), ("STN", "left"), ("GPi", "right"),
                                                          ("GPi", "left")]
        for t in targets:
            truth = true_centroids(STN if t.nucleus == "STN" else GPI)[t.side]
            err = float(np.linalg.norm(t.ras_mm - truth))
            assert err < 1.0, (t.name, err)   # measured: STN 0.70 / 0.07, GPi 0.13 / 0.41 mm at 1.5 mm voxels


def test_targets_follow_the_affine_not_the_array_order(head):
    # the same head stored with the first array axis reversed (as an LPS-ordered file would be)
    flipped = head.labels[::-1]
    aff = head.affine.copy()
    aff[:3, 0] = -aff[:3, 0]
    aff[:3, 3] = head.affine[:3, 3] + head.affine[:3, 0] * (head.shape[0] - 1)
    a = nucleus_targets(head.labels, head.affine, {"STN": label_of(STN)})
    b = nucleus_targets(flipped, aff, {"STN": label_of(STN)})
    for ta, tb in zip(a, b):
        assert ta.side == tb.side
        np.testing.assert_allclose(ta.ras_mm, tb.ras_mm, atol=1e-9)


def test_subregions_lie_in_the_stated_direction_and_acpc_orientation(head):
    acpc = acpc_frame(AC, PC, MID)
    lab = {"STN": label_of(STN), "GPi": label_of(GPI)}
    cen = nucleus_targets(head.labels, head.affine, lab, acpc=acpc)
    sub = nucleus_targets(head.labels, head.affine, lab, {"STN": "dorsolateral", "GPi": "posteroventral"}, acpc=acpc)
    for c, s in zip(cen, sub):
        dc, ds = acpc.describe(c.ras_mm), acpc.describe(s.ras_mm)
        assert ds["side"] == dc["side"] == c.side
        if c.nucleus == "STN":   # more lateral and more dorsal than the centroid
            assert ds["lateral_mm"] > dc["lateral_mm"] + 0.5 and ds["vertical_mm"] > dc["vertical_mm"] + 0.5
            # orientation check against the typical STN target (~12 lateral, ~2 posterior, ~4 inferior)
            assert 8 < ds["lateral_mm"] < 16 and -6 < ds["ap_mm"] < 2 and -8 < ds["vertical_mm"] < 0
        else:                    # more posterior and more ventral
            assert ds["ap_mm"] < dc["ap_mm"] - 0.5 and ds["vertical_mm"] < dc["vertical_mm"] - 0.5
            assert 14 < ds["lateral_mm"] < 24 and -8 < ds["vertical_mm"] < 2
        assert "dorsolateral" in s.method or "posteroventral" in s.method


def test_vim_indirect_target_inside_thalamus(head):
    acpc = acpc_frame(AC, PC, MID)
    for side in ("right", "left"):
        vim = vim_indirect_target(acpc, side)
        d = acpc.describe(vim.ras_mm)
        assert d["side"] == side and d["lateral_mm"] == pytest.approx(14.5)
        assert d["ap_mm"] == pytest.approx(-0.25 * acpc.acpc_length_mm)
        # the phantom's thalamus is an ellipsoid (Mai atlas centre and semi-axes) whose floor lies above the AC-PC
        # plane, where the indirect Vim sits (3.2 mm from it, measured): the Vim lies inside it 4.5 mm higher up
        thal = np.argwhere(head.labels == label_of(THAL)) @ head.affine[:3, :3].T + head.affine[:3, 3]
        assert np.linalg.norm(thal - vim.ras_mm, axis=1).min() < 3.5
        check_inside(vim_indirect_target(acpc, side, vertical_mm=4.5).ras_mm, head.labels == label_of(THAL),
                     head.affine, "Vim", "the thalamus")


def test_one_sided_structure_and_bad_targets(head):
    one_side = head.labels.copy()
    world_x = head.affine[0, 0] * np.arange(head.shape[0]) + head.affine[0, 3]
    one_side[world_x < 0] = 0          # the left STN removed
    acpc = acpc_frame(AC, PC, MID)
    with pytest.raises(QSMInputError, match="0 voxels on the left side"):
        nucleus_targets(one_side, head.affine, {"STN": label_of(STN)}, acpc=acpc)
    with pytest.raises(QSMInputError, match="one connected region"):
        nucleus_targets(one_side, head.affine, {"STN": label_of(STN)})
    with pytest.raises(QSMInputError, match="no voxels"):
        nucleus_targets(head.labels, head.affine, {"nothing": 250})
    with pytest.raises(QSMInputError, match="unknown subregion"):
        nucleus_targets(head.labels, head.affine, {"STN": label_of(STN)}, {"STN": "ventromedial"})
    with pytest.raises(QSMInputError, match="outside the brain mask"):
        check_inside([0.0, 75.0, 0.0], head.brain_mask, head.affine)   # in front of the forehead
    with pytest.raises(QSMInputError, match="outside the volume"):
        check_inside([0.0, 500.0, 0.0], head.brain_mask, head.affine)
    check_inside(true_centroids(STN)["right"], head.brain_mask, head.affine)


def test_stn_gpi_targets_from_the_registered_atlas_within_2mm(head):
    # a head unlike the atlas: rotated 8°, scaled (1.06, 0.95, 1.03), smoothly deformed by up to 3 mm
    subject = deform_head(head).model
    atlas = load_cit168()
    regions = atlas_regions(subject.chi_ppm, subject.affine, atlas, "qsm", subject_mask=subject.brain_mask,
                            deformable=False, pyramid_mm=(3.0,), iterations=(60, 60, 0))   # affine, one 3 mm level
    got = nucleus_targets(regions.labels, subject.affine, {"STN": atlas.labels_of("Subthalamic"),
                                                            "GPi": atlas.labels_of("Globus Pallidus interna")})
    truth = nucleus_targets(subject.labels, subject.affine, {"STN": label_of(STN), "GPi": label_of(GPI)})
    for g, t in zip(got, truth):
        assert (g.nucleus, g.side) == (t.nucleus, t.side)
        err = float(np.linalg.norm(g.ras_mm - t.ras_mm))
        assert err < 2.0, (g.name, err)   # measured: STN 0.82 / 0.60, GPi 0.90 / 0.95 mm
