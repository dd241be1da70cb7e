"""Forward-model head phantom: the project's built-in dataset and the ground truth of its tests.

``make_head_model`` builds the anatomy (labels, χ, R2*, proton density) on any grid; ``simulate_acquisition``
turns it into a multi-echo, optionally multi-coil GRE scan with its true fields and phases.
"""
from __future__ import annotations

from .acquisition import (
    CoilArray, PhantomAcquisition, coil_array, coil_sensitivities, simulate_acquisition, transceiver_phase,
)
from .model import HEAD_CENTER_MNI_MM, HEAD_SCALE, HeadModel, make_head_model
from .tissues import LABEL_NAMES, TISSUES, Tissue, label_of

__all__ = [
    "CoilArray", "HEAD_CENTER_MNI_MM", "HEAD_SCALE", "HeadModel", "LABEL_NAMES", "PhantomAcquisition", "TISSUES",
    "Tissue", "coil_array", "coil_sensitivities", "label_of", "make_head_model", "simulate_acquisition",
    "transceiver_phase",
]
