"""Find every multi-echo GRE run of a BIDS dataset: subjects, sessions and runs, NIfTI or DICOM.

NIfTI runs follow the BIDS specification (1.9, "Multi-echo GRE": suffix ``MEGRE``, entities ``echo`` and
``part``), e.g. ``sub-01/ses-1/anat/sub-01_ses-1_run-1_echo-2_part-phase_MEGRE.nii.gz``, with the common variants:

* suffix ``MEGRE``, ``GRE``, ``T2starw`` or ``swi`` (the last from the BIDS extension proposal BEP004);
* one file per echo (``_echo-<n>``) or one 4D file holding every echo (no ``echo`` entity);
* the part as ``part-mag`` / ``part-phase`` or, in older datasets, as the suffix ``magnitude`` / ``phase``;
* the files in the ``anat`` or ``swi`` datatype folder, under ``sub-*`` or ``sub-*/ses-*``.

Files of one run share every entity but ``echo`` and ``part``. Echo times and field strength come from the JSON
sidecars (``EchoTime``, ``MagneticFieldStrength``), read by :func:`~QSMLogic.io.load_gre`.

DICOM runs: a folder named ``dicom`` (any case) directly in a subject or session folder holds one run's magnitude
and phase series (in any sub-folders); :func:`~QSMLogic.io.read_dicom_gre` tells them apart.

A run whose files are incomplete (echo numbers with gaps, magnitude and phase echoes that differ, no phase) is
returned with ``problem`` set: the cohort records it as a failed run without stopping the others.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import QSMInputError

#: BIDS suffixes of multi-echo GRE images accepted (BIDS 1.9 ``MEGRE``, older ``GRE``/``T2starw``, BEP004 ``swi``).
GRE_SUFFIXES = ("MEGRE", "GRE", "T2starw", "swi")
#: Older datasets name the part in the suffix instead of the ``part`` entity.
LEGACY_PART_SUFFIXES = {"magnitude": "mag", "phase": "phase"}
#: Datatype folders searched.
DATATYPE_FOLDERS = ("anat", "swi")
#: Entity order of BIDS file names (the ones that can precede ``echo``/``part`` in a GRE file name).
_ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "mod", "echo", "flip", "inv", "mt", "part")
_NIFTI = (".nii.gz", ".nii")
_KV = re.compile(r"^([a-zA-Z0-9]+)-([a-zA-Z0-9]+)$")


@dataclass
class RunSpec:
    """One multi-echo GRE run: where its files are and how its derivatives will be named.

    ``entities``: the BIDS entities shared by the run's files (``sub``, ``ses``, ``acq``, ``run`` ...);
    ``magnitude``/``phase``: per-echo files in echo order (one 4D file, or a DICOM folder); ``kind``: "nifti" or
    "dicom"; ``problem``: why the run cannot be processed (None when it can).
    """

    subject: str
    session: Optional[str]
    entities: Dict[str, str]
    magnitude: List[str] = field(default_factory=list)
    phase: List[str] = field(default_factory=list)
    kind: str = "nifti"
    problem: Optional[str] = None

    @property
    def stem(self) -> str:
        """The BIDS file-name stem of the run's derivatives, e.g. ``sub-01_ses-1_run-1``."""
        keys = sorted(self.entities, key=lambda k: _ENTITY_ORDER.index(k) if k in _ENTITY_ORDER else 99)
        return "_".join(f"{k}-{self.entities[k]}" for k in keys)

    @property
    def input_paths(self) -> List[str]:
        return list(dict.fromkeys(self.magnitude + self.phase))

    def derivative_folder(self, out_root: str) -> str:
        """``<out_root>/sub-<label>[/ses-<label>]/anat``."""
        parts = [out_root, f"sub-{self.subject}"] + ([f"ses-{self.session}"] if self.session else []) + ["anat"]
        return os.path.join(*parts)


def parse_bids_name(name: str) -> Optional[Tuple[Dict[str, str], str]]:
    """(entities, suffix) of a BIDS NIfTI file name, or None when the name is not one."""
    ext = next((e for e in _NIFTI if name.endswith(e)), None)
    if ext is None:
        return None
    tokens = name[: -len(ext)].split("_")
    if len(tokens) < 2 or not tokens[0].startswith("sub-"):
        return None
    entities: Dict[str, str] = {}
    for tok in tokens[:-1]:
        m = _KV.match(tok)
        if m is None:
            return None
        entities[m.group(1)] = m.group(2)
    return entities, tokens[-1]


def _gre_file(name: str) -> Optional[Tuple[Dict[str, str], str, Optional[int]]]:
    """(run entities, part "mag"/"phase", echo number or None) of a GRE file name; None for other files."""
    parsed = parse_bids_name(name)
    if parsed is None:
        return None
    entities, suffix = parsed
    if suffix in LEGACY_PART_SUFFIXES and "part" not in entities:
        part = LEGACY_PART_SUFFIXES[suffix]
    elif suffix in GRE_SUFFIXES and entities.get("part") in ("mag", "phase"):
        part = entities["part"]
    else:
        return None
    echo = entities.get("echo")
    if echo is not None and not echo.isdigit():
        return None
    run_entities = {k: v for k, v in entities.items() if k not in ("echo", "part")}
    return run_entities, part, None if echo is None else int(echo)


