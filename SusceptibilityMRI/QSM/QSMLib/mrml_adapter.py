"""MRML adapter: Slicer volume nodes ↔ the arrays, geometry and GRE data of the QSMLogic library.

This is the only code that turns MRML nodes into library inputs and library outputs back into nodes (DESIGN.md §2).
It takes the scene as an argument and imports only slicer (MRML), vtk, numpy and QSMLogic — no Qt — so pytest runs
it on ``slicer-core``.

Array order: the library receives arrays in **(i, j, k)** order — ``slicer.util.arrayFromVolume`` gives (k, j, i),
so arrays are transposed — together with the node's IJK-to-RAS matrix as the affine. Voxel size and B0 direction
are derived from that affine by :mod:`QSMLogic.geometry`, hence given in the same (i, j, k) order; an oblique volume
gives an oblique B0 direction ``R^T·(0, 0, 1)`` (R the unit IJK-to-RAS direction matrix). Results go back to
**new** volume nodes with the input's IJK-to-RAS matrix copied; inputs are never modified.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer
import vtk

from QSMLogic.errors import QSMInputError
from QSMLogic.geometry import b0_direction_from_affine, check_affine, voxel_size_from_affine
from QSMLogic.gre import GREData
from QSMLogic.io.phase_scaling import phase_to_radians

#: Node attribute holding the JSON provenance of a result.
PROVENANCE_ATTRIBUTE = "SusceptibilityMRI.Provenance"
#: Node attribute naming the output (e.g. "chi_ppm") of a result node.
OUTPUT_ATTRIBUTE = "SusceptibilityMRI.Output"
#: Node attributes read for echo time (milliseconds, as DICOM EchoTime) and field strength (tesla).
ECHO_TIME_ATTRIBUTES_MS = ("DICOM.EchoTime", "EchoTime")
FIELD_STRENGTH_ATTRIBUTES_T = ("DICOM.MagneticFieldStrength", "MagneticFieldStrength")
#: Relative and absolute tolerances for "same geometry" between echo volumes.
GEOMETRY_RTOL = 1e-5
GEOMETRY_ATOL_MM = 1e-4

#: Outputs written as label maps.
LABEL_OUTPUTS = frozenset({"mask", "qsm_mask", "field_mask"})


@dataclass(frozen=True)
class DisplayPreset:
    """Window/level of a result volume (``None`` = automatic window) and its grey colour map."""

    window: Optional[float] = None
    level: Optional[float] = None
    description: str = ""


#: Display of each pipeline output: QSM grey at −0.15..+0.25 ppm (window 0.40, level 0.05), fields ±0.1 ppm, SWI,
#: mIP and magnitude grey with an automatic window.
DISPLAY_PRESETS: Dict[str, DisplayPreset] = {
    "chi_ppm": DisplayPreset(0.40, 0.05, "QSM: -0.15..+0.25 ppm"),
    "local_field_ppm": DisplayPreset(0.10, 0.0, "local field: -0.05..+0.05 ppm"),
    "total_field_ppm": DisplayPreset(2.0, 0.0, "total field: -1..+1 ppm"),
    "field_hz": DisplayPreset(200.0, 0.0, "field: -100..+100 Hz"),
    "r2star_hz": DisplayPreset(60.0, 30.0, "R2*: 0..60 1/s"),
    "swi": DisplayPreset(None, None, "SWI: automatic"),
    "mip": DisplayPreset(None, None, "mIP: automatic"),
    "magnitude": DisplayPreset(None, None, "magnitude: automatic"),
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


def echo_times_from_sequence_s(sequence_node: Any) -> Optional[List[float]]:
    """Echo times from a sequence's index values when its index unit is ms or s; ``None`` otherwise."""
    unit = (sequence_node.GetIndexUnit() or "").strip().lower()
    factor = {"ms": 1e-3, "s": 1.0}.get(unit)
    if factor is None:
        return None
    try:
        return [float(sequence_node.GetNthIndexValue(i)) * factor for i in range(sequence_node.GetNumberOfDataNodes())]
    except ValueError:
        return None


def as_node_list(nodes: Any) -> List[Any]:
    """A list of echo volume nodes from a list/tuple of nodes, a single volume node or a sequence node."""
    if nodes is None:
        return []
    if isinstance(nodes, (list, tuple)):
        return list(nodes)
    if nodes.IsA("vtkMRMLSequenceNode"):
        return nodes_from_sequence(nodes)
    return [nodes]


def sort_echo_nodes(nodes: Sequence[Any]) -> List[Any]:
    """Echo volumes ordered by their DICOM.EchoTime attribute when every node has one, else as given."""
    nodes = list(nodes)
    te = [_first_attribute(n, ECHO_TIME_ATTRIBUTES_MS) for n in nodes]
    if any(t is None for t in te):
        return nodes
    return [n for _, n in sorted(zip(te, nodes), key=lambda p: p[0])]


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
# Acquisition parameters


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


