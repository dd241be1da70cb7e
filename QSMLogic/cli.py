"""Command line: ``susceptibility-mri simulate | run | roi | target | bench | params``.

- ``simulate``: write the built-in head phantom as multi-echo NIfTI (BIDS-style sidecars) plus its ground truth.
- ``run``: the whole pipeline on the built-in phantom (``--phantom``) or on your files; writes every map as NIfTI
  with a JSON provenance sidecar, a table of deep-gray-nuclei values and PNG previews into ``--out``.
- ``roi``: deep-grey-nuclei χ per region and hemisphere from the registered CIT168 atlas or a user label map
  (CSV, JSON, PNG plot; :mod:`QSMLogic.roi.cli`).
- ``target``: STN/GPi targets in RAS, AC-PC and Leksell frame coordinates, vessel segmentation and trajectory
  distances with a margin warning (``.mrk.json``, CSV; :mod:`QSMLogic.targeting.cli`).
- ``bench``: times every stage at a realistic size (256×256×160, 5 echoes, and 16 coils for coil combination).
- ``params``: the methods and parameters of every stage (``--markdown`` for the docs), from the same
  declaration the Slicer module uses.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .errors import QSMInputError
from .params import load_all, markdown_table
from .roi.cli import add_roi_parser, add_run_roi_args, run_roi_stage
from .targeting.cli import add_target_parser

#: Display windows (ppm / a.u.) for previews.
QSM_WINDOW_PPM = (-0.15, 0.25)


def _floats(text: str) -> List[float]:
    return [float(t) for t in text.replace(",", " ").split()]


def _parse_set(items: List[str]) -> Dict[str, Dict[str, Any]]:
    out: Dict[str, Dict[str, Any]] = {}
    for it in items:
        if "=" not in it or "." not in it.split("=", 1)[0]:
            raise QSMInputError(f"--set expects STAGE.PARAM=VALUE, got {it!r}")
        key, val = it.split("=", 1)
        st, par = key.split(".", 1)
        out.setdefault(st, {})[par] = val
    return out


def build_config(args: argparse.Namespace):
    """PipelineConfig from ``--config`` JSON, per-stage ``--<stage>`` method choices and ``--set`` overrides."""
    from .pipeline import PipelineConfig

    d: Dict[str, Any] = {}
    if args.config:
        d = json.loads(Path(args.config).read_text()).get("stages", {})
    for key in load_all():
        method = getattr(args, f"method_{key}", None)
        if method:
            d.setdefault(key, {})["method"] = method
    for st, params in _parse_set(args.set or []).items():
        d.setdefault(st, {}).setdefault("params", {}).update(params)
    for st in args.disable or []:
        d.setdefault(st, {})["enabled"] = False
    return PipelineConfig.from_dict({"stages": d})


def _phantom_acquisition(args: argparse.Namespace):
    from .phantom import make_head_model, simulate_acquisition

    model = make_head_model(shape=tuple(args.shape), voxel_size_mm=tuple(args.voxel_size), seed=args.seed)
    acq = simulate_acquisition(model, te_s=tuple(t / 1000.0 for t in args.te_ms), b0_tesla=args.b0,
                               n_coils=args.coils, snr=args.snr, seed=args.seed)
    return model, acq


def cmd_simulate(args: argparse.Namespace) -> int:
    import nibabel as nib

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model, acq = _phantom_acquisition(args)
    gre = acq.gre
    side = {"EchoTime": [float(t) for t in gre.te_s], "MagneticFieldStrength": gre.b0_tesla,
            "PhaseUnits": "rad", "Source": "SusceptibilityMRI head phantom", "SNR": args.snr, "Seed": args.seed}
    for name, arr in (("mag", gre.magnitude), ("phase", gre.phase_rad)):
        nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), gre.affine), out / f"phantom_{name}.nii.gz")
        (out / f"phantom_{name}.json").write_text(json.dumps(side, indent=2))
    for name, arr in (("chi_ppm", acq.chi_ppm), ("local_field_ppm", acq.local_field_ppm),
                      ("total_field_ppm", acq.total_field_ppm), ("r2star_hz", acq.r2star_hz)):
        nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), gre.affine), out / f"truth_{name}.nii.gz")
    nib.save(nib.Nifti1Image(acq.labels.astype(np.int16), gre.affine), out / "truth_labels.nii.gz")
    (out / "truth_labels.json").write_text(json.dumps({str(k): v for k, v in model.label_names.items()}, indent=2))
    print(f"phantom {gre.shape} × {gre.n_echoes} echoes × {gre.n_coils} coil(s) written to {out.resolve()} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def _load_inputs(args: argparse.Namespace):
    """(GREData, labels, label_names, truth χ, user mask, input paths); labels/truth only for the phantom."""
    if args.phantom:
        model, acq = _phantom_acquisition(args)
        return acq.gre, acq.labels, model.label_names, acq.chi_ppm, None, []
    if not args.phase:
        raise QSMInputError("give --phantom, or --phase (and --magnitude) files: one 4D file or one per echo")
    if not args.magnitude and not args.mask_file:
        raise QSMInputError("without --magnitude the brain mask cannot be computed: give --magnitude or --mask-file")
    from .io import load_gre

    te = None if args.te_ms_in is None else [t / 1000.0 for t in args.te_ms_in]
    mag = None if not args.magnitude else (args.magnitude if len(args.magnitude) > 1 else args.magnitude[0])
    gre = load_gre(magnitude=mag, phase=args.phase if len(args.phase) > 1 else args.phase[0], te_s=te,
                   b0_tesla=args.b0_in, phase_rule=args.phase_rule, phase_sign=args.phase_sign,
                   nan_policy=args.nan_policy)
    inputs = list(args.magnitude or []) + list(args.phase)
    user_mask = None
    if args.mask_file:
        import nibabel as nib

        img = nib.load(args.mask_file)
        user_mask = np.asarray(img.dataobj) > 0
        if user_mask.shape != gre.shape:
            raise QSMInputError(f"mask {args.mask_file!r} has shape {user_mask.shape}, the data {gre.shape}")
        if not np.allclose(img.affine, gre.affine, atol=1e-3):
            raise QSMInputError(f"mask {args.mask_file!r} has a different geometry (affine) from the data")
        inputs.append(args.mask_file)
    return gre, None, None, None, user_mask, inputs


def _map_provenance(name: str, res) -> Dict[str, Any]:
    """Sidecar record of one output map: the stage and method that made it, with that stage's parameters."""
    from .io.writer import make_provenance
    from .pipeline import output_stage

    key = output_stage(name)
    rec = next((r for r in res.provenance["stages"] if r["stage"] == key), None)
    if rec is None:
        return make_provenance("pipeline", "pipeline", {}, res.provenance["total_seconds"], output=name,
                               pipeline=res.provenance)
    return make_provenance(key, rec["method"], rec["params"], rec["seconds"], output=name,
                           method_reference=rec.get("reference", ""), pipeline=res.provenance)


