"""Files and output lines exchanged with the background worker ``python -m QSMLogic.worker``.

The QSM widget runs the pipeline in a separate PythonSlicer process (as SlicerMONAIAuto3DSeg does) so the GUI never
freezes: it writes the acquisition with :func:`write_worker_input`, starts :func:`worker_command` with QProcess,
turns each standard-output line into a progress update with :func:`parse_worker_line`, kills the process to cancel,
and reads the maps back with :func:`read_worker_output`. No Qt here, so pytest runs the whole exchange.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from QSMLogic.errors import QSMInputError
from QSMLogic.gre import GREData

INPUT_FILE = "input.npz"
CONFIG_FILE = "config.json"
OUTPUT_DIR = "output"


@dataclass(frozen=True)
class WorkerEvent:
    """One parsed line of the worker's standard output: kind is "progress", "log", "done" or "text"."""

    kind: str
    fraction: float = 0.0
    text: str = ""


def python_executable() -> str:
    """PythonSlicer when on PATH (inside Slicer), else the running interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def write_worker_input(workdir: str, gre: GREData, config: Dict[str, Any], mask: Optional[np.ndarray] = None,
                       ) -> Tuple[str, str, str]:
    """Write INPUT.npz and CONFIG.json for the worker into ``workdir``; return (input, config, output dir) paths."""
    os.makedirs(workdir, exist_ok=True)
    inp = os.path.join(workdir, INPUT_FILE)
    arrays: Dict[str, Any] = {
        "phase_rad": gre.phase_rad, "te_s": np.asarray(gre.te_s, dtype=np.float64),
        "b0_tesla": np.float64(gre.b0_tesla), "affine": np.asarray(gre.affine, dtype=np.float64),
        "b0_direction": np.asarray(gre.b0_direction, dtype=np.float64), "phase_sign": np.int64(1),
    }
    if gre.magnitude is not None:
        arrays["magnitude"] = gre.magnitude
    if mask is not None:
        arrays["mask"] = np.asarray(mask, dtype=bool)
    np.savez(inp, **arrays)
    cfg = os.path.join(workdir, CONFIG_FILE)
    with open(cfg, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return inp, cfg, os.path.join(workdir, OUTPUT_DIR)


def worker_command(input_path: str, config_path: str, output_dir: str,
                   python: Optional[str] = None) -> List[str]:
    """Program and arguments that run the worker (the library must be importable by that interpreter)."""
    return [python or python_executable(), "-m", "QSMLogic.worker", input_path, config_path, output_dir]


def worker_environment(library_root: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for the worker with ``library_root`` (the folder holding QSMLogic/) first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = library_root + (os.pathsep + old if old else "")
    return env


def parse_worker_line(line: str) -> WorkerEvent:
    """``PROGRESS <fraction> <label>`` → progress event; ``LOG <text>`` → log; ``DONE`` → done; else text."""
    s = line.rstrip("\r\n")
    if s.startswith("PROGRESS "):
        parts = s.split(" ", 2)
        try:
            fraction = min(1.0, max(0.0, float(parts[1])))
        except (IndexError, ValueError):
            return WorkerEvent("text", text=s)
        return WorkerEvent("progress", fraction, parts[2] if len(parts) > 2 else "")
    if s.startswith("LOG "):
        return WorkerEvent("log", text=s[4:])
    if s.strip() == "DONE":
        return WorkerEvent("done", 1.0)
    return WorkerEvent("text", text=s)


def read_worker_output(output_dir: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The maps (outputs.npz) and provenance (provenance.json) the worker wrote into ``output_dir``."""
    npz = os.path.join(output_dir, "outputs.npz")
    prov = os.path.join(output_dir, "provenance.json")
    if not (os.path.isfile(npz) and os.path.isfile(prov)):
        raise QSMInputError(f"the worker wrote no results into {output_dir} (outputs.npz/provenance.json missing)")
    with np.load(npz, allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    with open(prov, encoding="utf-8") as f:
        provenance = json.load(f)
    return outputs, provenance


__all__ = [
    "WorkerEvent", "parse_worker_line", "python_executable", "read_worker_output", "worker_command",
    "worker_environment", "write_worker_input",
]
