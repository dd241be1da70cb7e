"""MRML adapter: Slicer volume nodes ↔ the arrays, geometry and GRE data of the QSMLogic library.

This is the only code that turns MRML nodes into library inputs and library outputs back into nodes
(docs/conventions.md). It takes the scene as an argument and imports only slicer (MRML), vtk, numpy and QSMLogic —
no Qt — so pytest runs it on ``slicer-core``.

Array order: the library receives arrays in **(i, j, k)** order — ``slicer.util.arrayFromVolume`` gives (k, j, i),
so arrays are transposed — together with the node's IJK-to-RAS matrix as the affine. Voxel size and B0 direction
are derived from that affine by :mod:`QSMLogic.geometry`, hence given in the same (i, j, k) order; an oblique volume
gives an oblique B0 direction ``R^T·(0, 0, 1)`` (R the unit IJK-to-RAS direction matrix). Results go back to
**new** volume nodes with the input's IJK-to-RAS matrix copied; inputs are never modified.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from QSMLogic.constants import PHASE_RULES
from QSMLogic.errors import QSMInputError
from QSMLogic.geometry import b0_direction_from_affine, check_affine, voxel_size_from_affine
from QSMLogic.gre import GREData
from QSMLogic.pipeline import json_default

# QSMLogic.io.phase_scaling is imported where it is used: importing the QSMLogic.io package loads nibabel, pydicom
# and pynrrd, which may not be installed yet when the widget first reads the selected nodes.

#: Node attribute holding the JSON provenance of a result.
PROVENANCE_ATTRIBUTE = "SusceptibilityMRI.Provenance"
#: Node attribute naming the output (e.g. "chi_ppm") of a result node.
OUTPUT_ATTRIBUTE = "SusceptibilityMRI.Output"
#: Node attributes read for echo time: DICOM-style in milliseconds, BIDS-style in seconds; field strength in tesla.
ECHO_TIME_ATTRIBUTES_MS = ("DICOM.EchoTime",)
ECHO_TIME_ATTRIBUTES_S = ("EchoTime", "BIDS.EchoTime")
FIELD_STRENGTH_ATTRIBUTES_T = ("DICOM.MagneticFieldStrength", "MagneticFieldStrength", "BIDS.MagneticFieldStrength")
#: Attribute Slicer's DICOM scalar-volume plugin sets on a loaded volume: its SOP instance UIDs, space separated.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"
#: DICOM tags read through Slicer's DICOM database for such volumes ("gggg,eeee" as ctkDICOMDatabase expects).
DICOM_TAGS = {"EchoTime": "0018,0081", "MagneticFieldStrength": "0018,0087", "ImageType": "0008,0008",
              "Manufacturer": "0008,0070"}
#: Node attributes naming the scanner's manufacturer (the phase-sign prior, QSMLogic.phase_sign.vendor_prior):
#: DICOM-style first, then BIDS-style; the DICOM database and the BIDS sidecar are asked between and after them.
MANUFACTURER_ATTRIBUTES = ("DICOM.Manufacturer", "Manufacturer", "BIDS.Manufacturer")
#: Relative and absolute tolerances for "same geometry" between echo volumes.
GEOMETRY_RTOL = 1e-5
GEOMETRY_ATOL_MM = 1e-4

#: Outputs written as label maps.
LABEL_OUTPUTS = frozenset({"mask", "qsm_mask", "field_mask", "separation_mask"})


@dataclass(frozen=True)
class DisplayPreset:
    """Window/level of a result volume (``None`` = automatic window), its grey colour map, and the title and number
    format of its colour legend (``legend=None``: no legend)."""

    window: Optional[float] = None
    level: Optional[float] = None
    description: str = ""
    legend: Optional[str] = None
    legend_format: str = "%.2f"


#: Display of each pipeline output: QSM grey at −0.15..+0.25 ppm (window 0.40, level 0.05), fields ±0.1 ppm, SWI,
#: mIP and magnitude grey with an automatic window. Quantitative maps get a colour legend (colour bar).
DISPLAY_PRESETS: Dict[str, DisplayPreset] = {
    "chi_ppm": DisplayPreset(0.40, 0.05, "QSM: -0.15..+0.25 ppm", "Susceptibility (ppm)", "%.2f"),
    "local_field_ppm": DisplayPreset(0.10, 0.0, "local field: -0.05..+0.05 ppm", "Local field (ppm)", "%.3f"),
    "total_field_ppm": DisplayPreset(2.0, 0.0, "total field: -1..+1 ppm", "Total field (ppm)", "%.1f"),
    "field_hz": DisplayPreset(200.0, 0.0, "field: -100..+100 Hz", "Field (Hz)", "%.0f"),
    "r2star_hz": DisplayPreset(60.0, 30.0, "R2*: 0..60 1/s", "R2* (1/s)", "%.0f"),
    "swi": DisplayPreset(None, None, "SWI: automatic"),
    "mip": DisplayPreset(None, None, "mIP: automatic"),
    "swi_phase_rad": DisplayPreset(1.0, 0.0, "SWI filtered phase: -0.5..+0.5 rad", "Filtered phase (rad)", "%.2f"),
    "swi_phase_mask": DisplayPreset(1.0, 0.5, "SWI phase mask: 0..1"),
    "magnitude": DisplayPreset(None, None, "magnitude: automatic"),
    "chi_para_ppm": DisplayPreset(0.20, 0.10, "χ+: 0..0.2 ppm", "Paramagnetic χ+ (ppm)", "%.2f"),
    "chi_dia_ppm": DisplayPreset(0.10, 0.05, "|χ-|: 0..0.1 ppm", "Diamagnetic |χ-| (ppm)", "%.2f"),
    "r2prime_hz": DisplayPreset(40.0, 20.0, "R2': 0..40 1/s", "R2' (1/s)", "%.0f"),
}


# ---------------------------------------------------------------------------------------------------------------
# Geometry and arrays


def ijk_to_ras(node: Any) -> np.ndarray:
    """The node's IJK-to-RAS matrix as a float64 4×4 array."""
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _node_name(node: Any) -> str:
    return node.GetName() if node is not None and node.GetName() else repr(node)


