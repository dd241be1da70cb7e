"""Parameter forms generated from the QSMLogic declarations (every registered parameter), the configuration JSON
kept in the parameter node, the library defaults, the dependency check and first-use install, echo ordering, the results
layout, and the widgets' behaviour (echo times / B0 filled from the data, cancel, scene close, missing packages,
the coil-combination section) driven with stand-ins for Qt — all without Qt."""
from __future__ import annotations

import contextlib
import math
import os
import sys
import types

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "SusceptibilityMRI"))

from SusceptibilityMRILib import dependencies, param_forms  # noqa: E402

from QSMLogic.errors import QSMCancelled, QSMInputError  # noqa: E402
from slicer_stand_ins import FakeDialog, FakeUI, FakeWidget, load_module  # noqa: E402
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
    assert "SimpleITK" not in dict(reqs)  # Slicer bundles its own; QSMLogic does not use it
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
    with pytest.raises(FileNotFoundError, match="resource of SusceptibilityMRILib"):
        dependencies.read_requirements(str(tmp_path / "none.txt"))


class FakeUtil:
    """slicer.util stand-in: records the consent prompt and pip_install; ``install`` makes the file satisfied."""

    def __init__(self, answer, path):
        self.answer, self.path, self.asked, self.installed = answer, path, [], []

    def confirmOkCancelDisplay(self, message):
        self.asked.append(message)
        return self.answer

    def pip_install(self, requirements):
        self.installed.append(list(requirements))
        self.path.write_text("numpy>=1.0\n")


class FakePackaging:
    """slicer.packaging (Slicer >= 5.12) stand-in: pip_ensure checks, asks and installs by itself."""

    def __init__(self, path):
        self.path, self.ensured = path, []

    def load_requirements(self, path):
        return ["parsed:" + os.path.basename(path)]

    def pip_ensure(self, reqs, requester):
        self.ensured.append((reqs, requester))
        self.path.write_text("numpy>=1.0\n")


def test_first_use_install_always_asks(tmp_path, monkeypatch):
    f = tmp_path / "requirements.txt"
    # nothing missing: nothing asked, nothing installed
    f.write_text("numpy>=1.0\n")
    util = FakeUtil(True, f)
    assert dependencies.ensure_requirements(path=str(f), util=util, packaging=None)
    assert util.asked == [] and util.installed == []
    # Slicer < 5.12, no callback: slicer.util.confirmOkCancelDisplay asks; "Cancel" installs nothing
    f.write_text("no-such-package-qsm-xyz>=1.0\n")
    util = FakeUtil(False, f)
    assert not dependencies.ensure_requirements(path=str(f), util=util, packaging=None, requester="QSM")
    assert len(util.asked) == 1 and "no-such-package-qsm-xyz>=1.0" in util.asked[0] and util.installed == []
    # "OK" installs the missing requirements with pip_install
    util = FakeUtil(True, f)
    assert dependencies.ensure_requirements(path=str(f), util=util, packaging=None)
    assert util.installed == [["no-such-package-qsm-xyz>=1.0"]]
    # Slicer >= 5.12, no callback: pip_ensure (which prompts itself) gets the parsed requirements file
    f.write_text("no-such-package-qsm-xyz>=1.0\n")
    util, pkg = FakeUtil(True, f), FakePackaging(f)
    assert dependencies.ensure_requirements(path=str(f), util=util, packaging=pkg, requester="SusceptibilityMRI")
    assert pkg.ensured == [(["parsed:requirements.txt"], "SusceptibilityMRI")] and util.asked == []
    # an explicit callback decides (the self-test passes one): no second prompt, pip_install installs
    f.write_text("no-such-package-qsm-xyz>=1.0\n")
    util, pkg, seen = FakeUtil(False, f), FakePackaging(f), []
    assert dependencies.ensure_requirements(lambda m: seen.append(m) or True, str(f), util=util, packaging=pkg)
    assert len(seen) == 1 and util.asked == [] and pkg.ensured == [] and util.installed
    # slicer.packaging is imported as a submodule (slicer-core has none)
    assert dependencies.slicer_packaging() is None
    fake = types.ModuleType("slicer.packaging")
    fake.pip_ensure = lambda reqs, requester: None
    monkeypatch.setitem(sys.modules, "slicer.packaging", fake)
    assert dependencies.slicer_packaging() is fake


