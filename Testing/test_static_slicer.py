"""Checks of the Slicer side that need no running Slicer: the .ui files against the module code and the
parameter nodes (their annotations resolved from the imported modules), the module classes, Python 3.9 grammar,
and what imports without Qt or without the Python packages. The build is checked by test_cmake_configure.py."""
from __future__ import annotations

import ast
import types
import typing
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

slicer = pytest.importorskip("slicer")

from slicer_stand_ins import load_module  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES_DIR = os.path.join(ROOT, "SusceptibilityMRI")
MODULES = sorted(d for d in os.listdir(MODULES_DIR)
                 if os.path.isfile(os.path.join(MODULES_DIR, d, f"{d}.py")))
QT_MODULES = {"qt", "ctk", "PythonQt", "slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper"}


def read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def module_files(module: str) -> list:
    """Every file of a module folder that the build must copy (all but its CMakeLists.txt and bytecode)."""
    base = os.path.join(MODULES_DIR, module)
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")
                for f in filenames if not f.endswith((".pyc", ".pyo")) and not f.startswith(".")]
    return sorted(f for f in out if f != "CMakeLists.txt")


def ui_tree(module: str) -> ET.ElementTree:
    return ET.parse(os.path.join(MODULES_DIR, module, "Resources", "UI", f"{module}.ui"))


def ui_widgets(module: str) -> dict:
    """objectName → class of every widget in the module's .ui."""
    return {w.get("name"): w.get("class") for w in ui_tree(module).iter("widget")}


def test_modules_found():
    assert MODULES == ["QSM", "QSMTargeting", "SWI"]


@pytest.mark.parametrize("module", ["QSM", "SWI", "QSMTargeting"])
def test_ui_parses_and_names_every_widget_the_code_uses(module):
    tree = ui_tree(module)
    assert tree.getroot().tag == "ui" and tree.getroot().find("widget").get("class") == "qMRMLWidget"
    names = ui_widgets(module)
    assert len(names) == len(list(tree.iter("widget"))), "duplicate objectName in the .ui"
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", read(os.path.join(MODULES_DIR, module, f"{module}.py"))))
    assert used, "no widget used?"
    missing = sorted(used - set(names))
    assert not missing, f"{module}.py uses widgets missing from {module}.ui: {missing}"
    # every custom widget class used is declared
    declared = {c.findtext("class") for c in tree.getroot().iter("customwidget")}
    custom = {c for c in names.values() if c.startswith(("ctk", "qMRML"))}
    assert custom <= declared, f"undeclared custom widgets: {sorted(custom - declared)}"


def test_stage_widgets_exist_for_every_stage():
    sys.path.insert(0, MODULES_DIR)
    from SusceptibilityMRILib.param_forms import stage_widget_names

    from QSMLogic.params import stages

    names = ui_widgets("QSM")
    from SusceptibilityMRILib.param_forms import UNAVAILABLE_STAGES

    expected_class = {"collapsible": "ctkCollapsibleButton", "method": "QComboBox", "parameters": "QFrame",
                      "enabled": "QCheckBox", "note": "QLabel"}
    for key in stages():
        for role, name in stage_widget_names(key).items():
            assert names.get(name) == expected_class[role], f"stage {key}: {name} ({role}) missing from QSM.ui"
    # coil combination cannot be fed from Slicer volumes: its section has a note label (test_slicer_forms checks
    # that the widget fills it and disables the form)
    assert "coil_combination" in UNAVAILABLE_STAGES and "note" in stage_widget_names("coil_combination")
    for name in ("inputsCollapsibleButton", "outputsCollapsibleButton"):
        assert names.get(name) == "ctkCollapsibleButton"
    # the parameter frames carry a form layout the widget fills
    frames = [w for w in ui_tree("QSM").iter("widget") if w.get("name", "").endswith("ParametersFrame")]
    assert frames and all(f.find("layout").get("class") == "QFormLayout" for f in frames)


def parameter_node_fields(monkeypatch, module: str) -> dict:
    """Field name → resolved type (``Annotated`` kept) of the module's parameter-node class, from the imported
    module (its node classes are slicer-core's)."""
    mod = load_module(monkeypatch, module)
    cls = getattr(mod, f"{module}ParameterNode")
    return typing.get_type_hints(cls, globalns=vars(mod), include_extras=True)


