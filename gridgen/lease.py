"""Per-chunk leases in a store directory, so that two live runs never compute the same chunk.

Layout: ``<store>/.leases/<name>.json``, one small JSON file per leased unit of work (e.g.
``chunk-12``), created with ``O_EXCL`` and holding ``host``, ``pid``, a random ``token`` and
``heartbeat_unix`` (s since the epoch), and inside a Slurm job ``slurm_job``: the job as
``squeue`` names it (``ARRAYJOB_TASK`` for an array task, else the job id). The holder rewrites it (atomically, by rename) every
``stale_after_s / 4`` while it works and removes it when done. A lease is stale, and taken over by
the next run that wants it, when its process is dead (same host) or its heartbeat is older than
``stale_after_s`` (any host: a killed machine, a frozen job), or at once when it names a Slurm
job that ``squeue`` no longer lists (a task killed hard on another node). The directory is removed when the
last lease goes, so a finished store holds no trace of it.

A process that loses its lease (taken over after a missed heartbeat) keeps computing; its results
are the same bytes as the new holder's, so the store stays correct, only work is duplicated.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from gridgen.core.storeio import write_atomically

LEASE_DIR = ".leases"
#: Seconds without a heartbeat after which a lease of another host is taken over.
STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: ``host``, ``pid``, the last heartbeat (s since the epoch) and the
    Slurm job it runs in (``""`` outside Slurm)."""

    host: str
    pid: int
    heartbeat_unix: float
    slurm_job: str = ""

    def __str__(self) -> str:
        return f"{self.host}, pid {self.pid}"


class Lease:
    """A lease held by this process; a context manager that refreshes it and releases it.

    Use :func:`acquire` to get one.
    """

    def __init__(self, path: Path, token: str, stale_after_s: float):
        self.path, self.token, self.stale_after_s = path, token, stale_after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_after_s / 4):
            if not self.refresh():
                return

    def refresh(self) -> bool:
        """Write a new heartbeat; False if the lease is no longer ours (taken over)."""
        if _token(self.path) != self.token:
            return False
        _write(self.path, self.token)
        return True

    def release(self) -> None:
        """Remove the lease file if it is still ours, and the lease directory if it is empty."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        if _token(self.path) == self.token:
            self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass  # other leases remain (or another process just removed it)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(store: str | Path, name: str, stale_after_s: float = STALE_AFTER_S) -> Lease | Holder:
    """Take the lease ``name`` of the store at ``store``.

    Parameters
    ----------
    store
        Store directory.
    name
        Unit of work, e.g. ``"chunk-3"`` (a file name without extension).
    stale_after_s
        Heartbeat age (s) after which another process's lease is taken over.

    Returns
    -------
    Lease or Holder
        The lease (use it as a context manager), or who holds it if that process is alive.
    """
    path = Path(store) / LEASE_DIR / f"{name}.json"
    token = uuid.uuid4().hex
    for _ in range(3):  # a race with a takeover or with removing the directory: look again
        path.parent.mkdir(exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is not None and not is_stale(holder, stale_after_s):
                return holder
            # Stale: move it aside under a unique name; of several racing runs one wins.
            try:
                os.rename(path, path.with_name(f".{name}.stale-{token}"))
            except FileNotFoundError:
                continue
            path.with_name(f".{name}.stale-{token}").unlink(missing_ok=True)
            continue
        except FileNotFoundError:
            continue  # the directory was removed between mkdir and open
        with os.fdopen(fd, "w") as stream:
            stream.write(_content(token))
        return Lease(path, token, stale_after_s)
    holder = read_holder(path)
    return holder if holder is not None else Holder("?", -1, time.time())


def read_holder(path: Path) -> Holder | None:
    """The holder recorded in a lease file; None if it is gone. A file being written (empty or
    partial JSON) reads as a fresh lease of an unknown holder."""
    try:
        record = json.loads(path.read_text())
        return Holder(str(record["host"]), int(record["pid"]), float(record["heartbeat_unix"]),
                      str(record.get("slurm_job", "")))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError):
        return Holder("?", -1, time.time())


def is_stale(holder: Holder, stale_after_s: float = STALE_AFTER_S) -> bool:
    """True if the holder's heartbeat is too old, it is a dead process of this host, or its
    Slurm job has ended."""
    if time.time() - holder.heartbeat_unix > stale_after_s:
        return True
    if holder.slurm_job and slurm_job_ended(holder.slurm_job):
        return True
    if holder.host != socket.gethostname() or holder.pid <= 0:
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def current_slurm_job() -> str:
    """This process's Slurm job as ``squeue -j`` accepts it (``""`` outside Slurm)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID", "")


#: Seconds to wait for ``squeue``; a controller that does not answer proves nothing.
SQUEUE_TIMEOUT_S = 20


def slurm_job_ended(job: str) -> bool:
    """True if ``squeue`` (when on PATH) answers that ``job`` is no longer pending or running.

    Any doubt (no squeue, a controller that does not answer) is False: the lease then falls
    back to its heartbeat.
    """
    if shutil.which("squeue") is None:
        return False
    try:
        result = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T"], capture_output=True,
                                text=True, timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    if result.returncode != 0:
        # A job purged from the controller's memory is "Invalid job id specified".
        return "invalid job id" in result.stderr.lower()
    live = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")
    return not any(line.split()[-1:] and line.split()[-1] in live
                   for line in result.stdout.splitlines())


def _content(token: str) -> str:
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": token,
                       "heartbeat_unix": time.time(), "slurm_job": current_slurm_job()})


def _write(path: Path, token: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(_content(token)))


def _token(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("token")
    except (OSError, ValueError, AttributeError):
        return None
