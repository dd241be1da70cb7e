"""``susceptibility-mri target``: automatic STN/GPi targets, AC-PC and frame coordinates, vessel-aware trajectories.

Inputs are NIfTI files (or ``--phantom`` for the built-in head phantom with its true labels and commissures).
Writes into ``--out``: ``targets.mrk.json`` and ``targets.csv`` (RAS, AC-PC and, with a frame registration,
Leksell columns), one ``<name>_trajectory.mrk.json`` per trajectory, ``trajectories.csv`` (distances to vessels
and nuclei, warnings), with ``--qsm`` ``vessels.nii.gz`` (the vessel segmentation with a provenance sidecar) and,
with ``--views``, ``<nucleus>_<side>_views.png`` (axial, coronal, sagittal and probe's-eye planes through the target).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..errors import QSMInputError
from ..io.loader import read_volume


def _point(text: str, what: str) -> np.ndarray:
    try:
        p = np.array([float(v) for v in text.split(",")])
    except ValueError:
        raise QSMInputError(f"{what} must be three comma-separated numbers (RAS mm), got {text!r}") from None
    if p.shape != (3,):
        raise QSMInputError(f"{what} must be three comma-separated numbers (RAS mm), got {text!r}")
    return p


def _label_names(labels_path: str, names_path: Optional[str]) -> Dict[int, str]:
    """Label names from ``--label-names`` (JSON {value: name}), else the label file's sidecar ``label_names``
    (as ``roi`` writes), else the phantom's tissue names."""
    import json

    from ..io.nifti import read_sidecar
    from ..phantom import LABEL_NAMES

    if names_path:
        try:
            return {int(k): str(v) for k, v in json.loads(Path(names_path).read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise QSMInputError(f"cannot read label names {names_path!r} (JSON {{value: name}}): {exc}") from exc
    meta = read_sidecar(labels_path)
    if isinstance(meta.get("label_names"), dict):
        return {int(k): str(v) for k, v in meta["label_names"].items()}
    return dict(LABEL_NAMES)


def _frame(args: argparse.Namespace) -> Optional[np.ndarray]:
    from .frame import check_rigid, frame_registration_from_fiducials

    if args.frame_transform:
        try:
            m = np.loadtxt(args.frame_transform, dtype=np.float64).reshape(4, 4)
        except (OSError, ValueError) as exc:
            raise QSMInputError(f"--frame-transform {args.frame_transform!r}: 16 numbers (a 4x4 matrix): {exc}") \
                from exc
        return check_rigid(m, "--frame-transform")
    if args.frame_fiducials:
        try:
            table = np.loadtxt(args.frame_fiducials, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        except (OSError, ValueError) as exc:
            raise QSMInputError(f"--frame-fiducials {args.frame_fiducials!r}: CSV with a header and columns "
                                f"R,A,S,X,Y,Z: {exc}") from exc
        if table.shape[1] != 6:
            raise QSMInputError(f"--frame-fiducials needs 6 columns R,A,S,X,Y,Z, got {table.shape[1]}")
        reg = frame_registration_from_fiducials(table[:, :3], table[:, 3:])
        print(f"frame registration from {len(table)} fiducials: RMS residual {reg.rms_residual_mm:.2f} mm, "
              f"max {reg.max_residual_mm:.2f} mm")
        return reg.ras_to_frame
    return None


def add_target_parser(sub) -> None:
    """Add the ``target`` subcommand to the main parser's subparsers."""
    p = sub.add_parser("target", help="STN/GPi targets in RAS, AC-PC and frame coordinates; trajectory safety")
    src = p.add_argument_group("anatomy (files, or --phantom)")
    src.add_argument("--phantom", action="store_true",
                     help="use the built-in head phantom (true labels, its χ for vessels, its commissures)")
    src.add_argument("--labels", help="nucleus label map (NIfTI), e.g. roi_labels.nii.gz from `roi`")
    src.add_argument("--label-names", help="JSON {value: name} for --labels (default: its sidecar, else the "
                                           "phantom's names)")
    src.add_argument("--qsm", help="QSM (ppm, NIfTI) on the label map's grid, for the vessel segmentation")
    src.add_argument("--mask", help="brain mask on that grid (targets outside it are refused)")
    src.add_argument("--anatomy", help="planning anatomy (NIfTI, any grid in the same RAS space) for --views")
    a = p.add_argument_group("AC-PC landmarks (RAS mm, 'x,y,z')")
    a.add_argument("--ac")
    a.add_argument("--pc")
    a.add_argument("--midline", help="a point in the mid-sagittal plane above the AC-PC line")
    f = p.add_argument_group("stereotactic frame (optional)")
    f.add_argument("--frame-transform", help="text file with the 4x4 rigid image-RAS → frame-aligned-RAS matrix")
    f.add_argument("--frame-fiducials", help="CSV (header; R,A,S,X,Y,Z per row): localiser fiducials in the "
                                             "image and their Leksell coordinates")
    f.add_argument("--mounting", default="lateral-right",
                   choices=("lateral-right", "lateral-left", "sagittal-anterior", "sagittal-posterior"))
    t = p.add_argument_group("targets and trajectories")
    t.add_argument("--stn-subregion", default="dorsolateral", choices=("dorsolateral", "centroid"))
    t.add_argument("--gpi-subregion", default="posteroventral", choices=("posteroventral", "centroid"))
    t.add_argument("--vim", action="store_true", help="add the indirect (AC-PC formula) Vim targets")
    t.add_argument("--entry", action="append", default=[], metavar="TARGET=x,y,z",
                   help="entry point of a target's trajectory, e.g. 'STN right=40,30,60' (default: proposed at 60° "
                        "sagittal / 15° coronal, 70 mm)")
    t.add_argument("--vessel-method", default="frangi", choices=("frangi", "threshold"))
    t.add_argument("--vessel-threshold", type=float, default=None,
                   help="vesselness (frangi, default 0.05) or ppm (threshold, default 0.25)")
    t.add_argument("--margin-mm", type=float, default=2.0, help="vessel distance below which to warn (mm)")
    t.add_argument("--views", action="store_true",
                   help="also write planning views per target (axial, coronal, sagittal, probe's eye) as PNG")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_target)


def _inputs(args: argparse.Namespace):
    """(labels, affine, label names, χ or None, mask or None, AC, PC, midline, input files, anatomy or None)."""
    if args.phantom:
        from ..phantom import HEAD_SCALE, LABEL_NAMES, make_head_model

        h = make_head_model((128, 128, 80), (1.5, 1.5, 1.5))
        # approximate commissures of the MNI152 template the phantom is built from (not located on its images),
        # at the phantom's scale
        lm = {"ac": (0.0, 1.5, -3.5), "pc": (0.0, -25.0, -1.5), "midline": (0.0, -10.0, 50.0)}
        pts = [_point(getattr(args, k), k) if getattr(args, k) else HEAD_SCALE * np.asarray(v) for k, v in lm.items()]
        # the phantom's "anatomy" for the views: its proton density × T2* decay at TE 20 ms (a PD-weighted image)
        anatomy = (h.proton_density * np.exp(-h.r2star_hz * 0.02), h.affine)
        return (h.labels, h.affine, dict(LABEL_NAMES), h.chi_ppm, h.brain_mask, *pts, ["phantom 128x128x80 1.5 mm"],
                anatomy)
    if not args.labels:
        raise QSMInputError("give --labels (a nucleus label map) or --phantom")
    for k in ("ac", "pc", "midline"):
        if not getattr(args, k):
            raise QSMInputError(f"--{k} is missing: the AC-PC frame needs AC, PC and a midline point")
    labels, aff = read_volume(args.labels, "label map")
    files = [args.labels]
    chi = mask = None
    for opt, what in (("qsm", "QSM"), ("mask", "mask")):
        path = getattr(args, opt)
        if path:
            arr, a2 = read_volume(path, what)
            if arr.shape != labels.shape or not np.allclose(a2, aff, atol=1e-3):
                raise QSMInputError(f"--{opt} {path!r} is not on the label map's grid (shape/affine differ)")
            files.append(path)
            if opt == "qsm":
                chi = arr
            else:
                mask = arr > 0
    return (np.rint(labels).astype(np.int32), aff, _label_names(args.labels, args.label_names), chi, mask,
            _point(args.ac, "--ac"), _point(args.pc, "--pc"), _point(args.midline, "--midline"), files, None)


def cmd_target(args: argparse.Namespace) -> int:
    from ..io.writer import make_provenance, write_result
    from .acpc import acpc_frame
    from .export import markups_document, target_rows, write_csv, write_markups_json
    from .frame import ring_arc_angles
    from .targets import check_inside, nuclei_from_names, nucleus_targets, vim_indirect_target
    from .trajectory import entry_from_angles, report_rows, trajectory_report
    from .vessels import segment_vessels, threshold_vessels

    t0 = time.perf_counter()
    labels, aff, names, chi, mask, ac, pc, mid, files, anatomy = _inputs(args)
    acpc = acpc_frame(ac, pc, mid)
    ras_to_frame = _frame(args)
    nuclei = nuclei_from_names(names, ("STN", "GPi"))
    targets = nucleus_targets(labels, aff, nuclei, {"STN": args.stn_subregion, "GPi": args.gpi_subregion}, acpc)
    if args.vim:
        targets += [vim_indirect_target(acpc, side) for side in ("right", "left")]
    if mask is not None:
        for t in targets:
            check_inside(t.ras_mm, mask, aff, t.name)
    entries: Dict[str, np.ndarray] = {}
    for item in args.entry:
        name, _, xyz = item.partition("=")
        if name.strip() not in {t.name for t in targets}:
            raise QSMInputError(f"--entry {item!r}: no target named {name.strip()!r}; targets are "
                                f"{[t.name for t in targets]}")
        entries[name.strip()] = _point(xyz, f"--entry {name.strip()}")
    vessels = None
    if chi is not None:
        vs = tuple(float(v) for v in np.linalg.norm(aff[:3, :3], axis=0))
        if args.vessel_method == "frangi":
            thr = 0.05 if args.vessel_threshold is None else args.vessel_threshold
            vessels = segment_vessels(chi, vs, threshold=thr, mask=mask)
        else:
            thr = 0.25 if args.vessel_threshold is None else args.vessel_threshold
            vessels = threshold_vessels(chi, vs, thr, mask=mask)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    masks = {n: np.isin(labels, v) for n, v in nuclei.items()}
    reports, extra_rows = {}, []
    for t in targets:
        entry = entries.get(t.name)
        if entry is None:
            entry = entry_from_angles(t.ras_mm, acpc.rotation, t.side)
        title = f"{t.name} trajectory"
        reports[title] = trajectory_report(entry, t.ras_mm, aff, vessels, masks,
                                           t.nucleus if t.nucleus in masks else None, args.margin_mm)
        write_markups_json(out / f"{t.nucleus}_{t.side}_trajectory.mrk.json",
                           markups_document("Line", [("entry", entry), ("target", t.ras_mm)], title))
        if ras_to_frame is not None:
            ring, arc = ring_arc_angles(t.ras_mm, entry, ras_to_frame, args.mounting)
            extra_rows.append({"ring_deg": round(ring, 2), "arc_deg": round(arc, 2)})
    points: List[Tuple[str, np.ndarray]] = [(t.name, t.ras_mm) for t in targets]
    write_markups_json(out / "targets.mrk.json", markups_document("Fiducial", points, "Targets",
                                                                  [t.method for t in targets]))
    rows = target_rows(points, acpc, ras_to_frame)
    for row, t in zip(rows, targets):
        row["method"] = t.method
    write_csv(out / "targets.csv", rows)
    traj_rows = report_rows(reports)
    for row, extra in zip(traj_rows, extra_rows):
        row.update(extra)
    write_csv(out / "trajectories.csv", traj_rows)
    seconds = time.perf_counter() - t0
    written = ["targets.mrk.json", "targets.csv", "trajectories.csv", f"{len(targets)} trajectory .mrk.json"]
    if vessels is not None:
        prov = make_provenance("targeting", args.vessel_method, {"threshold": thr}, seconds, output="vessels")
        write_result(out / "vessels.nii.gz", vessels.astype(np.float32), aff, prov, input_paths=files, units="label")
        written.append("vessels.nii.gz")
    if args.views:
        from .figure import planning_figure

        if args.anatomy:
            anatomy = read_volume(args.anatomy, "anatomy")
        for t in targets:
            title = f"{t.name} ({t.method}); trajectory {reports[f'{t.name} trajectory'].length_mm:.0f} mm"
            planning_figure(out / f"{t.nucleus}_{t.side}_views.png", t.ras_mm,
                            (chi if chi is not None else labels.astype(np.float32), aff), anatomy, (labels, aff),
                            nuclei, None if vessels is None else (vessels, aff),
                            reports[f"{t.name} trajectory"].entry_ras_mm, title)
        written.append(f"{len(targets)} planning-view PNGs")
    for row in rows:
        print(f"  {row['name']:<10} RAS ({row['R_mm']:7.1f}, {row['A_mm']:7.1f}, {row['S_mm']:7.1f})  AC-PC "
              f"{row['lateral_mm']:5.1f} {row['side']:<5} AP {row['AP_mm']:+5.1f} vert {row['vertical_mm']:+5.1f}"
              + (f"  frame X {row['frame_X_mm']:.1f} Y {row['frame_Y_mm']:.1f} Z {row['frame_Z_mm']:.1f}"
                 if "frame_X_mm" in row else ""))
    for name, r in reports.items():
        for w in r.warnings:
            print(f"  WARNING {name}: {w}")
    print(f"wrote {', '.join(written)} to {out.resolve()} ({seconds:.1f} s)")
    return 0