def _check_volume(node: Any, what: str) -> None:
    if node is None:
        raise QSMInputError(f"{what}: no volume node given")
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise QSMInputError(f"{what}: node '{_node_name(node)}' is a {node.GetClassName()}, not a scalar volume")
    if node.GetImageData() is None:
        raise QSMInputError(f"{what}: volume '{_node_name(node)}' has no image data")


@dataclass
class VolumeArrays:
    """A volume as the library sees it: array in (i, j, k) order plus geometry in the same order."""

    array: np.ndarray
    affine: np.ndarray
    voxel_size_mm: Tuple[float, float, float]
    b0_direction: Tuple[float, float, float]


def array_ijk(node: Any) -> np.ndarray:
    """The voxels of a scalar volume in (i, j, k) order (a read-only view of the node's memory)."""
    _check_volume(node, "volume")
    a = slicer.util.arrayFromVolume(node)
    if a.ndim != 3:
        raise QSMInputError(f"volume '{_node_name(node)}' is not a 3D scalar volume (array shape {a.shape})")
    view = a.transpose(2, 1, 0)
    view.flags.writeable = False
    return view


def volume_arrays(node: Any, b0_world: Sequence[float] = (0.0, 0.0, 1.0)) -> VolumeArrays:
    """Array (i, j, k), IJK-to-RAS affine, voxel size (mm) and B0 direction, all in (i, j, k) order."""
    arr = array_ijk(node)
    aff = check_affine(ijk_to_ras(node))
    return VolumeArrays(arr, aff, voxel_size_from_affine(aff), b0_direction_from_affine(aff, b0_world))


def check_same_geometry(nodes: Sequence[Any], what: str = "echo volumes") -> np.ndarray:
    """Raise QSMInputError naming the first node whose dimensions or IJK-to-RAS differ from the first node's."""
    if not nodes:
        raise QSMInputError(f"no {what} given")
    for n in nodes:
        _check_volume(n, what)
    ref = nodes[0]
    ref_dims = tuple(ref.GetImageData().GetDimensions())
    ref_aff = ijk_to_ras(ref)
    scale = float(np.abs(ref_aff[:3, :3]).max())
    for n in nodes[1:]:
        dims = tuple(n.GetImageData().GetDimensions())
        if dims != ref_dims:
            raise QSMInputError(
                f"{what}: '{_node_name(n)}' has dimensions {dims} but '{_node_name(ref)}' has {ref_dims}")
        aff = ijk_to_ras(n)
        if not np.allclose(aff, ref_aff, rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL_MM * max(scale, 1.0)):
            diff = float(np.abs(aff - ref_aff).max())
            raise QSMInputError(
                f"{what}: '{_node_name(n)}' and '{_node_name(ref)}' have different geometry (IJK-to-RAS differs by "
                f"up to {diff:.4g} mm); resample them onto one grid first")
    return ref_aff


def nodes_from_sequence(sequence_node: Any) -> List[Any]:
    """The data nodes of a vtkMRMLSequenceNode, in item order (one per echo)."""
    if sequence_node is None or not sequence_node.IsA("vtkMRMLSequenceNode"):
        raise QSMInputError("expected a sequence node (vtkMRMLSequenceNode)")
    n = sequence_node.GetNumberOfDataNodes()
    if n == 0:
        raise QSMInputError(f"sequence '{_node_name(sequence_node)}' is empty")
    return [sequence_node.GetNthDataNode(i) for i in range(n)]


#: A sequence's index gives echo times only when its name says so (Slicer's MultiVolume importer names it after the
#: frame-identifying DICOM tag, "EchoTime") and its unit is ms or s; a 4D NIfTI loaded as a sequence has a "time"
#: index, which is not an echo time.
ECHO_INDEX_NAMES = re.compile(r"echo|^te$", re.IGNORECASE)


def is_sequence(node: Any) -> bool:
    return node is not None and not isinstance(node, (list, tuple)) and node.IsA("vtkMRMLSequenceNode")


def echo_times_from_sequence_s(sequence_node: Any) -> Optional[List[float]]:
    """Echo times from a sequence's index values when the index is an echo time in ms or s; ``None`` otherwise."""
    unit = (sequence_node.GetIndexUnit() or "").strip().lower()
    factor = {"ms": 1e-3, "s": 1.0}.get(unit)
    if factor is None or not ECHO_INDEX_NAMES.search((sequence_node.GetIndexName() or "").strip()):
        return None
    try:
        return [float(sequence_node.GetNthIndexValue(i)) * factor for i in range(sequence_node.GetNumberOfDataNodes())]
    except ValueError:
        return None


#: Phase-scaling rules the modules offer: "auto" (decides only on checked evidence) and the library's rules.
PHASE_SCALING_CHOICES: Tuple[str, ...] = ("auto",) + tuple(PHASE_RULES)


def migrate_flip_phase(parameter_node: Any) -> bool:
    """Bring a QSM parameter node saved when the module had a "Flip phase sign" check box (parameter ``flipPhase``,
    "True"/"False" as Slicer's parameter-node wrapper stores a bool) to the phase-sign choice ``phaseSign``: a ticked
    box was the user's −1 and becomes "-1"; an unticked one was the old default +1, not a choice, and leaves the
    new default "auto" (the sign decided from the veins). The old parameter is removed, so this acts once; a
    ``phaseSign`` already stored is kept. Call on the MRML node before it is wrapped; True when it changed it."""
    if parameter_node is None or not parameter_node.HasParameter("flipPhase"):
        return False
    if parameter_node.GetParameter("flipPhase") == "True" and not parameter_node.HasParameter("phaseSign"):
        parameter_node.SetParameter("phaseSign", "-1")
    parameter_node.UnsetParameter("flipPhase")
    return True


def as_node_list(nodes: Any) -> List[Any]:
    """A list of echo volume nodes from a list/tuple of nodes, a single volume node or a sequence node."""
    if nodes is None:
        return []
    if isinstance(nodes, (list, tuple)):
        return list(nodes)
    if nodes.IsA("vtkMRMLSequenceNode"):
        return nodes_from_sequence(nodes)
    return [nodes]


