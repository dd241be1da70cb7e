"""One run of a cohort: load, the configured pipeline, the deep-grey-nuclei measures, BIDS-derivative outputs.

:func:`process_run` is the task the cohort gives Dask (or runs in a loop with ``--serial``). It never raises for a
bad run: the error comes back as a failed record and is logged under ``<out>/logs``, so one subject cannot stop the
others. Its outputs (``<out>/sub-*/[ses-*/]anat``, named as in the BIDS derivatives conventions)::

    <stem>_Chimap.nii.gz            susceptibility χ (ppm), reference in the sidecar
    <stem>_R2starmap.nii.gz         R2* (1/s)
    <stem>_swi.nii.gz               SWI (a.u.);  <stem>_desc-minIP_swi.nii.gz: its minimum-intensity projection
    <stem>_desc-brain_mask.nii.gz   brain mask;  <stem>_desc-qsm_mask.nii.gz: the mask χ is defined on
    <stem>_atlas-<name>_dseg.nii.gz the atlas regions on the subject grid
    <stem>_roi.csv, <stem>_roi.json deep-grey-nuclei χ per region and hemisphere (:mod:`QSMLogic.roi`)
    <stem>_provenance.json          the run's record: configuration and its fingerprint, input checksums,
                                    outputs, QC, peak memory, every stage's provenance, the command line, the
                                    version and source revision — written last

Every image has a JSON sidecar with its stage's provenance. Atomicity: the run writes everything into its own
folder under ``<out>/.work``, then removes the previous ``_provenance.json``, renames each file into place and
writes the new ``_provenance.json`` last. A run counts as done only when that record exists, matches the
configuration and the inputs, and lists files that all exist (:func:`completed`); a run killed at any moment
therefore leaves either no file under a final name or files that the next invocation replaces, never a half file
and never a "done" run with missing or stale outputs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import socket
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import __version__
from ..bench.common import PeakRSS
from ..errors import QSMInputError
from .discovery import RunSpec

#: Pipeline output → BIDS-derivative suffix (with its ``desc`` entity where one is needed).
OUTPUT_SUFFIXES = {
    "chi_ppm": "Chimap", "r2star_hz": "R2starmap", "swi": "swi", "mip": "desc-minIP_swi",
    "mask": "desc-brain_mask", "qsm_mask": "desc-qsm_mask",
}
#: Folder (under the output root) where runs stage their files before renaming them into place.
WORK_FOLDER = ".work"
#: Folder (under the output root) holding one error record per failed run.
LOG_FOLDER = "logs"
#: Seconds between two samples of the process's resident memory while a run is measured.
MEMORY_SAMPLE_S = 0.02


@dataclass
class BatchConfig:
    """Everything that decides a run's outputs: the pipeline configuration, the ROI measure and the input reading.

    Two invocations with equal :meth:`fingerprint` (and the same package version) produce the same outputs, so a
    run done under one is skipped under the other.
    """

    pipeline: Dict[str, Any] = field(default_factory=dict)
    atlas: str = "cit168"
    atlas_dir: Optional[str] = None
    roi_reference: str = "whole_brain"
    roi_erode_mm: float = 0.0
    roi_deformable: bool = True
    phase_rule: str = "auto"
    phase_sign: int = 1
    nan_policy: str = "error"
    #: How the batch was started (command line, working folder, version, source revision): recorded with every
    #: run, not part of the configuration (:meth:`as_dict`, :meth:`fingerprint`).
    invocation: Dict[str, Any] = field(default_factory=dict, compare=False)

    def pipeline_config(self):
        from ..pipeline import PipelineConfig

        return PipelineConfig.from_dict(self.pipeline) if self.pipeline else PipelineConfig.default()

    def validate(self) -> None:
        """Refuse, before any run, a configuration without a χ map (the ROI measures need one)."""
        stages = self.pipeline_config().stages
        for key in ("mask", "unwrap", "field_mapping", "inversion", "reference"):
            if not stages[key].get("enabled", True):
                raise QSMInputError(f"the batch measures χ in the deep-grey nuclei: the {key} stage cannot be "
                                    "disabled")

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d.pop("invocation")
        d["pipeline"] = self.pipeline_config().to_dict()
        return d

    def fingerprint(self) -> str:
        """SHA-256 of the configuration (every stage's method and parameters, ROI and reading options) and the
        package version."""
        text = json.dumps({"config": self.as_dict(), "version": __version__}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def marker_path(spec: RunSpec, out_root: str) -> str:
    """The run's ``_provenance.json`` (written last; its presence and content say the run is done)."""
    return os.path.join(spec.derivative_folder(out_root), f"{spec.stem}_provenance.json")


def error_log_path(spec: RunSpec, out_root: str) -> str:
    return os.path.join(out_root, LOG_FOLDER, f"{spec.stem}_error.json")


def _input_files(paths: List[str]) -> List[str]:
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += [os.path.join(r, n) for r, _, names in sorted(os.walk(p)) for n in sorted(names)]
        else:
            files.append(p)
    return files


def input_state(paths: List[str], known: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Dict[str, Any]]:
    """Size, modification time and SHA-256 of every input file (a DICOM folder: each file in it). A file whose size
    and time equal those in ``known`` keeps its known checksum instead of being read again."""
    from ..io.outputs import file_sha256

    out: Dict[str, Dict[str, Any]] = {}
    for f in _input_files(paths):
        st = os.stat(f)
        prev = (known or {}).get(f)
        if prev and prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns:
            out[f] = dict(prev)
        else:
            out[f] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(f)}
    return out