def test_modules_use_the_librarys_mip_slab():
    """One mIP slab default, the library's (16 mm), and no Slicer-only override of it."""
    from QSMLogic.swi import DEFAULT_MIP_SLAB_MM

    cfg = param_forms.config_from_json("")
    assert cfg.resolved("swi")["mip_slab_mm"] == DEFAULT_MIP_SLAB_MM == 16.0
    assert not hasattr(param_forms, "MODULE_DEFAULTS")
    # a stored configuration that sets the slab (even to 0) keeps it
    assert param_forms.config_from_json('{"stages": {"swi": {"params": {"mip_slab_mm": 0.0}}}}').resolved(
        "swi")["mip_slab_mm"] == 0.0
    assert param_forms.config_from_json('{"stages": {"inversion": {}}}').resolved("swi")["mip_slab_mm"] == 16.0


def test_refill_from_data_keeps_user_edits():
    fill = param_forms.refill_from_data
    assert fill("", None, "5, 10", "") == ("5, 10", "5, 10")  # data fill an empty field
    assert fill("4, 8", "5, 10", "5, 10", "") == ("4, 8", "5, 10")  # same data: the user's override stays
    assert fill("4, 8", "5, 10", "6, 12", "") == ("6, 12", "6, 12")  # other data: they replace it
    assert fill("6, 12", "6, 12", None, "") == ("", None)  # data without values: a stale fill is cleared
    assert fill("7, 14", "6, 12", None, "") == ("7, 14", None)  # ... the user's own entry stays
    assert fill(0.0, None, 2.89, 0.0) == (2.89, 2.89) and fill(2.89, 2.89, None, 0.0) == (0.0, None)


def test_stage_the_module_cannot_feed_is_annotated():
    names = param_forms.stage_widget_names("coil_combination")
    assert names["note"] == "coilCombinationNoteLabel"
    assert "coil-combined" in param_forms.UNAVAILABLE_STAGES["coil_combination"]
    assert "note" not in param_forms.stage_widget_names("unwrap")


slicer = pytest.importorskip("slicer")


def test_sort_echo_nodes_and_results_layout():
    from SusceptibilityMRILib import mrml_adapter as ad

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


# ------------------------------------------------------------------------------- widgets, with stand-ins for Qt
#
# Slicer's Qt side cannot run here, so the module files are imported with minimal stand-ins for qt,
# slicer.ScriptedLoadableModule and slicer.parameterNodeWrapper (slicer-core provides the rest), and the widget
# methods are driven with fake .ui widgets and a plain parameter object (Testing/slicer_stand_ins.py). This checks
# the widgets' own logic: what they fill in, what they pass to the module logic, and how they react to cancel,
# scene close and missing packages.


def _parameters(**kw):
    p = types.SimpleNamespace(magnitudeVolumes=[], phaseVolumes=[], magnitudeSequence=None, phaseSequence=None,
                              echoTimesMs="", b0Tesla=0.0, phaseScaling="auto", flipPhase=False, phaseSign="auto",
                              maskVolume=None,
                              runName="run", runInBackground=False, allOutputs=False, showResults=False,
                              configJson="", paramsJson="", r2Volume=None, r2Quantity="r2", nucleiChiVolume=None,
                              nucleiMaskVolume=None, nucleiRegions=None, nucleiAtlas="cit168", nucleiAtlasFolder="",
                              nucleiReference="whole_brain", nucleiErosionMm=0.0, nucleiRunName="Nuclei")
    p.__dict__.update(kw)
    return p


@pytest.fixture()
def widget_scene():
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    yield s
    s.Clear(1)


def _echoes(scene, tes_ms, b0=None, name="phase"):
    nodes = []
    rng = np.random.default_rng(0)
    for e, te in enumerate(tes_ms):
        n = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{name}{e}")
        slicer.util.updateVolumeFromArray(n, rng.uniform(-np.pi, np.pi, (4, 5, 6)).astype(np.float32))
        if te is not None:
            n.SetAttribute("DICOM.EchoTime", str(te))
        if b0 is not None:
            n.SetAttribute("DICOM.MagneticFieldStrength", str(b0))
        nodes.append(n)
    return nodes


@contextlib.contextmanager
def _recording_error_display(errors):
    def try_with_error_display(message=None, **kwargs):
        @contextlib.contextmanager
        def cm():
            try:
                yield
            except Exception as exc:  # Slicer shows an error box, then re-raises
                errors.append((message, exc))
                raise
        return cm()
    yield try_with_error_display


def _qsm_widget(monkeypatch, **params):
    mod = load_module(monkeypatch, "QSM")
    w = mod.QSMWidget()
    w.ui, w.logic, w._parameterNode = FakeUI(), mod.QSMLogic(), _parameters(**params)
    return mod, w


