"""Checks of the QSM Targeting module that test_static_slicer's shared ones (run for every module) do not make:
every parameter-node field is bound in the .ui, every selector gets the scene, and the widget stays thin."""
from __future__ import annotations

import ast
import os

import test_static_slicer as st

MODULE = "QSMTargeting"


def test_every_field_is_bound_and_every_selector_gets_the_scene(monkeypatch):
    fields = st.parameter_node_fields(monkeypatch, MODULE)
    tree = st.ui_tree(MODULE)
    bound = {p.findtext("string") for w in tree.iter("widget") for p in w.findall("property")
             if p.get("name") == "SlicerParameterName"}
    assert bound == set(fields), f"unbound fields {set(fields) - bound}, unknown {bound - set(fields)}"
    names = st.ui_widgets(MODULE)
    receivers = {c.findtext("receiver") for c in tree.getroot().iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    selectors = {n for n, c in names.items() if c == "qMRMLNodeComboBox"}
    assert len(selectors) == 8 and selectors <= receivers


def test_widget_is_thin_and_logic_opens_no_dialogs():
    tree = ast.parse(st.read(os.path.join(st.MODULES_DIR, MODULE, f"{MODULE}.py")))
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    widget_src = ast.unparse(classes[f"{MODULE}Widget"])
    # the widget calls the logic; MRML and library work stays in the logic / SusceptibilityMRILib
    assert "targeting_nodes" not in widget_src and "QSMLogic" not in widget_src
    logic_src = ast.unparse(classes[f"{MODULE}Logic"])
    assert "qt." not in logic_src and "slicer.util.confirm" not in logic_src and "tryWithErrorDisplay" not in logic_src
