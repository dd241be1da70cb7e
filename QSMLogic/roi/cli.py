"""``susceptibility-mri roi``: deep-grey-nuclei measures on a χ map, from the registered atlas or a user label map.

Writes into ``--out``: ``roi_measures.csv`` and ``roi_measures.json`` (one row per region and hemisphere, with the
reference and the region's source on every row; regions that could not be measured are flagged rows),
``roi_plot.png`` (bar plot) and ``roi_labels.nii.gz`` (the regions on the χ grid, with a JSON sidecar naming them).
With the source-separation maps (``--chi-para``/``--chi-dia``, or a ``run`` that made them) the rows gain the χ⁺
and |χ⁻| columns of :mod:`QSMLogic.roi.measures`.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import QSMInputError
from ..io.loader import read_volume
from .atlas import CONTRASTS, DEFAULT_MIN_PROBABILITY


def _label_names(path: Optional[str]) -> Optional[Dict[int, str]]:
    """``{"1": "L caudate", ...}`` or a NiiVue lookup table (``{"labels": [...]}``)."""
    if not path:
        return None
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise QSMInputError(f"cannot read label names {path!r}: {exc}") from exc
    if isinstance(d, dict) and isinstance(d.get("labels"), list):
        return {k: str(n) for k, n in enumerate(d["labels"]) if k > 0}
    if isinstance(d, dict):
        try:
            return {int(k): str(v) for k, v in d.items()}
        except ValueError as exc:
            raise QSMInputError(f"label names {path!r}: keys must be label numbers") from exc
    raise QSMInputError(f"label names {path!r}: expected a JSON object")


def add_roi_parser(sub) -> None:
    """Add the ``roi`` subcommand to the main parser's subparsers."""
    p = sub.add_parser("roi", help="deep-grey-nuclei measures on a χ map (atlas registration or user labels)")
    p.add_argument("--chi", required=True, help="χ map (ppm) NIfTI/NRRD, e.g. chi_ppm.nii.gz from `run`")
    p.add_argument("--mask", help="brain mask on the χ grid (default: non-zero χ)")
    p.add_argument("--chi-para", help="χ⁺ map (ppm, ≥ 0) on the χ grid, e.g. chi_para_ppm.nii.gz: adds χ⁺ columns")
    p.add_argument("--chi-dia", help="|χ⁻| map (ppm, diamagnetic magnitude ≥ 0) on the χ grid, e.g. "
                   "chi_dia_ppm.nii.gz: adds |χ⁻| columns (with --chi-para)")
    p.add_argument("--separation-mask", help="voxels the separation kept (separation_mask.nii.gz; default: all)")
    src = p.add_argument_group("regions (the atlas unless --labels is given)")
    src.add_argument("--labels", help="user label map (NIfTI/NRRD, any grid: resampled with its geometry)")
    src.add_argument("--label-names", help="JSON {label: name} or NiiVue lookup table for --labels")
    src.add_argument("--atlas", default="cit168", choices=("cit168", "pd25"),
                     help="cit168 (shipped, CC BY 4.0) or pd25 (CC BY-NC-SA 3.0, not shipped: --atlas-dir)")
    src.add_argument("--atlas-dir", help="folder with the PD25 files")
    src.add_argument("--min-probability", type=float, default=DEFAULT_MIN_PROBABILITY,
                     help=f"CIT168 voxels whose most likely region is below this probability stay unlabelled "
                          f"(default {DEFAULT_MIN_PROBABILITY})")
    src.add_argument("--register-on", help="image to register the atlas to (e.g. magnitude or R2*; default: χ)")
    src.add_argument("--contrast", choices=CONTRASTS,
                     help="template contrast matching --register-on (default qsm when registering on χ)")
    src.add_argument("--affine-only", action="store_true", help="skip the deformable registration stage")
    src.add_argument("--refine", action="store_true", help="refine STN, SN, RN and GPi by thresholding χ inside "
                     "the dilated region (Otsu's threshold unless --refine-threshold-ppm; stated in each row)")
    src.add_argument("--refine-threshold-ppm", type=float, help="fixed χ threshold (ppm) for --refine")
    src.add_argument("--refine-dilation-mm", type=float, default=2.0, help="growth of the region searched by "
                     "--refine (mm, default 2)")
    m = p.add_argument_group("measures")
    m.add_argument("--reference", default="whole_brain",
                   help="whole_brain (default), csf (with --csf-labels and --labels), region:<name>, or none")
    m.add_argument("--csf-labels", default="", help="comma-separated CSF/ventricle labels of --labels")
    m.add_argument("--erode-mm", type=float, default=0.0, help="erode each region by this much against partial "
                   "volume (mm)")
    m.add_argument("--midline-x-mm", type=float, default=None,
                   help="split user regions without a side at this RAS x (mm) into left and right")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_roi)