def test_qsm_widget_fills_echo_times_and_b0_from_the_data_on_every_selection(monkeypatch, widget_scene):
    mod, w = _qsm_widget(monkeypatch)
    p = w._parameterNode
    a = _echoes(widget_scene, (15.0, 5.0, 10.0), b0=2.89)
    w.ui.phaseVolumesComboBox.nodes = a
    w.onEchoVolumesChanged()
    assert p.phaseVolumes == a and (p.echoTimesMs, p.b0Tesla) == ("5, 10, 15", 2.89)
    assert w.ui.acquisitionLabel.text.startswith("From the data: echo times 5, 10, 15 ms (DICOM.EchoTime")
    assert "Detected phase scaling" in w.ui.phaseScalingLabel.text
    args = w._runArguments()  # values from the data: the logic reads them itself (and records their source)
    assert args["echo_times_s"] is None and args["b0_tesla"] is None
    assert [n.GetName() for n in args["phase_nodes"]] == ["phase1", "phase2", "phase0"]  # echo-time order
    # the user overrides both; the same data keep the override
    p.echoTimesMs, p.b0Tesla = "4, 8, 12", 3.0
    w.ui.magnitudeVolumesComboBox.nodes = _echoes(widget_scene, (15.0, 5.0, 10.0), name="mag")
    w.onEchoVolumesChanged()
    assert (p.echoTimesMs, p.b0Tesla) == ("4, 8, 12", 3.0)
    p.r2Volume, p.r2Quantity = a[0], "t2_ms"
    args = w._runArguments()
    assert args["echo_times_s"] == pytest.approx([0.004, 0.008, 0.012]) and args["b0_tesla"] == 3.0
    assert args["r2_node"] is a[0] and args["r2_quantity"] == "t2_ms"
    # other echoes with other echo times and no B0: their echo times replace the field; the typed B0 stays
    w.ui.magnitudeVolumesComboBox.nodes = []
    w.ui.phaseVolumesComboBox.nodes = _echoes(widget_scene, (6.0, 12.0), name="b")
    w.onEchoVolumesChanged()
    assert (p.echoTimesMs, p.b0Tesla) == ("6, 12", 3.0)
    assert "no B0 (enter it)" in w.ui.acquisitionLabel.text
    # echoes without echo times: the stale fill is cleared, not left from the previous selection
    w.ui.phaseVolumesComboBox.nodes = _echoes(widget_scene, (None, None), name="c")
    w.onEchoVolumesChanged()
    assert p.echoTimesMs == "" and "no echo times (enter them)" in w.ui.acquisitionLabel.text
    # a phase sequence takes precedence over the checked volumes
    seq = widget_scene.AddNewNodeByClass("vtkMRMLSequenceNode", "phase sequence")
    seq.SetIndexName("EchoTime")
    seq.SetIndexUnit("ms")
    for te, n in zip((3.0, 6.0, 9.0), a):
        seq.SetDataNodeAtValue(n, str(te))
    p.phaseSequence = seq
    w.onSequenceChanged()
    assert p.echoTimesMs == "3, 6, 9" and "sequence index" in w.ui.acquisitionLabel.text
    assert w._runArguments()["phase_nodes"] is seq