def completed(spec: RunSpec, out_root: str, cfg: BatchConfig) -> Tuple[bool, str]:
    """(done, why): the run is done when its record exists, says "done", has this configuration's fingerprint,
    lists outputs that all exist and input checksums that match the files now."""
    path = marker_path(spec, out_root)
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        return False, "not run yet"
    except (OSError, ValueError):
        return False, "its record is unreadable"
    if rec.get("status") != "done":
        return False, "not finished"
    if rec.get("fingerprint") != cfg.fingerprint():
        return False, "the configuration or the package version changed"
    folder = os.path.dirname(path)
    missing = [n for n in rec.get("outputs", []) if not os.path.exists(os.path.join(folder, n))]
    if missing:
        return False, f"output {missing[0]} is missing"
    try:
        now = input_state(spec.input_paths, rec.get("inputs"))
    except OSError as exc:
        return False, f"an input cannot be read ({exc})"
    old = rec.get("inputs", {})
    if set(now) != set(old) or any(now[k]["sha256"] != old[k].get("sha256") for k in now):
        return False, "the input files changed"
    return True, "done with this configuration"


@functools.lru_cache(maxsize=2)
def _atlas(name: str, folder: Optional[str]):
    from ..roi.atlas import load_atlas

    return load_atlas(name, folder)


def quality_line(gre, res) -> Dict[str, Any]:
    """Per-run QC: mask volumes (mL), the unwrapping's untrusted voxels and failed echoes, field outliers and the
    field fit's residual (median over the field mask of each voxel's RMS phase residual over the fitted echoes,
    rad; the unweighted residual of φ_n = φ0 + 2π·Δf·TE_n, with φ0 the voxel's mean offset)."""
    voxel_ml = float(np.prod(gre.voxel_size_mm)) / 1000.0
    mask = res.outputs["mask"].astype(bool)
    field_mask = res.outputs.get("field_mask", res.outputs["mask"]).astype(bool)
    qc: Dict[str, Any] = {
        "mask_volume_ml": round(float(mask.sum()) * voxel_ml, 2),
        "qsm_mask_volume_ml": round(float(res.outputs["qsm_mask"].astype(bool).sum()) * voxel_ml, 2),
        "field_outliers_removed": int(res.details.get("field_outliers_removed", 0)),
        "invalid_voxels_removed": int(res.details.get("invalid_voxels_removed", 0)),
    }
    unwrap = res.details.get("unwrap")
    qc["unwrap_untrusted_voxels"] = int(np.count_nonzero(np.asarray(unwrap.unreliable) & mask))
    qc["unwrap_untrusted_fraction"] = round(qc["unwrap_untrusted_voxels"] / max(1, int(mask.sum())), 4)
    qc["unwrap_failed_echoes"] = [n + 1 for n, ok in enumerate(getattr(unwrap, "echo_ok", ())) if not ok]
    used = [e - 1 for e in res.provenance["input"]["field_mapping_echoes"]]
    te = np.asarray([gre.te_s[n] for n in used], np.float64)
    phase = np.asarray(unwrap.unwrapped, np.float64)[field_mask][:, used]
    model = 2.0 * np.pi * res.outputs["field_hz"][field_mask].astype(np.float64)[:, None] * te[None, :]
    resid = phase - model
    resid -= resid.mean(axis=1, keepdims=True)
    rms = np.sqrt(np.mean(resid ** 2, axis=1))
    qc["field_fit_residual_rad"] = round(float(np.median(rms)), 5) if rms.size else None
    return qc