def cmd_run(args: argparse.Namespace) -> int:
    from .io.writer import write_result
    from .pipeline import run_pipeline
    from .preview import save_preview
    from .quantify import format_roi_table, roi_table, write_roi_table

    cfg = build_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gre, labels, names, truth, user_mask, inputs = _load_inputs(args)
    print(f"input: {gre.shape} × {gre.n_echoes} echoes × {gre.n_coils} coil(s), B0 {gre.b0_tesla} T, "
          f"voxel {tuple(round(v, 3) for v in gre.voxel_size_mm)} mm")

    def progress(fraction: float, label: str) -> None:
        print(f"\r[{fraction * 100:5.1f} %] {label:<60}", end="", flush=True)

    res = run_pipeline(gre, cfg, mask=user_mask, labels=labels, progress=progress)
    print()
    written = []
    units = res.provenance["units"]
    for name, arr in res.outputs.items():
        ref = res.provenance["susceptibility_reference"]["reference"] if name == "chi_ppm" else None
        written.append(write_result(out / f"{name}.nii.gz", arr, res.affine, _map_provenance(name, res),
                                    input_paths=inputs, units=units.get(name), reference_region=ref))
    (out / "provenance.json").write_text(res.provenance_json())
    for rec in res.provenance["stages"]:
        print(f"  {rec['stage']:<18}{rec['method']:<22}{rec['seconds']:>8.2f} s")
    run_roi_stage(args, res.outputs, res.affine, out, inputs)
    if labels is not None and names is not None:
        rows = roi_table(res.outputs["chi_ppm"], labels, names, gre.voxel_size_mm,
                         mask=res.outputs["qsm_mask"].astype(bool),
                         truth=None if truth is None else _reference_like(truth, res))
        write_roi_table(rows, out / "roi_susceptibility.csv")
        print(format_roi_table(rows))
    maps = {"magnitude": (res.outputs["magnitude"], tuple(np.percentile(res.outputs["magnitude"], [1, 99.5])))}
    maps["QSM (ppm)"] = (res.outputs["chi_ppm"], QSM_WINDOW_PPM)
    if "local_field_ppm" in res.outputs:
        maps["local field (ppm)"] = (res.outputs["local_field_ppm"], (-0.05, 0.05))
    if "r2star_hz" in res.outputs:
        maps["R2* (1/s)"] = (res.outputs["r2star_hz"], (0.0, 60.0))
    if "swi" in res.outputs:
        maps["SWI"] = (res.outputs["swi"], tuple(np.percentile(res.outputs["swi"], [1, 99.5])))
    if "mip" in res.outputs:
        maps["SWI mIP"] = (res.outputs["mip"], tuple(np.percentile(res.outputs["mip"], [1, 99.5])))
    png = save_preview(maps, res.affine, out / "preview.png", title="SusceptibilityMRI",
                       voxel_size_mm=gre.voxel_size_mm)
    table = "roi_susceptibility.csv, " if labels is not None else ""
    print(f"wrote {len(written)} maps (NIfTI + JSON provenance), {table}provenance.json and {png.name} "
          f"to {out.resolve()}")
    return 0