def test_qsm_phase_sign_choice_reaches_the_logic_and_old_scenes_keep_a_ticked_flip(monkeypatch, widget_scene):
    """The widget passes the phase-sign choice as it is ("auto" by default; the runner parses it), and a parameter
    node saved with the former "Flip phase sign" check box is brought to the choice when the logic hands it out:
    ticked → "-1", unticked (the old default, not a choice) → no stored choice, i.e. the default "auto"."""
    from SusceptibilityMRILib import mrml_adapter as ad

    mod, w = _qsm_widget(monkeypatch)
    w.ui.phaseVolumesComboBox.nodes = _echoes(widget_scene, (5.0, 10.0))
    assert w._runArguments()["phase_sign"] == "auto"
    w._parameterNode.phaseSign = "-1"
    assert w._runArguments()["phase_sign"] == "-1"
    ticked, unticked, both = (widget_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode") for _ in range(3))
    ticked.SetParameter("flipPhase", "True")
    unticked.SetParameter("flipPhase", "False")
    both.SetParameter("flipPhase", "True")
    both.SetParameter("phaseSign", "+1")
    monkeypatch.setattr(mod, "QSMParameterNode", lambda node: node)  # the wrapper (a stand-in here) wraps it
    monkeypatch.setattr(mod.ScriptedLoadableModuleLogic, "getParameterNode", lambda self: ticked, raising=False)
    assert mod.QSMLogic().getParameterNode() is ticked
    assert ticked.GetParameter("phaseSign") == "-1" and not ticked.HasParameter("flipPhase")
    assert ad.migrate_flip_phase(unticked) and not unticked.HasParameter("phaseSign")
    assert not unticked.HasParameter("flipPhase") and not ad.migrate_flip_phase(unticked)  # once only
    assert ad.migrate_flip_phase(both) and both.GetParameter("phaseSign") == "+1"  # a stored choice is kept
    assert not ad.migrate_flip_phase(None)


def test_qsm_widget_without_packages_prompts_instead_of_failing(monkeypatch, widget_scene):
    mod, w = _qsm_widget(monkeypatch)
    w.ui.phaseVolumesComboBox.nodes = _echoes(widget_scene, (5.0, 10.0))

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'nibabel'", name="nibabel")

    monkeypatch.setattr(w.logic, "acquisitionFromNodes", missing)
    monkeypatch.setitem(sys.modules, "QSMLogic.io.phase_scaling", None)  # importing it fails as without packages
    w.onEchoVolumesChanged()  # no exception
    assert "Install the Python packages (nibabel is missing)" in w.ui.acquisitionLabel.text
    assert "once the Python packages are installed" in w.ui.phaseScalingLabel.text


def test_qsm_widget_cancel_is_not_an_error(monkeypatch, widget_scene, tmp_path):
    mod, w = _qsm_widget(monkeypatch)
    w._parameterNode.phaseVolumes = _echoes(widget_scene, (5.0, 10.0))
    w._config = param_forms.config_from_json("")
    errors = []
    dialog = FakeDialog(canceled=True)
    monkeypatch.setattr(w.logic, "ensureDependencies", lambda confirm=None: True)
    monkeypatch.setattr(w, "_updateDependencyState", lambda: None)
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: dialog, raising=False)
    seen = {}

    def run(**kwargs):
        seen.update(kwargs)
        if kwargs["cancel"]():
            raise mod.qsmlib.QSMCancelled("cancelled before Dipole inversion")
        return {}

    monkeypatch.setattr(w.logic, "run", run)
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onApplyButton()
    assert errors == [] and dialog.closed
    assert w.ui.statusLabel.text == "Cancelled; no results were added."
    assert seen["echo_times_s"] is None and seen["b0_tesla"] is None  # nothing typed: from the data

    # a scene closed during an in-process run stops it at its next cancel check
    dialog2 = FakeDialog(canceled=False)
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: dialog2, raising=False)
    monkeypatch.setattr(w, "setParameterNode", lambda node: None)

    def run_closing(**kwargs):
        assert not kwargs["cancel"]()
        w.onSceneStartClose(None, None)
        assert kwargs["cancel"]()
        raise mod.qsmlib.QSMCancelled("scene closed")

    monkeypatch.setattr(w.logic, "run", run_closing)
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onApplyButton()
    assert errors == [] and w.ui.statusLabel.text == "Cancelled; no results were added."


class FakeJob:
    """A background run as the widget sees it (SusceptibilityMRILib.runner.BackgroundRun's interface)."""

    def __init__(self, on_done):
        self.on_done, self.cancelled, self.finished = on_done, 0, False

    def cancel(self):
        self.cancelled += 1
        if not self.finished:
            self.finished = True
            self.on_done(None, QSMCancelled("the background run was cancelled"))


def _background_widget(monkeypatch, widget_scene):
    mod, w = _qsm_widget(monkeypatch, runInBackground=True)
    w._parameterNode.phaseVolumes = _echoes(widget_scene, (5.0, 10.0))
    w._config = param_forms.config_from_json("")
    dialog, calls, shown = FakeDialog(), [], []
    monkeypatch.setattr(w.logic, "ensureDependencies", lambda confirm=None: True)
    monkeypatch.setattr(w, "_updateDependencyState", lambda: None)
    monkeypatch.setattr(w, "_showResults", lambda nodes: shown.append(nodes))
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: dialog, raising=False)

    def run(**kwargs):
        calls.append(kwargs)
        w._fakeJob = FakeJob(kwargs["on_done"])
        return w._fakeJob

    monkeypatch.setattr(w.logic, "run", run)
    return mod, w, dialog, calls, shown


def test_qsm_background_apply_goes_through_the_logic(monkeypatch, widget_scene):
    """The widget starts the background run through logic.run(background=True) and only shows what on_done
    reports: results, a failure (error box with the worker's message) or a cancel (status line only)."""
    mod, w, dialog, calls, shown = _background_widget(monkeypatch, widget_scene)
    errors, displayed = [], []
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kw: displayed.append((text, kw)), raising=False)
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onApplyButton()
    (kw,) = calls
    assert kw["background"] is True and callable(kw["on_done"]) and kw["phase_sign"] == "auto"
    assert kw["r2_node"] is None and kw["r2_quantity"] == "r2"   # the R2/T2 selector, bound, passed as it is
    assert w._job is w._fakeJob and w.ui.applyButton.enabled is False  # one run at a time
    kw["progress"](0.5, "Dipole inversion")
    assert (dialog.value, dialog.labelText) == (50, "Dipole inversion")
    assert kw["cancel"]() is False
    dialog.wasCanceled = True
    assert kw["cancel"]() is True  # the logic's timer cancels the run when the dialog's Cancel was pressed
    kw["on_done"]({"chi_ppm": "node"}, None)
    assert shown == [{"chi_ppm": "node"}] and dialog.closed and w._job is None
    # a failed worker: an error box with its message, the first line in the status
    w.onApplyButton()
    calls[-1]["on_done"](None, RuntimeError("the background process failed (exit code 1): MemoryError\n\ndetails"))
    assert displayed and displayed[-1][0] == "QSM failed." and "MemoryError" in displayed[-1][1]["detailedText"]
    assert w.ui.statusLabel.text == "Failed: the background process failed (exit code 1): MemoryError"
    assert errors == [] and len(shown) == 1


