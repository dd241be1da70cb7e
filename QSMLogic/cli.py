"""Command line: ``susceptibility-mri simulate | run | roi | target | bench | params``.

- ``simulate``: write the built-in head phantom as multi-echo NIfTI (BIDS-style sidecars) plus its ground truth.
- ``run``: the whole pipeline on the built-in phantom (``--phantom``) or on your files; writes every map as NIfTI
  with a JSON provenance sidecar, a table of deep-gray-nuclei values and PNG previews into ``--out``.
- ``roi``: deep-grey-nuclei χ per region and hemisphere from the registered CIT168 atlas or a user label map
  (CSV, JSON, PNG plot; :mod:`QSMLogic.roi.cli`).
- ``batch``: every multi-echo GRE run of a BIDS dataset on Dask, resumable, with a group table
  (:mod:`QSMLogic.batch.cli`).
- ``target``: STN/GPi targets in RAS, AC-PC and Leksell frame coordinates, vessel segmentation and trajectory
  distances with a margin warning (``.mrk.json``, CSV; :mod:`QSMLogic.targeting.cli`).
- ``bench``: times every stage at a realistic size (256×256×160, 5 echoes, and 16 coils for coil combination).
- ``params``: the methods and parameters of every stage (``--markdown`` for the docs), from the same
  declaration the Slicer module uses.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import QSMInputError
from .io.phase_scaling import PHASE_RULES
from .batch.cli import add_batch_parser
from .params import load_all, markdown_table
from .roi.cli import add_roi_parser, add_run_roi_args, run_roi_stage
from .targeting.cli import add_target_parser

#: What the tool does, for ``--help``.
DESCRIPTION = ("susceptibility-mri computes quantitative susceptibility maps (QSM, in ppm), R2* and "
               "susceptibility-weighted images (SWI) from multi-echo gradient-echo MRI magnitude and phase "
               "(NIfTI, NRRD or DICOM), or from a built-in head phantom.")


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


def add_method_args(p: argparse.ArgumentParser) -> None:
    """The options :func:`build_config` reads: a method per stage (``--<stage>``, choices from the declarations),
    ``--set``, ``--disable`` and ``--config`` (used by ``run`` and ``batch``)."""
    stg = p.add_argument_group("methods (see `susceptibility-mri params`)")
    for key, spec in load_all().items():
        stg.add_argument(f"--{key.replace('_', '-')}", dest=f"method_{key}", choices=spec.method_keys or None,
                         help=f"{spec.label} method (default {spec.default_method})")
    stg.add_argument("--set", action="append", metavar="STAGE.PARAM=VALUE", help="override a method parameter")
    stg.add_argument("--disable", action="append", metavar="STAGE", help="skip an optional stage (r2star, swi)")
    stg.add_argument("--config", help="JSON configuration ({'stages': {stage: {method, params}}})")


def build_config(args: argparse.Namespace):
    """PipelineConfig from ``--config`` JSON, per-stage ``--<stage>`` method choices and ``--set`` overrides; errors
    name the flag and the value that is wrong."""
    from .pipeline import PipelineConfig
    from .params import stage

    d: Dict[str, Any] = {}
    if args.config:
        try:
            d = json.loads(Path(args.config).read_text()).get("stages", {})
        except (OSError, ValueError, AttributeError) as exc:
            raise QSMInputError(f"--config {args.config!r} is not a readable JSON object with 'stages': {exc}") from exc
    for key in load_all():
        method = getattr(args, f"method_{key}", None)
        if method:
            d.setdefault(key, {})["method"] = method
    for st in args.disable or []:
        if st not in load_all():
            raise QSMInputError(f"--disable {st}: no such stage; stages are {', '.join(load_all())}")
        d.setdefault(st, {})["enabled"] = False
    base = PipelineConfig.from_dict({"stages": {k: {"method": v["method"]} for k, v in d.items() if "method" in v}})
    for item in args.set or []:
        one = _parse_set([item])
        for st, params in one.items():
            if st not in load_all():
                raise QSMInputError(f"--set {item}: no stage {st!r}; stages are {', '.join(load_all())}")
            method = base.stages[st]["method"]
            try:
                stage(st).method(method).resolve(params)
            except QSMInputError as exc:
                raise QSMInputError(f"--set {item}: {exc} (the {st} method is {method!r}; "
                                    "`susceptibility-mri params` lists them)") from exc
            d.setdefault(st, {}).setdefault("params", {}).update(params)
    return PipelineConfig.from_dict({"stages": d})


def _phantom_acquisition(args: argparse.Namespace):
    from .phantom import make_head_model, simulate_acquisition

    model = make_head_model(shape=tuple(args.shape), voxel_size_mm=tuple(args.voxel_size), seed=args.seed)
    acq = simulate_acquisition(model, te_s=tuple(t / 1000.0 for t in args.te_ms), b0_tesla=args.b0,
                               n_coils=args.coils, snr=args.snr, seed=args.seed)
    return model, acq


def _phantom_r2_hz(model, b0_tesla: float) -> np.ndarray:
    """The phantom's true R2 (Hz) at ``b0_tesla`` (its R2 scales with B0 like its R2*)."""
    from .phantom.tissues import R2STAR_REFERENCE_B0_TESLA

    return model.r2_hz * np.float32(b0_tesla / R2STAR_REFERENCE_B0_TESLA)


