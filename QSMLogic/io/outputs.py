"""Output folders that cannot be mistaken: checked before any computation, written atomically, with a manifest.

A run writes into one folder. Before anything is computed, :func:`plan_output_folder` refuses a path that is a
file, a folder holding one of the run's inputs, and a folder that is not empty, unless ``overwrite`` is set; then
only the files an earlier run of this tool wrote there (its manifest, ``provenance.json`` → ``"outputs"``, plus
the tool's own file names) are removed, right before the new files are written, so a phantom's
``roi_susceptibility.csv`` never sits beside a real subject's maps. Every file is written under a temporary name
in the same folder and renamed into place (:func:`atomic_path`): a reader never sees half a file, and an
interrupted run leaves no file under a final name. :func:`run_record` gives the command line, input checksums,
package version and source revision for the provenance.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

from .. import __version__
from ..errors import QSMInputError

#: The run's manifest: provenance.json lists every file the run wrote under ``"outputs"``.
MANIFEST = "provenance.json"
#: File names (other than ``<map>.nii.gz`` + ``<map>.json``) that a run of this tool writes.
RUN_FILES = (MANIFEST, "preview.png", "roi_susceptibility.csv")
_TMP_MARK = ".partial-"


@dataclass
class OutputPlan:
    """Where a run writes, and which files of an earlier run there it removes before writing."""

    folder: str
    remove: List[str] = field(default_factory=list)
    foreign: List[str] = field(default_factory=list)

    def clear_earlier_outputs(self) -> None:
        """Remove the earlier run's files (called after the computation succeeded, right before writing)."""
        for name in self.remove:
            p = os.path.join(self.folder, name)
            if os.path.lexists(p):
                os.remove(p)


def _is_tool_output(name: str, map_names: Sequence[str]) -> bool:
    stems = set(map_names)
    if name in RUN_FILES or _TMP_MARK in name:
        return True
    for suffix in (".nii.gz", ".nii", ".json"):
        if name.endswith(suffix) and name[: -len(suffix)] in stems:
            return True
    return False


def _manifest_outputs(folder: str) -> List[str]:
    """File names listed by an earlier run's manifest ([] when there is none or it is not ours)."""
    p = os.path.join(folder, MANIFEST)
    try:
        with open(p, encoding="utf-8") as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return []
    outs = rec.get("outputs") if isinstance(rec, dict) else None
    if not isinstance(outs, list):
        return []
    return [os.path.basename(str(o)) for o in outs]


def plan_output_folder(folder: str, input_paths: Sequence[str], overwrite: bool, map_names: Sequence[str],
                       flag: str = "--out") -> OutputPlan:
    """Check the output folder before any computation; create it when it does not exist.

    ``input_paths``: every file (or DICOM folder) the run reads; ``map_names``: the names of the maps a run of
    this tool may write (``<name>.nii.gz`` + ``<name>.json``). Raises :class:`QSMInputError`, naming ``flag``, for
    a path that is a file, a folder that holds an input, or a non-empty folder without ``overwrite``.
    """
    out = os.path.abspath(os.fspath(folder))
    if os.path.exists(out) and not os.path.isdir(out):
        raise QSMInputError(f"{flag} {folder!r} is a file, not a folder: give a new or empty folder for the results")
    real_out = os.path.realpath(out)
    for p in input_paths:
        rp = os.path.realpath(os.fspath(p))
        if rp == real_out or os.path.dirname(rp) == real_out or rp.startswith(real_out + os.sep):
            raise QSMInputError(
                f"{flag} {folder!r} holds the input {os.fspath(p)!r}: results written there could replace or be "
                "mistaken for the inputs; give another folder"
            )
        if real_out.startswith(rp + os.sep) or real_out == rp:
            raise QSMInputError(f"{flag} {folder!r} lies inside the input {os.fspath(p)!r}; give another folder")
    plan = OutputPlan(out)
    if not os.path.isdir(out):
        try:
            os.makedirs(out)
        except OSError as exc:
            raise QSMInputError(f"cannot create the {flag} folder {folder!r}: {exc.strerror or exc}") from exc
        return plan
    if not os.access(out, os.W_OK):
        raise QSMInputError(f"the {flag} folder {folder!r} is not writable")
    present = sorted(os.listdir(out))
    if not present:
        return plan
    if not overwrite:
        shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
        raise QSMInputError(
            f"{flag} {folder!r} is not empty ({shown}): give a new or empty folder, or add --overwrite to replace "
            "the results of an earlier run there"
        )
    listed = set(_manifest_outputs(out))
    for name in present:
        if os.path.isdir(os.path.join(out, name)):
            plan.foreign.append(name)
        elif name in listed or _is_tool_output(name, map_names):
            plan.remove.append(name)
        else:
            plan.foreign.append(name)
    return plan


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder (same suffix, so writers pick the same format); on success it is
    renamed to ``path`` in one step, on failure removed."""
    folder, name = os.path.split(os.path.abspath(os.fspath(path)))
    suffix = ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]
    stem = name[: len(name) - len(suffix)] if suffix else name
    tmp = os.path.join(folder, f".{stem}{_TMP_MARK}{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, os.path.join(folder, name))
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_text_atomic(path: str, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def input_checksums(paths: Sequence[str]) -> Dict[str, str]:
    """SHA-256 of every input file; a folder (DICOM series) contributes each file under it."""
    out: Dict[str, str] = {}
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, _, names in sorted(os.walk(p)):
                for n in sorted(names):
                    f = os.path.join(root, n)
                    out[f] = file_sha256(f)
        elif os.path.isfile(p):
            out[p] = file_sha256(p)
    return out


def source_revision() -> str:
    """The git commit the package runs from (``<sha>`` or ``<sha>+dirty``), or why it is unknown."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no", "--", "."],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def run_record(argv: Optional[Sequence[str]], input_paths: Sequence[str], prog: str = "susceptibility-mri"
               ) -> Dict[str, object]:
    """Provenance of one command-line run: the command line, input checksums, version and source revision."""
    return {
        "command_line": shlex.join([prog, *(argv or [])]),
        "working_directory": os.getcwd(),
        "input_sha256": input_checksums(input_paths),
        "version": __version__,
        "source_revision": source_revision(),
    }