def test_qsm_scene_close_stops_the_background_run(monkeypatch, widget_scene):
    mod, w, dialog, calls, shown = _background_widget(monkeypatch, widget_scene)
    cleared = []
    with _recording_error_display([]) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onApplyButton()
    job = w._job
    monkeypatch.setattr(w, "setParameterNode", lambda node: cleared.append(node))
    w.onSceneStartClose(None, None)
    assert job.cancelled == 1 and w._job is None and dialog.closed and shown == []
    assert cleared == [None] and "scene was closed" in w.ui.statusLabel.text


def test_qsm_coil_combination_section_is_annotated_and_read_only(monkeypatch):
    mod, w = _qsm_widget(monkeypatch)
    w._buildStageForms()
    assert w.ui.coilCombinationNoteLabel.text == param_forms.UNAVAILABLE_STAGES["coil_combination"]
    assert w.ui.coilCombinationMethodComboBox.enabled is False
    assert w.ui.coilCombinationParametersFrame.enabled is False
    assert w.ui.coilCombinationMethodComboBox.count > 0  # still built from the declarations
    assert w.ui.unwrapMethodComboBox.enabled is True


def test_swi_widget_progress_cancel_and_phase_scaling(monkeypatch, widget_scene):
    mod = load_module(monkeypatch, "SWI")
    w = mod.SWIWidget()
    w.ui, w.logic = FakeUI(), mod.SWILogic()
    w._parameterNode = _parameters(runName="SWI")
    mags, phs = _echoes(widget_scene, (10.0, 20.0), name="mag"), _echoes(widget_scene, (20.0, 10.0))
    w.ui.magnitudeVolumesComboBox.nodes, w.ui.phaseVolumesComboBox.nodes = mags, phs
    w.onEchoVolumesChanged()
    assert w.ui.phaseScalingLabel.text.startswith("Detected phase scaling: ")  # shown, as in the QSM module
    w._buildForm()  # from the declaration: the library's defaults
    assert w._method.key == "homodyne" and w._params["mip_slab_mm"] == 16.0
    errors, dialog, seen = [], FakeDialog(), {}
    monkeypatch.setattr(w.logic, "ensureDependencies", lambda confirm=None: True)
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: dialog, raising=False)

    def run(magnitude_nodes, phase_nodes, echo_times_s, **kwargs):
        seen.update(kwargs, magnitude_nodes=magnitude_nodes, phase_nodes=phase_nodes)
        dialog.wasCanceled = True
        if kwargs["cancel"]():
            raise mod.qsmlib.QSMCancelled("cancelled")
        return {}

    monkeypatch.setattr(w.logic, "run", run)
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onApplyButton()
    assert errors == [] and dialog.closed and w.ui.statusLabel.text == "Cancelled; no results were added."
    assert callable(seen["progress"]) and seen["params"]["mip_slab_mm"] == 16.0
    assert [n.GetName() for n in seen["phase_nodes"]] == ["phase1", "phase0"]  # echo-time order


# ------------------------------------------------------------------------------- Slicer 5.6-5.12 behaviours