def cmd_simulate(args: argparse.Namespace) -> int:
    import nibabel as nib

    _phantom_defaults(args)
    check_echo_times_ms(args.te_ms, "--te-ms")
    check_b0_tesla(args.b0, "--b0")
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
                      ("total_field_ppm", acq.total_field_ppm), ("r2star_hz", acq.r2star_hz),
                      ("chi_para_ppm", model.chi_para_ppm), ("chi_dia_ppm", model.chi_dia_ppm),
                      ("r2_hz", _phantom_r2_hz(model, gre.b0_tesla))):
        nib.save(nib.Nifti1Image(np.asarray(arr, dtype=np.float32), gre.affine), out / f"truth_{name}.nii.gz")
    nib.save(nib.Nifti1Image(acq.labels.astype(np.int16), gre.affine), out / "truth_labels.nii.gz")
    (out / "truth_labels.json").write_text(json.dumps({str(k): v for k, v in model.label_names.items()}, indent=2))
    print(f"phantom {gre.shape} × {gre.n_echoes} echoes × {gre.n_coils} coil(s) written to {out.resolve()} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


#: Echo times (ms) outside this range are a unit error for GRE phase imaging, refused before reading anything.
TE_MS_PLAUSIBLE = (0.5, 200.0)
#: Field strengths (T) outside this range are a unit error.
B0_PLAUSIBLE_T = (0.05, 25.0)

#: Python names in library messages → the command-line words a user of ``run`` typed (longest first).
CLI_WORDS = (
    (" and record a validity mask in metadata['valid_mask']", " and leave them out of the brain mask"),
    ("nan_policy='mask'", "--nan-policy mask"), ('nan_policy="mask"', "--nan-policy mask"),
    ("give te_s (seconds)", "give --te-ms-in (milliseconds)"), ("te_s (seconds)", "--te-ms-in (milliseconds)"),
    ("give b0_tesla (tesla)", "give --b0-in (tesla)"), ("b0_tesla=", "--b0-in "),
    ("pass phase_rule", "pass --phase-rule"), ("phase_rule", "--phase-rule"), ("phase_sign", "--phase-sign"),
    ("nan_policy", "--nan-policy"), ("te_s", "--te-ms-in"), ("b0_tesla", "--b0-in"),
)


def _set_words() -> List[tuple]:
    """``name=`` → ``--set stage.name=`` for method parameters whose name belongs to one stage only."""
    owners: Dict[str, set] = {}
    for key, spec in load_all().items():
        for m in spec.methods:
            for p in m.params:
                owners.setdefault(p.name, set()).add(key)
    return [(f"{n}=", f"--set {next(iter(st))}.{n}=") for n, st in owners.items() if len(st) == 1]


def in_cli_words(message: str) -> str:
    """A library error message with its Python parameter names replaced by the command line's flags (``te_s`` →
    ``--te-ms-in``, ``separation_mm=5`` → ``--set mask.separation_mm=5``)."""
    for py, flag in _set_words():
        message = re.sub(rf"(?<![\w.-]){re.escape(py)}", flag, message)
    for py, flag in CLI_WORDS:
        message = re.sub(rf"(?<![\w-]){re.escape(py)}(?![\w])" if py[-1].isalnum() else re.escape(py), flag,
                         message)
    return message


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in values)