def _map_record(name: str, res, cfg: BatchConfig) -> Dict[str, Any]:
    from ..io.writer import make_provenance
    from ..pipeline import output_stage

    key = output_stage(name)
    rec = next((r for r in res.provenance["stages"] if r["stage"] == key), None) or {}
    return make_provenance(key or "pipeline", rec.get("method", "pipeline"), rec.get("params", {}),
                           rec.get("seconds", res.provenance["total_seconds"]), output=name,
                           method_reference=rec.get("reference", ""), batch_fingerprint=cfg.fingerprint())


def _measure_roi(res, gre, cfg: BatchConfig):
    from ..roi.measures import measure_regions
    from ..roi.regions import atlas_regions

    chi = res.outputs["chi_ppm"]
    mask = res.outputs["qsm_mask"].astype(bool)
    atlas = _atlas(cfg.atlas, cfg.atlas_dir)
    regs = atlas_regions(np.where(mask, chi, 0.0), res.affine, atlas, "qsm", subject_mask=mask,
                         deformable=cfg.roi_deformable)
    rows = measure_regions(chi, regs.labels, regs.regions, gre.voxel_size_mm, mask=mask, reference=cfg.roi_reference,
                           erosion_mm=cfg.roi_erode_mm, source=regs.source,
                           expected_volume_mm3=regs.expected_volume_mm3)
    return atlas, regs, rows


def _write_outputs(staging: str, spec: RunSpec, res, gre, cfg: BatchConfig, atlas, regs, rows) -> List[str]:
    from ..io.writer import write_result
    from ..roi.report import write_csv, write_json

    names = []
    units = res.provenance["units"]
    for key, suffix in OUTPUT_SUFFIXES.items():
        if key not in res.outputs:
            continue
        name = f"{spec.stem}_{suffix}.nii.gz"
        ref = res.provenance["susceptibility_reference"]["reference"] if key == "chi_ppm" else None
        write_result(os.path.join(staging, name), res.outputs[key], res.affine, _map_record(key, res, cfg),
                     input_paths=spec.input_paths, units=units.get(key, "1"), reference_region=ref)
        names += [name, name[: -len(".nii.gz")] + ".json"]
    dseg = f"{spec.stem}_atlas-{atlas.name.upper()}_dseg.nii.gz"
    labels = {str(k): r.name for k, r in regs.regions.items()}
    write_result(os.path.join(staging, dseg), regs.labels.astype(np.float32), res.affine,
                 {"stage": "roi", "atlas": atlas.name, "atlas_citation": atlas.citation, "label_names": labels,
                  "registration_stages": regs.registration.stages if regs.registration else None},
                 input_paths=spec.input_paths, units="label")
    names += [dseg, dseg[: -len(".nii.gz")] + ".json"]
    write_csv(rows, os.path.join(staging, f"{spec.stem}_roi.csv"))
    write_json(rows, os.path.join(staging, f"{spec.stem}_roi.json"),
               {"atlas": atlas.name, "atlas_citation": atlas.citation, "reference": cfg.roi_reference,
                "erosion_mm": cfg.roi_erode_mm, "source": regs.source})
    return names + [f"{spec.stem}_roi.csv", f"{spec.stem}_roi.json"]


def _commit(staging: str, spec: RunSpec, out_root: str, names: List[str], record: Dict[str, Any]) -> None:
    """Move the staged files into place: old record removed first, new record written last."""
    from ..io.outputs import write_text_atomic

    final = spec.derivative_folder(out_root)
    os.makedirs(final, exist_ok=True)
    marker = marker_path(spec, out_root)
    old_outputs: List[str] = []
    if os.path.exists(marker):
        try:
            with open(marker, encoding="utf-8") as f:
                old_outputs = list(json.load(f).get("outputs", []))
        except (OSError, ValueError):
            old_outputs = []
        os.remove(marker)
    for name in names:
        os.replace(os.path.join(staging, name), os.path.join(final, name))
    for name in set(old_outputs) - set(names):
        p = os.path.join(final, os.path.basename(name))
        if os.path.exists(p):
            os.remove(p)
    write_text_atomic(marker, json.dumps(record, indent=1, default=str))
    shutil.rmtree(staging, ignore_errors=True)


def staging_folder(spec: RunSpec, out_root: str) -> str:
    """A new folder, unique to this attempt, where the run writes before renaming into place."""
    tag = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    path = os.path.join(out_root, WORK_FOLDER, f"{spec.stem}.{tag}")
    os.makedirs(path)
    return path