def test_declining_the_install_on_slicer_512_is_not_an_error(tmp_path, monkeypatch, widget_scene):
    """slicer.packaging.pip_ensure raises RuntimeError when the user declines: ensure_requirements says False,
    and Apply shows a status line instead of an error box."""
    f = tmp_path / "requirements.txt"
    f.write_text("no-such-package-qsm-xyz>=1.0\n")

    class Declining(FakePackaging):
        def pip_ensure(self, reqs, requester):
            raise RuntimeError("User declined package installation")

    assert dependencies.ensure_requirements(path=str(f), util=FakeUtil(True, f), packaging=Declining(f)) is False
    # a failing install is still an error
    import subprocess

    class Failing(FakePackaging):
        def pip_ensure(self, reqs, requester):
            raise subprocess.CalledProcessError(1, ["pip"])

    with pytest.raises(subprocess.CalledProcessError):
        dependencies.ensure_requirements(path=str(f), util=FakeUtil(True, f), packaging=Failing(f))
    for module in ("QSM", "SWI"):
        mod = load_module(monkeypatch, module)
        w = getattr(mod, f"{module}Widget")()
        w.ui, w.logic, w._parameterNode = FakeUI(), getattr(mod, f"{module}Logic")(), _parameters()
        w._parameterNode.phaseVolumes = _echoes(widget_scene, (5.0, 10.0))
        monkeypatch.setattr(w.logic, "ensureDependencies", lambda confirm=None: False)
        monkeypatch.setattr(w.logic, "run", lambda *a, **k: pytest.fail("ran without the packages"))
        errors = []
        with _recording_error_display(errors) as fake:
            monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
            w.onApplyButton()
        assert errors == [] and "not installed" in w.ui.statusLabel.text


class Wrapper56:
    """parameterNodeWrapper as Slicer 5.6/5.8 behave: connectGui returns no tag (disconnectGui(None) does
    nothing), and each connection refills the bound combo box (its connector clears it and adds the choices, so a
    connector still listening writes the first choice) before writing the node's value into it."""

    choices = ["auto", "radians", "degrees"]

    def __init__(self, node):
        self.parameterNode = node
        self.connections = 0

    @property
    def phaseScaling(self):
        return self.parameterNode.GetParameter("phaseScaling") or "auto"

    @phaseScaling.setter
    def phaseScaling(self, value):
        self.parameterNode.SetParameter("phaseScaling", value)

    def connectGui(self, gui):
        combo = gui.phaseScalingComboBox
        combo.listeners = getattr(combo, "listeners", [])
        for listener in list(combo.listeners):  # clear() + addItem(first): index 0 is signalled
            listener(0)
        combo.listeners.append(lambda index: setattr(self, "phaseScaling", self.choices[index]))
        combo.currentIndex = self.choices.index(self.phaseScaling)
        self.connections += 1
        return None

    def disconnectGui(self, tag):
        assert tag is None

    def AddObserver(self, event, callback, priority=0.0):  # the wrapper observes its MRML node
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.parameterNode.RemoveObserver(tag)


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_reentering_the_module_keeps_the_chosen_phase_scaling(monkeypatch, widget_scene, module):
    """Leaving and re-entering the module gives a new wrapper of the same MRML node: the widget keeps the one it
    has instead of connecting again (on 5.6/5.8 a second connection would turn "radians" back into "auto")."""
    mod = load_module(monkeypatch, module)
    w = getattr(mod, f"{module}Widget")()
    w.ui, w.logic = FakeUI(), getattr(mod, f"{module}Logic")()
    w._binding = mod.ParameterNodeBinding(w.ui)
    node = widget_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    wrappers = []

    def get_parameter_node():
        wrapper = Wrapper56(node)
        wrapper.__dict__.update({k: v for k, v in _parameters().__dict__.items() if k != "phaseScaling"})
        wrappers.append(wrapper)
        return wrapper

    monkeypatch.setattr(w.logic, "getParameterNode", get_parameter_node)
    monkeypatch.setattr(w, "_loadConfig", lambda: None, raising=False)
    monkeypatch.setattr(w, "_buildForm", lambda: None, raising=False)
    w.enter()
    wrappers[0].phaseScaling = "radians"  # the user's choice
    for _ in range(2):
        if hasattr(w, "exit"):
            w.exit()
        w.enter()
    assert node.GetParameter("phaseScaling") == "radians"
    assert sum(wr.connections for wr in wrappers) == 1 and w._parameterNode is wrappers[0]
    # the stand-in shows what reconnecting would do
    wrappers[-1].connectGui(w.ui)
    assert node.GetParameter("phaseScaling") == "auto"
    # another parameter node (a new scene) is connected
    node = widget_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    other = node
    w.enter()
    assert w._parameterNode.parameterNode is other and wrappers[-1].connections == 1


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_deleted_echo_volume_disables_apply(monkeypatch, widget_scene, module):
    """A checked echo volume deleted from the scene leaves the selection (the parameter node held None for it and
    Apply stayed enabled); with no phase volume left, Apply is disabled."""
    from SusceptibilityMRILib import mrml_adapter as ad

    mod = load_module(monkeypatch, module)
    w = getattr(mod, f"{module}Widget")()
    w.ui, w.logic = FakeUI(), getattr(mod, f"{module}Logic")()
    phases, mags = _echoes(widget_scene, (5.0, 10.0)), _echoes(widget_scene, (5.0, 10.0), name="mag")
    w._parameterNode = _parameters(phaseVolumes=list(phases), magnitudeVolumes=list(mags))
    w._config = param_forms.config_from_json("")
    w._method = param_forms.stage_specs()["swi"].method("homodyne")
    w._checkCanApply()
    assert w.ui.applyButton.enabled is True
    widget_scene.RemoveNode(phases[0])
    w._parameterNode.phaseVolumes = [None, phases[1]]  # what the wrapper reads back for a deleted node
    assert ad.selected_inputs(w._parameterNode)[1] == [phases[1]]
    w.onNodeRemoved(widget_scene, None)
    assert w._parameterNode.phaseVolumes == [phases[1]] and w.ui.applyButton.enabled is True
    widget_scene.RemoveNode(phases[1])  # the node object stays referenced, outside any scene
    w.onNodeRemoved(widget_scene, None)
    assert w._parameterNode.phaseVolumes == [] and w.ui.applyButton.enabled is False
    assert not ad.inputs_ready(w._parameterNode)