def check_echo_times_ms(te_ms: Optional[Sequence[float]], flag: str) -> None:
    """Refuse echo times given to ``flag`` that cannot be milliseconds (a unit error), naming the flag."""
    if te_ms is None:
        return
    te = [float(t) for t in te_ms]
    if not all(math.isfinite(t) and t > 0 for t in te):
        raise QSMInputError(f"{flag} {_fmt(te)}: echo times must be positive numbers of milliseconds")
    lo, hi = TE_MS_PLAUSIBLE
    if min(te) < lo:
        raise QSMInputError(
            f"{flag} {_fmt(te)}: echo times below {lo:g} ms are implausible for GRE phase imaging — did you give "
            f"seconds? {flag} takes milliseconds, e.g. {flag} {_fmt([t * 1000 for t in te])}"
        )
    if max(te) > hi:
        raise QSMInputError(
            f"{flag} {_fmt(te)}: echo times above {hi:g} ms are implausible for GRE phase imaging — did you give "
            f"microseconds? {flag} takes milliseconds, e.g. {flag} {_fmt([t / 1000 for t in te])}"
        )
    if any(b <= a for a, b in zip(te, te[1:])):
        raise QSMInputError(f"{flag} {_fmt(te)}: echo times must be strictly increasing, one per echo")


def check_b0_tesla(b0: Optional[float], flag: str) -> None:
    """Refuse a field strength given to ``flag`` that cannot be tesla."""
    if b0 is None:
        return
    lo, hi = B0_PLAUSIBLE_T
    if not (math.isfinite(b0) and lo <= b0 <= hi):
        raise QSMInputError(f"{flag} {b0:g}: a field strength in tesla lies between {lo:g} and {hi:g} (e.g. {flag} 3)")


def check_run_arguments(args: argparse.Namespace) -> None:
    """Every check on the command line itself, before any file is read or anything computed."""
    files = [f for f in ("magnitude", "phase", "mask_file", "te_ms_in", "b0_in") if getattr(args, f)]
    if args.phantom:
        if files:
            flags = ", ".join("--" + f.replace("_", "-") for f in files)
            raise QSMInputError(f"--phantom simulates its own data: {flags} cannot be used with it (drop --phantom "
                                "to process your files)")
        _phantom_defaults(args)
        check_echo_times_ms(args.te_ms, "--te-ms")
        check_b0_tesla(args.b0, "--b0")
        return
    phantom_flags = _phantom_flags_given(args)
    if phantom_flags:
        hint = " (for your files' echo times use --te-ms-in, for their field strength --b0-in)" if {
            "--te-ms", "--b0"} & set(phantom_flags) else ""
        raise QSMInputError(f"{', '.join(phantom_flags)} only apply to --phantom, not to input files{hint}")
    if not args.phase:
        raise QSMInputError("give --phantom, or --phase (and --magnitude) files: one 4D file or one per echo")
    if not args.magnitude and not args.mask_file:
        raise QSMInputError("without --magnitude the brain mask cannot be computed: give --magnitude or --mask-file")
    check_echo_times_ms(args.te_ms_in, "--te-ms-in")
    check_b0_tesla(args.b0_in, "--b0-in")
    for flag, paths in (("--magnitude", args.magnitude or []), ("--phase", args.phase),
                        ("--mask-file", [args.mask_file] if args.mask_file else [])):
        for f in paths:
            if not os.path.exists(f):
                raise QSMInputError(f"{flag} {f!r} does not exist")


