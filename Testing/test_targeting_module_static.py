"""Static checks of the QSM Targeting module (Slicer cannot run here), with the helpers of test_static_slicer."""
from __future__ import annotations

import ast
import os
import re

import test_static_slicer as st

MODULE = "QSMTargeting"


def test_ui_binds_parameter_node_fields_and_names_every_used_widget():
    tree = st.ui_tree(MODULE)
    assert tree.getroot().find("widget").get("class") == "qMRMLWidget"
    names = st.ui_widgets(MODULE)
    assert len(names) == len(list(tree.iter("widget"))), "duplicate objectName in the .ui"
    used = set(re.findall(r"self\.ui\.([A-Za-z_]\w*)", st.read(os.path.join(st.MODULES_DIR, MODULE, f"{MODULE}.py"))))
    assert used and not sorted(used - set(names)), f"widgets missing from the .ui: {sorted(used - set(names))}"
    declared = {c.findtext("class") for c in tree.getroot().iter("customwidget")}
    assert {c for c in names.values() if c.startswith(("ctk", "qMRML"))} <= declared
    fields = st.parameter_node_fields(MODULE)
    bound = {}
    for w in tree.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                assert p.get("stdset") == "0"
                bound[p.findtext("string")] = w
    assert set(bound) == set(fields), f"unbound fields {set(fields) - set(bound)}, unknown {set(bound) - set(fields)}"
    for name, w in bound.items():
        assert st.compatible(w.get("class"), fields[name]), f"{name}: a {w.get('class')} cannot show {fields[name]}"
        classes = st.node_classes(fields[name])
        if classes:
            types = {t.text for p in w.findall("property") if p.get("name") == "nodeTypes" for t in p.iter("string")}
            assert types == classes, f"{name}: nodeTypes {types} vs {classes}"
    receivers = {c.findtext("receiver") for c in tree.getroot().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {n for n, c in names.items() if c == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


def test_module_layout_cmake_and_thin_widget():
    cmake = st.read(os.path.join(st.MODULES_DIR, MODULE, "CMakeLists.txt"))
    assert f"set(MODULE_NAME {MODULE})" in cmake
    listed = set()
    for var in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        listed |= {t.replace("${MODULE_NAME}", MODULE) for t in st._cmake_list(cmake, var)}
    assert listed == set(st.module_files(MODULE))
    top = re.findall(r"add_subdirectory\(([^)]+)\)", st.read(os.path.join(st.ROOT, "CMakeLists.txt")))
    assert f"SusceptibilityMRI/{MODULE}" in top
    tree = ast.parse(st.read(os.path.join(st.MODULES_DIR, MODULE, f"{MODULE}.py")))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    assert {MODULE + s for s in ("", "ParameterNode", "Widget", "Logic", "Test")} <= set(classes)
    widget_src = ast.unparse(classes[f"{MODULE}Widget"])
    # the widget calls the logic; MRML and library work stays in the logic / SusceptibilityMRILib
    assert "targeting_nodes" not in widget_src and "QSMLogic" not in widget_src
    logic_src = ast.unparse(classes[f"{MODULE}Logic"])
    assert "qt." not in logic_src and "slicer.util.confirm" not in logic_src and "tryWithErrorDisplay" not in logic_src
