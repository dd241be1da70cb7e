"""One entry point for reading a GRE acquisition from NIfTI, NRRD or DICOM files (:func:`load_gre`), and one for a
single 3D map with its geometry (:func:`read_volume`: label maps, R2/T2 maps, χ maps, anatomy)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import QSMInputError
from ..gre import GREData
from .common import PathLike, as_path_list, build_gre, check_same_geometry
from .dicom import read_dicom_gre
from .nifti import is_nifti, read_nifti, read_nifti_gre
from .nrrd import is_nrrd, read_nrrd

Paths = Union[PathLike, Sequence[PathLike]]


def read_volume(path: str, what: str) -> Tuple[np.ndarray, np.ndarray]:
    """(3D array, 4×4 RAS affine) of one NIfTI or NRRD file; a trailing axis of length 1 is dropped. ``what`` names
    the file in error messages (e.g. ``"--labels"``, ``"R2 map"``)."""
    if is_nifti(path):
        data, affine = read_nifti(path)
    elif is_nrrd(path):
        data, affine, _ = read_nrrd(path)
    else:
        raise QSMInputError(f"{what} {path!r}: give a NIfTI (.nii/.nii.gz) or NRRD (.nrrd/.nhdr) file")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise QSMInputError(f"{what} {path!r} must be one 3D volume, got shape {data.shape}")
    return data, affine


def _format_of(paths: List[str]) -> str:
    if all(is_nifti(p) for p in paths):
        return "nifti"
    if all(is_nrrd(p) for p in paths):
        return "nrrd"
    if any(is_nifti(p) or is_nrrd(p) for p in paths):
        raise QSMInputError(f"mixed file types {paths}: give NIfTI, NRRD or DICOM files, not a mixture")
    return "dicom"


def _read_nrrd_role(paths: List[str], role: str):
    volumes, affine, header0 = [], None, None
    for p in paths:
        data, aff, header = read_nrrd(p)
        if len(paths) > 1 and data.ndim != 3:
            raise QSMInputError(f"{role} file {p!r} is {data.ndim}D: one file per echo must be 3D")
        if affine is None:
            affine, header0 = aff, header
        else:
            check_same_geometry(paths[0], volumes[0].shape, affine, p, data.shape, aff)
        volumes.append(data)
    data = np.stack(volumes, axis=3) if len(paths) > 1 else volumes[0]
    return (data if data.ndim == 4 else data[..., None]), affine, header0


def read_nrrd_gre(
    magnitude: Optional[Paths],
    phase: Paths,
    te_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
    phase_rule: str = "auto",
    phase_sign: int = 1,
    nan_policy: str = "error",
) -> GREData:
    """Read a multi-echo GRE from NRRD files (one 4D file or 3D files per echo, in echo order) into GREData.

    Echo times and B0 come from the arguments, else from the phase file's ``echo_times_s``/``b0_tesla`` fields.
    """
    phase_paths = as_path_list(phase)
    ph, affine, header = _read_nrrd_role(phase_paths, "phase")
    mag, mag_paths = None, []
    if magnitude is not None:
        mag_paths = as_path_list(magnitude)
        mag, aff_m, _ = _read_nrrd_role(mag_paths, "magnitude")
        check_same_geometry(f"magnitude {mag_paths[0]!r}", mag.shape, aff_m, f"phase {phase_paths[0]!r}",
                            ph.shape, affine)
    te_header = header.get("echo_times_s") if len(phase_paths) == 1 else None
    b0_header = header.get("b0_tesla")
    metadata: Dict[str, Any] = {
        "format": "nrrd",
        "source_files": {"magnitude": mag_paths, "phase": phase_paths},
        "te_source": "explicit" if te_s is not None else ("nrrd_header" if te_header is not None else None),
        "b0_source": "explicit" if b0_tesla is not None else ("nrrd_header" if b0_header is not None else None),
    }
    return build_gre(
        ph, mag, te_s if te_s is not None else te_header, b0_tesla if b0_tesla is not None else b0_header, affine,
        phase_rule, phase_sign, nan_policy, metadata, phase_name=f"phase {phase_paths[0]!r}",
        te_hint="an 'echo_times_s' field in the NRRD header", b0_hint="a 'b0_tesla' field in the NRRD header",
    )


def load_gre(
    magnitude: Optional[Paths] = None,
    phase: Optional[Paths] = None,
    te_s: Optional[Sequence[float]] = None,
    b0_tesla: Optional[float] = None,
    phase_rule: str = "auto",
    phase_sign: int = 1,
    nan_policy: str = "error",
) -> GREData:
    """Read a multi-echo GRE acquisition from files, dispatching on the file type.

    ``magnitude``/``phase`` are a file, a list of per-echo files, or (DICOM) a folder or list of files; for DICOM
    the magnitude and phase may be the same folder, or only one of them given when it holds both kinds.
    ``.nii``/``.nii.gz`` → :func:`~QSMLogic.io.nifti.read_nifti_gre`, ``.nrrd``/``.nhdr`` →
    :func:`read_nrrd_gre`, anything else → :func:`~QSMLogic.io.dicom.read_dicom_gre`. Explicit ``te_s`` (s) and
    ``b0_tesla`` (T) win over values in the files. ``phase_rule``: see :func:`~QSMLogic.io.phase_to_radians`.
    ``phase_sign``: +1, or −1 for vendors whose phase decreases with frequency. ``nan_policy``: "error" (default)
    or "mask" (NaN phase voxels set to 0; ``metadata["valid_mask"]`` holds the validity mask).
    """
    if magnitude is None and phase is None:
        raise QSMInputError("no input given: pass phase=... (and magnitude=...) files or a DICOM folder")
    paths = as_path_list(phase if phase is not None else magnitude)
    kind = _format_of(paths + (as_path_list(magnitude) if magnitude is not None else []))
    kwargs = dict(te_s=te_s, b0_tesla=b0_tesla, phase_rule=phase_rule, phase_sign=phase_sign,
                  nan_policy=nan_policy)
    if kind == "dicom":
        sources = paths if magnitude is None or phase is None else paths + [
            p for p in as_path_list(magnitude) if p not in paths]
        return read_dicom_gre(sources, **kwargs)
    if phase is None:
        raise QSMInputError(f"no phase file given (magnitude {as_path_list(magnitude)}): pass phase=...")
    reader = read_nifti_gre if kind == "nifti" else read_nrrd_gre
    return reader(magnitude, phase, **kwargs)
