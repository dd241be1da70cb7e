"""Background worker ``python -m QSMLogic.worker INPUT.npz CONFIG.json OUTDIR`` and both halves of its file protocol.

The Slicer modules run the pipeline in this separate process (as SlicerMONAIAuto3DSeg does) so the GUI never
freezes. The caller writes the inputs with :func:`write_worker_input`, starts :func:`worker_command`, turns each
standard-output line into an event with :func:`parse_worker_line` (``PROGRESS <fraction> <label>``, ``LOG <text>``,
``DONE``) and reads the maps back with :func:`read_worker_output`. The worker reads the inputs with
:func:`read_worker_input` and writes the results with :func:`write_worker_output`.

INPUT.npz holds ``phase_rad`` as given to :class:`~QSMLogic.gre.GREData` (before the sign flip) with ``phase_sign``,
``magnitude``, ``te_s``, ``b0_tesla`` (NaN: unknown, for SWI-only runs), ``affine``, ``b0_direction``, optionally
``mask``/``labels`` and ``r2_hz`` (the R2 map on the data's grid, for source separation), ``metadata_json``
(the GREData metadata, the manufacturer for the phase-sign prior included) and ``phase_sign_auto``, so the worker
rebuilds the same GREData, decides or checks the phase sign as an in-process run does
(:func:`QSMLogic.phase_sign.run_with_phase_sign_choice`) and its provenance matches. A file without
``phase_sign_auto`` (an older caller) is run with its sign checked, never flipped.
OUTDIR receives ``outputs.npz`` (every 3D map) and ``provenance.json``.

Stopping: the worker checks between stages (and wherever the pipeline checks ``cancel``) whether the file
:data:`STOP_FILE` exists next to INPUT.npz, INPUT.npz is gone (its folder was deleted) or its parent process has
exited (a killed ``PythonSlicer`` launcher leaves its ``python-real`` child behind), and then exits with
:data:`EXIT_CANCELLED` without writing anything; it never recreates a deleted folder. Bad input gives
:data:`EXIT_INPUT_ERROR` with the reason on standard error.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .errors import QSMCancelled, QSMInputError
from .gre import GREData
from .phase_sign import run_with_phase_sign_choice
from .pipeline import PipelineConfig, PipelineResult

INPUT_FILE = "input.npz"
CONFIG_FILE = "config.json"
OUTPUT_DIR = "output"
OUTPUTS_FILE = "outputs.npz"
PROVENANCE_FILE = "provenance.json"
#: Created next to INPUT.npz to ask a running worker to stop.
STOP_FILE = "stop"

EXIT_OK = 0
EXIT_INPUT_ERROR = 2
EXIT_CANCELLED = 3


@dataclass(frozen=True)
class WorkerEvent:
    """One parsed line of the worker's standard output: kind is "progress", "log", "done" or "text"."""

    kind: str
    fraction: float = 0.0
    text: str = ""


