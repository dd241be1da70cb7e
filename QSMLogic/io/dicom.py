"""DICOM input (pydicom) for multi-echo GRE series: classic single-frame and enhanced multi-frame MR.

What is read, per image (frame):

* image kind — magnitude, phase, real or imaginary — from ``ComplexImageComponent`` (enhanced MR, per frame in
  ``MRImageFrameTypeSequence``), else the ``ImageType``/``FrameType`` values (Siemens ``M``/``P``, Philips
  ``M_FFE``/``P_FFE``/``R_FFE``/``I_FFE``, generic ``MAGNITUDE``/``PHASE``/``REAL``/``IMAGINARY``), else GE's
  private image-type tag (0043,102F) (0 magnitude, 1 phase, 2 real, 3 imaginary);
* echo time — ``EffectiveEchoTime`` of the frame's ``MREchoSequence``, else ``EchoTime`` (ms → s);
* geometry — ``ImagePositionPatient``, ``ImageOrientationPatient``, ``PixelSpacing`` (per-frame or shared
  functional groups for enhanced files);
* values — ``RescaleSlope``/``RescaleIntercept`` (per frame from ``PixelValueTransformationSequence`` in enhanced
  files) applied before the phase-scaling rule;
* ``MagneticFieldStrength`` (T) and ``Manufacturer``.

Slices are grouped by echo time and sorted by their position along the slice normal (row × column cosines). Array
axes are (column, row, slice, echo); the affine is built in LPS from the orientation cosines, pixel spacing and the
first/last slice positions (oblique orientations kept), then converted to RAS. Real/imaginary pairs without phase
images give phase = angle(real + i·imag). Several coils or unrelated series in one folder are reported as
duplicate slices: pass the files of one GRE series.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import QSMInputError
from ..gre import GREData
from .common import PathLike, as_path_list, build_gre, check_exists, check_image_size

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_KIND_TOKENS = (
    ("phase", {"P", "PHASE", "P_FFE", "PHASE MAP"}),
    ("real", {"R", "REAL", "R_FFE"}),
    ("imaginary", {"I", "IMAGINARY", "I_FFE"}),
    ("magnitude", {"M", "MAGNITUDE", "M_FFE", "MAG"}),
)
_GE_KINDS = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}
_GE_IMAGE_TYPE_TAG = (0x0043, 0x102F)
#: What pydicom and the conversions raise on a damaged element or an unparsable value.
_TAG_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, NotImplementedError)
#: Tolerances (mm) for equal orientation/spacing and for evenly spaced slices.
_GEOMETRY_TOL = 1e-3


@dataclass
class _Frame:
    kind: str
    te_ms: Optional[float]
    echo_number: Optional[int]
    position: np.ndarray
    row_cos: np.ndarray
    col_cos: np.ndarray
    spacing: Tuple[float, float]
    thickness: Optional[float]
    pixels: np.ndarray
    rescale: Tuple[float, float]
    source: str


def _first(item: Any, seq_name: str) -> Optional[Any]:
    seq = getattr(item, seq_name, None) if item is not None else None
    return seq[0] if seq else None


def _group_attr(frame_item: Any, shared_item: Any, seq_name: str, attr: str) -> Optional[Any]:
    """An attribute of a functional-group macro: per-frame group first, then the shared group."""
    for group in (frame_item, shared_item):
        macro = _first(group, seq_name)
        if macro is not None and attr in macro:
            return getattr(macro, attr)
    return None


def _ge_kind(ds: Any) -> Optional[str]:
    """GE's private image type (0043,102F): 0 magnitude, 1 phase, 2 real, 3 imaginary; None when absent."""
    elem = ds.get(_GE_IMAGE_TYPE_TAG)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = int.from_bytes(value[:2], "little", signed=True)
    try:
        return _GE_KINDS.get(int(value))
    except (TypeError, ValueError):
        return None


def _kind(ds: Any, frame_type_item: Any, source: str) -> str:
    component = None
    if frame_type_item is not None:
        component = frame_type_item.get("ComplexImageComponent")
    component = component or ds.get("ComplexImageComponent")
    if component:
        c = str(component).upper()
        if c in ("MAGNITUDE", "PHASE", "REAL", "IMAGINARY"):
            return c.lower()
    image_type = frame_type_item.get("FrameType") if frame_type_item is not None else None
    image_type = image_type or ds.get("ImageType") or []
    tokens = {str(t).upper() for t in (image_type if not isinstance(image_type, str) else [image_type])}
    for kind, names in _KIND_TOKENS:
        if tokens & names:
            return kind
    ge = _ge_kind(ds)
    if ge is not None:
        return ge
    raise QSMInputError(
        f"DICOM {source}: cannot tell whether the image is magnitude or phase (ImageType {list(image_type)}, no "
        "ComplexImageComponent or GE image-type tag)"
    )