def cmd_roi(args: argparse.Namespace) -> int:
    from ..reference import parse_labels
    from .atlas import load_atlas
    from .measures import measure_regions, split_by_midline
    from .regions import atlas_regions, user_regions

    t0 = time.perf_counter()
    chi, aff = read_volume(args.chi, "χ map")
    inputs = [args.chi]
    if args.mask:
        mask_arr, mask_aff = read_volume(args.mask, "mask")
        if mask_arr.shape != chi.shape or not np.allclose(mask_aff, aff, atol=1e-3):
            raise QSMInputError(f"mask {args.mask!r} is not on the χ map's grid (shape/affine differ)")
        mask = mask_arr > 0
        inputs.append(args.mask)
    else:
        mask = np.isfinite(chi) & (chi != 0)
    if not mask.any():
        raise QSMInputError(f"no brain voxel: the mask is empty ({args.mask or 'non-zero χ'})")
    if not np.all(np.isfinite(chi[mask])):
        raise QSMInputError(f"χ map {args.chi!r} has NaN/Inf inside the mask")
    vox = tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))
    sources = _source_inputs(args, chi.shape, aff, inputs)

    def progress(fraction: float, label: str) -> None:
        print(f"\r[{fraction * 100:5.1f} %] {label:<50}", end="", flush=True)

    atlas = None
    if args.labels:
        lab, lab_aff = read_volume(args.labels, "label map")
        inputs.append(args.labels)
        regs = user_regions(lab, lab_aff, chi.shape, aff, _label_names(args.label_names),
                            source=f"user label map {Path(args.labels).name}")
        if args.midline_x_mm is not None:
            regs.labels, regs.regions = split_by_midline(regs.labels, regs.regions, aff, args.midline_x_mm)
    else:
        atlas = load_atlas(args.atlas, args.atlas_dir, args.min_probability)
        if args.register_on:
            image, img_aff = read_volume(args.register_on, "registration image")
            if image.shape != chi.shape or not np.allclose(img_aff, aff, atol=1e-3):
                raise QSMInputError(f"--register-on {args.register_on!r} is not on the χ map's grid")
            if not args.contrast:
                raise QSMInputError("--register-on needs --contrast (magnitude, r2star, qsm, or atlas for a "
                                    "T1-like image)")
            inputs.append(args.register_on)
        else:
            image = np.where(mask, chi, 0.0)
        contrast = args.contrast or "qsm"
        regs = atlas_regions(image, aff, atlas, contrast, subject_mask=mask, progress=progress,
                             deformable=not args.affine_only)
        print()
    if args.refine:
        from .refine import refine_regions

        regs, _ = refine_regions(chi, regs, vox, dilation_mm=args.refine_dilation_mm,
                                 threshold_ppm=args.refine_threshold_ppm, mask=mask)
    rows = measure_regions(
        chi, regs.labels, regs.regions, vox, mask=mask, reference=args.reference,
        csf_labels=parse_labels(args.csf_labels) if args.csf_labels else (), erosion_mm=args.erode_mm,
        source=regs.source, expected_volume_mm3=regs.expected_volume_mm3, **sources)
    write_roi_outputs(rows, regs, atlas, aff, Path(args.out), inputs, time.perf_counter() - t0,
                      {"reference": args.reference, "erosion_mm": args.erode_mm,
                       "min_probability": args.min_probability if atlas else None, "refine": args.refine,
                       "refine_threshold_ppm": args.refine_threshold_ppm,
                       "refine_dilation_mm": args.refine_dilation_mm if args.refine else None},
                      Path(args.chi).name)
    return 0


def _source_inputs(args: argparse.Namespace, shape: tuple, affine: np.ndarray, inputs: list) -> Dict[str, np.ndarray]:
    """``--chi-para``/``--chi-dia``/``--separation-mask`` read on the χ grid, as keywords of ``measure_regions``."""
    if bool(args.chi_para) != bool(args.chi_dia):
        raise QSMInputError("give --chi-para and --chi-dia together (χ⁺ and |χ⁻| of one separation)")
    if args.separation_mask and not args.chi_para:
        raise QSMInputError("--separation-mask needs --chi-para and --chi-dia")
    out: Dict[str, np.ndarray] = {}
    for key, path, what in (("chi_para_ppm", args.chi_para, "χ⁺ map"), ("chi_dia_ppm", args.chi_dia, "|χ⁻| map"),
                            ("separation_mask", args.separation_mask, "separation mask")):
        if not path:
            continue
        data, aff = read_volume(path, what)
        if data.shape != shape or not np.allclose(aff, affine, atol=1e-3):
            raise QSMInputError(f"{what} {path!r} is not on the χ map's grid (shape/affine differ)")
        out[key] = data > 0 if key == "separation_mask" else data.astype(np.float32)
        inputs.append(path)
    return out