def selected_inputs(parameter_node: Any) -> Tuple[Any, Any]:
    """(magnitude, phase) as a run gets them from a module's parameter node (fields ``magnitudeSequence``,
    ``magnitudeVolumes``, ``phaseSequence``, ``phaseVolumes``): a sequence node where one is chosen, else the
    checked echo volumes ordered by echo time. Volumes deleted from the scene since they were checked (the parameter
    node then holds ``None`` for them, and the checkable combo box does not signal it) are left out."""
    p = parameter_node
    mags = p.magnitudeSequence if p.magnitudeSequence is not None else sort_echo_nodes(present_nodes(
        p.magnitudeVolumes))
    phases = p.phaseSequence if p.phaseSequence is not None else sort_echo_nodes(present_nodes(p.phaseVolumes))
    return mags, phases


def present_nodes(nodes: Sequence[Any]) -> List[Any]:
    """The nodes that still exist in a scene: ``None`` entries and nodes removed from their scene are dropped."""
    return [n for n in nodes if n is not None and n.GetScene() is not None]


def drop_deleted_echoes(parameter_node: Any) -> bool:
    """Remove echo volumes deleted from the scene from a parameter node's ``magnitudeVolumes``/``phaseVolumes``;
    True when something was removed."""
    changed = False
    for field_name in ("magnitudeVolumes", "phaseVolumes"):
        nodes = list(getattr(parameter_node, field_name))
        kept = present_nodes(nodes)
        if len(kept) != len(nodes):
            setattr(parameter_node, field_name, kept)
            changed = True
    return changed


def inputs_ready(parameter_node: Any, need_magnitude: bool = False) -> bool:
    """True when the parameter node selects phase echoes (and magnitude echoes if ``need_magnitude``) that exist:
    what enables a module's Apply button."""
    p = parameter_node
    if p is None:
        return False
    has_phase = p.phaseSequence is not None or bool(present_nodes(p.phaseVolumes))
    has_magnitude = p.magnitudeSequence is not None or bool(present_nodes(p.magnitudeVolumes))
    return has_phase and (has_magnitude or not need_magnitude)


def sort_echo_nodes(nodes: Sequence[Any], database: Any = None) -> List[Any]:
    """Echo volumes ordered by echo time when every node has one (see :func:`echo_time_of_node_s`), else as given."""
    nodes = list(nodes)
    te = [echo_time_of_node_s(n, database) for n in nodes]
    if any(t is None for t in te):
        return nodes
    return [n for _, n in sorted(zip(te, nodes), key=lambda p: p[0][0])]


def stack_echoes(nodes: Sequence[Any], what: str) -> Tuple[np.ndarray, np.ndarray]:
    """(x, y, z, echo) float32 array in (i, j, k) order and the shared IJK-to-RAS affine of the echo volumes."""
    nodes = list(nodes)
    aff = check_same_geometry(nodes, what)
    first = array_ijk(nodes[0])
    out = np.empty(first.shape + (len(nodes),), dtype=np.float32)
    for e, n in enumerate(nodes):
        out[..., e] = array_ijk(n)
    return out, aff


# ---------------------------------------------------------------------------------------------------------------
# Acquisition parameters: echo time and field strength from node attributes, Slicer's DICOM database or BIDS
#
# Where each value is looked for, per node, first hit wins:
#   1. node attributes DICOM.EchoTime (ms) / DICOM.MagneticFieldStrength (T), as scripts or other importers set them;
#   2. Slicer's DICOM database, for volumes loaded by the DICOM module (their attribute DICOM.instanceUIDs names the
#      SOP instances): tags EchoTime (0018,0081, ms) and MagneticFieldStrength (0018,0087, T);
#   3. BIDS-style attributes EchoTime (s) / MagneticFieldStrength (T);
#   4. the BIDS JSON sidecar next to the node's storage file (``x.nii.gz`` → ``x.json``; EchoTime in s).
# A sequence node is asked first for its echo-time index, then for its own storage file's sidecar (a 4D file's
# sidecar lists every echo time), then through its data nodes.


def parse_echo_times_ms(text: str) -> List[float]:
    """Echo times in seconds from a user string of milliseconds (``"4, 8, 12"`` or ``"4 8 12"``)."""
    parts = [p for p in re.split(r"[,;\s]+", (text or "").strip()) if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise QSMInputError(f"cannot read echo times {text!r}: give numbers in ms separated by commas") from None
    if not values:
        raise QSMInputError("echo times are empty: give them in ms, e.g. '4, 8, 12, 16, 20'")
    return [v * 1e-3 for v in values]


def _number(node: Any, what: str, text: Any) -> float:
    try:
        return float(str(text).split("\\")[0])
    except ValueError:
        raise QSMInputError(f"node '{_node_name(node)}' {what}={text!r} is not a number") from None


def _attribute(node: Any, names: Sequence[str]) -> Optional[Tuple[str, float]]:
    """(attribute name, value) of the first of ``names`` the node carries."""
    for name in names:
        v = node.GetAttribute(name)
        if v:
            return name, _number(node, f"attribute {name}", v)
    return None


def _first_attribute(node: Any, names: Sequence[str]) -> Optional[float]:
    found = _attribute(node, names)
    return None if found is None else found[1]


def default_dicom_database() -> Any:
    """Slicer's DICOM database (``slicer.dicomDatabase``) when the application has one, else ``None``."""
    return getattr(slicer, "dicomDatabase", None)


def dicom_instance_uids(node: Any) -> List[str]:
    """SOP instance UIDs of a volume loaded by Slicer's DICOM module (attribute DICOM.instanceUIDs)."""
    return (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()


def _tag_with_pydicom(path: str, keyword: str) -> Optional[str]:
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])
    except (OSError, InvalidDicomError):
        return None
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):  # pydicom MultiValue
        return "\\".join(str(v) for v in value)
    return str(value)