def _input_paths(args: argparse.Namespace) -> List[str]:
    extra = [p for p in (args.mask_file, getattr(args, "r2", None), getattr(args, "t2", None)) if p]
    return list(args.magnitude or []) + list(args.phase or []) + extra


def _load_inputs(args: argparse.Namespace):
    """(GREData, labels, label_names, truth, user mask); labels and truth (``chi_ppm`` and the sources
    ``chi_para_ppm``, ``chi_dia_ppm``, and its true ``r2_hz``) only for the phantom."""
    from .fov import check_volume_is_3d

    if args.phantom:
        check_volume_is_3d(args.shape, args.voxel_size, "--shape")
        model, acq = _phantom_acquisition(args)
        truth = {"chi_ppm": acq.chi_ppm, "chi_para_ppm": model.chi_para_ppm, "chi_dia_ppm": model.chi_dia_ppm,
                 "r2_hz": _phantom_r2_hz(model, acq.gre.b0_tesla)}
        return acq.gre, acq.labels, model.label_names, truth, None
    from .io import load_gre

    te = None if args.te_ms_in is None else [t / 1000.0 for t in args.te_ms_in]
    mag = None if not args.magnitude else (args.magnitude if len(args.magnitude) > 1 else args.magnitude[0])
    gre = load_gre(magnitude=mag, phase=args.phase if len(args.phase) > 1 else args.phase[0], te_s=te,
                   b0_tesla=args.b0_in, phase_rule=args.phase_rule, nan_policy=args.nan_policy)
    check_volume_is_3d(gre.shape, gre.voxel_size_mm, "--phase")
    user_mask = None
    if args.mask_file:
        from .io import read_nifti

        data, affine = read_nifti(args.mask_file)
        user_mask = data > 0
        if user_mask.shape != gre.shape:
            raise QSMInputError(f"--mask-file {args.mask_file!r} has shape {user_mask.shape}, the data {gre.shape}")
        if not np.allclose(affine, gre.affine, atol=1e-3):
            raise QSMInputError(f"--mask-file {args.mask_file!r} has a different geometry (affine) from the data")
    return gre, None, None, None, user_mask


def _r2_map(args: argparse.Namespace, gre, cfg, truth: Optional[Dict[str, np.ndarray]]):
    """R2 map on the data's grid (or None) for source separation: ``--r2`` / ``--t2`` files
    (resampled through their geometry), or the phantom's true R2 (``truth``, from :func:`_load_inputs`)."""
    from .separation import read_r2_map

    if args.r2 and args.t2:
        raise QSMInputError("give --r2 or --t2, not both")
    if args.r2 or args.t2:
        path = args.r2 or args.t2
        quantity = "r2" if args.r2 else f"t2_{args.t2_unit}"
        return read_r2_map(path, gre.shape, gre.affine, quantity)
    entry = cfg.stages["source_separation"]
    if truth is not None and entry["enabled"] and entry["method"] in ("r2prime", "joint"):
        return truth["r2_hz"]
    return None


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


def _map_names() -> List[str]:
    """Every map name a run may write (for recognising an earlier run's files in ``--out``)."""
    from .pipeline import OUTPUT_STAGE

    return sorted(set(OUTPUT_STAGE) | {"swi", "mip", "swi_phase_rad", "swi_phase_mask"})


def _progress_printer(stream=None):
    """Progress callback: one updating line on a terminal, one line per stage otherwise (log files)."""
    stream = stream or sys.stdout
    tty = stream.isatty()
    last = {"label": None}

    def progress(fraction: float, label: str) -> None:
        if tty:
            print(f"\r[{fraction * 100:5.1f} %] {label:<60}", end="", file=stream, flush=True)
        elif label != last["label"] and label != "done":
            print(f"[{fraction * 100:5.1f} %] {label}", file=stream, flush=True)
        last["label"] = label

    return progress, tty