def _first_attribute(node: Any, names: Sequence[str]) -> Optional[float]:
    for name in names:
        v = node.GetAttribute(name)
        if v:
            try:
                return float(str(v).split("\\")[0])
            except ValueError:
                raise QSMInputError(f"node '{_node_name(node)}' attribute {name}={v!r} is not a number") from None
    return None


def echo_times_from_nodes_s(nodes: Sequence[Any]) -> Optional[List[float]]:
    """Echo times (s) from the nodes' DICOM.EchoTime attributes (ms); ``None`` if any node lacks it."""
    values = [_first_attribute(n, ECHO_TIME_ATTRIBUTES_MS) for n in nodes]
    if any(v is None for v in values):
        return None
    return [float(v) * 1e-3 for v in values]  # type: ignore[arg-type]


def field_strength_from_nodes_t(nodes: Sequence[Any]) -> Optional[float]:
    """B0 (T) from the first node carrying DICOM.MagneticFieldStrength; ``None`` if none does."""
    for n in nodes:
        v = _first_attribute(n, FIELD_STRENGTH_ATTRIBUTES_T)
        if v is not None:
            return v
    return None


def gre_from_nodes(
    magnitude_nodes: Any,
    phase_nodes: Any,
    echo_times_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
    phase_rule: str = "auto",
    phase_sign: int = 1,
    b0_world: Sequence[float] = (0.0, 0.0, 1.0),
) -> GREData:
    """Build a :class:`GREData` ((i, j, k, echo) arrays) from echo volume nodes or sequence nodes.

    Echo times: ``echo_times_s`` if given, else the sequence index (ms/s) or the nodes' DICOM.EchoTime (ms). B0:
    ``b0_tesla`` if given, else DICOM.MagneticFieldStrength. Phase is converted to radians by
    :func:`QSMLogic.io.phase_to_radians` with ``phase_rule`` (``"auto"`` chooses only on checked evidence); the
    rule and its evidence go into ``metadata["phase_scaling"]``. Magnitude nodes may be empty (phase-only data).
    """
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
    magnitude = stack_echoes(mag_nodes, "magnitude volumes")[0] if mag_nodes else None

    te_source = "user"
    te = list(echo_times_s) if echo_times_s is not None and len(echo_times_s) else None
    if te is None and phase_nodes is not None and not isinstance(phase_nodes, (list, tuple)) \
            and phase_nodes.IsA("vtkMRMLSequenceNode"):
        te, te_source = echo_times_from_sequence_s(phase_nodes), "sequence index"
    if te is None:
        te, te_source = echo_times_from_nodes_s(ph_nodes), "DICOM.EchoTime attributes"
    if te is None:
        raise QSMInputError("echo times are missing: the volumes carry no DICOM.EchoTime; enter them (ms)")
    b0_source = "user"
    if b0_tesla is None or b0_tesla <= 0:
        b0_tesla, b0_source = field_strength_from_nodes_t(ph_nodes + mag_nodes), "DICOM.MagneticFieldStrength"
    if b0_tesla is None:
        raise QSMInputError("B0 is missing: the volumes carry no DICOM.MagneticFieldStrength; enter it (T)")
    meta = {
        "phase_nodes": [_node_name(n) for n in ph_nodes],
        "magnitude_nodes": [_node_name(n) for n in mag_nodes],
        "phase_scaling": {"rule": rule, "evidence": evidence},
        "te_source": te_source, "b0_source": b0_source, "array_order": "ijk",
    }
    return GREData(phase_rad=phase, magnitude=magnitude, te_s=te, b0_tesla=float(b0_tesla), affine=aff,
                   phase_sign=phase_sign, b0_direction=b0_direction_from_affine(aff, b0_world), metadata=meta)


def mask_from_node(mask_node: Any, reference_node: Any) -> np.ndarray:
    """Boolean (i, j, k) mask from a label map / scalar volume on the reference node's grid (non-zero = inside)."""
    check_same_geometry([reference_node, mask_node], "mask and echo volumes")
    m = np.asarray(array_ijk(mask_node)) != 0
    if not m.any():
        raise QSMInputError(f"mask '{_node_name(mask_node)}' is empty")
    return m


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
        node.SetAttribute(PROVENANCE_ATTRIBUTE, json.dumps(provenance, default=_json_default))
    _apply_display(node, output)
    place_in_folder(scene, node, folder_item)
    return node


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


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
    "DISPLAY_PRESETS", "DisplayPreset", "LABEL_OUTPUTS", "OUTPUT_ATTRIBUTE", "PROVENANCE_ATTRIBUTE",
    "RESULTS_LAYOUT_ID", "RESULTS_LAYOUT_XML", "RESULTS_VIEWS", "VolumeArrays",
    "add_result_volume", "array_ijk", "as_node_list", "check_same_geometry", "create_folder",
    "echo_times_from_nodes_s", "echo_times_from_sequence_s", "field_strength_from_nodes_t", "gre_from_nodes",
    "ijk_to_ras", "load_volume", "mask_from_node", "nodes_from_sequence", "outputs_to_nodes", "parse_echo_times_ms",
    "place_in_folder", "read_provenance", "save_volume", "show_side_by_side", "sort_echo_nodes", "stack_echoes",
    "volume_arrays",
]
