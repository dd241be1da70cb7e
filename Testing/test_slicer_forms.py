"""Parameter forms generated from the QSMLogic declarations (every registered parameter), the configuration JSON
kept in the parameter node, the dependency check, echo ordering and the results layout — all without Qt."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "SusceptibilityMRI", "QSM"))

from QSMLib import dependencies, param_forms  # noqa: E402

from QSMLogic.errors import QSMInputError  # noqa: E402
from QSMLogic.pipeline import PipelineConfig  # noqa: E402


def all_params():
    out = []
    for stage in param_forms.stage_specs().values():
        for m in stage.methods:
            out += [(stage, m, p) for p in m.params]
    return out


def test_every_registered_parameter_gets_a_faithful_widget():
    params = all_params()
    assert len(params) > 100
    for stage, method, p in params:
        spec = param_forms.widget_spec(p, method)
        where = f"{stage.key}/{method.key}/{p.name}"
        assert spec.name == p.name
        assert spec.label and "_" not in spec.label and spec.label[0].isupper(), where
        assert p.help.strip() in spec.tooltip and method.reference in spec.tooltip, where
        if p.unit:
            assert spec.suffix == f" {p.unit}" and p.unit in spec.tooltip, where
        if p.choices is not None:
            assert spec.kind == "choice" and spec.widget_class == "QComboBox", where
            assert p.default in spec.choices
            index = list(spec.choices).index(p.default)
            assert param_forms.value_from_widget(spec, index) == p.default
            continue
        kind = {bool: "bool", int: "int", float: "double", str: "text"}[p.type]
        if spec.kind == "scientific":  # tiny floats: typed in exponent notation, shown with %g
            assert p.type is float and spec.widget_class == "QLineEdit", where
            assert any(v and abs(v) < param_forms.SCIENTIFIC_BELOW for v in (p.default, p.minimum, p.maximum))
            back = param_forms.value_from_widget(spec, f"{p.default:g}")
            assert math.isclose(p.validate(back), p.default, rel_tol=1e-5), where
            continue
        assert spec.kind == kind, where
        if kind in ("int", "double"):
            assert spec.minimum <= p.default <= spec.maximum, where
            if p.minimum is not None:
                assert spec.minimum == pytest.approx(p.minimum), where
            if p.maximum is not None:
                assert spec.maximum == pytest.approx(p.maximum), where
            assert 0 < spec.single_step <= max(abs(spec.maximum - spec.minimum), 1), where
        if kind == "int":
            assert -2**31 < spec.minimum and spec.maximum < 2**31, where
        if kind == "double":
            # what the spin box shows at its decimals equals the default within 0.1 %
            shown = round(p.default, spec.decimals)
            assert math.isclose(shown, p.default, rel_tol=1e-3, abs_tol=1e-12), (where, spec.decimals)
            for bound in (p.minimum, p.maximum):
                if bound:
                    assert math.isclose(round(bound, spec.decimals), bound, rel_tol=1e-3), (where, bound)
        # the widget's value goes back through the declaration's own validation unchanged
        back = param_forms.value_from_widget(spec, spec.default)
        assert p.validate(back) == p.default, where
    # labels are unique within each method form
    for stage in param_forms.stage_specs().values():
        for m in stage.methods:
            labels = [s.label for s in param_forms.method_form(m)]
            assert len(labels) == len(set(labels)), (stage.key, m.key, labels)


def test_widget_spec_rules():
    from QSMLogic.params import MethodSpec, Param

    m = MethodSpec("demo", "Demo method", "Doe et al., MRM 2020", func=lambda **k: None)
    s = param_forms.widget_spec(Param("tolerance", float, 1e-4, "stop tolerance", minimum=1e-8, maximum=1.0), m)
    assert s.kind == "scientific" and param_forms.value_from_widget(s, "2.5e-6") == 2.5e-6
    with pytest.raises(QSMInputError, match="Tolerance: cannot read 'abc' as a number"):
        param_forms.value_from_widget(s, "abc")
    s = param_forms.widget_spec(Param("lam", float, 1e-3, "regularisation", minimum=1e-4, maximum=1.0), m)
    assert s.kind == "double" and s.decimals == 6 and s.single_step == pytest.approx(1e-4)
    s = param_forms.widget_spec(Param("radius_mm", float, 6.0, "kernel radius", unit="mm", minimum=1.0), m)
    assert (s.label, s.suffix, s.maximum, s.decimals, s.single_step) == ("Radius", " mm", 1e9, 2, 0.1)
    assert "Range: 1 … mm" in s.tooltip and "Doe et al., MRM 2020" in s.tooltip
    s = param_forms.widget_spec(Param("max_iterations", int, 50, "iterations", minimum=1, maximum=10**12), m)
    assert (s.kind, s.minimum, s.maximum, s.label) == ("int", 1, 2**31 - 1, "Max iterations")
    s = param_forms.widget_spec(Param("slice_axis", int, 2, "axis", choices=(0, 1, 2)), m)
    assert s.kind == "choice" and param_forms.value_from_widget(s, 1) == 1
    assert param_forms.stage_ui_name("coil_combination") == "coilCombination"
    assert param_forms.stage_widget_names("r2star")["enabled"] == "r2starEnabledCheckBox"
    assert "enabled" not in param_forms.stage_widget_names("inversion")


def test_method_items_put_the_default_first():
    for stage in param_forms.stage_specs().values():
        items = param_forms.method_items(stage)
        assert items[0][1] == stage.default_method
        assert sorted(k for _, k in items) == sorted(stage.method_keys)


def test_config_json_round_trip_restores_methods_and_parameters():
    cfg = PipelineConfig.default()
    cfg.set("background", method="vsharp")
    first_param = cfg.stages["background"]
    spec = param_forms.stage_specs()["background"].method("vsharp").params[0]
    value = spec.maximum if spec.maximum is not None and spec.type is not bool else spec.default
    cfg.set("background", **{spec.name: value})
    cfg.stages["swi"]["enabled"] = False
    text = param_forms.config_to_json(cfg)
    back = param_forms.config_from_json(text)
    assert back.stages["background"]["method"] == "vsharp"
    assert back.resolved("background")[spec.name] == value == first_param["params"][spec.name]
    assert back.stages["swi"]["enabled"] is False
    assert param_forms.config_from_json("").to_dict() == PipelineConfig.default().to_dict()
    with pytest.raises(QSMInputError, match="no_such_param"):
        param_forms.config_from_json('{"stages": {"inversion": {"params": {"no_such_param": 1}}}}')
    with pytest.raises(QSMInputError, match="no method 'nope'"):
        param_forms.config_from_json('{"stages": {"unwrap": {"method": "nope"}}}')


def test_requirements_file_and_missing_requirements(tmp_path):
    reqs = dependencies.read_requirements(dependencies.requirements_path())
    assert dict(reqs)["numpy"] == "1.22" and len(reqs) == 7 and all(low for _, low in reqs)
    assert dependencies.missing_requirements() == []  # the test environment has them all
    f = tmp_path / "requirements.txt"
    f.write_text("# comment\nnumpy>=1.0\nnumpy>=999.0  # too new\nno-such-package-qsm-xyz\n\n")
    assert dependencies.missing_requirements(str(f)) == ["numpy>=999.0", "no-such-package-qsm-xyz"]
    assert dependencies.version_tuple("1.26.4") == (1, 26, 4)
    assert dependencies.version_tuple("2.0rc1") == (2, 0)
    assert dependencies.version_tuple("0.60.0+1.g") == (0, 60, 0)
    f.write_text("numpy==1.0\n")
    with pytest.raises(ValueError, match="cannot read requirement"):
        dependencies.read_requirements(str(f))


slicer = pytest.importorskip("slicer")


def test_sort_echo_nodes_and_results_layout():
    from QSMLib import mrml_adapter as ad

    scene = slicer.vtkMRMLScene()
    nodes = []
    for te in (15.0, 5.0, 10.0):
        n = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"te{te:g}")
        slicer.util.updateVolumeFromArray(n, np.zeros((2, 3, 4), np.float32))
        n.SetAttribute("DICOM.EchoTime", str(te))
        nodes.append(n)
    assert [n.GetName() for n in ad.sort_echo_nodes(nodes)] == ["te5", "te10", "te15"]
    nodes[0].RemoveAttribute("DICOM.EchoTime")
    assert ad.sort_echo_nodes(nodes) == nodes  # without every echo time the given order stays

    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    composites = {}
    for name in ("Red", "Yellow", "Green"):
        c = slicer.vtkMRMLSliceCompositeNode()
        c.SetLayoutName(name)
        scene.AddNode(c)
        composites[name] = c
    shown = ad.show_side_by_side(scene, {"magnitude": nodes[0], "chi_ppm": nodes[1], "swi": nodes[2]})
    assert layout.GetViewArrangement() == ad.RESULTS_LAYOUT_ID
    assert layout.IsLayoutDescription(ad.RESULTS_LAYOUT_ID)
    assert shown == {"Red": nodes[0].GetID(), "Yellow": nodes[1].GetID(), "Green": nodes[2].GetID()}
    assert composites["Yellow"].GetBackgroundVolumeID() == nodes[1].GetID()
    # SWI module: magnitude | SWI | mIP
    shown = ad.show_side_by_side(scene, {"magnitude": nodes[0], "swi": nodes[1], "mip": nodes[2]})
    assert shown == {"Red": nodes[0].GetID(), "Yellow": nodes[1].GetID(), "Green": nodes[2].GetID()}
    assert ad.show_side_by_side(scene, {"swi": nodes[1]}) == {"Red": nodes[1].GetID()}  # each node shown once