def cmd_run(args: argparse.Namespace) -> int:
    from .fov import fov_warnings
    from .io.outputs import MANIFEST, atomic_path, plan_output_folder, run_record, write_text_atomic
    from .io.writer import write_result
    from .phase_sign import run_with_phase_sign
    from .preview import save_preview
    from .quantify import format_roi_table, roi_table, write_roi_table

    check_run_arguments(args)
    cfg = build_config(args)
    inputs = _input_paths(args)
    plan = plan_output_folder(args.out, inputs, args.overwrite, _map_names())
    out = Path(plan.folder)
    gre, labels, names, truth, user_mask = _load_inputs(args)
    print(f"input: {gre.shape} × {gre.n_echoes} echoes × {gre.n_coils} coil(s), B0 {gre.b0_tesla} T, "
          f"voxel {tuple(round(v, 3) for v in gre.voxel_size_mm)} mm")
    scaling = gre.metadata.get("phase_scaling") if isinstance(gre.metadata, dict) else None
    if scaling and args.phase_rule == "auto":
        print(f"phase scaling: auto-detected rule '{scaling['rule']}' — {scaling['description']} "
              "(--phase-rule to choose another)")
    progress, tty = _progress_printer()
    r2_hz = _r2_map(args, gre, cfg, truth)
    res = run_with_phase_sign(gre, cfg, sign=args.phase_sign, mask=user_mask, labels=labels, progress=progress,
                              log=lambda s: print(("\n" if tty else "") + s), r2_hz=r2_hz)
    if tty:
        print()
    sign = res.provenance.get("phase_sign", {})
    if sign.get("decision"):
        print(f"phase sign: {sign['decision']}")
    warnings = fov_warnings(res.outputs["mask"].astype(bool), gre.voxel_size_mm)
    for w in warnings:
        print(f"warning: {w}")
    res.provenance["warnings"] = warnings
    res.provenance["run"] = run_record(getattr(args, "argv", None), inputs)
    plan.clear_earlier_outputs()
    written = []
    units = res.provenance["units"]
    for name, arr in res.outputs.items():
        ref = res.provenance["susceptibility_reference"]["reference"] if name.startswith("chi_") else None
        written.append(write_result(out / f"{name}.nii.gz", arr, res.affine, _map_provenance(name, res),
                                    input_paths=inputs, units=units.get(name), reference_region=ref))
    files = [f"{n}{ext}" for n in res.outputs for ext in (".nii.gz", ".json")]
    for rec in res.provenance["stages"]:
        print(f"  {rec['stage']:<18}{rec['method']:<22}{rec['seconds']:>8.2f} s")
    run_roi_stage(args, res.outputs, res.affine, out, inputs)
    if labels is not None and names is not None:
        rows = roi_table(res.outputs["chi_ppm"], labels, names, gre.voxel_size_mm,
                         mask=res.outputs["qsm_mask"].astype(bool),
                         truth=None if truth is None else _reference_like(truth["chi_ppm"], res),
                         sources=_source_maps(res.outputs, truth))
        with atomic_path(str(out / "roi_susceptibility.csv")) as tmp:
            write_roi_table(rows, tmp)
        files.append("roi_susceptibility.csv")
        print(format_roi_table(rows))
    with atomic_path(str(out / "preview.png")) as tmp:
        save_preview(*_preview_maps(res, gre, labels, names), tmp, title=_preview_title(args, res),
                     voxel_size_mm=gre.voxel_size_mm, center_index=_preview_center(res, labels, names))
    files += ["preview.png", MANIFEST]
    res.provenance["outputs"] = files
    write_text_atomic(str(out / MANIFEST), res.provenance_json())
    table = "roi_susceptibility.csv, " if labels is not None else ""
    kept = f"; left {len(plan.foreign)} file(s) this tool did not write: {', '.join(plan.foreign[:3])}" if (
        plan.foreign) else ""
    print(f"wrote {len(written)} maps (NIfTI + JSON provenance), {table}{MANIFEST} and preview.png "
          f"to {out}{kept}")
    return 0


