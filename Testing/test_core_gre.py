"""GRE data model, geometry helpers and the parameter declaration: numbers and error messages."""
from __future__ import annotations

import numpy as np
import pytest

from QSMLogic import GREData, QSMInputError, hz_to_ppm, ppm_to_hz
from QSMLogic.geometry import (
    affine_from_geometry,
    b0_direction_from_affine,
    reverse_axes_affine,
    rotation_matrix,
    voxel_size_from_affine,
)
from QSMLogic.params import MethodSpec, Param, StageSpec, load_all, markdown_table


def _gre(**kw):
    shape = (6, 5, 4, 3)
    rng = np.random.default_rng(0)
    args = dict(phase_rad=rng.uniform(-np.pi, np.pi, shape), magnitude=rng.uniform(0, 1, shape),
                te_s=[0.005, 0.010, 0.015], b0_tesla=3.0)
    args.update(kw)
    return GREData(**args)


def test_unit_conversion_round_trip():
    assert hz_to_ppm(127.7324, 3.0) == pytest.approx(1.0, rel=1e-5)
    assert ppm_to_hz(hz_to_ppm(42.0, 7.0), 7.0) == pytest.approx(42.0)


def test_gre_valid_and_derived_properties():
    g = _gre(affine=affine_from_geometry((0.5, 0.5, 2.0)))
    assert g.shape == (6, 5, 4) and g.n_echoes == 3 and g.n_coils == 1 and g.is_combined
    assert g.voxel_size_mm == pytest.approx((0.5, 0.5, 2.0))
    assert g.b0_direction == pytest.approx((0.0, 0.0, 1.0))
    s = g.complex_signal()
    assert s.dtype == np.complex64
    np.testing.assert_allclose(np.angle(s), g.phase_rad, atol=1e-5)


def test_phase_sign_flips_a_copy_not_the_input():
    ph = np.full((4, 4, 4, 2), 0.5)
    g = _gre(phase_rad=ph, magnitude=np.ones_like(ph), te_s=[0.01, 0.02], phase_sign=-1)
    assert float(g.phase_rad.max()) == pytest.approx(-0.5)
    assert float(ph.max()) == 0.5


def test_oblique_affine_gives_oblique_b0():
    r = rotation_matrix((1, 0, 0), 25.0)
    g = _gre(affine=affine_from_geometry((1.0, 1.0, 1.0), r))
    # b̂ = Rᵀ ẑ: the z axis expressed in the rotated array axes
    np.testing.assert_allclose(g.b0_direction, r.T @ [0, 0, 1], atol=1e-12)
    assert np.degrees(np.arccos(g.b0_direction[2])) == pytest.approx(25.0)


def test_reverse_axes_affine_matches_kji_order():
    a = affine_from_geometry((0.7, 0.8, 2.5), rotation_matrix((1, 1, 0), 30.0), (10, -20, 5))
    ar = reverse_axes_affine(a)
    assert voxel_size_from_affine(ar) == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_allclose(b0_direction_from_affine(ar), b0_direction_from_affine(a)[::-1], atol=1e-12)
    # the same voxel (i, j, k) ↔ (k, j, i) maps to the same world point
    np.testing.assert_allclose(a @ [1, 2, 3, 1], ar @ [3, 2, 1, 1])


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(te_s=None), "echo times are missing"),
        (dict(te_s=[5.0, 10.0, 15.0]), "milliseconds"),
        (dict(te_s=[0.01, 0.005, 0.015]), "strictly increasing"),
        (dict(te_s=[0.005, 0.01]), "2 echo times for 3 echoes"),
        (dict(b0_tesla=0.0), "b0_tesla"),
        (dict(b0_tesla=-3.0), "b0_tesla"),
        (dict(phase_rad=np.full((6, 5, 4, 3), 2048.0)), "not in radians"),
        (dict(magnitude=np.ones((6, 5, 4, 2))), "does not match phase shape"),
        (dict(phase_rad=np.ones((6, 5))), "shape (x, y, z, echo"),
        (dict(phase_sign=2), "phase_sign"),
        (dict(affine=np.zeros((4, 4))), "singular"),
        (dict(b0_direction=(0.0, 0.0, 2.0)), "unit vector"),
    ],
)
def test_gre_rejects_bad_input_with_a_clear_message(kw, message):
    with pytest.raises(QSMInputError, match=message.replace("(", r"\(")):
        _gre(**kw)


def test_gre_names_nan_count():
    ph = np.zeros((4, 4, 4, 1))
    ph[1, 2, 3, 0] = np.nan
    ph[0, 0, 0, 0] = np.inf
    with pytest.raises(QSMInputError, match=r"phase contains 2 NaN/Inf voxel\(s\) \(first at index \(0, 0, 0, 0\)"):
        GREData(phase_rad=ph, magnitude=None, te_s=[0.01], b0_tesla=3.0)


def test_param_validation_and_markdown():
    p = Param("radius_mm", float, 6.0, "kernel radius", unit="mm", minimum=1.0, maximum=20.0)
    assert p.validate("7.5") == 7.5
    with pytest.raises(QSMInputError, match="radius_mm=0.5 is below its minimum 1.0 mm"):
        p.validate(0.5)
    b = Param("verbose", bool, False, "chatty")
    assert b.validate("yes") is True and b.validate("0") is False
    m = MethodSpec("x", "X", "Someone 2020", (p,), func=lambda radius_mm: radius_mm)
    assert m.resolve({"radius_mm": 3}) == {"radius_mm": 3.0}
    with pytest.raises(QSMInputError, match="has no parameter 'radius'"):
        m.resolve({"radius": 3})
    md = markdown_table([StageSpec("s", "Stage", "in -> out", "x", methods=[m])])
    assert "| `radius_mm` | 6.0 | 1.0…20.0 | mm | kernel radius |" in md


def test_every_stage_has_its_default_method_registered():
    specs = load_all()
    for key, spec in specs.items():
        assert spec.default_method in spec.method_keys, f"{key}: default {spec.default_method} not registered"
        for m in spec.methods:
            assert m.func is not None and m.reference, f"{key}.{m.key} lacks function or citation"
            for p in m.params:
                assert p.name.isidentifier() and p.help, f"{key}.{m.key}.{p.name}"
                p.validate(p.default)