def dicom_tag_value(node: Any, keyword: str, database: Any = None, instance: int = 0) -> Optional[str]:
    """A DICOM tag (a key of :data:`DICOM_TAGS`) of one SOP instance of a volume loaded by Slicer's DICOM module.

    ``database`` is a ctkDICOMDatabase (default: ``slicer.dicomDatabase``); its ``instanceValue(uid, "gggg,eeee")``
    answers from the tag cache or the file header. When it has no value, the instance's file
    (``fileForInstance(uid)``) is read with pydicom. ``None`` for nodes without DICOM.instanceUIDs, without a
    database, or without the tag.
    """
    uids = dicom_instance_uids(node)
    db = default_dicom_database() if database is None else database
    if not uids or db is None:
        return None
    uid = uids[instance]
    value = db.instanceValue(uid, DICOM_TAGS[keyword]) if hasattr(db, "instanceValue") else ""
    if value and str(value).strip():
        return str(value).strip()
    path = db.fileForInstance(uid) if hasattr(db, "fileForInstance") else ""
    if path and os.path.isfile(str(path)):
        return _tag_with_pydicom(str(path), keyword)
    return None


def _dicom_number(node: Any, keyword: str, database: Any, consistent: bool = False) -> Optional[float]:
    """A numeric DICOM tag of the node's first instance; with ``consistent``, the last instance must agree."""
    first = dicom_tag_value(node, keyword, database, 0)
    if first is None:
        return None
    value = _number(node, f"DICOM {keyword}", first)
    if consistent and len(dicom_instance_uids(node)) > 1:
        last = dicom_tag_value(node, keyword, database, -1)
        if last is not None:
            other = _number(node, f"DICOM {keyword}", last)
            if not np.isclose(other, value, rtol=1e-6, atol=1e-9):
                raise QSMInputError(
                    f"volume '{_node_name(node)}' mixes {keyword} values ({value:g} and {other:g}) across its DICOM "
                    f"instances: load each echo as its own volume (DICOM module: one loadable per echo)")
    return value


def storage_file(node: Any) -> Optional[str]:
    """The file a node was loaded from (its storage node's file name), ``None`` if it has none."""
    get = getattr(node, "GetStorageNode", None)
    storage = get() if get is not None else None
    name = storage.GetFileName() if storage is not None else None
    return str(name) if name else None


def sidecar_of_node(node: Any) -> Dict[str, Any]:
    """The BIDS JSON sidecar next to the node's storage file ({} when there is none); see QSMLogic.io.nifti."""
    path = storage_file(node)
    if not path:
        return {}
    from QSMLogic.io.nifti import read_sidecar

    return read_sidecar(path)


def _sidecar_echo_times(meta: Dict[str, Any]) -> Optional[List[float]]:
    if not meta:
        return None
    from QSMLogic.io.nifti import sidecar_echo_times

    return sidecar_echo_times(meta)


def echo_time_of_node_s(node: Any, database: Any = None) -> Optional[Tuple[float, str]]:
    """(echo time in s, where it came from) of one echo volume, or ``None`` (lookup order: see the section notes)."""
    found = _attribute(node, ECHO_TIME_ATTRIBUTES_MS)
    if found is not None:
        return found[1] * 1e-3, f"{found[0]} attributes"
    ms = _dicom_number(node, "EchoTime", database, consistent=True)
    if ms is not None:
        return ms * 1e-3, "DICOM database (EchoTime)"
    found = _attribute(node, ECHO_TIME_ATTRIBUTES_S)
    if found is not None:
        return found[1], f"{found[0]} attributes (BIDS, s)"
    te = _sidecar_echo_times(sidecar_of_node(node))
    if te is not None and len(te) == 1:
        return te[0], "BIDS JSON sidecars"
    return None


def field_strength_of_node_t(node: Any, database: Any = None) -> Optional[Tuple[float, str]]:
    """(B0 in T, where it came from) of one volume, or ``None``."""
    found = _attribute(node, FIELD_STRENGTH_ATTRIBUTES_T[:1])
    if found is not None:
        return found[1], f"{found[0]} attribute"
    t = _dicom_number(node, "MagneticFieldStrength", database)
    if t is not None:
        return t, "DICOM database (MagneticFieldStrength)"
    found = _attribute(node, FIELD_STRENGTH_ATTRIBUTES_T[1:])
    if found is not None:
        return found[1], f"{found[0]} attribute"
    meta = sidecar_of_node(node)
    if meta.get("MagneticFieldStrength") is not None:
        return _number(node, "sidecar MagneticFieldStrength", meta["MagneticFieldStrength"]), "BIDS JSON sidecar"
    return None


def manufacturer_of_node(node: Any, database: Any = None) -> Optional[Tuple[str, str]]:
    """(manufacturer, where it came from) of one volume or sequence, or ``None``: the DICOM.Manufacturer attribute,
    Slicer's DICOM database (Manufacturer, 0008,0070), the BIDS-style attributes, the BIDS JSON sidecar."""
    text = node.GetAttribute(MANUFACTURER_ATTRIBUTES[0])
    if text and text.strip():
        return text.strip(), f"{MANUFACTURER_ATTRIBUTES[0]} attribute"
    text = dicom_tag_value(node, "Manufacturer", database)
    if text:
        return text, "DICOM database (Manufacturer)"
    for name in MANUFACTURER_ATTRIBUTES[1:]:
        text = node.GetAttribute(name)
        if text and text.strip():
            return text.strip(), f"{name} attribute"
    maker = sidecar_of_node(node).get("Manufacturer")
    if maker:
        return str(maker).strip(), "BIDS JSON sidecar"
    return None


def manufacturer_and_source(phase_nodes: Any, magnitude_nodes: Any = None, database: Any = None
                            ) -> Tuple[Optional[str], str]:
    """The manufacturer the selected echoes name (phase first, then magnitude; a sequence node itself, then its
    data nodes), with its source; ``(None, "")`` when none does."""
    candidates: List[Any] = []
    for nodes in (phase_nodes, magnitude_nodes):
        if is_sequence(nodes):
            candidates.append(nodes)
        candidates += as_node_list(nodes)
    for node in candidates:
        found = manufacturer_of_node(node, database)
        if found is not None:
            return found
    return None, ""


