"""Timing and peak-memory measurement shared by the benchmark modules."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Current resident set size of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except OSError:
        return 0.0


class PeakRSS:
    """Context manager sampling RSS every ``interval_s``; ``peak_mb`` is the peak rise above the starting RSS."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb() - self.start_mb)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakRSS:
        self.start_mb = rss_mb()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb() - self.start_mb)


@dataclass
class BenchRow:
    """One benchmark line: what ran, how long, how much memory it added at peak, and quality metrics."""

    area: str
    method: str
    seconds: float
    peak_mb: float
    metrics: Dict[str, float] = field(default_factory=dict)
    note: str = ""


def measure(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Tuple[Any, float, float]:
    """Run ``fn(*args, **kwargs)``; return (result, wall seconds, peak RSS rise in MiB)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t0
    return out, dt, mem.peak_mb


@dataclass
class BenchContext:
    """Shared inputs of one benchmark run: the simulated acquisition(s) and the size setting.

    ``acquisition`` is a :class:`QSMLogic.phantom.PhantomAcquisition` (combined, 5 echoes);
    ``coil_acquisition`` the same with coils (built on demand by :meth:`coils`).
    """

    acquisition: Any
    quick: bool = False
    n_coils: int = 16
    extras: Dict[str, Any] = field(default_factory=dict)

    def coils(self) -> Any:
        if "coil_acquisition" not in self.extras:
            from ..phantom import simulate_acquisition

            a = self.acquisition
            self.extras["coil_acquisition"] = simulate_acquisition(
                a.model, te_s=a.gre.te_s, b0_tesla=a.gre.b0_tesla, n_coils=self.n_coils, snr=a.snr, seed=1
            )
        return self.extras["coil_acquisition"]


def format_rows(rows: List[BenchRow]) -> str:
    """A fixed-width text table of benchmark rows."""
    keys: List[str] = []
    for r in rows:
        for k in r.metrics:
            if k not in keys:
                keys.append(k)
    head = f"{'area':<18}{'method':<24}{'time_s':>9}{'peak_MiB':>10}" + "".join(f"{k:>14}" for k in keys)
    out = [head, "-" * len(head)]
    for r in rows:
        line = f"{r.area:<18}{r.method:<24}{r.seconds:>9.2f}{r.peak_mb:>10.0f}"
        for k in keys:
            v = r.metrics.get(k)
            line += f"{'' if v is None else format(v, '.4g'):>14}"
        if r.note:
            line += f"  {r.note}"
        out.append(line)
    return "\n".join(out)