def _floats(value: Any, n: int, what: str, source: str) -> np.ndarray:
    if value is None:
        raise QSMInputError(f"DICOM {source}: {what} is missing")
    a = np.asarray([float(v) for v in value], dtype=np.float64)
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise QSMInputError(f"DICOM {source}: {what} must be {n} numbers, got {list(value)}")
    return a


def _frames_of(ds: Any, path: str) -> List[_Frame]:
    """All frames of one dataset (one for classic files, NumberOfFrames for enhanced ones)."""
    try:
        check_image_size((int(ds.get("Rows") or 0), int(ds.get("Columns") or 0), int(ds.get("NumberOfFrames") or 1)),
                         f"DICOM file {path!r}")
        pixels = ds.pixel_array
    except QSMInputError:
        raise
    except (AttributeError, ValueError, NotImplementedError, RuntimeError, KeyError, TypeError, IndexError,
            OverflowError, MemoryError) as exc:
        raise QSMInputError(f"DICOM file {path!r} is corrupt: its pixel data cannot be decoded ({exc})") from exc
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    frames = []
    if per_frame:
        stack = pixels if pixels.ndim == 3 else pixels[None]
        if stack.shape[0] != len(per_frame):
            raise QSMInputError(
                f"DICOM file {path!r}: {stack.shape[0]} frames of pixels but {len(per_frame)} per-frame groups"
            )
        for i, item in enumerate(per_frame):
            src = f"{path!r} frame {i + 1}"
            te = _group_attr(item, shared, "MREchoSequence", "EffectiveEchoTime")
            slope = _group_attr(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
            intercept = _group_attr(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
            iop = _floats(_group_attr(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                          "ImageOrientationPatient", src)
            thickness = _group_attr(item, shared, "PixelMeasuresSequence", "SliceThickness")
            frames.append(_Frame(
                kind=_kind(ds, _first(item, "MRImageFrameTypeSequence") or _first(shared, "MRImageFrameTypeSequence"),
                           src),
                te_ms=float(te) if te is not None else (float(ds.EchoTime) if "EchoTime" in ds else None),
                echo_number=None,
                position=_floats(_group_attr(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3,
                                 "ImagePositionPatient", src),
                row_cos=iop[:3], col_cos=iop[3:],
                spacing=tuple(_floats(_group_attr(item, shared, "PixelMeasuresSequence", "PixelSpacing"), 2,
                                      "PixelSpacing", src)),
                thickness=float(thickness) if thickness is not None else None,
                pixels=stack[i],
                rescale=(float(slope) if slope is not None else float(ds.get("RescaleSlope", 1.0)),
                         float(intercept) if intercept is not None else float(ds.get("RescaleIntercept", 0.0))),
                source=src,
            ))
        return frames
    src = repr(path)
    iop = _floats(ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", src)
    echo_numbers = ds.get("EchoNumbers")
    return [_Frame(
        kind=_kind(ds, None, src),
        te_ms=float(ds.EchoTime) if ds.get("EchoTime") not in (None, "") else None,
        echo_number=int(echo_numbers) if echo_numbers not in (None, "") else None,
        position=_floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", src),
        row_cos=iop[:3], col_cos=iop[3:],
        spacing=tuple(_floats(ds.get("PixelSpacing"), 2, "PixelSpacing", src)),
        thickness=float(ds.SliceThickness) if ds.get("SliceThickness") not in (None, "") else None,
        pixels=pixels,
        rescale=(float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))),
        source=src,
    )]


def _dicom_files(paths: List[str]) -> Tuple[List[str], bool]:
    """Files to read: the given files, or every file under the given folders (then non-DICOM files are skipped)."""
    files, from_folder = [], False
    for p in paths:
        check_exists(p, "DICOM path")
        if os.path.isdir(p):
            from_folder = True
            for root, _, names in sorted(os.walk(p)):
                files.extend(os.path.join(root, n) for n in sorted(names))
        else:
            files.append(p)
    return files, from_folder


def _has_dicom_preamble(path: str) -> bool:
    """True when the file carries the DICOM Part 10 marker ("DICM" after the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def read_dicom_datasets(paths: Union[PathLike, Sequence[PathLike]]) -> Tuple[List[Any], List[str], int]:
    """Read DICOM datasets from files and/or folders: (datasets, their files, number of non-DICOM files skipped)."""
    files, from_folder = _dicom_files(as_path_list(paths))
    datasets, used, skipped = [], [], 0
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except (InvalidDicomError, OSError, EOFError, NotImplementedError, *_TAG_ERRORS,
                struct.error) as exc:
            if from_folder and not _has_dicom_preamble(f):
                skipped += 1
                continue
            what = "is corrupt" if _has_dicom_preamble(f) else "is not a readable DICOM file"
            raise QSMInputError(f"DICOM file {f!r} {what}: {exc}") from exc
        if "PixelData" not in ds:
            skipped += 1
            continue
        datasets.append(ds)
        used.append(f)
    if not datasets:
        raise QSMInputError(f"no DICOM images found in {as_path_list(paths)} ({skipped} other files skipped)")
    return datasets, used, skipped


def _echo_key(f: _Frame) -> Tuple[int, float]:
    if f.te_ms is not None:
        return (0, round(f.te_ms, 4))
    if f.echo_number is not None:
        return (1, float(f.echo_number))
    raise QSMInputError(f"DICOM {f.source}: neither EchoTime nor EchoNumbers is present; cannot group echoes")


def _assemble(frames: List[_Frame], kind: str) -> Tuple[np.ndarray, np.ndarray, List[Optional[float]]]:
    """Stack one kind's frames into (x=column, y=row, z=slice, echo) float32, with the LPS affine and TEs (ms)."""
    ref = frames[0]
    normal = np.cross(ref.row_cos, ref.col_cos)
    for f in frames:
        if (np.max(np.abs(f.row_cos - ref.row_cos)) > _GEOMETRY_TOL or np.max(np.abs(f.col_cos - ref.col_cos))
                > _GEOMETRY_TOL or np.max(np.abs(np.subtract(f.spacing, ref.spacing))) > _GEOMETRY_TOL
                or f.pixels.shape != ref.pixels.shape):
            raise QSMInputError(
                f"DICOM {f.source} has another orientation, pixel spacing or matrix than {ref.source}: "
                "the images do not form one series; pass the files of one GRE series"
            )
    echoes: Dict[Tuple[int, float], List[_Frame]] = {}
    for f in frames:
        echoes.setdefault(_echo_key(f), []).append(f)
    keys = sorted(echoes)
    volumes, slice_pos = [], None
    for key in keys:
        group = sorted(echoes[key], key=lambda f: float(f.position @ normal))
        dist = np.array([f.position @ normal for f in group])
        if np.any(np.diff(dist) < _GEOMETRY_TOL):
            i = int(np.argmin(np.diff(dist)))
            raise QSMInputError(
                f"DICOM {group[i].source} and {group[i + 1].source} are {kind} images of the same echo at the same "
                "slice position (several coils, repetitions or series?): pass the files of one GRE series"
            )
        if slice_pos is None:
            slice_pos = group
            ref_dist = dist
        elif len(dist) != len(ref_dist) or np.max(np.abs(dist - ref_dist)) > _GEOMETRY_TOL:
            raise QSMInputError(
                f"DICOM {kind} echoes differ in their slices: echo {keys.index(key) + 1} has {len(dist)} slices, "
                f"echo 1 has {len(ref_dist)} (or at other positions)"
            )
        volumes.append(np.stack([(f.pixels.astype(np.float64) * f.rescale[0] + f.rescale[1]).T for f in group],
                                axis=2).astype(np.float32))
    first, last, n = slice_pos[0].position, slice_pos[-1].position, len(slice_pos)
    if n > 1:
        steps = np.diff(ref_dist)
        if np.max(np.abs(steps - steps.mean())) > _GEOMETRY_TOL + 1e-3 * steps.mean():
            raise QSMInputError(
                f"DICOM {kind} slices are not evenly spaced (steps {steps.min():.4g}..{steps.max():.4g} mm): "
                "missing slices?"
            )
        slice_vec = (last - first) / (n - 1)
    else:
        slice_vec = normal * (ref.thickness or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = ref.row_cos / np.linalg.norm(ref.row_cos) * ref.spacing[1]
    affine[:3, 1] = ref.col_cos / np.linalg.norm(ref.col_cos) * ref.spacing[0]
    affine[:3, 2] = slice_vec
    affine[:3, 3] = first
    tes = [echoes[k][0].te_ms for k in keys]
    return np.stack(volumes, axis=3), _LPS_TO_RAS @ affine, tes


def read_dicom_gre(
    paths: Union[PathLike, Sequence[PathLike]],
    te_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
    phase_rule: str = "auto",
    phase_sign: int = 1,
    nan_policy: str = "error",
) -> GREData:
    """Read a multi-echo GRE series (folder(s) and/or files; magnitude and phase may be mixed) into GREData.

    Explicit ``te_s`` (seconds) and ``b0_tesla`` win over the DICOM tags. The rescaled phase goes through
    :func:`~QSMLogic.io.phase_to_radians` with ``phase_rule``; the rule, its evidence and the rescale values used
    are recorded in ``metadata``.
    """
    datasets, files, skipped = read_dicom_datasets(paths)
    frames: List[_Frame] = []
    for ds, f in zip(datasets, files):
        try:
            frames.extend(_frames_of(ds, f))
        except QSMInputError:
            raise
        except _TAG_ERRORS as exc:  # a tag whose value cannot be parsed (damaged file or wrong VR)
            raise QSMInputError(f"DICOM file {f!r} is corrupt or has an invalid tag: {exc}") from exc
    by_kind: Dict[str, List[_Frame]] = {}
    for fr in frames:
        by_kind.setdefault(fr.kind, []).append(fr)
    metadata: Dict[str, Any] = {
        "format": "dicom",
        "source_files": files,
        "n_skipped_files": skipped,
        "manufacturer": str(datasets[0].get("Manufacturer", "")),
        "series_description": sorted({str(ds.get("SeriesDescription", "")) for ds in datasets}),
        "rescale": {k: sorted({fr.rescale for fr in v}) for k, v in by_kind.items()},
    }
    phase_raw = phase_rad = magnitude = None
    if "phase" in by_kind:
        phase_raw, affine, tes = _assemble(by_kind["phase"], "phase")
        if "magnitude" in by_kind:
            magnitude, aff_m, tes_m = _assemble(by_kind["magnitude"], "magnitude")
            if magnitude.shape[:3] != phase_raw.shape[:3] or np.max(np.abs(aff_m - affine)) > _GEOMETRY_TOL:
                raise QSMInputError("geometry mismatch: the DICOM magnitude and phase images cover different slices")
            if magnitude.shape[3] == phase_raw.shape[3] and tes_m != tes:
                raise QSMInputError(f"the DICOM magnitude echo times {tes_m} differ from the phase ones {tes} (ms)")
    elif "real" in by_kind and "imaginary" in by_kind:
        re, affine, tes = _assemble(by_kind["real"], "real")
        im, aff_i, tes_i = _assemble(by_kind["imaginary"], "imaginary")
        if re.shape != im.shape or np.max(np.abs(aff_i - affine)) > _GEOMETRY_TOL or tes_i != tes:
            raise QSMInputError("the DICOM real and imaginary images differ in slices or echoes")
        signal = re.astype(np.complex64) + 1j * im
        phase_rad, magnitude = np.angle(signal).astype(np.float32), np.abs(signal).astype(np.float32)
        metadata["phase_scaling"] = {"rule": "complex", "description": "phase = angle(real + i·imaginary)"}
    else:
        raise QSMInputError(
            f"no phase images found in {as_path_list(paths)} (image kinds found: {sorted(by_kind)}): the ImageType "
            "must mark phase images (P/PHASE), or give real and imaginary images"
        )
    try:
        b0_tags = {float(ds.MagneticFieldStrength) for ds in datasets
                   if ds.get("MagneticFieldStrength") not in (None, "")}
    except _TAG_ERRORS as exc:
        raise QSMInputError(f"a DICOM MagneticFieldStrength tag cannot be read as tesla: {exc}") from exc
    if len(b0_tags) > 1:
        raise QSMInputError(f"the DICOM files give different MagneticFieldStrength values {sorted(b0_tags)}")
    te_tags = None if any(t is None for t in tes) else [t * 1e-3 for t in tes]
    metadata["te_source"] = "explicit" if te_s is not None else ("dicom" if te_tags is not None else None)
    metadata["b0_source"] = "explicit" if b0_tesla is not None else ("dicom" if b0_tags else None)
    return build_gre(
        phase_raw, magnitude, te_s if te_s is not None else te_tags,
        b0_tesla if b0_tesla is not None else (b0_tags.pop() if b0_tags else None), affine, phase_rule,
        phase_sign, nan_policy, metadata, phase_name=f"DICOM phase in {as_path_list(paths)}",
        te_hint="DICOM EchoTime tags", b0_hint="the DICOM MagneticFieldStrength tag", phase_rad=phase_rad,
    )