def clear_stale_staging(spec: RunSpec, out_root: str) -> int:
    """Remove what killed earlier attempts of this run left in ``.work``; returns how many folders went."""
    work = os.path.join(out_root, WORK_FOLDER)
    if not os.path.isdir(work):
        return 0
    gone = 0
    for name in os.listdir(work):
        if name.startswith(spec.stem + "."):
            shutil.rmtree(os.path.join(work, name), ignore_errors=True)
            gone += 1
    return gone


def _compute(spec: RunSpec, out_root: str, cfg: BatchConfig) -> Dict[str, Any]:
    from ..fov import check_volume_is_3d
    from ..io import load_gre
    from ..io.outputs import source_revision
    from ..pipeline import run_pipeline

    if spec.problem:
        raise QSMInputError(spec.problem)
    inputs = input_state(spec.input_paths)
    gre = load_gre(magnitude=(spec.magnitude[0] if len(spec.magnitude) == 1 else spec.magnitude) or None,
                   phase=spec.phase[0] if len(spec.phase) == 1 else spec.phase,
                   phase_rule=cfg.phase_rule, phase_sign=cfg.phase_sign, nan_policy=cfg.nan_policy)
    check_volume_is_3d(gre.shape, gre.voxel_size_mm, spec.phase[0])
    res = run_pipeline(gre, cfg.pipeline_config())
    qc = quality_line(gre, res)
    atlas, regs, rows = _measure_roi(res, gre, cfg)
    staging = staging_folder(spec, out_root)
    try:
        names = _write_outputs(staging, spec, res, gre, cfg, atlas, regs, rows)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record = {
        "status": "done", "stem": spec.stem, "subject": spec.subject, "session": spec.session,
        "entities": spec.entities, "fingerprint": cfg.fingerprint(), "configuration": cfg.as_dict(),
        "software": {"name": "SusceptibilityMRI (QSMLogic)", "version": __version__,
                     "source_revision": source_revision()},
        "inputs": inputs, "outputs": names + [os.path.basename(marker_path(spec, out_root))], "qc": qc,
        "shape": list(gre.shape), "n_echoes": gre.n_echoes, "n_coils": gre.n_coils,
        "pipeline": json.loads(res.provenance_json()),
        "roi_flags": {r.region: r.flag for r in rows if r.flag},
        "invocation": cfg.invocation, "host": socket.gethostname(), "pid": os.getpid(),
    }
    return {"record": record, "staging": staging, "names": names, "qc": qc}


def process_run(spec: RunSpec, out_root: str, cfg: BatchConfig, numba_threads: Optional[int] = None
                ) -> Dict[str, Any]:
    """Process one run and return its summary (``status`` "done" or "failed", ``error``, ``seconds``,
    ``peak_memory_mb``: the process's highest resident memory, ``memory_increase_mb``: its rise above the start,
    i.e. what the run itself needed; ``qc``). Errors are caught, logged to
    ``<out>/logs/<stem>_error.json`` and returned; they never propagate. ``numba_threads`` limits the numba threads
    of this process (one run per core uses the cores better than one run on all of them)."""
    from ..io.outputs import write_text_atomic

    if numba_threads:
        import numba

        numba.set_num_threads(max(1, min(int(numba_threads), numba.config.NUMBA_NUM_THREADS)))
    t0 = time.perf_counter()
    summary: Dict[str, Any] = {"stem": spec.stem, "subject": spec.subject, "session": spec.session,
                               "host": socket.gethostname(), "pid": os.getpid()}
    log = error_log_path(spec, out_root)
    with PeakRSS(MEMORY_SAMPLE_S) as mem:
        try:
            done = _compute(spec, out_root, cfg)
            done["record"].update(seconds=round(time.perf_counter() - t0, 2),
                                  peak_memory_mb=round(mem.start_mb + mem.peak_mb, 1),
                                  memory_increase_mb=round(mem.peak_mb, 1))
            _commit(done["staging"], spec, out_root, done["names"], done["record"])
            summary.update(status="done", qc=done["qc"])
        except Exception as exc:  # noqa: BLE001 — a failing run is recorded, never allowed to stop the cohort
            summary.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                           traceback=traceback.format_exc(limit=6))
    summary.update(seconds=round(time.perf_counter() - t0, 2), peak_memory_mb=round(mem.start_mb + mem.peak_mb, 1),
                   memory_increase_mb=round(mem.peak_mb, 1))
    if summary["status"] == "failed":
        os.makedirs(os.path.dirname(log), exist_ok=True)
        write_text_atomic(log, json.dumps({**summary, "inputs": spec.input_paths}, indent=1))
    elif os.path.exists(log):
        os.remove(log)
    return summary