def _join_sources(sources: Sequence[str]) -> str:
    return " + ".join(dict.fromkeys(sources))


def echo_times_and_source(nodes: Sequence[Any], database: Any = None) -> Tuple[Optional[List[float]], str]:
    """Echo times (s) of the echo volumes and their source; ``(None, "")`` if any volume has none."""
    found = [echo_time_of_node_s(n, database) for n in nodes]
    if not found or any(f is None for f in found):
        return None, ""
    return [f[0] for f in found], _join_sources([f[1] for f in found])  # type: ignore[index]


def echo_times_from_nodes_s(nodes: Sequence[Any], database: Any = None) -> Optional[List[float]]:
    """Echo times (s) of the echo volumes (attributes, DICOM database or BIDS); ``None`` if any volume lacks one."""
    return echo_times_and_source(nodes, database)[0]


def field_strength_from_nodes_t(nodes: Sequence[Any], database: Any = None) -> Optional[float]:
    """B0 (T) from the first node that has one (attributes, DICOM database or BIDS sidecar); ``None`` if none does."""
    return field_strength_and_source(nodes, database)[0]


def field_strength_and_source(nodes: Sequence[Any], database: Any = None) -> Tuple[Optional[float], str]:
    for n in nodes:
        found = field_strength_of_node_t(n, database)
        if found is not None:
            return found
    return None, ""


def sequence_echo_times_and_source(sequence_node: Any, database: Any = None) -> Tuple[Optional[List[float]], str]:
    """Echo times (s) of a sequence: its echo-time index, its storage file's sidecar, or its data nodes."""
    te = echo_times_from_sequence_s(sequence_node)
    if te is not None:
        return te, "sequence index"
    te = _sidecar_echo_times(sidecar_of_node(sequence_node))
    if te is not None and len(te) == sequence_node.GetNumberOfDataNodes():
        return te, "BIDS JSON sidecar"
    return echo_times_and_source(nodes_from_sequence(sequence_node), database)


@dataclass(frozen=True)
class AcquisitionInfo:
    """Echo times (s) and B0 (T) found in the data, each with where it came from (``None``/"" when not found)."""

    te_s: Optional[List[float]]
    te_source: str
    b0_tesla: Optional[float]
    b0_source: str


def acquisition_from_nodes(magnitude_nodes: Any, phase_nodes: Any, database: Any = None) -> AcquisitionInfo:
    """Echo times and B0 of the selected echoes from the data (phase first, then magnitude), for the GUI and runs."""
    te: Optional[List[float]] = None
    te_source = ""
    for nodes in (phase_nodes, magnitude_nodes):
        if te is not None or nodes is None or (isinstance(nodes, (list, tuple)) and not nodes):
            continue
        te, te_source = (sequence_echo_times_and_source(nodes, database) if is_sequence(nodes)
                         else echo_times_and_source(as_node_list(nodes), database))
    b0, b0_source = field_strength_and_source(as_node_list(phase_nodes) + as_node_list(magnitude_nodes), database)
    if b0 is None:
        for seq in (phase_nodes, magnitude_nodes):
            if is_sequence(seq):
                meta = sidecar_of_node(seq)
                if meta.get("MagneticFieldStrength") is not None:
                    b0 = _number(seq, "sidecar MagneticFieldStrength", meta["MagneticFieldStrength"])
                    b0_source = "BIDS JSON sidecar"
                    break
    return AcquisitionInfo(te, te_source, b0, b0_source)


def gre_from_nodes(
    magnitude_nodes: Any,
    phase_nodes: Any,
    echo_times_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
    phase_rule: str = "auto",
    phase_sign: int = 1,
    b0_world: Sequence[float] = (0.0, 0.0, 1.0),
    dicom_database: Any = None,
    require_b0: bool = True,
) -> GREData:
    """Build a :class:`GREData` ((i, j, k, echo) arrays) from echo volume nodes or sequence nodes.

    Echo times: ``echo_times_s`` if given, else from the data (:func:`acquisition_from_nodes`: sequence index, node
    attributes, Slicer's DICOM database — ``dicom_database``, default ``slicer.dicomDatabase`` — or BIDS). B0:
    ``b0_tesla`` if given and positive, else from the data the same way. Phase is converted to radians by
    :func:`QSMLogic.io.phase_to_radians` with ``phase_rule`` (``"auto"`` chooses only on checked evidence); the
    rule and its evidence go into ``metadata["phase_scaling"]``. Magnitude nodes may be empty (phase-only data).
    ``require_b0`` False (runs that need no field strength, e.g. SWI only): a missing B0 is left ``None``.
    """
    from QSMLogic.io.phase_scaling import phase_to_radians

    ph_nodes = as_node_list(phase_nodes)
    mag_nodes = as_node_list(magnitude_nodes)
    if not ph_nodes:
        raise QSMInputError("no phase volumes given")
    if mag_nodes and len(mag_nodes) != len(ph_nodes):
        raise QSMInputError(f"{len(mag_nodes)} magnitude volumes but {len(ph_nodes)} phase volumes: one per echo")
    check_same_geometry(ph_nodes + mag_nodes, "echo volumes (magnitude and phase)")
    raw_phase, aff = stack_echoes(ph_nodes, "phase volumes")
    names = ", ".join(_node_name(n) for n in ph_nodes)
    phase, rule, evidence = phase_to_radians(raw_phase, rule=phase_rule, name=f"phase volumes ({names})")
    del raw_phase
    magnitude = stack_echoes(mag_nodes, "magnitude volumes")[0] if mag_nodes else None

    te = list(echo_times_s) if echo_times_s is not None and len(echo_times_s) else None
    te_source, b0_source = "user", "user"
    user_b0 = b0_tesla is not None and b0_tesla > 0
    if te is None or not user_b0:
        acq = acquisition_from_nodes(magnitude_nodes, phase_nodes, dicom_database)
        if te is None:
            te, te_source = acq.te_s, acq.te_source
        if not user_b0:
            b0_tesla, b0_source = acq.b0_tesla, acq.b0_source
    if te is None:
        raise QSMInputError("echo times are missing: the volumes carry none (DICOM.EchoTime attribute, DICOM "
                            "database, BIDS EchoTime or JSON sidecar); enter them (ms)")
    if b0_tesla is None and require_b0:
        raise QSMInputError("B0 is missing: the volumes carry no field strength (DICOM MagneticFieldStrength or "
                            "BIDS sidecar); enter it (T)")
    if b0_tesla is None:
        b0_source = "not needed by the stages run"
    meta = {
        "phase_nodes": [_node_name(n) for n in ph_nodes],
        "magnitude_nodes": [_node_name(n) for n in mag_nodes],
        "phase_scaling": {"rule": rule, "evidence": evidence},
        "te_source": te_source, "b0_source": b0_source, "array_order": "ijk",
    }
    manufacturer, manufacturer_source = manufacturer_and_source(phase_nodes, magnitude_nodes, dicom_database)
    if manufacturer is not None:  # the vendor prior of the phase-sign decision (QSMLogic.phase_sign)
        meta.update(manufacturer=manufacturer, manufacturer_source=manufacturer_source)
    return GREData(phase_rad=phase, magnitude=magnitude, te_s=te, b0_tesla=b0_tesla, affine=aff,
                   phase_sign=phase_sign, b0_direction=b0_direction_from_affine(aff, b0_world), metadata=meta)


