"""Input/output: GRE data from NIfTI (BIDS sidecars), NRRD and DICOM; checked phase scaling; result writing.

Entry points: :func:`load_gre` (dispatch on file type), :func:`phase_to_radians` (explicit, checked phase-scaling
rules), :func:`write_result` + :func:`make_provenance` (NIfTI map + JSON provenance sidecar), :func:`read_nrrd` /
:func:`write_nrrd`. Every reader returns a :class:`~QSMLogic.gre.GREData` whose ``metadata`` records the source
files, the phase-scaling rule and its evidence, where TE/B0 came from, and (``nan_policy="mask"``) the validity mask.
"""
from __future__ import annotations

from .common import NAN_POLICIES
from .dicom import read_dicom_gre
from .loader import load_gre, read_nrrd_gre
from .nifti import read_nifti, read_nifti_gre, read_sidecar
from .nrrd import read_nrrd, write_nrrd
from .phase_scaling import PHASE_RULES, phase_to_radians
from .writer import make_provenance, write_result

__all__ = [
    "NAN_POLICIES", "PHASE_RULES", "load_gre", "make_provenance", "phase_to_radians", "read_dicom_gre",
    "read_nifti", "read_nifti_gre", "read_nrrd", "read_nrrd_gre", "read_sidecar", "write_nrrd", "write_result",
]
