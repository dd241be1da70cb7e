"""Fixtures shared by the test files."""
from __future__ import annotations

import pytest


@pytest.fixture()
def scene():
    """A new MRML scene (slicer-core), made ``slicer.mrmlScene``, with what Slicer sets up for its scene: the
    application logic (markups need it), the Colors module's logic (default colour tables) and its colour-legend
    display node class, and the Segmentations module's logic. Cleared afterwards."""
    slicer = pytest.importorskip("slicer")
    s = slicer.vtkMRMLScene()
    slicer.mrmlScene = s
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(s)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(s)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(s)
    s.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())
    yield s
    segmentations.SetMRMLScene(None)
    colors.SetMRMLScene(None)
    app.SetMRMLScene(None)
    s.Clear(1)