def _echo_list(files: Dict[Optional[int], str], what: str) -> Tuple[List[str], Optional[str]]:
    """The files in echo order, or why they cannot form a run."""
    if None in files:
        if len(files) > 1:
            return [], f"{what}: a file without an echo number beside per-echo files"
        return [files[None]], None
    echoes = sorted(files)  # type: ignore[type-var]
    if echoes != list(range(1, len(echoes) + 1)):
        return [], f"{what}: echo numbers {echoes} are not 1..{len(echoes)} (a missing echo file?)"
    return [files[e] for e in echoes], None


def _nifti_runs(folder: str, subject: str, session: Optional[str]) -> List[RunSpec]:
    groups: Dict[Tuple[Tuple[str, str], ...], Dict[str, Dict[Optional[int], str]]] = {}
    duplicates: Dict[Tuple[Tuple[str, str], ...], str] = {}
    for name in sorted(os.listdir(folder)):
        info = _gre_file(name)
        if info is None:
            continue
        ents, part, echo = info
        if ents.get("sub") != subject or ents.get("ses") != session:
            continue
        key = tuple(ents.items())
        files = groups.setdefault(key, {"mag": {}, "phase": {}})[part]
        if echo in files:
            duplicates[key] = f"two {part} files for echo {echo}: {os.path.basename(files[echo])} and {name}"
        files[echo] = os.path.join(folder, name)
    runs = []
    for key, parts in groups.items():
        spec = RunSpec(subject, session, dict(key))
        spec.phase, p_problem = _echo_list(parts["phase"], "phase")
        spec.magnitude, m_problem = _echo_list(parts["mag"], "magnitude")
        if key in duplicates:
            spec.problem = duplicates[key]
        elif not parts["phase"]:
            spec.problem = "no phase files (part-phase) for this run: QSM and SWI need the phase"
        elif not parts["mag"]:
            spec.problem = "no magnitude files (part-mag) for this run: the brain mask needs the magnitude"
        elif p_problem or m_problem:
            spec.problem = p_problem or m_problem
        elif len(spec.phase) != len(spec.magnitude):
            spec.problem = (f"{len(spec.magnitude)} magnitude file(s) but {len(spec.phase)} phase file(s): "
                            "every echo needs both")
        runs.append(spec)
    return runs


def _dicom_run(folder: str, subject: str, session: Optional[str]) -> Optional[RunSpec]:
    has_files = any(names for _, _, names in os.walk(folder))
    if not has_files:
        return None
    ents = {"sub": subject, **({"ses": session} if session else {}), "acq": "dicom"}
    return RunSpec(subject, session, ents, magnitude=[], phase=[folder], kind="dicom")


def _session_runs(folder: str, subject: str, session: Optional[str]) -> List[RunSpec]:
    runs: List[RunSpec] = []
    for entry in sorted(os.listdir(folder)):
        path = os.path.join(folder, entry)
        if not os.path.isdir(path):
            continue
        if entry in DATATYPE_FOLDERS:
            runs += _nifti_runs(path, subject, session)
        elif entry.lower() == "dicom":
            run = _dicom_run(path, subject, session)
            if run is not None:
                runs.append(run)
    return runs


def normalise_labels(labels: Optional[Sequence[str]], prefix: str = "sub-") -> Optional[List[str]]:
    """Participant labels with or without the ``sub-`` prefix → bare labels (None: all)."""
    if not labels:
        return None
    return [lab[len(prefix):] if lab.startswith(prefix) else lab for lab in labels]


def discover_runs(bids_root: str, participant_labels: Optional[Sequence[str]] = None,
                  session_labels: Optional[Sequence[str]] = None) -> List[RunSpec]:
    """Every multi-echo GRE run under ``bids_root``, sorted by subject, session and run.

    ``participant_labels`` / ``session_labels`` (with or without ``sub-``/``ses-``) select subjects and sessions.
    Raises :class:`QSMInputError` when the root is not a folder, holds no ``sub-*`` folder, a requested participant
    is missing, or no run is found.
    """
    root = os.fspath(bids_root)
    if not os.path.isdir(root):
        raise QSMInputError(f"BIDS root {root!r} is not a folder")
    subjects = sorted(d[4:] for d in os.listdir(root) if d.startswith("sub-") and os.path.isdir(os.path.join(root, d)))
    if not subjects:
        raise QSMInputError(f"BIDS root {root!r} holds no sub-* folder: give the dataset's top folder")
    wanted = normalise_labels(participant_labels)
    if wanted is not None:
        missing = [w for w in wanted if w not in subjects]
        if missing:
            raise QSMInputError(f"--participant-label {' '.join(missing)}: no such subject in {root!r} "
                                f"(subjects: {' '.join(subjects[:10])}{' ...' if len(subjects) > 10 else ''})")
        subjects = [s for s in subjects if s in wanted]
    sessions_wanted = normalise_labels(session_labels, "ses-")
    runs: List[RunSpec] = []
    for sub in subjects:
        sub_dir = os.path.join(root, f"sub-{sub}")
        sessions = sorted(d[4:] for d in os.listdir(sub_dir)
                          if d.startswith("ses-") and os.path.isdir(os.path.join(sub_dir, d)))
        if sessions:
            for ses in sessions:
                if sessions_wanted is None or ses in sessions_wanted:
                    runs += _session_runs(os.path.join(sub_dir, f"ses-{ses}"), sub, ses)
        elif sessions_wanted is None:
            runs += _session_runs(sub_dir, sub, None)
    if not runs:
        raise QSMInputError(f"no multi-echo GRE run found under {root!r}: expected files like "
                            "sub-<label>/[ses-<label>/]anat/sub-<label>_echo-<n>_part-<mag|phase>_MEGRE.nii.gz "
                            "(or a dicom folder in a subject or session folder)")
    return runs