def dicom_image_kind(node: Any, database: Any = None) -> Optional[str]:
    """"magnitude" or "phase" from the DICOM ImageType (0008,0008) of a DICOM-loaded volume; ``None`` if unclear.

    Siemens writes ``ORIGINAL\\PRIMARY\\M\\ND`` / ``…\\P\\ND``, Philips ``…\\M_FFE\\M\\FFE`` / ``…\\PHASE MAP\\P\\FFE``.
    """
    value = dicom_tag_value(node, "ImageType", database)
    if not value:
        return None
    parts = {p.strip().upper() for p in value.split("\\")}
    magnitude = bool(parts & {"M", "MAGNITUDE"})
    phase = bool(parts & {"P", "PHASE", "PHASE MAP"})
    if magnitude == phase:
        return None
    return "magnitude" if magnitude else "phase"


def describe_inputs(magnitude_nodes: Any, phase_nodes: Any, database: Any = None) -> str:
    """Text for the GUI: the phase scaling the "auto" rule would choose (or why it cannot), and DICOM ImageType
    warnings for a magnitude image selected as phase or the reverse. Never raises for missing packages."""
    lines = []
    ph, mags = as_node_list(phase_nodes), as_node_list(magnitude_nodes)
    try:
        from QSMLogic.io.phase_scaling import phase_to_radians

        raw, _ = stack_echoes(ph, "phase volumes")
        _, rule, evidence = phase_to_radians(raw, "auto", name="phase")
        lines.append(f"Detected phase scaling: {rule} ({evidence})")
    except ImportError as exc:
        lines.append(f"Phase scaling is checked once the Python packages are installed ({exc.name or exc} is "
                     "missing): use 'Install Python packages…'.")
    except QSMInputError as exc:
        lines.append(f"Phase scaling: {exc}")
    for role, nodes, wrong in (("phase", ph, "magnitude"), ("magnitude", mags, "phase")):
        for n in nodes:
            if dicom_image_kind(n, database) == wrong:
                lines.append(f"Warning: '{_node_name(n)}' is a {wrong} image (DICOM ImageType) but is selected as "
                             f"{role}.")
    return "\n".join(lines)


def segmentation_to_mask(segmentation_node: Any, reference_node: Any) -> np.ndarray:
    """Boolean (i, j, k) mask on the reference volume's grid: the union of all segments of a segmentation node.

    Exported with ``vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode`` in the reference geometry
    (resampled where the segmentation's own grid differs) into a temporary label map that is removed afterwards.
    """
    _check_volume(reference_node, "reference volume")
    segmentation = segmentation_node.GetSegmentation()
    name = _node_name(segmentation_node)
    if segmentation is None or segmentation.GetNumberOfSegments() == 0:
        raise QSMInputError(f"segmentation '{name}' has no segments")
    logic = getattr(slicer, "vtkSlicerSegmentationsModuleLogic", None)
    scene = segmentation_node.GetScene() or reference_node.GetScene()
    if logic is None or scene is None:
        raise QSMInputError(f"segmentation '{name}': a mask from a segmentation needs the Segmentations module logic "
                            "and the node in a scene")
    labelmap_name = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if not segmentation.ContainsRepresentation(labelmap_name):
        segmentation_node.CreateBinaryLabelmapRepresentation()
    label = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", scene.GenerateUniqueName(f"{name} mask"))
    label.SetHideFromEditors(True)
    try:
        ids = vtk.vtkStringArray()
        segmentation.GetSegmentIDs(ids)
        ok = logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label, reference_node,
                                                slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        if not ok or label.GetImageData() is None:
            raise QSMInputError(f"segmentation '{name}' could not be exported onto '{_node_name(reference_node)}'")
        check_same_geometry([reference_node, label], "mask (from segmentation) and echo volumes")
        m = np.asarray(array_ijk(label)) != 0
    finally:
        scene.RemoveNode(label)
    if not m.any():
        raise QSMInputError(f"segmentation '{name}' does not cover any voxel of '{_node_name(reference_node)}'")
    return m


def mask_from_node(mask_node: Any, reference_node: Any) -> np.ndarray:
    """Boolean (i, j, k) mask on the reference node's grid from a label map / scalar volume (non-zero = inside,
    same grid required) or a segmentation node (all segments, exported onto the reference grid)."""
    if mask_node is not None and mask_node.IsA("vtkMRMLSegmentationNode"):
        return segmentation_to_mask(mask_node, reference_node)
    check_same_geometry([reference_node, mask_node], "mask and echo volumes")
    m = np.asarray(array_ijk(mask_node)) != 0
    if not m.any():
        raise QSMInputError(f"mask '{_node_name(mask_node)}' is empty")
    return m


#: What an R2 input node holds: R2 in 1/s, or T2 in milliseconds or seconds (as ``--r2``/``--t2`` on the command
#: line and :func:`QSMLogic.separation.read_r2_map`).
R2_QUANTITIES = ("r2", "t2_ms", "t2_s")


