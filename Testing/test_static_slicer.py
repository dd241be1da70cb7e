"""Static checks of the Slicer side (Slicer itself cannot run here): .ui files, widget names used by the module
code, parameter-node bindings, CMake listings, extension layout, Python 3.9 grammar, no Qt in SusceptibilityMRILib."""
from __future__ import annotations

import ast
import fnmatch
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

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


@pytest.mark.parametrize("module", ["QSM", "SWI"])
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
    # coil combination cannot be fed from Slicer volumes: its section says why (and the code disables its form)
    assert "coil_combination" in UNAVAILABLE_STAGES and "note" in stage_widget_names("coil_combination")
    src = read(os.path.join(MODULES_DIR, "QSM", "QSM.py"))
    assert 'if "note" in names:' in src and "UNAVAILABLE_STAGES[key]" in src
    for name in ("inputsCollapsibleButton", "outputsCollapsibleButton"):
        assert names.get(name) == "ctkCollapsibleButton"
    # the parameter frames carry a form layout the widget fills
    frames = [w for w in ui_tree("QSM").iter("widget") if w.get("name", "").endswith("ParametersFrame")]
    assert frames and all(f.find("layout").get("class") == "QFormLayout" for f in frames)


def parameter_node_fields(module: str) -> dict:
    """Field name → annotation source of the @parameterNodeWrapper class of the module."""
    tree = ast.parse(read(os.path.join(MODULES_DIR, module, f"{module}.py")))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list):
            assert node.name == f"{module}ParameterNode"
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


def node_classes(annotation: str) -> set:
    """vtkMRML classes of a node annotation (``vtkMRMLX``, ``Union[vtkMRMLX, vtkMRMLY, None]``, ``Optional[…]``)."""
    if annotation.startswith("list["):
        return set()
    return set(re.findall(r"vtkMRML\w+", annotation))


def compatible(widget_class: str, annotation: str) -> bool:
    if node_classes(annotation):
        return widget_class == "qMRMLNodeComboBox"
    if "Choice(" in annotation:
        return widget_class == "QComboBox"
    base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", annotation)
    return widget_class in {"float": ("QDoubleSpinBox", "ctkSliderWidget"), "int": ("QSpinBox", "QSlider"),
                            "bool": ("QCheckBox",), "str": ("QLineEdit", "QTextEdit")}.get(base, ())


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_slicer_parameter_names_are_parameter_node_fields(module):
    fields = parameter_node_fields(module)
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
def test_inputs_offer_sequences_and_segmentation_masks(module):
    fields = parameter_node_fields(module)
    assert fields["magnitudeSequence"] == fields["phaseSequence"] == "vtkMRMLSequenceNode"
    assert node_classes(fields["maskVolume"]) == {"vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode"}
    names = ui_widgets(module)
    assert names["magnitudeSequenceSelector"] == names["phaseSequenceSelector"] == "qMRMLNodeComboBox"
    # every MRML selector gets the scene (otherwise it lists nothing)
    root = ui_tree(module).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {n for n, c in names.items() if c in ("qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox")}
    assert selectors <= receivers, f"{module}.ui: selectors without the scene: {sorted(selectors - receivers)}"
    src = read(os.path.join(MODULES_DIR, module, f"{module}.py"))
    assert "mrml_adapter.selected_inputs(self._parameterNode)" in src  # sequences win over checked volumes


def _method(module: str, cls: str, name: str) -> ast.FunctionDef:
    tree = ast.parse(read(os.path.join(MODULES_DIR, module, f"{module}.py")))
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == name)


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_apply_shows_progress_and_treats_cancel_as_cancel(module):
    fn = _method(module, f"{module}Widget", "onApplyButton")
    src = ast.unparse(fn)
    assert "createProgressDialog" in src and "wasCanceled" in src and "cancel=" in src and "progress=" in src
    handlers = [h for h in ast.walk(fn) if isinstance(h, ast.ExceptHandler)]
    cancelled = [h for h in handlers if h.type is not None and ast.unparse(h.type).endswith("QSMCancelled")]
    assert cancelled, f"{module}.onApplyButton does not catch QSMCancelled"
    body = "\n".join(ast.unparse(n) for n in cancelled[0].body)
    assert "statusLabel" in body and "errorDisplay" not in body and "raise" not in body


