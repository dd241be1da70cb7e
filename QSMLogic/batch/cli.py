"""``susceptibility-mri batch BIDS_ROOT --out DERIVATIVES``: every multi-echo GRE run of a BIDS dataset on Dask.

Writes BIDS-derivative outputs per run (:mod:`QSMLogic.batch.run`), ``dataset_description.json`` and the group
table (:mod:`QSMLogic.batch.group`) into ``--out``. Runs done with the same configuration are skipped; failed runs
are listed (``<out>/logs``) and make the exit status 1.
"""
from __future__ import annotations

import argparse
import json
import os
from ..errors import QSMInputError
from ..io.phase_scaling import PHASE_RULES


def add_batch_parser(sub) -> None:
    """Add the ``batch`` subcommand to the main parser's subparsers."""
    from ..cli import add_method_args  # the main command line imports this module: imported when it is complete

    p = sub.add_parser("batch", help="a BIDS dataset's multi-echo GRE runs on Dask (resumable, with a group table)",
                       description="Process every multi-echo GRE run of a BIDS dataset (QSM, R2*, SWI and the "
                                   "deep-grey-nuclei χ) on a Dask LocalCluster or an existing Dask scheduler.")
    p.add_argument("bids_root", help="the BIDS dataset's top folder (holding sub-* folders)")
    p.add_argument("--out", required=True, help="derivatives folder (e.g. BIDS_ROOT/derivatives/qsm)")
    p.add_argument("--participant-label", nargs="+", help="only these subjects (with or without 'sub-')")
    p.add_argument("--session-label", nargs="+", help="only these sessions (with or without 'ses-')")
    d = p.add_argument_group("where the runs go")
    d.add_argument("--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786 "
                   "(default: a LocalCluster on this machine)")
    d.add_argument("--workers", type=int, help="LocalCluster worker processes at most (default: the cores; fewer "
                   "when memory does not allow that many runs at once)")
    d.add_argument("--serial", action="store_true", help="no Dask: one run after the other in this process")
    d.add_argument("--no-dashboard", dest="dashboard", action="store_false", help="LocalCluster without dashboard")
    src = p.add_argument_group("input reading")
    src.add_argument("--phase-rule", default="auto", choices=("auto", *PHASE_RULES),
                     help="how stored phase values become radians (default auto)")
    src.add_argument("--phase-sign", type=int, default=1, choices=(1, -1),
                     help="-1 if veins come out negative in QSM (vendor convention)")
    src.add_argument("--nan-policy", default="error", choices=("error", "mask"),
                     help="NaN/Inf phase voxels: fail the run (default), or leave them out of the mask")
    add_method_args(p)
    roi = p.add_argument_group("deep-grey-nuclei measures")
    roi.add_argument("--atlas", default="cit168", choices=("cit168", "pd25"),
                     help="cit168 (shipped) or pd25 (not shipped: --atlas-dir)")
    roi.add_argument("--atlas-dir", help="folder with the PD25 files")
    roi.add_argument("--roi-reference", default="whole_brain",
                     help="χ reference of the nucleus values: whole_brain (default), region:<name> or none")
    roi.add_argument("--roi-erode-mm", type=float, default=0.0, help="erode each region by this much (mm)")
    roi.add_argument("--affine-only", action="store_true", help="atlas registration without its deformable stage")
    p.set_defaults(func=cmd_batch)


def _check_out(out: str, bids_root: str) -> None:
    o, r = os.path.realpath(out), os.path.realpath(bids_root)
    if os.path.exists(out) and not os.path.isdir(out):
        raise QSMInputError(f"--out {out!r} is a file, not a folder")
    if o == r:
        raise QSMInputError(f"--out {out!r} is the BIDS root itself: derivatives go in a folder of their own "
                            "(e.g. BIDS_ROOT/derivatives/qsm)")
    rel = os.path.relpath(o, r)
    if not rel.startswith("..") and rel.split(os.sep)[0].startswith("sub-"):
        raise QSMInputError(f"--out {out!r} lies inside a subject folder of the dataset: give another folder")


def write_dataset_description(out: str, bids_root: str) -> None:
    """The derivative dataset's ``dataset_description.json`` (BIDS 1.9: DatasetType, GeneratedBy, SourceDatasets)."""
    from .. import __version__
    from ..io.outputs import source_revision, write_text_atomic

    desc = {"Name": "SusceptibilityMRI derivatives (QSM, R2*, SWI, deep-grey-nuclei χ)", "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "SusceptibilityMRI", "Version": __version__,
                             "Description": f"source revision {source_revision()}"}],
            "SourceDatasets": [{"URL": "file://" + os.path.abspath(bids_root)}]}
    write_text_atomic(os.path.join(out, "dataset_description.json"), json.dumps(desc, indent=2))


def cmd_batch(args: argparse.Namespace) -> int:
    from ..cli import build_config
    from ..io.outputs import run_record
    from .discovery import discover_runs
    from .group import write_group
    from .run import BatchConfig

    if args.workers is not None and args.workers < 1:
        raise QSMInputError(f"--workers {args.workers}: give at least 1")
    if args.scheduler and (args.serial or args.workers):
        raise QSMInputError("--scheduler uses that cluster's workers: drop --serial / --workers")
    if not args.serial:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            from .cohort import INSTALL_HINT

            raise QSMInputError(f"{INSTALL_HINT} (or run with --serial)") from exc
    _check_out(args.out, args.bids_root)
    cfg = BatchConfig(pipeline=build_config(args).to_dict(), atlas=args.atlas, atlas_dir=args.atlas_dir,
                      roi_reference=args.roi_reference, roi_erode_mm=args.roi_erode_mm,
                      roi_deformable=not args.affine_only,
                      phase_rule=args.phase_rule, phase_sign=args.phase_sign, nan_policy=args.nan_policy,
                      invocation=run_record(getattr(args, "argv", None), []))
    cfg.validate()
    runs = discover_runs(args.bids_root, args.participant_label, args.session_label)
    os.makedirs(args.out, exist_ok=True)
    write_dataset_description(args.out, args.bids_root)
    from .cohort import run_cohort

    summaries = run_cohort(runs, args.out, cfg, scheduler=args.scheduler, workers=args.workers,
                           serial=args.serial, dashboard=args.dashboard)
    paths = write_group(runs, summaries, os.path.abspath(args.out), cfg)
    failed = [s for s in summaries if s["status"] == "failed"]
    counts = {k: sum(s["status"] == k for s in summaries) for k in ("done", "skipped", "failed")}
    done = [s for s in summaries if s["status"] == "done"]
    if done:
        peak = max(s["peak_memory_mb"] for s in done)
        secs = sorted(s["seconds"] for s in done)
        print(f"runs this time: median {secs[len(secs) // 2]:.1f} s, largest peak memory {peak:.0f} MB per worker")
    for s in failed:
        print(f"FAILED {s['stem']}: {s['error']}")
    print(f"{counts['done']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed; group "
          f"table {paths['csv']} (+ .tsv, .json, qc.tsv, roi_group.png)")
    return 1 if failed else 0
