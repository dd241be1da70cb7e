"""Test fixture shared by the modules' self-tests (and usable on slicer-core): a simulated acquisition as echo
volume nodes, one magnitude and one phase volume per echo, each carrying its echo time as Slicer's DICOM module
leaves it (``DICOM.EchoTime`` in ms)."""
from __future__ import annotations

from typing import Any, List, Tuple

import numpy as np
import slicer

from QSMLogic.gre import GREData


def add_echo_volumes(gre: GREData, name: str = "phantom") -> Tuple[List[Any], List[Any]]:
    """New volume nodes in ``slicer.mrmlScene`` for each echo of ``gre`` ((i, j, k, echo) arrays with their
    affine): (magnitude nodes, phase nodes), in echo order."""
    mags, phases = [], []
    for e in range(gre.n_echoes):
        for arrays, nodes, kind in ((gre.magnitude, mags, "magnitude"), (gre.phase_rad, phases, "phase")):
            node = slicer.util.addVolumeFromArray(np.ascontiguousarray(arrays[..., e].transpose(2, 1, 0)),
                                                  ijkToRAS=gre.affine, name=f"{name} {kind} {e + 1}")
            node.SetAttribute("DICOM.EchoTime", f"{gre.te_s[e] * 1e3:g}")
            nodes.append(node)
    return mags, phases


__all__ = ["add_echo_volumes"]