def write_worker_input(workdir: str, gre: GREData, config: Dict[str, Any], mask: Optional[np.ndarray] = None,
                       labels: Optional[np.ndarray] = None, r2_hz: Optional[np.ndarray] = None,
                       phase_sign_auto: bool = False) -> Tuple[str, str, str]:
    """Write INPUT.npz and CONFIG.json into ``workdir`` (created if needed); return (input, config, output dir).

    ``gre.phase_rad`` already carries ``gre.phase_sign``; the file holds the phase before the flip and the sign, so
    the worker's GREData (and the provenance it records) is the caller's. ``phase_sign_auto``: the worker decides
    the sign from the data (starting from the vendor prior, else ``gre.phase_sign``) instead of only checking it.
    """
    os.makedirs(workdir, exist_ok=True)
    arrays: Dict[str, Any] = {
        "phase_rad": gre.phase_rad if gre.phase_sign == 1 else np.negative(gre.phase_rad),
        "phase_sign": np.int64(gre.phase_sign),
        "te_s": np.asarray(gre.te_s, dtype=np.float64),
        "b0_tesla": np.float64(np.nan if gre.b0_tesla is None else gre.b0_tesla),
        "affine": np.asarray(gre.affine, dtype=np.float64),
        "b0_direction": np.asarray(gre.b0_direction, dtype=np.float64),
        "metadata_json": np.asarray(json.dumps(gre.metadata, default=str)),
        "phase_sign_auto": np.bool_(phase_sign_auto),
    }
    if gre.magnitude is not None:
        arrays["magnitude"] = gre.magnitude
    if mask is not None:
        arrays["mask"] = np.asarray(mask, dtype=bool)
    if labels is not None:
        arrays["labels"] = np.asarray(labels)
    if r2_hz is not None:
        arrays["r2_hz"] = np.asarray(r2_hz, dtype=np.float32)
    inp = os.path.join(workdir, INPUT_FILE)
    np.savez(inp, **arrays)
    cfg = os.path.join(workdir, CONFIG_FILE)
    with open(cfg, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return inp, cfg, os.path.join(workdir, OUTPUT_DIR)


def read_worker_input(input_path: str, config_path: str
                      ) -> Tuple[GREData, PipelineConfig, Optional[np.ndarray], Optional[np.ndarray],
                                 Optional[np.ndarray], bool]:
    """The GREData, configuration, mask, labels, R2 map (Hz) and phase-sign mode (True: decide from the data) that
    :func:`write_worker_input` wrote."""
    with np.load(input_path, allow_pickle=False) as z:
        d = {k: z[k] for k in z.files}
    metadata = json.loads(str(d["metadata_json"])) if "metadata_json" in d else {}
    b0 = float(d["b0_tesla"])
    gre = GREData(phase_rad=d["phase_rad"], magnitude=d.get("magnitude"), te_s=d["te_s"],
                  b0_tesla=None if np.isnan(b0) else b0, affine=d["affine"], b0_direction=d.get("b0_direction"),
                  phase_sign=int(d.get("phase_sign", 1)), metadata=metadata)
    with open(config_path, encoding="utf-8") as f:
        config = PipelineConfig.from_dict(json.load(f))
    return gre, config, d.get("mask"), d.get("labels"), d.get("r2_hz"), bool(d.get("phase_sign_auto", False))


def write_worker_output(output_dir: str, result: PipelineResult) -> None:
    """Write the maps and provenance into ``output_dir``; its parent folder must exist (it is never recreated)."""
    try:
        os.mkdir(output_dir)  # not makedirs: a deleted parent folder means the run was abandoned
    except FileExistsError:
        pass
    except FileNotFoundError:
        raise QSMCancelled(f"the worker's folder {os.path.dirname(os.path.abspath(output_dir))} was removed") from None
    np.savez(os.path.join(output_dir, OUTPUTS_FILE), **result.outputs)
    with open(os.path.join(output_dir, PROVENANCE_FILE), "w", encoding="utf-8") as f:
        f.write(result.provenance_json())


def read_worker_output(output_dir: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """The maps and provenance :func:`write_worker_output` wrote into ``output_dir``."""
    npz = os.path.join(output_dir, OUTPUTS_FILE)
    prov = os.path.join(output_dir, PROVENANCE_FILE)
    if not (os.path.isfile(npz) and os.path.isfile(prov)):
        raise QSMInputError(f"the worker wrote no results into {output_dir} ({OUTPUTS_FILE}/{PROVENANCE_FILE} "
                            "missing)")
    with np.load(npz, allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    with open(prov, encoding="utf-8") as f:
        provenance = json.load(f)
    return outputs, provenance


def worker_command(input_path: str, config_path: str, output_dir: str, python: str) -> List[str]:
    """Program and arguments that run the worker with ``python`` (which must be able to import QSMLogic)."""
    return [python, "-m", "QSMLogic.worker", input_path, config_path, output_dir]


def request_stop(input_path: str) -> None:
    """Ask the worker reading ``input_path`` to stop at its next check (no-op once its folder is gone)."""
    folder = os.path.dirname(os.path.abspath(input_path))
    if os.path.isdir(folder):
        Path(folder, STOP_FILE).touch()


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


def stop_check(input_path: str, parent_pid: int):
    """The worker's ``cancel`` callback: true once a stop is requested, the input is gone or the parent exited."""
    stop = os.path.join(os.path.dirname(os.path.abspath(input_path)), STOP_FILE)

    def cancel() -> bool:
        return os.path.exists(stop) or not os.path.exists(input_path) or os.getppid() != parent_pid

    return cancel


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m QSMLogic.worker INPUT.npz CONFIG.json OUTDIR", file=sys.stderr)
        return EXIT_INPUT_ERROR
    inp, cfg_path, outdir = args
    cancel = stop_check(inp, os.getppid())
    try:
        gre, cfg, mask, labels, r2_hz, sign_auto = read_worker_input(inp, cfg_path)

        def progress(fraction: float, label: str) -> None:
            print(f"PROGRESS {fraction:.4f} {label}", flush=True)

        res = run_with_phase_sign_choice(gre, cfg, auto=sign_auto, mask=mask, labels=labels, progress=progress,
                                         cancel=cancel, log=lambda s: print(f"LOG {s}", flush=True), r2_hz=r2_hz)
        if cancel():
            raise QSMCancelled("stopped before writing the results")
        write_worker_output(outdir, res)
    except QSMCancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except QSMInputError as exc:
        print(f"input error: {exc}", file=sys.stderr)
        return EXIT_INPUT_ERROR
    print("DONE", flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
