"""A cohort of runs on Dask (``dask.distributed``): a ``LocalCluster`` by default, or any running scheduler.

The scheduling is Dask's: one task per run (:func:`~QSMLogic.batch.run.process_run`), submitted with
``client.submit`` and collected with ``as_completed``; a worker that dies has its task retried elsewhere by the
scheduler, and a task that still fails is recorded as a failed run. Before anything is submitted:

* runs already done with this configuration (:func:`~QSMLogic.batch.run.completed`) are skipped, and folders that
  killed attempts left in ``<out>/.work`` are removed;
* each run's peak memory is estimated from its size (voxels × echoes × coils, read from the NIfTI headers):
  :data:`RUN_FIXED_MB` plus :data:`RUN_BYTES_PER_VOXEL_ECHO` per voxel-echo, or the larger per-voxel memory
  measured on earlier runs of this output folder (every run records its measured peak), and the concurrency
  follows from it: a ``LocalCluster`` gets as many single-threaded worker processes as the cores and
  ``MEMORY_FRACTION`` × the available memory allow; on an existing cluster each task asks for its memory as the
  Dask resource ``MEMORY_MB`` when the workers declare it (``dask worker --resources MEMORY_MB=...``), else a
  warning says how many runs per worker its memory allows.

Progress: a bar over subjects (a subject is finished when all its runs are) on stderr, and the dashboard link.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, TextIO

from ..errors import QSMInputError
from .discovery import RunSpec
from .run import BatchConfig, clear_stale_staging, completed, marker_path, process_run

#: Resident memory of a worker process once the library is imported, before its first run (MB), measured with
#: :class:`~QSMLogic.bench.common.PeakRSS` in the runs' records (docs/benchmarks.md, "Cohort processing").
WORKER_BASE_MB = 250.0
#: Memory a run needs whatever its size (MB): the atlas, its template and the registration (measured: a rise of
#: ~350 MB at 48×48×32 × 3 echoes with the affine registration only, where the images take a few MB; ~540 MB with
#: the deformable stage at 64×64×40 × 3: worker peak RSS 790 MB less its ~250 MB after import).
RUN_FIXED_MB = 550.0
#: Memory a run adds per voxel × echo × coil (bytes): the default pipeline's peak at 256×256×160 × 5 echoes is
#: 1235 MiB (docs/benchmarks.md, "pipeline"), 25 bytes per voxel-echo.
RUN_BYTES_PER_VOXEL_ECHO = 25.0
#: Fraction of the available memory (LocalCluster) or of a worker's memory limit that runs may fill.
MEMORY_FRACTION = 0.8
#: What to do when Dask is missing.
INSTALL_HINT = "the batch command needs Dask: pip install 'susceptibility-mri[batch]'"


@dataclass
class CohortPlan:
    """How the runs are spread: ``workers`` processes (LocalCluster) or the scheduler's workers, the estimated
    peak memory of one run (MB) and the numba threads each run uses."""

    run_memory_mb: float
    workers: int = 1
    numba_threads: int = 1
    memory_per_worker_mb: float = 0.0
    notes: List[str] = field(default_factory=list)


def run_size(spec: RunSpec) -> Optional[int]:
    """Voxels × echoes × coils of a NIfTI run from its headers (no data read); None for DICOM."""
    if spec.kind != "nifti":
        return None
    import nibabel as nib

    total = 0
    for path in spec.phase:
        shape = nib.load(path).shape
        total += int(math.prod(shape))
    return total


def measured_bytes_per_voxel(specs: List[RunSpec], out_root: str) -> float:
    """The largest memory per voxel × echo × coil beyond :data:`RUN_FIXED_MB` that earlier runs in ``out_root``
    recorded (0 if none)."""
    import json

    best = 0.0
    for spec in specs:
        try:
            with open(marker_path(spec, out_root), encoding="utf-8") as f:
                rec = json.load(f)
            size = math.prod(rec["shape"]) * rec["n_echoes"] * max(1, rec["n_coils"])
            best = max(best, (float(rec["memory_increase_mb"]) - RUN_FIXED_MB) * 2.0 ** 20 / size)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return best


def estimate_run_memory_mb(pending: List[RunSpec], all_runs: List[RunSpec], out_root: str) -> float:
    """Peak memory (MB) of the largest pending run: :data:`RUN_FIXED_MB` plus its size times the per-voxel memory
    (:data:`RUN_BYTES_PER_VOXEL_ECHO`, or the larger value measured on earlier runs of ``out_root``)."""
    per_voxel = max(RUN_BYTES_PER_VOXEL_ECHO, measured_bytes_per_voxel(all_runs, out_root))
    sizes = [s for s in (run_size(r) for r in pending) if s]
    if not sizes:  # DICOM only: a 256×256×160 × 5-echo acquisition
        sizes = [256 * 256 * 160 * 5]
    return RUN_FIXED_MB + max(sizes) * per_voxel / 2.0 ** 20


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or ``taskset``'s limit), else all."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_local(run_memory_mb: float, n_runs: int, workers: Optional[int] = None,
               available_mb: Optional[float] = None, cores: Optional[int] = None) -> CohortPlan:
    """Worker processes for a LocalCluster: the cores (or ``workers``), fewer when ``MEMORY_FRACTION`` of the
    available memory cannot hold that many runs (each worker: :data:`WORKER_BASE_MB` + one run)."""
    import psutil

    cores = cores or usable_cores()
    avail = available_mb if available_mb is not None else psutil.virtual_memory().available / 2.0 ** 20
    per_worker = WORKER_BASE_MB + run_memory_mb
    by_memory = int(MEMORY_FRACTION * avail // per_worker)
    if by_memory < 1:
        raise QSMInputError(f"one run needs about {per_worker / 1024:.1f} GiB but only {avail / 1024:.1f} GiB of "
                            "memory is available: free memory or use a machine with more")
    wanted = workers or cores
    n = max(1, min(wanted, by_memory, max(1, n_runs)))
    plan = CohortPlan(run_memory_mb=run_memory_mb, workers=n, numba_threads=max(1, cores // n),
                      memory_per_worker_mb=MEMORY_FRACTION * avail / n)
    if by_memory < wanted:
        plan.notes.append(f"memory allows {by_memory} run(s) at a time ({avail / 1024:.1f} GiB available, "
                          f"~{per_worker / 1024:.2f} GiB per worker and run): {n} worker(s) instead of {wanted}")
    return plan


def plan_existing(client, run_memory_mb: float) -> CohortPlan:
    """Concurrency on a running cluster: runs per worker from its memory limit; ``resources`` are used when every
    worker declares ``MEMORY_MB``."""
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        raise QSMInputError("the Dask scheduler has no worker: start some (dask worker ADDRESS) and try again")
    plan = CohortPlan(run_memory_mb=run_memory_mb, workers=len(workers))
    for addr, w in workers.items():
        limit_mb = (w.get("memory_limit") or 0) / 2.0 ** 20
        nthreads = int(w.get("nthreads", 1))
        declared = (w.get("resources") or {}).get("MEMORY_MB")
        if declared is not None:
            if declared < run_memory_mb:
                plan.notes.append(f"worker {addr} declares MEMORY_MB={declared:g}, less than one run's "
                                  f"~{run_memory_mb:.0f} MB: it will get no run")
            continue
        if limit_mb:
            fits = int((MEMORY_FRACTION * limit_mb - WORKER_BASE_MB) // run_memory_mb)
            if fits < nthreads:
                plan.notes.append(
                    f"worker {addr} has {nthreads} thread(s) and {limit_mb / 1024:.1f} GiB: memory allows "
                    f"{max(fits, 0)} run(s) at a time (~{run_memory_mb:.0f} MB each); start workers with "
                    f"--nthreads {max(fits, 1)} "
                    f"or --resources MEMORY_MB={int(MEMORY_FRACTION * limit_mb - WORKER_BASE_MB)}")
    return plan


class SubjectProgress:
    """A progress bar over subjects: a subject is finished when every one of its runs is."""

    def __init__(self, runs: List[RunSpec], stream: Optional[TextIO] = None, width: int = 30) -> None:
        self.left: Dict[str, int] = {}
        for r in runs:
            self.left[r.subject] = self.left.get(r.subject, 0) + 1
        self.n_subjects = len(self.left)
        self.n_runs = len(runs)
        self.runs_done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    @property
    def subjects_done(self) -> int:
        return sum(1 for v in self.left.values() if v == 0)

    def line(self, last: str = "") -> str:
        frac = self.subjects_done / max(1, self.n_subjects)
        bar = "#" * int(round(frac * self.width))
        fail = f", {self.failed} failed" if self.failed else ""
        return (f"[{bar:<{self.width}}] {self.subjects_done}/{self.n_subjects} subjects "
                f"({self.runs_done}/{self.n_runs} runs{fail}){'  ' + last if last else ''}")

    def update(self, spec: RunSpec, status: str) -> None:
        self.left[spec.subject] -= 1
        self.runs_done += 1
        self.failed += status == "failed"
        text = self.line(f"{spec.stem}: {status}")
        if self.tty:
            print("\r" + text.ljust(110), end="", file=self.stream, flush=True)
            if self.runs_done == self.n_runs:
                print(file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start(self) -> None:
        print(self.line(), end="" if self.tty else "\n", file=self.stream, flush=True)


def _failed(spec: RunSpec, error: str) -> Dict[str, Any]:
    return {"stem": spec.stem, "subject": spec.subject, "session": spec.session, "status": "failed", "error": error}


def _run_serial(pending: List[RunSpec], out_root: str, cfg: BatchConfig, plan: CohortPlan,
                progress: SubjectProgress) -> List[Dict[str, Any]]:
    results = []
    for spec in pending:
        res = process_run(spec, out_root, cfg, plan.numba_threads)
        progress.update(spec, res["status"])
        results.append(res)
    return results


def _run_dask(client, pending: List[RunSpec], out_root: str, cfg: BatchConfig, plan: CohortPlan,
              progress: SubjectProgress) -> List[Dict[str, Any]]:
    from distributed import as_completed

    workers = client.scheduler_info().get("workers", {}).values()
    use_resources = bool(workers) and all("MEMORY_MB" in (w.get("resources") or {}) for w in workers)
    if use_resources:
        most = max(float(w["resources"]["MEMORY_MB"]) for w in workers)
        if most < plan.run_memory_mb:
            raise QSMInputError(f"every worker declares less MEMORY_MB (at most {most:g}) than one run needs "
                                f"(~{plan.run_memory_mb:.0f} MB): no run could ever start; restart the workers with "
                                f"--resources MEMORY_MB={int(plan.run_memory_mb) + 1} or more")
    extra = {"resources": {"MEMORY_MB": plan.run_memory_mb}} if use_resources else {}
    futures = [client.submit(process_run, spec, out_root, cfg, plan.numba_threads, pure=False,
                             key=f"qsm-run-{spec.stem}-{uuid.uuid4().hex[:8]}", **extra) for spec in pending]
    spec_of = {fut.key: spec for fut, spec in zip(futures, pending)}
    results = []
    for fut in as_completed(futures):
        spec = spec_of[fut.key]
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 — a worker killed twice over, a cancelled task: a failed run
            res = _failed(spec, f"{type(exc).__name__}: {exc} (the worker running it died or was cancelled)")
        progress.update(spec, res["status"])
        results.append(res)
    return results


def _skipped(spec: RunSpec, out_root: str) -> Dict[str, Any]:
    import json

    with open(marker_path(spec, out_root), encoding="utf-8") as f:
        rec = json.load(f)
    return {"stem": spec.stem, "subject": spec.subject, "session": spec.session, "status": "skipped",
            "qc": rec.get("qc"), "seconds": rec.get("seconds"), "peak_memory_mb": rec.get("peak_memory_mb"),
            "memory_increase_mb": rec.get("memory_increase_mb")}


def start_client(scheduler: Optional[str], plan: CohortPlan, dashboard: bool = True):
    """A Dask client: to ``scheduler`` (an address such as ``tcp://host:8786``) or to a new ``LocalCluster`` of
    ``plan.workers`` single-threaded processes, each with its memory limit and a ``MEMORY_MB`` resource."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise QSMInputError(INSTALL_HINT) from exc
    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except OSError as exc:
            raise QSMInputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler there ({exc})") from exc
    budget_mb = plan.memory_per_worker_mb - WORKER_BASE_MB
    cluster = LocalCluster(n_workers=plan.workers, threads_per_worker=1, processes=True,
                           memory_limit=int(plan.memory_per_worker_mb * 2 ** 20),
                           resources={"MEMORY_MB": max(budget_mb, plan.run_memory_mb)},
                           dashboard_address=":0" if dashboard else None, silence_logs=logging.ERROR)
    return Client(cluster)


def dashboard_text(client, local: bool) -> str:
    """The dashboard link (for a LocalCluster, with a hint when bokeh, which draws it, is missing)."""
    import importlib.util

    link = f"Dask dashboard: {client.dashboard_link}"
    if local and importlib.util.find_spec("bokeh") is None:
        return link + " (it needs bokeh: pip install 'susceptibility-mri[batch]')"
    return link


def run_cohort(runs: List[RunSpec], out_root: str, cfg: BatchConfig, scheduler: Optional[str] = None,
               workers: Optional[int] = None, serial: bool = False, dashboard: bool = True,
               stream: Optional[TextIO] = None, say: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """Process every run not already done with ``cfg``; returns one summary per run (status "done", "skipped" or
    "failed", with its error, QC, seconds and peak memory), in the order of ``runs``.

    ``serial``: in this process, one run after the other (no Dask); else on ``scheduler`` or a new LocalCluster
    (``workers`` processes at most). ``say`` receives the plan, notes and the dashboard link.
    """
    out_root = os.path.abspath(out_root)
    pending, summaries = [], {}
    for spec in runs:
        if clear_stale_staging(spec, out_root):
            say(f"{spec.stem}: removed the partial files an interrupted attempt left in .work")
        done, why = completed(spec, out_root, cfg)
        if done:
            summaries[spec.stem] = _skipped(spec, out_root)
        else:
            pending.append(spec)
            if why != "not run yet":
                say(f"{spec.stem}: running again ({why})")
    say(f"{len(runs)} run(s) of {len({r.subject for r in runs})} subject(s): {len(runs) - len(pending)} already "
        f"done with this configuration, {len(pending)} to process")
    if not pending:
        return [summaries[r.stem] for r in runs]
    run_mb = estimate_run_memory_mb(pending, runs, out_root)
    client = None
    if serial:
        plan = CohortPlan(run_memory_mb=run_mb, workers=1, numba_threads=usable_cores())
    elif scheduler:
        client = start_client(scheduler, CohortPlan(run_memory_mb=run_mb))
        plan = plan_existing(client, run_mb)
    else:
        plan = plan_local(run_mb, len(pending), workers)
        client = start_client(None, plan, dashboard)
    for note in plan.notes:
        say(f"note: {note}")
    where = "in this process" if serial else (f"on {scheduler}" if scheduler else
                                             f"on a LocalCluster of {plan.workers} worker process(es)")
    say(f"estimated peak memory per run: {run_mb:.0f} MB (+{WORKER_BASE_MB:.0f} MB per worker); running {where}, "
        f"{plan.numba_threads} numba thread(s) per run")
    progress = SubjectProgress(pending, stream)
    try:
        if client is not None:
            if dashboard or scheduler:
                say(dashboard_text(client, local=not scheduler))
            progress.start()
            results = _run_dask(client, pending, out_root, cfg, plan, progress)
        else:
            progress.start()
            results = _run_serial(pending, out_root, cfg, plan, progress)
    finally:
        if client is not None:
            cluster = client.cluster
            client.close()
            if cluster is not None and not scheduler:
                cluster.close()
    for res in results:
        summaries[res["stem"]] = res
    return [summaries[r.stem] for r in runs]
