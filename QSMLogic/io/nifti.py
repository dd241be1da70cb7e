"""NIfTI input (nibabel) with BIDS JSON sidecars.

Multi-echo magnitude/phase come either as one 4D file (x, y, z, echo) — 5D adds a coil axis — or as one 3D file per
echo. Echo times and field strength come, in this order of precedence, from explicit arguments, or from BIDS JSON
sidecars (``<name>.json`` next to ``<name>.nii[.gz]``): ``EchoTime`` (seconds; a number for a per-echo file, a list
for a 4D file, or ``EchoTime1``, ``EchoTime2``, … keys) and ``MagneticFieldStrength`` (tesla). Per-echo files are
sorted by their sidecar ``EchoTime`` when every file has one; otherwise they are taken in the order given. The
affine is nibabel's (sform, else qform), i.e. voxel index → RAS mm.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import nibabel as nib
import numpy as np

from ..errors import QSMInputError
from ..gre import GREData
from .common import PathLike, as_path_list, build_gre, check_exists, check_image_size, check_same_geometry

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def is_nifti(path: PathLike) -> bool:
    return os.fspath(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: PathLike) -> Tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file: (data as float32 with scl_slope/inter applied, 4×4 voxel→RAS affine)."""
    p = check_exists(os.fspath(path), "NIfTI file")
    try:
        img = nib.load(p)
        check_image_size(img.shape, f"NIfTI file {p!r}")
        if not p.lower().endswith(".gz"):  # an uncompressed file must hold all the voxels its header announces
            need = int(img.dataobj.offset) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
            if os.path.getsize(p) < need:
                raise QSMInputError(f"NIfTI file {p!r} is truncated: {os.path.getsize(p)} bytes, its header needs "
                                    f"{need}")
        data = img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
    except QSMInputError:
        raise
    except (OSError, EOFError, ValueError, TypeError, OverflowError, MemoryError, zlib.error,
            nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as exc:
        raise QSMInputError(f"cannot read NIfTI file {p!r} (corrupt or not NIfTI): {exc}") from exc
    if data.ndim < 3:
        raise QSMInputError(f"NIfTI file {p!r} is {data.ndim}D with shape {data.shape}: a 3D volume is needed")
    if not np.all(np.isfinite(affine)):
        raise QSMInputError(f"NIfTI file {p!r}: its geometry (sform/qform, pixdim) contains NaN or Inf")
    return data, affine


def sidecar_path(path: PathLike) -> str:
    """The BIDS JSON sidecar path of a NIfTI file (``x.nii.gz`` → ``x.json``)."""
    p = os.fspath(path)
    for suffix in NIFTI_SUFFIXES:
        if p.lower().endswith(suffix):
            return p[: -len(suffix)] + ".json"
    return os.path.splitext(p)[0] + ".json"


def read_sidecar(path: PathLike) -> Dict[str, Any]:
    """The JSON sidecar of ``path`` as a dict ({} when there is none); a malformed one is an error naming it."""
    js = sidecar_path(path)
    if not os.path.exists(js):
        return {}
    try:
        with open(js, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise QSMInputError(f"cannot read JSON sidecar {js!r}: {exc}") from exc
    if not isinstance(meta, dict):
        raise QSMInputError(f"JSON sidecar {js!r} does not hold an object")
    return meta


def sidecar_echo_times(meta: Dict[str, Any]) -> Optional[List[float]]:
    """Echo times (s) from a sidecar: ``EchoTime`` (number or list) or ``EchoTime1``, ``EchoTime2``, … keys."""
    if "EchoTime" in meta:
        te = meta["EchoTime"]
        return [float(t) for t in te] if isinstance(te, (list, tuple)) else [float(te)]
    numbered = sorted((int(m.group(1)), float(v)) for k, v in meta.items()
                      if (m := re.fullmatch(r"EchoTime(\d+)", k)) is not None)
    return [v for _, v in numbered] or None


def _load_series(paths: List[str], role: str) -> Tuple[np.ndarray, np.ndarray, Optional[List[float]],
                                                          Optional[float], List[str]]:
    """Load one role (magnitude/phase): data with echo axis 3, affine, sidecar TEs, sidecar B0, files (TE order)."""
    if len(paths) == 1:
        data, affine = read_nifti(paths[0])
        if data.ndim == 3:
            data = data[..., None]
        if data.ndim not in (4, 5):
            raise QSMInputError(
                f"{role} file {paths[0]!r} is {data.ndim}D with shape {data.shape}: expected 3D (one echo), "
                "4D (x, y, z, echo) or 5D (x, y, z, echo, coil)"
            )
        meta = read_sidecar(paths[0])
        te = sidecar_echo_times(meta)
        if te is not None and len(te) != data.shape[3]:
            raise QSMInputError(
                f"sidecar {sidecar_path(paths[0])!r} lists {len(te)} echo times but {paths[0]!r} has "
                f"{data.shape[3]} echoes"
            )
        b0 = meta.get("MagneticFieldStrength")
        return data, affine, te, (float(b0) if b0 is not None else None), paths
    metas = [read_sidecar(p) for p in paths]
    tes = [sidecar_echo_times(m) for m in metas]
    have_te = all(t is not None and len(t) == 1 for t in tes)
    order = sorted(range(len(paths)), key=lambda i: tes[i][0]) if have_te else list(range(len(paths)))
    volumes, affine, shape0 = [], None, None
    for i in order:
        data, aff = read_nifti(paths[i])
        if data.ndim != 3:
            raise QSMInputError(
                f"{role} file {paths[i]!r} is {data.ndim}D with shape {data.shape}: one file per echo must be 3D"
            )
        if affine is None:
            affine, shape0 = aff, data.shape
        else:
            check_same_geometry(paths[order[0]], shape0, affine, paths[i], data.shape, aff)
        volumes.append(data)
    b0s = {float(m["MagneticFieldStrength"]) for m in metas if "MagneticFieldStrength" in m}
    if len(b0s) > 1:
        raise QSMInputError(f"the {role} sidecars give different MagneticFieldStrength values {sorted(b0s)}")
    te_list = [tes[i][0] for i in order] if have_te else None
    return np.stack(volumes, axis=3), affine, te_list, (b0s.pop() if b0s else None), [paths[i] for i in order]


def _merge(name: str, from_phase: Optional[Any], from_mag: Optional[Any]) -> Optional[Any]:
    if from_phase is not None and from_mag is not None and not np.allclose(from_phase, from_mag, rtol=1e-6):
        raise QSMInputError(f"{name} differs between the phase sidecars ({from_phase}) and magnitude ones ({from_mag})")
    return from_phase if from_phase is not None else from_mag


def read_nifti_gre(
    magnitude: Optional[Union[PathLike, Sequence[PathLike]]],
    phase: Union[PathLike, Sequence[PathLike]],
    te_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
    phase_rule: str = "auto",
    phase_sign: int = 1,
    nan_policy: str = "error",
) -> GREData:
    """Read a multi-echo GRE from NIfTI files into a :class:`GREData`.

    ``magnitude`` (optional) and ``phase`` are each one 3D/4D/5D file or a list of 3D per-echo files. Explicit
    ``te_s`` (seconds) and ``b0_tesla`` win over sidecar values. The phase is converted with
    :func:`~QSMLogic.io.phase_to_radians` (``phase_rule``); ``nan_policy`` is "error" or "mask" (NaN phase set
    to 0, validity mask in ``metadata["valid_mask"]``). ``metadata`` records the files, the scaling rule and its
    evidence, and where TE and B0 came from.
    """
    phase_paths = as_path_list(phase)
    ph, affine, te_p, b0_p, phase_files = _load_series(phase_paths, "phase")
    mag, te_m, b0_m, mag_files = None, None, None, []
    if magnitude is not None:
        mag, aff_m, te_m, b0_m, mag_files = _load_series(as_path_list(magnitude), "magnitude")
        check_same_geometry(f"magnitude {mag_files[0]!r}", mag.shape, aff_m, f"phase {phase_files[0]!r}",
                            ph.shape, affine)
        if mag.shape != ph.shape:
            raise QSMInputError(
                f"echo count mismatch: magnitude has shape {mag.shape} but phase has shape {ph.shape}"
            )
    te_side = _merge("EchoTime", te_p, te_m)
    b0_side = _merge("MagneticFieldStrength", b0_p, b0_m)
    metadata: Dict[str, Any] = {
        "format": "nifti",
        "source_files": {"magnitude": mag_files, "phase": phase_files},
        "te_source": "explicit" if te_s is not None else ("sidecar" if te_side is not None else None),
        "b0_source": "explicit" if b0_tesla is not None else ("sidecar" if b0_side is not None else None),
    }
    maker = read_sidecar(phase_files[0]).get("Manufacturer") or (
        read_sidecar(mag_files[0]).get("Manufacturer") if mag_files else None)
    if maker:
        metadata["manufacturer"] = str(maker)  # BIDS; a prior for the phase sign (QSMLogic.phase_sign)
    hint_file = sidecar_path(phase_files[0])
    return build_gre(
        ph, mag, te_s if te_s is not None else te_side, b0_tesla if b0_tesla is not None else b0_side, affine,
        phase_rule, phase_sign, nan_policy, metadata, phase_name=f"phase {phase_files[0]!r}",
        te_hint=f"a BIDS JSON sidecar with EchoTime in seconds (e.g. {hint_file!r})",
        b0_hint=f"a BIDS JSON sidecar with MagneticFieldStrength (e.g. {hint_file!r})",
    )