def _preview_maps(res, gre, labels, names):
    """(maps, affine) for the preview: windows from the data's percentiles inside the mask; the mIP only in the
    plane it was projected onto."""
    from .preview import VIEW_OF_AXIS, percentile_window

    o = res.outputs
    m = o["qsm_mask"].astype(bool) if "qsm_mask" in o else o["mask"].astype(bool)
    maps: Dict[str, Any] = {"magnitude": (o["magnitude"], percentile_window(o["magnitude"], m, 1, 99.5))}
    if "chi_ppm" in o:
        maps["QSM (ppm)"] = (o["chi_ppm"], percentile_window(o["chi_ppm"], m, 1, 99, symmetric=True))
    if "local_field_ppm" in o:
        maps["local field (ppm)"] = (o["local_field_ppm"], percentile_window(o["local_field_ppm"], m, 1, 99, True))
    if "r2star_hz" in o:
        maps["R2* (1/s)"] = (o["r2star_hz"], percentile_window(o["r2star_hz"], m, 1, 99))
    if "swi" in o:
        maps["SWI"] = (o["swi"], percentile_window(o["swi"], m, 1, 99.5))
    if "mip" in o:
        info = next((r.get("result", {}) for r in res.provenance["stages"] if r["stage"] == "swi"), {})
        r = np.asarray(res.affine)[:3, :3]
        axis = info.get("mip_axis")
        world = int(np.argmax(np.abs(r[:, axis]))) if axis is not None else 2
        maps[f"SWI mIP ({info.get('mip_slab_mm_actual', '?')} mm)"] = (
            o["mip"], percentile_window(o["mip"], m, 1, 99.5), (VIEW_OF_AXIS[world],))
    return maps, res.affine


def _preview_center(res, labels, names) -> Optional[List[float]]:
    """Where the preview's slices cross: the deep-grey nuclei's centre when labels name them, else the centre of mass
    of the mask (in a head, near the level of the basal ganglia and thalami)."""
    deep = ("putamen", "pallidus", "thalamus", "caudate")
    if labels is not None and names:
        keys = [k for k, v in names.items() if any(d in str(v).lower() for d in deep)]
        sel = np.isin(labels, keys)
        if sel.any():
            return [float(c) for c in np.argwhere(sel).mean(axis=0)]
    m = res.outputs["mask"].astype(bool)
    return [float(c) for c in np.argwhere(m).mean(axis=0)] if m.any() else None


def _preview_title(args: argparse.Namespace, res) -> str:
    """Input name, methods and date for the preview's title."""
    src = "built-in phantom" if args.phantom else ", ".join(Path(p).name for p in args.phase)
    methods = {r["stage"]: r["method"] for r in res.provenance["stages"]}
    chain = " → ".join(methods[k] for k in ("background", "inversion") if k in methods)
    date = time.strftime("%Y-%m-%d %H:%M")
    return f"{src} — QSM: {chain or 'not computed'}; SWI: {methods.get('swi', 'off')} — {date}"


def _source_maps(outputs: Dict[str, np.ndarray], truth: Optional[Dict[str, np.ndarray]]
                 ) -> Optional[Dict[str, np.ndarray]]:
    """The separation's maps (and the phantom's true sources, not re-referenced) for the ROI table; None when
    source separation did not run."""
    if "chi_para_ppm" not in outputs:
        return None
    maps = {k: outputs[k] for k in ("chi_para_ppm", "chi_dia_ppm")}
    maps["separation_mask"] = outputs["separation_mask"].astype(bool)
    if truth is not None:
        maps.update({f"true_{k}": truth[k] for k in ("chi_para_ppm", "chi_dia_ppm")})
    return maps


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


#: The phantom's flags and their defaults (filled in by :func:`_phantom_defaults`; None = not given).
PHANTOM_DEFAULTS: Dict[str, Any] = {"shape": [128, 128, 80], "voxel_size": [1.5, 1.5, 1.5],
                                    "te_ms": [4.0, 8.0, 12.0, 16.0, 20.0], "b0": 3.0, "coils": 0, "snr": 100.0,
                                    "seed": 0}


