"""Rigid MI fusion of GRE magnitude onto a T1-like planning anatomy recovers a known rigid transform."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic.errors import QSMInputError
from QSMLogic.phantom import label_of, make_head_model
from QSMLogic.targeting.fusion import rigid_difference, rigid_register

# T1-weighted grey values per tissue (WM brightest, CSF dark): a contrast unlike the GRE magnitude's
T1_LIKE = {"scalp": 0.9, "skull": 0.1, "CSF": 0.15, "ventricles": 0.15, "GM": 0.55, "WM": 0.85, "caudate": 0.6,
           "putamen": 0.62, "globus pallidus externa (GPe)": 0.7, "globus pallidus interna (GPi)": 0.7,
           "thalamus": 0.68, "substantia nigra": 0.6, "red nucleus": 0.62, "subthalamic nucleus": 0.6,
           "dentate nucleus": 0.65, "nucleus accumbens": 0.6, "veins": 0.5, "calcification": 0.3, "hemorrhage": 0.9}


def rotation(deg_xyz) -> np.ndarray:
    cx, cy, cz = np.cos(np.radians(deg_xyz))
    sx, sy, sz = np.sin(np.radians(deg_xyz))
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def test_fusion_recovers_known_rigid_transform():
    h = make_head_model((96, 96, 64), (2.0, 2.0, 2.0))
    rng = np.random.default_rng(0)
    lut = np.zeros(256, np.float32)
    for name, value in T1_LIKE.items():
        lut[label_of(name)] = value
    t1 = lut[h.labels] + rng.normal(0, 0.02, h.shape)
    magnitude = h.proton_density * np.exp(-h.r2star_hz * 0.02) + rng.normal(0, 0.02, h.shape)   # TE 20 ms
    # the GRE scan of the same head moved by a known rigid transform: same voxels, moved affine
    known = np.eye(4)
    known[:3, :3] = rotation((6.0, -4.0, 8.0))
    known[:3, 3] = (5.0, -7.0, 4.0)
    res = rigid_register(t1, h.affine, magnitude, known @ h.affine)
    brain = np.argwhere(h.brain_mask)[::50] @ h.affine[:3, :3].T + h.affine[:3, 3]
    angle, shift = rigid_difference(res.moving_to_fixed, np.linalg.inv(known), brain)
    assert angle < 1.0 and shift < 1.0          # the bound; measured 0.02° and 0.15 mm (max over the brain)
    assert angle < 0.2 and shift < 0.5
    with pytest.raises(QSMInputError, match="NaN"):
        rigid_register(t1, h.affine, np.where(h.brain_mask, np.nan, magnitude), h.affine)
    with pytest.raises(QSMInputError, match="one entry per pyramid level"):
        rigid_register(t1, h.affine, magnitude, h.affine, shrink_factors=(2, 1))
