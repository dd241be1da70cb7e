"""Surgical targeting on arrays and RAS affines (no Slicer); conventions and measured accuracy: docs/targeting.md.

- :mod:`.acpc` — AC-PC frame from AC, PC and a midline point; RAS ↔ AC-PC; lateral/AP/vertical reports.
- :mod:`.frame` — Leksell frame coordinates, ring/arc angles, frame registration from localiser fiducials.
- :mod:`.targets` — STN/GPi targets (centroid, dorsolateral, posteroventral) per hemisphere; indirect Vim.
- :mod:`.vessels` — Frangi vesselness or threshold vessel segmentation from QSM/SWI.
- :mod:`.trajectory` — distances along entry → target to vessels and nucleus boundaries, margin warnings.
- :mod:`.fusion` — rigid mutual-information registration of the GRE magnitude to the planning anatomy.
- :mod:`.export` / :mod:`.figure` — markups JSON and CSV; planning-view PNGs.
- :mod:`.cli` — ``susceptibility-mri target``.
"""
from __future__ import annotations
