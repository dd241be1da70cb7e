"""The cohort's group table: every done run's nucleus values with its QC line, as CSV, TSV and JSON, and a PNG.

Read back from the per-run files (``<stem>_roi.csv`` and ``<stem>_provenance.json``), so the table always agrees
with them, including runs done by an earlier invocation. Files, in ``<out>/group``:

* ``roi_group.csv`` / ``roi_group.tsv``: one row per run, region and hemisphere — subject, session, run stem,
  every column of the per-run table, and the run's QC columns (``qc_*``);
* ``roi_group.json``: the rows (numbers as numbers, empty cells as null), the QC line of every run, the failed
  runs with their errors, the configuration;
* ``qc.tsv``: one QC line per run (done or failed);
* ``roi_group.png``: χ of each region across subjects (one dot per run, the median as a bar).
"""
from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List

from .discovery import RunSpec
from .run import BatchConfig, completed, marker_path

#: Folder of the group files under the output root.
GROUP_FOLDER = "group"
#: QC fields of a run, in column order.
QC_FIELDS = ("mask_volume_ml", "qsm_mask_volume_ml", "unwrap_untrusted_voxels", "unwrap_untrusted_fraction",
             "unwrap_failed_echoes", "field_outliers_removed", "invalid_voxels_removed", "field_fit_residual_rad")


def _qc_cells(qc: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k in QC_FIELDS:
        v = qc.get(k)
        out[f"qc_{k}"] = " ".join(str(e) for e in v) if isinstance(v, list) else ("" if v is None else v)
    return out


def collect_rows(runs: List[RunSpec], out_root: str, cfg: BatchConfig) -> List[Dict[str, Any]]:
    """Every row of the ``<stem>_roi.csv`` of every run done with ``cfg`` (:func:`~.run.completed`: results of
    another configuration or of changed inputs stay out), as text the way the file holds it, prefixed by subject,
    session and run, followed by the run's QC cells."""
    rows: List[Dict[str, Any]] = []
    for spec in runs:
        if not completed(spec, out_root, cfg)[0]:
            continue
        with open(marker_path(spec, out_root), encoding="utf-8") as f:
            rec = json.load(f)
        csv_path = os.path.join(spec.derivative_folder(out_root), f"{spec.stem}_roi.csv")
        with open(csv_path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                rows.append({"subject": spec.subject, "session": spec.session or "", "run": spec.stem, **r,
                             **_qc_cells(rec.get("qc", {}))})
    return rows


def _typed(value: Any) -> Any:
    """A table cell for JSON: numbers as numbers, empty cells as null, other text as text."""
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _write_table(rows: List[Dict[str, Any]], path: str, delimiter: str) -> None:
    from ..io.outputs import atomic_path

    fields = list(rows[0]) if rows else ["subject", "session", "run"]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=fields, delimiter=delimiter, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)


def plot_group(rows: List[Dict[str, Any]], path: str, title: str = "") -> None:
    """χ (mean per region, ppm) across runs: one column per region and hemisphere, a dot per run, the median as a
    horizontal bar."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    from ..io.outputs import atomic_path

    values: Dict[str, List[float]] = {}
    for r in rows:
        if r.get("mean_ppm") not in ("", None):
            values.setdefault(r["region"], []).append(float(r["mean_ppm"]))
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.5), dpi=100)
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        v = np.asarray(values[name])
        ax.plot(i + rng.uniform(-0.15, 0.15, v.size), v, "o", ms=4, alpha=0.7, color="C0")
        ax.plot([i - 0.3, i + 0.3], [np.median(v)] * 2, color="C3", lw=2)
    ax.axhline(0.0, color="k", lw=0.6)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("χ (ppm): dots runs, bars median")
    n_runs = len({r["run"] for r in rows})
    ref = rows[0].get("reference", "") if rows else ""
    ax.set_title(f"{title}{n_runs} run(s); reference: {ref}", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def write_group(runs: List[RunSpec], summaries: List[Dict[str, Any]], out_root: str,
                cfg: BatchConfig) -> Dict[str, str]:
    """Write the group files for ``runs`` done with ``cfg`` (with their ``summaries`` from the cohort); returns
    their paths."""
    from ..io.outputs import write_text_atomic

    folder = os.path.join(out_root, GROUP_FOLDER)
    os.makedirs(folder, exist_ok=True)
    rows = collect_rows(runs, out_root, cfg)
    paths = {k: os.path.join(folder, n) for k, n in (("csv", "roi_group.csv"), ("tsv", "roi_group.tsv"),
                                                      ("json", "roi_group.json"), ("qc", "qc.tsv"),
                                                      ("png", "roi_group.png"))}
    _write_table(rows, paths["csv"], ",")
    _write_table(rows, paths["tsv"], "\t")
    qc_rows = []
    for s in summaries:
        qc_rows.append({"subject": s["subject"], "session": s.get("session") or "", "run": s["stem"],
                        "status": s["status"], "seconds": s.get("seconds", ""),
                        "peak_memory_mb": s.get("peak_memory_mb", ""), **_qc_cells(s.get("qc") or {}),
                        "error": s.get("error", "")})
    _write_table(qc_rows, paths["qc"], "\t")
    failures = [{"run": s["stem"], "subject": s["subject"], "error": s.get("error", "")}
                for s in summaries if s["status"] == "failed"]
    typed = [{k: _typed(v) for k, v in r.items()} for r in rows]
    write_text_atomic(paths["json"], json.dumps({"rows": typed, "runs": qc_rows, "failures": failures,
                                                 "configuration": cfg.as_dict(),
                                                 "fingerprint": cfg.fingerprint()}, indent=1, default=str))
    plot_group(rows, paths["png"])
    return paths