def r2_from_node(r2_node: Any, reference_node: Any, quantity: str = "r2") -> np.ndarray:
    """R2 (Hz, float32, (i, j, k)) on ``reference_node``'s grid from an R2 (1/s) or T2 (``t2_ms``, ``t2_s``) volume
    node on any grid, for source separation: T2 converted by :func:`QSMLogic.separation.r2_from_t2`, then resampled
    through both IJK-to-RAS matrices by :func:`QSMLogic.separation.resample_to_grid` (voxels outside the node's
    volume become NaN and leave the separation mask). The node is not modified."""
    from QSMLogic.separation import r2_from_t2, resample_to_grid

    if quantity not in R2_QUANTITIES:
        raise QSMInputError(f"R2 input quantity must be one of {', '.join(R2_QUANTITIES)}, got {quantity!r}")
    _check_volume(r2_node, "R2/T2 map")
    values = np.asarray(array_ijk(r2_node), dtype=np.float32)
    r2 = values if quantity == "r2" else r2_from_t2(values, "ms" if quantity == "t2_ms" else "s")
    dims = tuple(reference_node.GetImageData().GetDimensions())
    return resample_to_grid(r2, check_affine(ijk_to_ras(r2_node)), dims, ijk_to_ras(reference_node),
                            name=f"R2/T2 map '{_node_name(r2_node)}'")


# ---------------------------------------------------------------------------------------------------------------
# Results → nodes


def create_folder(scene: Any, name: str) -> Optional[int]:
    """A subject-hierarchy folder item named ``name`` under the scene item; ``None`` without an SH node."""
    sh_class = getattr(slicer, "vtkMRMLSubjectHierarchyNode", None)
    if sh_class is None:
        return None
    sh = sh_class.GetSubjectHierarchyNode(scene)
    if sh is None:
        return None
    return int(sh.CreateFolderItem(sh.GetSceneItemID(), name))


def place_in_folder(scene: Any, node: Any, folder_item: Optional[int]) -> None:
    """Put ``node`` under the subject-hierarchy ``folder_item`` (creating its SH item if the scene has none yet)."""
    if folder_item is None:
        return
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    item = sh.GetItemByDataNode(node)
    if not item:
        sh.CreateItem(folder_item, node)
    else:
        sh.SetItemParent(item, folder_item)


def _apply_display(node: Any, name: str) -> None:
    node.CreateDefaultDisplayNodes()
    disp = node.GetDisplayNode()
    if disp is None or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return
    grey = "vtkMRMLColorTableNodeGrey"
    if node.GetScene() is not None and node.GetScene().GetNodeByID(grey) is not None:
        disp.SetAndObserveColorNodeID(grey)
    preset = DISPLAY_PRESETS.get(name)
    if preset is not None and preset.window is not None:
        disp.AutoWindowLevelOff()
        disp.SetWindowLevel(preset.window, preset.level)
    else:
        disp.AutoWindowLevelOn()
    if preset is not None and preset.legend:
        add_color_legend(node, preset.legend, preset.legend_format)


def _color_logic() -> Any:
    """The Colors module logic in Slicer (``slicer.modules.colors.logic()``), else the vtkSlicerColorLogic class
    (its legend methods are static), else ``None``."""
    colors = getattr(getattr(slicer, "modules", None), "colors", None)
    if colors is not None:
        return colors.logic()
    return getattr(slicer, "vtkSlicerColorLogic", None)


def add_color_legend(node: Any, title: str, label_format: str = "%.2f", color_logic: Any = None) -> Optional[Any]:
    """A colour legend (colour bar) of the node's display in the views that show it (Slicer >= 5.0).

    Uses ``AddDefaultColorLegendDisplayNode`` of the Colors module logic; returns the vtkMRMLColorLegendDisplayNode,
    or ``None`` where the application has no colour legends (no logic, or the node class not registered).
    """
    disp = node.GetDisplayNode()
    scene = node.GetScene()
    logic = _color_logic() if color_logic is None else color_logic
    if disp is None or scene is None or logic is None or not hasattr(logic, "AddDefaultColorLegendDisplayNode"):
        return None
    if hasattr(scene, "IsNodeClassRegistered") and not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        return None
    legend = logic.AddDefaultColorLegendDisplayNode(disp)
    if legend is None:
        return None
    legend.SetTitleText(title)
    legend.SetLabelFormat(label_format)
    legend.SetVisibility(True)
    return legend


def add_result_volume(
    scene: Any,
    array_ijk_: np.ndarray,
    reference_node: Any,
    name: str,
    output: str,
    provenance: Optional[Dict[str, Any]] = None,
    folder_item: Optional[int] = None,
) -> Any:
    """A NEW volume node holding ``array_ijk_`` ((i, j, k) order) with ``reference_node``'s IJK-to-RAS copied.

    ``output`` (e.g. ``"chi_ppm"``) picks the node class (label map for masks) and display preset; provenance is
    stored as JSON under :data:`PROVENANCE_ATTRIBUTE`. ``reference_node`` is not modified.
    """
    a = np.asarray(array_ijk_)
    dims = tuple(reference_node.GetImageData().GetDimensions())
    if a.shape != dims:
        raise QSMInputError(f"result '{output}' has shape {a.shape}, the reference volume has {dims}")
    label = output in LABEL_OUTPUTS
    cls = "vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(cls, scene.GenerateUniqueName(name))
    kji = np.ascontiguousarray(a.transpose(2, 1, 0), dtype=np.int16 if label else np.float32)
    slicer.util.updateVolumeFromArray(node, kji)
    m = vtk.vtkMatrix4x4()
    reference_node.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    node.SetAttribute(OUTPUT_ATTRIBUTE, output)
    if provenance is not None:
        node.SetAttribute(PROVENANCE_ATTRIBUTE, json.dumps(provenance, default=json_default))
    _apply_display(node, output)
    place_in_folder(scene, node, folder_item)
    return node