def node_classes(hint) -> set:
    """Names of the MRML node classes a field holds (a class, or a Union of classes and None); empty for lists and
    plain values."""
    options = typing.get_args(hint) if typing.get_origin(hint) is typing.Union else (hint,)
    return {o.__name__ for o in options if isinstance(o, type) and o.__name__.startswith("vtkMRML")}


def compatible(widget_class: str, hint) -> bool:
    if node_classes(hint):
        return widget_class == "qMRMLNodeComboBox"
    base, extras = hint, ()
    if typing.get_origin(hint) is typing.Annotated:
        base, *extras = typing.get_args(hint)
    if any(hasattr(e, "choices") for e in extras):
        return widget_class == "QComboBox"
    return widget_class in {float: ("QDoubleSpinBox", "ctkSliderWidget"), int: ("QSpinBox", "QSlider"),
                            bool: ("QCheckBox",), str: ("QLineEdit", "QTextEdit")}.get(base, ())


@pytest.mark.parametrize("module", ["QSM", "SWI", "QSMTargeting"])
def test_slicer_parameter_names_are_parameter_node_fields(monkeypatch, module):
    fields = parameter_node_fields(monkeypatch, module)
    bound = {}
    for w in ui_tree(module).iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                assert p.get("stdset") == "0", "SlicerParameterName must be a dynamic property (stdset=0)"
                bound[p.findtext("string")] = w.get("class")
    assert bound
    unknown = sorted(set(bound) - set(fields))
    assert not unknown, f"{module}.ui binds {unknown}, which are not fields of {module}ParameterNode"
    for name, cls in bound.items():
        assert compatible(cls, fields[name]), f"{name}: a {cls} cannot show a {fields[name]}"
    # a node selector offers exactly the node classes its parameter accepts
    for w in ui_tree(module).iter("widget"):
        param = next((p.findtext("string") for p in w.findall("property") if p.get("name") == "SlicerParameterName"),
                     None)
        if param and node_classes(fields[param]):
            types = {t.text for p in w.findall("property") if p.get("name") == "nodeTypes" for t in p.iter("string")}
            assert types == node_classes(fields[param]), f"{w.get('name')}: nodeTypes {types} vs {fields[param]}"


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_inputs_offer_sequences_segmentation_masks_and_the_librarys_phase_rules(monkeypatch, module):
    from QSMLogic.io import PHASE_RULES

    fields = parameter_node_fields(monkeypatch, module)
    assert node_classes(fields["magnitudeSequence"]) == node_classes(fields["phaseSequence"]) == {
        "vtkMRMLSequenceNode"}
    assert node_classes(fields["maskVolume"]) == {"vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"}
    choice = typing.get_args(fields["phaseScaling"])[1]
    assert choice.choices == ["auto", *PHASE_RULES]  # the library's rules, the same list in every module
    names = ui_widgets(module)
    assert names["magnitudeSequenceSelector"] == names["phaseSequenceSelector"] == "qMRMLNodeComboBox"
    # every MRML selector gets the scene (otherwise it lists nothing)
    root = ui_tree(module).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {n for n, c in names.items() if c in ("qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox")}
    assert selectors <= receivers, f"{module}.ui: selectors without the scene: {sorted(selectors - receivers)}"


def test_qsm_phase_sign_is_a_choice_the_library_parses(monkeypatch):
    """The QSM module's phase sign: a combo box bound to ``phaseSign`` whose choices ("auto" first, the default)
    the library parses to None/+1/−1; the former check box is gone from the .ui and the parameter node."""
    from QSMLogic.phase_sign import PHASE_SIGN_CHOICES, parse_phase_sign

    fields = parameter_node_fields(monkeypatch, "QSM")
    assert "flipPhase" not in fields
    assert typing.get_args(fields["phaseSign"])[1].choices == list(PHASE_SIGN_CHOICES) == ["auto", "+1", "-1"]
    assert [parse_phase_sign(c) for c in PHASE_SIGN_CHOICES] == [None, 1, -1]
    assert load_module(monkeypatch, "QSM").QSMParameterNode.phaseSign == "auto"
    names = ui_widgets("QSM")
    assert names.get("phaseSignComboBox") == "QComboBox" and "flipPhaseCheckBox" not in names
    bound = {w.get("name"): p.findtext("string") for w in ui_tree("QSM").iter("widget") for p in w.findall("property")
             if p.get("name") == "SlicerParameterName"}
    assert bound["phaseSignComboBox"] == "phaseSign" and "flipPhase" not in bound.values()