def test_results_layout_shows_three_axial_views():
    """The results layout on Slicer's own layout logic: views that already exist (Yellow sagittal, Green coronal
    in the four-up layout) become axial too (the layout's orientation applies only to views it creates)."""
    from SusceptibilityMRILib import mrml_adapter as ad

    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    layout_logic = slicer.vtkMRMLLayoutLogic()
    layout_logic.SetMRMLScene(scene)
    layout_logic.GetLayoutNode().SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
    slices = {scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetLayoutName(): scene.GetNthNodeByClass(
        i, "vtkMRMLSliceNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))}
    assert slices["Yellow"].GetOrientation() == "Sagittal" and slices["Green"].GetOrientation() == "Coronal"
    vol = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    ad.show_side_by_side(scene, {"magnitude": vol})
    assert layout_logic.GetLayoutNode().GetViewArrangement() == ad.RESULTS_LAYOUT_ID
    assert {name: slices[name].GetOrientation() for name in ("Red", "Yellow", "Green")} == {
        "Red": "Axial", "Yellow": "Axial", "Green": "Axial"}


def test_parameter_widget_factory(monkeypatch):
    """The shared factory builds the widget each declaration asks for, and edits come back as parameter values."""
    load_module(monkeypatch, "SWI")  # puts the qt stand-in in place
    from SusceptibilityMRILib import widgets

    method = param_forms.stage_specs()["swi"].method("homodyne")
    values = method.resolve({})
    seen = []
    frame = FakeWidget("frame")
    made = widgets.fill_parameter_form(frame, param_forms.method_form(method), values,
                                       lambda spec, raw: seen.append((spec.name, param_forms.value_from_widget(
                                           spec, raw))))
    assert set(made) == {p.name for p in method.params}
    for spec in param_forms.method_form(method):
        w = made[spec.name]
        assert w.objectName == spec.widget_class and w.toolTip == spec.tooltip
        if spec.kind == "double":
            assert (w.minimum, w.maximum, w.value, w.decimals) == (spec.minimum, spec.maximum, values[spec.name],
                                                                  spec.decimals)
            w.slots["valueChanged(double)"](spec.minimum)
            assert seen[-1] == (spec.name, spec.minimum)
        if spec.kind == "choice":
            assert w.currentIndex == list(spec.choices).index(values[spec.name])
            w.slots["currentIndexChanged(int)"](len(spec.choices) - 1)
            assert seen[-1] == (spec.name, spec.choices[-1])
    assert any(k == "mip_slab_mm" for k, _ in seen)


# ------------------------------------------------------------------------------- "Measure nuclei" section


def _nuclei_widget(monkeypatch, scene, **params):
    """The QSM widget with the real module logic on the ``scene`` fixture (slicer-core, Segmentations logic), Qt
    stand-ins for the progress dialog and the application (its table/plot propagation recorded)."""
    mod, w = _qsm_widget(monkeypatch, **params)
    propagated = []
    app_logic = types.SimpleNamespace(PropagateTableSelection=lambda: propagated.append("table"),
                                      PropagatePlotChartSelection=lambda: propagated.append("plot"))
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(processEvents=lambda: None,
                                                             applicationLogic=lambda: app_logic), raising=False)
    monkeypatch.setattr(slicer.util, "createProgressDialog", lambda **kw: FakeDialog(), raising=False)
    monkeypatch.setattr(w.logic, "ensureDependencies", lambda confirm=None: True)
    return mod, w, propagated


def _volume_node(scene, arr, affine, name, cls="vtkMRMLScalarVolumeNode"):
    node = scene.AddNewNodeByClass(cls, name)
    dtype = np.int16 if "LabelMap" in cls else np.float32
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(np.asarray(arr, dtype).transpose(2, 1, 0)))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(affine))
    return node