def outputs_to_nodes(
    scene: Any,
    outputs: Dict[str, np.ndarray],
    reference_node: Any,
    run_name: str,
    provenance: Optional[Dict[str, Any]] = None,
    names: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """New nodes ``"<run_name> <output>"`` for the selected ``names`` (all if ``None``), in an SH folder."""
    folder = create_folder(scene, run_name)
    wanted = list(outputs) if names is None else [n for n in names if n in outputs]
    nodes = {}
    for key in wanted:
        prov = dict(provenance or {})
        prov["output"] = key
        nodes[key] = add_result_volume(scene, outputs[key], reference_node, f"{run_name} {key}", key, prov, folder)
    return nodes


def read_provenance(node: Any) -> Optional[Dict[str, Any]]:
    """The provenance dictionary stored on a result node (``None`` if absent)."""
    text = node.GetAttribute(PROVENANCE_ATTRIBUTE)
    return json.loads(text) if text else None


#: Custom layout (registered with the layout node) showing three axial slice views side by side.
RESULTS_LAYOUT_ID = 5301
RESULTS_LAYOUT_XML = """<layout type="horizontal">
 <item><view class="vtkMRMLSliceNode" singletontag="Red">
  <property name="orientation" action="default">Axial</property>
  <property name="viewlabel" action="default">R</property><property name="viewcolor" action="default">#F34A33</property>
 </view></item>
 <item><view class="vtkMRMLSliceNode" singletontag="Yellow">
  <property name="orientation" action="default">Axial</property>
  <property name="viewlabel" action="default">Y</property><property name="viewcolor" action="default">#EDD54C</property>
 </view></item>
 <item><view class="vtkMRMLSliceNode" singletontag="Green">
  <property name="orientation" action="default">Axial</property>
  <property name="viewlabel" action="default">G</property><property name="viewcolor" action="default">#6EB04B</property>
 </view></item>
</layout>"""
#: Which output each view of the results layout shows: the first available one not already shown in another view
#: (QSM module: magnitude | QSM | SWI; SWI module: magnitude | SWI | mIP).
RESULTS_VIEWS = (("Red", ("magnitude", "swi")), ("Yellow", ("chi_ppm", "local_field_ppm", "swi")),
                 ("Green", ("swi", "mip")))


def show_side_by_side(scene: Any, nodes: Dict[str, Any]) -> Dict[str, str]:
    """Switch to the results layout and show magnitude | QSM | SWI in the Red | Yellow | Green slice views.

    Works on the scene's layout node and slice composite nodes (present in Slicer; absent ones are skipped).
    Returns ``{view name: node ID}`` of what was assigned.
    """
    layout = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if layout is not None:
        if not layout.IsLayoutDescription(RESULTS_LAYOUT_ID):
            layout.AddLayoutDescription(RESULTS_LAYOUT_ID, RESULTS_LAYOUT_XML)
        layout.SetViewArrangement(RESULTS_LAYOUT_ID)
    # The layout's orientation properties apply only to views it creates: views that exist keep theirs (Yellow is
    # sagittal, Green coronal by default), so the orientation is set on the slice nodes themselves.
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        slice_node = scene.GetNthNodeByClass(i, "vtkMRMLSliceNode")
        if slice_node.GetLayoutName() in dict(RESULTS_VIEWS):
            slice_node.SetOrientation("Axial")
    composites = {}
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        c = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
        composites[c.GetLayoutName()] = c
    shown = {}
    for view, candidates in RESULTS_VIEWS:
        node = next((nodes[k] for k in candidates if k in nodes and nodes[k].GetID() not in shown.values()), None)
        if node is None or view not in composites:
            continue
        composites[view].SetBackgroundVolumeID(node.GetID())
        composites[view].SetForegroundVolumeID(None)
        composites[view].SetLabelVolumeID(None)
        shown[view] = node.GetID()
    return shown


# ---------------------------------------------------------------------------------------------------------------
# Storage


def save_volume(node: Any, path: str) -> None:
    """Write a volume node to NRRD or NIfTI (by extension) through its archetype storage node."""
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise OSError(f"could not write '{_node_name(node)}' to {path}")


def load_volume(scene: Any, path: str, name: Optional[str] = None, label: bool = False) -> Any:
    """Read an NRRD/NIfTI file into a new scalar (or label map) volume node through an archetype storage node."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if label else "vtkMRMLScalarVolumeNode",
                                   name or "loaded")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if label:
        storage.SetCenterImage(False)
    if not storage.ReadData(node):
        scene.RemoveNode(node)
        raise OSError(f"could not read a volume from {path}")
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


__all__ = [
    "AcquisitionInfo", "DICOM_TAGS", "DISPLAY_PRESETS", "DisplayPreset", "INSTANCE_UIDS_ATTRIBUTE", "LABEL_OUTPUTS",
    "MANUFACTURER_ATTRIBUTES", "OUTPUT_ATTRIBUTE", "PROVENANCE_ATTRIBUTE", "R2_QUANTITIES", "RESULTS_LAYOUT_ID",
    "RESULTS_LAYOUT_XML", "RESULTS_VIEWS", "VolumeArrays", "acquisition_from_nodes", "add_color_legend",
    "add_result_volume", "array_ijk", "as_node_list", "check_same_geometry", "create_folder",
    "default_dicom_database", "describe_inputs", "dicom_image_kind", "dicom_instance_uids", "dicom_tag_value",
    "echo_time_of_node_s", "echo_times_and_source", "echo_times_from_nodes_s", "echo_times_from_sequence_s",
    "field_strength_and_source", "field_strength_from_nodes_t", "field_strength_of_node_t", "gre_from_nodes",
    "ijk_to_ras", "is_sequence", "load_volume", "manufacturer_and_source", "manufacturer_of_node", "mask_from_node",
    "migrate_flip_phase", "nodes_from_sequence", "outputs_to_nodes", "parse_echo_times_ms", "place_in_folder",
    "r2_from_node", "read_provenance", "save_volume", "segmentation_to_mask", "sequence_echo_times_and_source",
    "show_side_by_side", "sidecar_of_node", "sort_echo_nodes", "stack_echoes", "storage_file", "volume_arrays"
]