def test_scene_close_stops_the_background_worker():
    src = ast.unparse(_method("QSM", "QSMWidget", "onSceneStartClose"))
    assert "self._stopWorker()" in src and "self._cancelRequested = True" in src
    assert src.index("_stopWorker") < src.index("setParameterNode(None)")


def test_widget_degrades_without_packages():
    src = ast.unparse(_method("QSM", "QSMWidget", "_updateInputInfo"))
    assert "except ImportError" in src and "Install the Python packages" in src
    adapter = read(os.path.join(MODULES_DIR, "SusceptibilityMRILib", "mrml_adapter.py"))
    top = [n for n in ast.parse(adapter).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any(isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("QSMLogic.io") for n in top), \
        "mrml_adapter must not import QSMLogic.io at module level (it needs nibabel, pydicom, pynrrd)"


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_module_cmakelists_lists_every_file(module):
    text = read(os.path.join(MODULES_DIR, module, "CMakeLists.txt"))
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    listed = set()
    for var in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        m = re.search(rf"set\({var}\s+(.*?)\)", text, re.S)
        assert m, f"{var} missing"
        listed |= {t.replace("${MODULE_NAME}", module) for t in m.group(1).split()}
    missing = sorted(set(module_files(module)) - listed)
    assert not missing, f"{module}/CMakeLists.txt does not list {missing}"
    stale = sorted(f for f in listed if not os.path.isfile(os.path.join(MODULES_DIR, module, f)))
    assert not stale, f"{module}/CMakeLists.txt lists missing files {stale}"
    assert "slicerMacroBuildScriptedModule(" in text
    assert re.search(r"slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)


def test_top_cmakelists_is_a_slicer_extension():
    text = read(os.path.join(ROOT, "CMakeLists.txt"))
    for pattern in (r"cmake_minimum_required\(VERSION", r"project\(SusceptibilityMRI\)",
                    r'set\(EXTENSION_HOMEPAGE "https://', r'set\(EXTENSION_CATEGORY "Quantification"\)',
                    r'set\(EXTENSION_CONTRIBUTORS "', r'set\(EXTENSION_DESCRIPTION "', r'set\(EXTENSION_ICONURL "',
                    r'set\(EXTENSION_SCREENSHOTURLS "', r'set\(EXTENSION_DEPENDS "NA"\)',
                    r"find_package\(Slicer REQUIRED\)", r"include\(\$\{Slicer_USE_FILE\}\)",
                    r"include\(\$\{Slicer_EXTENSION_GENERATE_CONFIG\}\)", r"include\(\$\{Slicer_EXTENSION_CPACK\}\)"):
        assert re.search(pattern, text), f"top CMakeLists.txt lacks {pattern}"
    subdirs = re.findall(r"add_subdirectory\(([^)]+)\)", text)
    for module in MODULES:
        assert f"SusceptibilityMRI/{module}" in subdirs, f"module {module} is not add_subdirectory'd"
    assert "SusceptibilityMRI/QSMLogicPackage" in subdirs and "SusceptibilityMRI/SusceptibilityMRILib" in subdirs
    for d in subdirs:
        assert os.path.isfile(os.path.join(ROOT, d, "CMakeLists.txt")), d


def _cmake_list(text: str, var: str) -> list:
    m = re.search(rf"set\({var}\s+(.*?)\)", text, re.S)
    assert m, f"{var} not set"
    return m.group(1).split()


def test_qsmlogic_install_rule_covers_every_library_file():
    text = read(os.path.join(MODULES_DIR, "QSMLogicPackage", "CMakeLists.txt"))
    for pattern in (r"DESTINATION_DIR \$\{CMAKE_BINARY_DIR\}/\$\{Slicer_QTSCRIPTEDMODULES_LIB_DIR\}",
                    r"INSTALL_DIR \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}", r"NO_INSTALL_SUBDIR",
                    r"SOURCE_DIR \$\{QSMLogic_SOURCE_ROOT\}", r"set\(QSMLogic_SOURCE_ROOT \$\{PROJECT_SOURCE_DIR\}\)",
                    r"ctkMacroCompilePythonScript\(", r"GLOB_RECURSE QSMLogic_PYTHON_SCRIPTS",
                    r"GLOB_RECURSE QSMLogic_PYTHON_RESOURCES", r'SCRIPTS "\$\{QSMLogic_PYTHON_SCRIPTS\}"',
                    r'RESOURCES "\$\{QSMLogic_PYTHON_RESOURCES\}"'):
        assert re.search(pattern, text), f"QSMLogicPackage/CMakeLists.txt lacks {pattern}"
    scripts = _cmake_list(text, "QSMLogic_SCRIPT_PATTERNS")
    data = _cmake_list(text, "QSMLogic_DATA_PATTERNS")

    def covered(rel: str, patterns: list) -> bool:  # file(GLOB_RECURSE dir/*.ext) matches at any depth
        for p in patterns:
            d, name = p.rsplit("/", 1)
            if rel.startswith(d + "/") and fnmatch.fnmatch(rel.rsplit("/", 1)[1], name):
                return True
        return False

    lib = os.path.join(ROOT, "QSMLogic")
    missed, n = [], 0
    for dirpath, dirnames, filenames in os.walk(lib):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            if f.endswith((".pyc", ".pyo")) or f.startswith("."):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), ROOT).replace(os.sep, "/")
            n += 1
            if not covered(rel, scripts if f.endswith(".py") else data):
                missed.append(rel)
    assert n > 30
    assert not missed, ("QSMLogic files not installed by SusceptibilityMRI/QSMLogicPackage/CMakeLists.txt "
                        f"(add a pattern to QSMLogic_DATA_PATTERNS): {missed}")
    assert covered("QSMLogic/data/head_labels_1mm.npz", data) and covered("QSMLogic/inversion/tkd.py", scripts)
    assert not covered("QSMLogic/data/new_atlas.nii.gz", data)  # a new data kind must be added explicitly


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
    ruff = os.path.join(ROOT, ".venv", "bin", "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff not installed")
    res = subprocess.run([ruff, "check", "--target-version", "py39", MODULES_DIR, "Testing/test_static_slicer.py",
                          "Testing/test_mrml_adapter.py", "Testing/test_slicer_forms.py"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def imported_modules(path: str) -> set:
    names = set()
    for n in ast.walk(ast.parse(read(path))):
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names.add(n.module)
    return names


def test_qsmlib_has_no_qt():
    lib = os.path.join(MODULES_DIR, "SusceptibilityMRILib")
    files = [os.path.join(lib, f) for f in os.listdir(lib) if f.endswith(".py")]
    assert len(files) >= 5
    for path in files:
        bad = {m for m in imported_modules(path) if m.split(".")[0] in ("qt", "ctk", "PythonQt") or m in QT_MODULES}
        assert not bad, f"{path} imports Qt modules {bad}"
        assert "slicer.app" not in read(path), f"{path} uses slicer.app"


@pytest.mark.parametrize("module", ["QSM", "SWI"])
def test_module_classes_and_dependency_installs(module):
    path = os.path.join(MODULES_DIR, module, f"{module}.py")
    tree = ast.parse(read(path))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for suffix in ("", "ParameterNode", "Widget", "Logic", "Test"):
        assert module + suffix in classes, f"{module}.py lacks class {module + suffix}"
    bases = {n: [ast.unparse(b) for b in c.bases] for n, c in classes.items()}
    assert bases[module] == ["ScriptedLoadableModule"]
    assert bases[f"{module}Widget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases[f"{module}Logic"] == ["ScriptedLoadableModuleLogic"]
    assert bases[f"{module}Test"] == ["ScriptedLoadableModuleTest"]
    assert 'categories = ["Susceptibility MRI"]' in read(path)
    # packages are installed only by an explicit call, never at import or in setup()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            calls = {ast.unparse(c.func) for c in ast.walk(fn) if isinstance(c, ast.Call)}
            installing = {c for c in calls if c.endswith(("pip_install", "pip_ensure"))}
            if installing:
                assert fn.name == "ensureDependencies", f"{fn.name} installs packages"
            if fn.name == "setup":
                assert not any("ensureDependencies" in c for c in calls), "setup() must not install packages"
    top_calls = [ast.unparse(c.func) for n in tree.body if not isinstance(n, (ast.ClassDef, ast.FunctionDef))
                 for c in ast.walk(n) if isinstance(c, ast.Call)]
    assert not any("pip" in c or "ensureDependencies" in c for c in top_calls)


def test_qsm_binds_library_before_the_logic_class_of_the_same_name():
    tree = ast.parse(read(os.path.join(MODULES_DIR, "QSM", "QSM.py")))
    order = []
    for n in tree.body:
        if isinstance(n, ast.Import) and any(a.name == "QSMLogic" and a.asname == "qsmlib" for a in n.names):
            order.append("import")
        if isinstance(n, ast.ClassDef) and n.name == "QSMLogic":
            order.append("class")
    assert order == ["import", "class"]
    # no attribute access through the name QSMLogic (it is the logic class there, not the library)
    uses = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "QSMLogic"]
    assert not uses, f"QSM.py reaches the library through the shadowed name: {uses}"


def test_qsmlib_makes_library_importable_from_a_source_checkout():
    code = (f"import sys; sys.path.insert(0, {MODULES_DIR!r}); import SusceptibilityMRILib, importlib.util; "
            "print(importlib.util.find_spec('QSMLogic').origin)")
    res = subprocess.run([sys.executable, "-S", "-c", code], cwd="/", capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert os.path.realpath(res.stdout.strip()) == os.path.realpath(os.path.join(ROOT, "QSMLogic", "__init__.py"))


@pytest.mark.parametrize("module", ["QSM", "SWI"])
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
    reqs = read(path)
    names = dict(re.findall(r"^([A-Za-z0-9_.-]+)>=([0-9.]+)\s*$", reqs, re.M))
    # SimpleITK: bundled with Slicer and unused by QSMLogic, so not installed into Slicer's Python
    assert set(names) == {"numpy", "scipy", "numba", "nibabel", "pynrrd", "pydicom"}
    pyproject = read(os.path.join(ROOT, "pyproject.toml"))
    for name, low in names.items():
        assert f'"{name}>={low}"' in pyproject, f"{name}>={low} differs from pyproject.toml"
    # installed as a resource of SusceptibilityMRILib, inside the package (same place in the source, build and
    # install trees), not into the shared qt-scripted-modules/Resources
    cmake = read(os.path.join(MODULES_DIR, "SusceptibilityMRILib", "CMakeLists.txt"))
    assert "SusceptibilityMRILib/requirements.txt" in _cmake_list(cmake, "SusceptibilityMRILib_PYTHON_RESOURCES")
    assert "requirements.txt" not in re.sub(r"#.*", "", read(os.path.join(MODULES_DIR, "QSMLogicPackage",
                                                                         "CMakeLists.txt")))
    for module in MODULES:
        src = read(os.path.join(MODULES_DIR, module, f"{module}.py"))
        assert 'getattr(slicer, "pydeps"' not in src and 'getattr(slicer, "packaging"' not in src
        assert "dependencies.ensure_requirements(" in ast.unparse(_method(module, f"{module}Logic",
                                                                           "ensureDependencies"))
        assert "ensureDependencies(confirm=None)" not in src  # the self-test gives its consent explicitly
    deps = read(os.path.join(MODULES_DIR, "SusceptibilityMRILib", "dependencies.py"))
    assert 'import_module("slicer.packaging")' in deps
    doc = read(os.path.join(ROOT, "docs", "slicer.md"))
    assert ("--additional-module-paths <repo>/SusceptibilityMRI/QSM <repo>/SusceptibilityMRI/SWI" in doc)
    assert "slicer.testing.runUnitTest(['<repo>/SusceptibilityMRI/QSM'], 'QSM')" in doc
    assert "slicer.testing.runUnitTest(['<repo>/SusceptibilityMRI/SWI'], 'SWI')" in doc