def _add_phantom_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("phantom (only with --phantom / simulate)")
    g.add_argument("--shape", type=int, nargs=3, help="matrix size (default 128 128 80)")
    g.add_argument("--voxel-size", type=float, nargs=3, help="voxel size in mm (default 1.5 1.5 1.5)")
    g.add_argument("--te-ms", type=float, nargs="+", help="echo times in ms (default 4 8 12 16 20)")
    g.add_argument("--b0", type=float, help="field strength in T (default 3)")
    g.add_argument("--coils", type=int, help="receive channels (default 0: already combined)")
    g.add_argument("--snr", type=float, help="SNR of the first echo in the brain (default 100)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")


def _phantom_flags_given(args: argparse.Namespace) -> List[str]:
    return ["--" + k.replace("_", "-") for k in PHANTOM_DEFAULTS if getattr(args, k, None) is not None]


def _phantom_defaults(args: argparse.Namespace) -> None:
    for k, v in PHANTOM_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def make_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .io.outputs import source_revision

    ap = argparse.ArgumentParser(prog="susceptibility-mri", description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__} (source {source_revision()})")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("simulate", help="write the head phantom and its ground truth as NIfTI")
    _add_phantom_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("run", help="run the pipeline on the phantom or on files",
                       description="Compute QSM (ppm), R2* and SWI from multi-echo GRE magnitude and phase files (or "
                                   "the built-in phantom) into a new folder, with provenance and a preview.")
    src = p.add_argument_group("input")
    src.add_argument("--phantom", action="store_true", help="use the built-in head phantom")
    src.add_argument("--magnitude", nargs="+", help="magnitude NIfTI/NRRD file(s) or DICOM folder")
    src.add_argument("--phase", nargs="+", help="phase NIfTI/NRRD file(s) or DICOM folder")
    src.add_argument("--te-ms-in", type=float, nargs="+", help="echo times (ms) if the files do not say")
    src.add_argument("--b0-in", type=float, help="field strength (T) if the files do not say")
    src.add_argument("--phase-rule", default="auto", choices=("auto", *PHASE_RULES),
                     help="how stored phase values become radians (default auto: chosen from the data, and said)")
    src.add_argument("--phase-sign", default="auto", choices=("auto", "1", "-1"),
                     help="phase convention: auto (default) checks that veins come out paramagnetic and flips the "
                          "sign if they do not, saying why; 1 or -1 force it")
    src.add_argument("--nan-policy", default="error", choices=("error", "mask"),
                     help="NaN/Inf phase voxels: stop with an error (default), or leave them out of the mask")
    src.add_argument("--mask-file", dest="mask_file",
                     help="brain mask / label NIfTI (non-zero = inside), same geometry as the data")
    src.add_argument("--r2", help="R2 map (1/s) NIfTI/NRRD for --source-separation r2prime (resampled through its "
                     "geometry; the phantom uses its true R2)")
    src.add_argument("--t2", help="T2 map NIfTI/NRRD instead of --r2 (unit: --t2-unit)")
    src.add_argument("--t2-unit", default="ms", choices=("ms", "s"), help="unit of the --t2 map (default ms)")
    _add_phantom_args(p)
    add_run_roi_args(p)
    add_method_args(p)
    p.add_argument("--out", required=True, help="output folder (new or empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing the files an earlier run of this tool left there")
    p.set_defaults(func=cmd_run)

    add_roi_parser(sub)
    add_batch_parser(sub)
    add_target_parser(sub)

    p = sub.add_parser("bench", help="time every stage at a realistic size")
    p.add_argument("--quick", action="store_true", help="small size smoke run")
    p.add_argument("--areas", nargs="*", help="only these areas (default: every area of QSMLogic.bench.run.AREAS; "
                   "'independent' and 'batch' run only when named)")
    p.add_argument("--shape", type=int, nargs=3, default=[256, 256, 160])
    p.add_argument("--coils", type=int, default=16)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("params", help="list every stage's methods and parameters")
    p.add_argument("--markdown", action="store_true")
    p.set_defaults(func=cmd_params)
    return ap


def main(argv: Optional[List[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.func(args) or 0)
    except QSMInputError as exc:
        print(f"error: {in_cli_words(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permission denied, ... while reading or writing
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