def _reference_like(truth: np.ndarray, res) -> np.ndarray:
    """The true χ referenced the way the estimate was (same region mean subtracted)."""
    m = res.outputs["qsm_mask"].astype(bool)
    ref = res.provenance["susceptibility_reference"]["reference"]
    t = np.asarray(truth, dtype=np.float32)
    if ref == "none":
        return t
    return t - np.float32(t[m].mean())


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.run import run_benchmarks

    return run_benchmarks(quick=args.quick, areas=args.areas, shape=tuple(args.shape), n_coils=args.coils)


def cmd_params(args: argparse.Namespace) -> int:
    specs = load_all()
    if args.markdown:
        print(markdown_table(list(specs.values())))
        return 0
    for s in specs.values():
        print(f"{s.key}  ({s.label}; default {s.default_method})")
        for m in s.methods:
            print(f"  --{s.key.replace('_', '-')} {m.key:<20} {m.label} — {m.reference}")
            for p in m.params:
                print(f"      --set {s.key}.{p.name}={p.default!s:<10} {p.unit:<6} {p.help}")
    return 0


def _add_phantom_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("phantom")
    g.add_argument("--shape", type=int, nargs=3, default=[128, 128, 80], help="matrix size (default 128 128 80)")
    g.add_argument("--voxel-size", type=float, nargs=3, default=[1.5, 1.5, 1.5], help="voxel size in mm")
    g.add_argument("--te-ms", type=float, nargs="+", default=[4.0, 8.0, 12.0, 16.0, 20.0], help="echo times (ms)")
    g.add_argument("--b0", type=float, default=3.0, help="field strength (T)")
    g.add_argument("--coils", type=int, default=0, help="receive channels (0: already combined)")
    g.add_argument("--snr", type=float, default=100.0, help="SNR of the first echo in the brain")
    g.add_argument("--seed", type=int, default=0)


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="susceptibility-mri", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("simulate", help="write the head phantom and its ground truth as NIfTI")
    _add_phantom_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", help="run the pipeline on the phantom or on files")
    src = p.add_argument_group("input")
    src.add_argument("--phantom", action="store_true", help="use the built-in head phantom")
    src.add_argument("--magnitude", nargs="+", help="magnitude NIfTI/NRRD file(s) or DICOM folder")
    src.add_argument("--phase", nargs="+", help="phase NIfTI/NRRD file(s) or DICOM folder")
    src.add_argument("--te-ms-in", type=float, nargs="+", help="echo times (ms) if the files do not say")
    src.add_argument("--b0-in", type=float, help="field strength (T) if the files do not say")
    src.add_argument("--phase-rule", default="auto", help="phase scaling rule (auto, radians, dicom_uint12, ...)")
    src.add_argument("--phase-sign", type=int, default=1, choices=(1, -1),
                     help="-1 if veins come out negative in QSM (vendor convention)")
    src.add_argument("--nan-policy", default="error", choices=("error", "mask"),
                     help="NaN/Inf phase voxels: stop with an error (default), or leave them out of the mask")
    src.add_argument("--mask-file", dest="mask_file",
                     help="brain mask / label NIfTI (non-zero = inside), same geometry as the data")
    _add_phantom_args(p)
    add_run_roi_args(p)
    stg = p.add_argument_group("methods (see `susceptibility-mri params`)")
    for key, spec in load_all().items():
        stg.add_argument(f"--{key.replace('_', '-')}", dest=f"method_{key}", choices=spec.method_keys or None,
                         help=f"{spec.label} method (default {spec.default_method})")
    stg.add_argument("--set", action="append", metavar="STAGE.PARAM=VALUE", help="override a method parameter")
    stg.add_argument("--disable", action="append", metavar="STAGE", help="skip an optional stage (r2star, swi)")
    stg.add_argument("--config", help="JSON configuration ({'stages': {stage: {method, params}}})")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_run)

    add_roi_parser(sub)
    add_target_parser(sub)

    p = sub.add_parser("bench", help="time every stage at a realistic size")
    p.add_argument("--quick", action="store_true", help="small size smoke run")
    p.add_argument("--areas", nargs="*", help="only these areas (default: all)")
    p.add_argument("--shape", type=int, nargs=3, default=[256, 256, 160])
    p.add_argument("--coils", type=int, default=16)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("params", help="list every stage's methods and parameters")
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(func=cmd_params)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except QSMInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
