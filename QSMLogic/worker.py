"""Background worker: ``python -m QSMLogic.worker INPUT.npz CONFIG.json OUTDIR``.

The Slicer widget runs the pipeline in this separate process (as SlicerMONAIAuto3DSeg does) so the GUI never
freezes; it polls the standard output for lines ``PROGRESS <fraction> <label>`` and kills the process to cancel.
INPUT.npz holds ``phase_rad``, ``magnitude``, ``te_s``, ``b0_tesla``, ``affine``, ``b0_direction`` and optionally
``mask``/``labels`` and ``phase_sign``; OUTDIR receives ``outputs.npz`` (every 3D map) and ``provenance.json``.
Errors go to standard error and give a non-zero exit code (2 for bad input).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np

from .errors import QSMInputError
from .gre import GREData
from .pipeline import PipelineConfig, run_pipeline


def main(argv: Optional[List[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print("usage: python -m QSMLogic.worker INPUT.npz CONFIG.json OUTDIR", file=sys.stderr)
        return 2
    inp, cfg_path, outdir = Path(args[0]), Path(args[1]), Path(args[2])
    try:
        with np.load(inp, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        gre = GREData(
            phase_rad=d["phase_rad"], magnitude=d.get("magnitude"), te_s=d["te_s"], b0_tesla=float(d["b0_tesla"]),
            affine=d["affine"], b0_direction=d.get("b0_direction"), phase_sign=int(d.get("phase_sign", 1)),
        )
        cfg = PipelineConfig.from_dict(json.loads(cfg_path.read_text()))

        def progress(fraction: float, label: str) -> None:
            print(f"PROGRESS {fraction:.4f} {label}", flush=True)

        res = run_pipeline(gre, cfg, mask=d.get("mask"), labels=d.get("labels"), progress=progress,
                           log=lambda s: print(f"LOG {s}", flush=True))
    except QSMInputError as exc:
        print(f"input error: {exc}", file=sys.stderr)
        return 2
    outdir.mkdir(parents=True, exist_ok=True)
    np.savez(outdir / "outputs.npz", **res.outputs)
    (outdir / "provenance.json").write_text(res.provenance_json())
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
