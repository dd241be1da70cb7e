"""The background worker process (``python -m QSMLogic.worker``), started and stopped without Qt.

:class:`WorkerProcess` starts the worker with :mod:`subprocess` in its own process group, collects its output lines
in reader threads (which touch no MRML and no Qt) and hands them out on :meth:`WorkerProcess.poll`, which the
caller runs from its event loop (the module logic from a ``QTimer``, tests in a loop). :meth:`WorkerProcess.cancel`
asks the worker to stop (stop file) and kills the whole process tree: inside Slicer the command is the
``PythonSlicer`` launcher, whose ``python-real`` child would keep computing if only the launcher were killed.
The file protocol itself (both halves) is :mod:`QSMLogic.worker`.
"""
from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from typing import Dict, List, Optional

from QSMLogic.errors import QSMCancelled
from QSMLogic.worker import EXIT_CANCELLED, EXIT_OK, WorkerEvent, parse_worker_line, request_stop


class WorkerError(RuntimeError):
    """The worker could not be started, failed, or ended without results; the message says which and why."""


def python_executable() -> str:
    """PythonSlicer when on PATH (inside Slicer), else the running interpreter."""
    return shutil.which("PythonSlicer") or sys.executable


def worker_environment(library_root: str, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment for the worker with ``library_root`` (the folder holding QSMLogic/) first on PYTHONPATH."""
    env = dict(os.environ if base is None else base)
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = library_root + (os.pathsep + old if old else "")
    return env


def kill_process_tree(proc: subprocess.Popen) -> None:
    """Kill ``proc`` and every process it started (its process group on POSIX, ``taskkill /T`` on Windows)."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group started with start_new_session=True
        except ProcessLookupError:
            pass
    elif proc.poll() is None:
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
    proc.wait()


class WorkerProcess:
    """One run of the worker: ``start()``, then ``poll()`` until ``finished``; ``cancel()`` stops it.

    ``command`` is :func:`QSMLogic.worker.worker_command`'s list (its 4th item is the INPUT.npz path, next to which
    the stop file is written).
    """

    def __init__(self, command: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.command = list(command)
        self.env = env
        self.input_path = self.command[3]
        self.returncode: Optional[int] = None
        self.done = False
        self.cancelled = False
        self._proc: Optional[subprocess.Popen] = None
        self._lines: queue.Queue[Optional[str]] = queue.Queue()
        self._stderr: List[str] = []
        self._threads: List[threading.Thread] = []
        self._stdout_closed = False

    def start(self) -> None:
        """Start the process; raises :class:`WorkerError` naming the program when it cannot be started."""
        flags = {"start_new_session": True} if os.name == "posix" else {  # Windows: no console window either
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
                subprocess, "CREATE_NO_WINDOW", 0)}
        try:
            self._proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          stdin=subprocess.DEVNULL, env=self.env, text=True, encoding="utf-8",
                                          errors="replace", bufsize=1, **flags)
        except OSError as exc:
            raise WorkerError(f"could not start the background process {self.command[0]!r}: {exc}") from exc
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        for line in self._proc.stderr:
            self._stderr.append(line)

    @property
    def finished(self) -> bool:
        """True once the process has exited and all its output has been handed out by :meth:`poll`."""
        return self.returncode is not None and self._stdout_closed

    def poll(self) -> List[WorkerEvent]:
        """Events of the lines written since the last call (never blocks); sets ``returncode`` once it exited."""
        events = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._stdout_closed = True
                break
            event = parse_worker_line(line)
            self.done = self.done or event.kind == "done"
            events.append(event)
        if self._stdout_closed and self._proc is not None:
            self.returncode = self._proc.wait()
            for t in self._threads:
                t.join()
        return events

    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def cancel(self) -> None:
        """Ask the worker to stop and kill its whole process tree (idempotent)."""
        self.cancelled = True
        request_stop(self.input_path)
        if self._proc is not None:
            kill_process_tree(self._proc)
            self.returncode = self._proc.returncode
            for t in self._threads:
                t.join(timeout=5)
            self._stdout_closed = True

    def check_result(self) -> None:
        """Raise unless the finished worker succeeded: :class:`QSMCancelled` when it was cancelled or stopped
        itself, :class:`WorkerError` with its standard error when it failed or ended without saying DONE."""
        if self.cancelled or self.returncode == EXIT_CANCELLED:
            raise QSMCancelled("the background run was cancelled")
        err = self.stderr_text().strip()
        if self.returncode != EXIT_OK:
            raise WorkerError(f"the background process failed (exit code {self.returncode})"
                              + (f": {err.splitlines()[-1]}" if err else "") + (f"\n\n{err}" if err else ""))
        if not self.done:
            raise WorkerError(f"the background process {self.command[0]!r} ended (exit code 0) without running the "
                              "pipeline: it is not a Python that can run QSMLogic.worker"
                              + (f"\n\n{err}" if err else ""))


__all__ = ["WorkerError", "WorkerProcess", "kill_process_tree", "python_executable", "worker_environment"]