@pytest.mark.parametrize("module", ["QSM", "SWI", "QSMTargeting"])
def test_module_classes_and_no_install_at_import(monkeypatch, module):
    """The ExtensionWizard classes, on the right bases; importing the module file installs nothing."""
    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: installs.append(a), raising=False)
    mod = load_module(monkeypatch, module)
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )

    assert issubclass(getattr(mod, module), ScriptedLoadableModule)
    assert issubclass(getattr(mod, f"{module}Widget"), ScriptedLoadableModuleWidget)
    assert issubclass(getattr(mod, f"{module}Widget"), slicer.util.VTKObservationMixin)
    assert issubclass(getattr(mod, f"{module}Logic"), ScriptedLoadableModuleLogic)
    assert issubclass(getattr(mod, f"{module}Test"), ScriptedLoadableModuleTest)
    parent = types.SimpleNamespace()
    getattr(mod, module)(parent)
    assert parent.categories == ["Susceptibility MRI"] and parent.dependencies == []
    assert installs == []
    if module == "QSM":  # the library is bound as qsmlib before the logic class of the same name shadows it
        import QSMLogic

        assert mod.qsmlib is QSMLogic and mod.QSMLogic.__module__ == mod.__name__


def all_module_py() -> list:
    out = []
    for dirpath, dirnames, filenames in os.walk(MODULES_DIR):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.join(dirpath, f) for f in filenames if f.endswith(".py")]
    return sorted(out)