def write_roi_outputs(rows, regs, atlas, affine: np.ndarray, out: Path, inputs: list, seconds: float,
                      params: dict, title: str) -> None:
    """Write roi_measures.csv/.json, roi_plot.png and roi_labels.nii.gz (with its sidecar) into ``out`` and print
    the table."""
    from ..io.writer import make_provenance, write_result
    from .report import plot_png, write_csv, write_json

    out.mkdir(parents=True, exist_ok=True)
    if regs.warning:
        print(f"warning: {regs.warning}")
    prov = make_provenance("roi", "atlas" if atlas else "labels", {
        **params, "atlas": atlas.name if atlas else None, "atlas_citation": atlas.citation if atlas else None,
        "atlas_licence": atlas.licence if atlas else None,
        "registration_stages": regs.registration.stages if regs.registration else None}, seconds,
        output="roi_labels", warning=regs.warning)
    write_csv(rows, out / "roi_measures.csv")
    write_json(rows, out / "roi_measures.json", {**prov, "input_files": [str(p) for p in inputs]})
    plot_png(rows, out / "roi_plot.png", title=f"{title}: {regs.source}")
    names = {str(k): r.name for k, r in regs.regions.items()}
    write_result(out / "roi_labels.nii.gz", regs.labels.astype(np.float32), affine, {**prov, "label_names": names},
                 input_paths=inputs, units="label")
    for r in rows:
        val = "" if r.mean_ppm is None else f"{r.mean_ppm:+.4f} ± {r.sd_ppm:.4f} ppm  n={r.n_voxels}"
        print(f"  {r.region[:36]:<37}{val:<34}{r.flag}")
    print(f"reference: {rows[0].reference if rows else params.get('reference')}; wrote roi_measures.csv, "
          f"roi_measures.json, roi_plot.png, roi_labels.nii.gz to {out.resolve()} ({seconds:.1f} s)")


def add_run_roi_args(p: argparse.ArgumentParser) -> None:
    """Options of the ROI stage of ``run``."""
    g = p.add_argument_group("deep-grey-nuclei measures (the roi stage)")
    g.add_argument("--roi", action="store_true", help="after the pipeline, register CIT168 to the χ map and write "
                   "roi_measures.csv/.json, roi_plot.png, roi_labels.nii.gz (as `susceptibility-mri roi`)")
    g.add_argument("--roi-reference", default="whole_brain", help="reference of the roi stage (see `roi --help`)")


#: Files the roi outputs consist of (``roi_labels.json`` is the label map's sidecar).
ROI_FILES = ("roi_measures.csv", "roi_measures.json", "roi_plot.png", "roi_labels.nii.gz", "roi_labels.json")


def run_roi_stage(args: argparse.Namespace, outputs: Dict[str, np.ndarray], affine: np.ndarray, out: Path,
                  inputs: list) -> List[str]:
    """The ``--roi`` stage of ``run``: CIT168 registered on the pipeline's χ (qsm template), measured with
    ``--roi-reference`` (with χ⁺ and |χ⁻| columns when source separation ran); returns the names of the files
    written into ``out`` (none without ``--roi``)."""
    from .atlas import load_cit168
    from .measures import measure_regions
    from .regions import atlas_regions

    if not getattr(args, "roi", False):
        return []
    if "chi_ppm" not in outputs or "qsm_mask" not in outputs:
        raise QSMInputError("--roi needs the QSM stages (a χ map); this run made none")
    t0 = time.perf_counter()
    chi = outputs["chi_ppm"]
    m = np.asarray(outputs["qsm_mask"], bool)
    atlas = load_cit168()

    def progress(fraction: float, label: str) -> None:
        print(f"\r[roi {fraction * 100:5.1f} %] {label:<50}", end="", flush=True)

    regs = atlas_regions(np.where(m, chi, 0.0), affine, atlas, "qsm", subject_mask=m, progress=progress)
    print()
    vox = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
    sep = outputs.get("separation_mask")
    rows = measure_regions(chi, regs.labels, regs.regions, vox, mask=m, reference=args.roi_reference,
                           source=regs.source, expected_volume_mm3=regs.expected_volume_mm3,
                           chi_para_ppm=outputs.get("chi_para_ppm"), chi_dia_ppm=outputs.get("chi_dia_ppm"),
                           separation_mask=None if sep is None else np.asarray(sep, bool))
    write_roi_outputs(rows, regs, atlas, affine, out, inputs, time.perf_counter() - t0,
                      {"reference": args.roi_reference, "erosion_mm": 0.0}, "chi_ppm")
    return list(ROI_FILES)