def test_measure_nuclei_button_goes_through_the_logic_to_table_segmentation_and_plot(monkeypatch, scene):
    """The section's button measures with the selected χ, mask, regions, reference and erosion through
    QSMLogic.measureNuclei (slicer-core nodes), reports the result in its status line and shows the table and plot
    (plot/table layout, active table and chart propagated); the button is enabled only once a χ volume is chosen."""
    from QSMLogic.phantom import label_of, make_head_model

    m = make_head_model((48, 56, 40), (3.0, 3.0, 3.0))
    layout = scene.AddNewNodeByClass("vtkMRMLLayoutNode")
    chi = _volume_node(scene, m.chi_ppm, m.affine, "chi_ppm")
    mask = _volume_node(scene, m.brain_mask, m.affine, "qsm_mask", "vtkMRMLLabelMapVolumeNode")
    keep = [label_of("putamen"), label_of("caudate")]
    regions = _volume_node(scene, np.where(np.isin(m.labels, keep), m.labels, 0), m.affine, "drawn",
                           "vtkMRMLLabelMapVolumeNode")
    mod, w, propagated = _nuclei_widget(monkeypatch, scene, nucleiMaskVolume=mask, nucleiRegions=regions,
                                        nucleiReference="none", nucleiRunName="My nuclei")
    w._config = param_forms.config_from_json("")
    w._checkCanApply()
    assert w.ui.measureNucleiButton.enabled is False  # no χ volume yet
    w._parameterNode.nucleiChiVolume = chi
    w._checkCanApply()
    assert w.ui.measureNucleiButton.enabled is True
    errors = []
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onMeasureNucleiButton()
    assert errors == []
    tables = [scene.GetNthNodeByClass(i, "vtkMRMLTableNode")
              for i in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode"))]
    (table,) = tables
    assert table.GetName() == "My nuclei table" and table.GetNumberOfRows() == 2
    cols = [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())]
    for i in range(2):
        k = int(float(table.GetCellText(i, cols.index("label"))))
        want = float(m.chi_ppm[(m.labels == k) & m.brain_mask].mean())  # reference none, no erosion
        assert float(table.GetCellText(i, cols.index("mean_ppm"))) == pytest.approx(want, abs=1e-5)
        assert table.GetCellText(i, cols.index("reference")) == "none"
    assert w.ui.nucleiStatusLabel.text.startswith("2 regions, 2 measured; table 'My nuclei table'")
    selection = scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
    chart = scene.GetFirstNodeByClass("vtkMRMLPlotChartNode")
    assert chart is not None and chart.GetName() == "My nuclei mean χ"
    assert selection.GetActiveTableID() == table.GetID() and selection.GetActivePlotChartID() == chart.GetID()
    assert layout.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView
    assert propagated == ["table", "plot"]
    assert scene.GetFirstNodeByClass("vtkMRMLSegmentationNode").GetSegmentation().GetNumberOfSegments() == 2


def test_measure_nuclei_passes_the_atlas_choice_and_reports_cancel_and_errors(monkeypatch, scene):
    mod, w, propagated = _nuclei_widget(monkeypatch, scene, nucleiAtlas="pd25", nucleiAtlasFolder="  /data/pd25 ",
                                        nucleiReference=" region:Red Nucleus ", nucleiErosionMm=1.5)
    chi = _volume_node(scene, np.ones((4, 5, 6)), np.eye(4), "chi")
    w._parameterNode.nucleiChiVolume = chi
    seen = {}

    def cancelled(**kwargs):
        seen.update(kwargs)
        raise QSMCancelled("registration cancelled")

    monkeypatch.setattr(w.logic, "measureNuclei", cancelled)
    errors = []
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        w.onMeasureNucleiButton()
    assert errors == [] and w.ui.nucleiStatusLabel.text == "Cancelled; no nodes were added."
    assert seen["chi_node"] is chi and seen["regions_node"] is None and seen["atlas_name"] == "pd25"
    assert seen["atlas_folder"] == "/data/pd25" and seen["reference"] == "region:Red Nucleus"
    assert seen["erosion_mm"] == 1.5 and seen["run_name"] == "Nuclei" and callable(seen["cancel"])
    # the real logic: PD25 without its folder is refused with the library's message (an error box), nothing added
    w._parameterNode.nucleiAtlasFolder = ""
    monkeypatch.undo()
    mod, w, propagated = _nuclei_widget(monkeypatch, scene, nucleiAtlas="pd25", nucleiChiVolume=chi)
    with _recording_error_display(errors) as fake:
        monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", fake, raising=False)
        with pytest.raises(QSMInputError, match="PD25 is not shipped"):
            w.onMeasureNucleiButton()
    assert [message for message, _ in errors] == ["Failed to measure the nuclei."]
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 0 and propagated == []