def test_module_code_is_python39():
    files = all_module_py()
    assert len(files) >= 8
    for path in files:
        src = read(path)
        tree = ast.parse(src, filename=path, feature_version=(3, 9))
        first = [n for n in tree.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))][0]
        assert isinstance(first, ast.ImportFrom) and first.module == "__future__", \
            f"{path}: 'from __future__ import annotations' must come first"
        match_node = getattr(ast, "Match", None)
        assert match_node is None or not any(isinstance(n, match_node) for n in ast.walk(tree)), path
    ruff = os.path.join(os.path.dirname(sys.executable), "ruff")
    ruff = ruff if os.path.isfile(ruff) else shutil.which("ruff")
    assert ruff, "ruff not found (it is in the test extra of pyproject.toml)"
    res = subprocess.run([ruff, "check", "--target-version", "py39", MODULES_DIR, "Testing/test_static_slicer.py",
                          "Testing/test_mrml_adapter.py", "Testing/test_slicer_forms.py"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_shared_package_needs_no_qt_and_the_adapter_no_io_packages():
    """Every module of SusceptibilityMRILib but widgets imports with Qt unavailable, and the MRML adapter imports
    without nibabel, pydicom and pynrrd (a module must load before the packages are installed)."""
    lib = os.path.join(MODULES_DIR, "SusceptibilityMRILib")
    names = sorted(f[:-3] for f in os.listdir(lib) if f.endswith(".py") and f not in ("__init__.py", "widgets.py"))
    assert {"binding", "dependencies", "mrml_adapter", "param_forms", "process", "runner", "testing"} <= set(names)
    code = ("import sys\n"
            "for blocked in ('qt', 'ctk', 'PythonQt', 'nibabel', 'pydicom', 'nrrd'):\n"
            "    sys.modules[blocked] = None\n"
            f"sys.path.insert(0, {MODULES_DIR!r})\n"
            "import SusceptibilityMRILib.mrml_adapter\n"
            f"for name in {names!r}:\n"
            "    if name != 'mrml_adapter':\n"
            "        sys.modules.pop('nibabel'); sys.modules.pop('pydicom'); sys.modules.pop('nrrd')\n"
            "        __import__('SusceptibilityMRILib.' + name)\n"
            "        for blocked in ('nibabel', 'pydicom', 'nrrd'):\n"
            "            sys.modules[blocked] = None\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_shared_package_makes_library_importable_from_a_source_checkout():
    code = (f"import sys; sys.path.insert(0, {MODULES_DIR!r}); import SusceptibilityMRILib, importlib.util; "
            "print(importlib.util.find_spec('QSMLogic').origin)")
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd="/", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert os.path.realpath(res.stdout.strip()) == os.path.realpath(os.path.join(ROOT, "QSMLogic", "__init__.py"))


@pytest.mark.parametrize("module", ["QSM", "SWI", "QSMTargeting"])
def test_icons_are_128_png(module):
    with open(os.path.join(MODULES_DIR, module, "Resources", "Icons", f"{module}.png"), "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(head[16:20], "big") == 128 and int.from_bytes(head[20:24], "big") == 128


def test_requirements_and_docs():
    sys.path.insert(0, MODULES_DIR)
    from SusceptibilityMRILib import dependencies

    path = os.path.join(MODULES_DIR, "SusceptibilityMRILib", "requirements.txt")
    assert os.path.realpath(dependencies.requirements_path()) == os.path.realpath(path)
    names = dict((n, low) for n, low in dependencies.read_requirements(path))
    # SimpleITK: bundled with Slicer, so not installed into Slicer's Python; matplotlib for the targeting export
    assert set(names) == {"numpy", "scipy", "numba", "nibabel", "pynrrd", "pydicom", "matplotlib"}
    pyproject = read(os.path.join(ROOT, "pyproject.toml"))
    for name, low in names.items():
        assert f'"{name}>={low}"' in pyproject, f"{name}>={low} differs from pyproject.toml"
    doc = read(os.path.join(ROOT, "docs", "slicer.md"))
    assert ("--additional-module-paths <repo>/SusceptibilityMRI/QSM <repo>/SusceptibilityMRI/SWI" in doc)
    assert "slicer.testing.runUnitTest(['<repo>/SusceptibilityMRI/QSM'], 'QSM')" in doc
    assert "slicer.testing.runUnitTest(['<repo>/SusceptibilityMRI/SWI'], 'SWI')" in doc


def test_qsm_measure_nuclei_section_matches_the_code_and_the_library(monkeypatch):
    """The "Measure nuclei" section: its widgets with the names and classes QSM.py uses, each bound to its
    parameter-node field, and an atlas choice the library's loader accepts."""
    names = ui_widgets("QSM")
    expected = {
        "nucleiCollapsibleButton": "ctkCollapsibleButton", "nucleiChiSelector": "qMRMLNodeComboBox",
        "nucleiMaskSelector": "qMRMLNodeComboBox", "nucleiRegionsSelector": "qMRMLNodeComboBox",
        "nucleiAtlasComboBox": "QComboBox", "nucleiAtlasFolderLineEdit": "QLineEdit",
        "nucleiReferenceLineEdit": "QLineEdit", "nucleiErosionSpinBox": "QDoubleSpinBox",
        "nucleiRunNameLineEdit": "QLineEdit", "measureNucleiButton": "QPushButton", "nucleiStatusLabel": "QLabel"}
    assert {n: names.get(n) for n in expected} == expected
    bound = {w.get("name"): p.findtext("string") for w in ui_tree("QSM").iter("widget") for p in w.findall("property")
             if p.get("name") == "SlicerParameterName"}
    assert {bound[n] for n in expected if n in bound} == {
        "nucleiChiVolume", "nucleiMaskVolume", "nucleiRegions", "nucleiAtlas", "nucleiAtlasFolder", "nucleiReference",
        "nucleiErosionMm", "nucleiRunName"}
    code = read(os.path.join(MODULES_DIR, "QSM", "QSM.py"))
    assert "self.ui.measureNucleiButton.connect(\"clicked(bool)\", self.onMeasureNucleiButton)" in code
    fields = parameter_node_fields(monkeypatch, "QSM")
    atlases = typing.get_args(fields["nucleiAtlas"])[1].choices
    assert atlases == ["cit168", "pd25"]
    from QSMLogic.errors import QSMInputError
    from QSMLogic.roi.atlas import load_atlas

    assert load_atlas("cit168").name.lower().startswith("cit168")
    with pytest.raises(QSMInputError, match="folder"):
        load_atlas("pd25")
