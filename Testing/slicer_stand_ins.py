"""Stand-ins for Slicer's Qt side, so that the modules' files can be imported and their widgets driven under pytest
(slicer-core provides MRML and most of slicer.util; it has no qt, slicer.ScriptedLoadableModule or
slicer.parameterNodeWrapper). Used by Testing/test_slicer_forms.py and Testing/test_static_slicer.py."""
from __future__ import annotations

import importlib.util
import os
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, "SusceptibilityMRI") not in sys.path:
    sys.path.insert(0, os.path.join(ROOT, "SusceptibilityMRI"))


class FakeWidget:
    """Any .ui widget: free attributes, and the few methods the widgets call."""

    def __init__(self, name):
        self.objectName, self.text, self.toolTip, self.enabled, self.count = name, "", "", True, 0
        self.nodes, self.connections, self.currentData, self.slots, self.items = [], [], None, {}, []

    def checkedNodes(self):
        return list(self.nodes)

    def connect(self, signal, slot):
        self.connections.append(signal)
        self.slots[signal] = slot

    def setRange(self, low, high):
        self.minimum, self.maximum = low, high

    def blockSignals(self, block):
        return False

    def clear(self):
        self.count = 0

    def addItem(self, label, data=None):
        self.count += 1
        self.items.append(label)

    def setItemData(self, *args):
        pass

    def findData(self, data):
        return 0

    def layout(self):
        return types.SimpleNamespace(count=lambda: 0, addRow=lambda *a: None)


class FakeUI:
    def __getattr__(self, name):
        widget = FakeWidget(name)
        setattr(self, name, widget)
        return widget


class FakeDialog:
    def __init__(self, canceled=False):
        self.wasCanceled, self.value, self.labelText, self.closed = canceled, 0, "", False

    def close(self):
        self.closed = True


def load_module(monkeypatch, module: str):
    """Import ``SusceptibilityMRI/<module>/<module>.py`` with the Qt-side stand-ins in ``sys.modules``."""
    fake_qt = types.ModuleType("qt")
    fake_qt.Qt = types.SimpleNamespace(Checked=2, Unchecked=0, ToolTipRole=3)
    for name in ("QDoubleSpinBox", "QSpinBox", "QCheckBox", "QComboBox", "QLineEdit"):
        setattr(fake_qt, name, lambda name=name: FakeWidget(name))
    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class Base:
        def __init__(self, parent=None):
            self.parent = parent

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleLogic", "ScriptedLoadableModuleTest",
                 "ScriptedLoadableModuleWidget"):
        setattr(slm, name, type(name, (Base,), {}))
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda choices: types.SimpleNamespace(choices=list(choices))
    pnw.WithinRange = lambda low, high: types.SimpleNamespace(low=low, high=high)
    for name, mod in (("qt", fake_qt), ("slicer.ScriptedLoadableModule", slm), ("slicer.parameterNodeWrapper", pnw)):
        monkeypatch.setitem(sys.modules, name, mod)
    path = os.path.join(ROOT, "SusceptibilityMRI", module, f"{module}.py")
    spec = importlib.util.spec_from_file_location(f"{module}_under_test", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
