"""A run's claim on its working directory: stale Snakemake locks, and runs whose lock was removed.

Snakemake locks a working directory with files in ``.snakemake/locks`` that name no process, so
after a killed run (SIGKILL, a lost node) the same command stops at its ``LockException`` until
``snakemake --unlock``; and ``--unlock`` while a run is alive lets a second run start jobs whose
outputs the first is writing: Snakemake removes a job's existing outputs before running it (the
built model's directory included), under the feet of the first run.

So each run (the Snakefile's ``onstart``) leaves a record in ``.snakemake/neurospec/runs/``: its host,
its pid, the lock files Snakemake wrote for it (with their content's digest); the record is held
with ``flock`` for the life of the run and removed at its end (``onsuccess``/``onerror``).

- **Stale locks** (``clear_stale_locks``, when the Snakefile is read): a lock file named by the record
  of a run that is *proven* gone (same host, its pid dead, its record no longer held, no process left
  that belongs to the run: ``NEUROSPEC_RUN`` in its environment) is removed, with one line saying so.
  A lock of a run that cannot be checked from here (another host) gets one line naming the command
  (``snakemake --unlock`` with the same options); a lock without a record is left to Snakemake.
- **A live run without its lock** (``claim_workdir``, at ``onstart``, before any job): another run is
  alive in this directory but its lock files are gone (``--unlock``): this run stops with one line,
  before it could remove that run's outputs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Iterable

from ..errors import NeurospecError

RECORDS = Path(".snakemake") / "neurospec" / "runs"
RUN_ENV = "NEUROSPEC_RUN"  # as in neurospec.run.workers: "<host>:<pid>" of the run, in every job's environment

_held: dict[str, IO] = {}  # this process's own record, open and locked for its life


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _record_held(path: Path) -> bool:
    """Whether a live process holds the record's lock (flock: released when its process dies)."""
    try:
        fh = open(path, "r")
    except OSError:
        return False
    try:
        fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        fh.close()  # closing our own descriptor releases only our lock
    return False


def _pid_alive(pid: int) -> bool:
    from .rundir import pid_alive as alive  # zombie-aware

    return alive(pid)


def processes_of_run(run: str) -> list[int] | None:
    """The processes whose environment names ``run`` (``NEUROSPEC_RUN``): its jobs and workers. Linux
    only (``/proc``); None when that cannot be read at all (nothing can be proven then)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    needle = f"{RUN_ENV}={run}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or another user's (whose processes are not this user's run)
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def read_records() -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(RECORDS.glob("*.json")):
        try:
            info = json.loads(path.read_text())
            int(info["pid"]), str(info["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out.append((path, info))
    return out


def run_state(path: Path, info: dict) -> str:
    """'live', 'gone' (proven: same host, pid dead, record not held, no process of the run left), or
    'unknown' (another host: nothing here can prove it gone)."""
    if _record_held(path):
        return "live"
    if info["host"] != socket.gethostname():
        return "unknown"
    pid = int(info["pid"])
    if _pid_alive(pid):
        return "live"
    left = processes_of_run(f"{info['host']}:{pid}")
    if left is None:
        return "unknown"
    return "live" if left else "gone"


def _describe(info: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return f"run pid {info['pid']} on {info['host']} (started {started})"


def clear_stale_locks(command_hint: str = "snakemake --unlock") -> list[str]:
    """Remove the Snakemake lock files of runs proven gone, and their records; returns one line per
    run that was cleaned or cannot be checked (for stderr). Lock files of live runs, of runs on other
    hosts and of no known run are left alone."""
    records = read_records()
    if not records:
        return []
    lines = []
    states = [(path, info, run_state(path, info)) for path, info in records]
    live_locks = {lock for _, info, state in states if state != "gone" for lock in info.get("locks", {})}
    for path, info, state in states:
        locks = {Path(lock): digest for lock, digest in info.get("locks", {}).items()}
        present = [lock for lock, digest in locks.items() if _digest(lock) == digest]
        if state == "unknown":
            if present:
                lines.append(f"neurospec: the lock in {Path.cwd() / '.snakemake' / 'locks'} is from "
                             f"{_describe(info)}, which cannot be checked from {socket.gethostname()}: if that "
                             f"run is over, run `{command_hint}` with the same options, then this command again")
            continue
        if state != "gone":
            continue
        removed = []
        for lock in present:
            if str(lock) not in live_locks:
                lock.unlink(missing_ok=True)
                removed.append(lock)
        path.unlink(missing_ok=True)
        if removed:
            lines.append(f"neurospec: removed the Snakemake lock left by {_describe(info)}, which is gone "
                         "(killed?) with all its processes")
    return lines


def claim_workdir(lock_files: Iterable[str]) -> Path:
    """Record this run (its pid, host and Snakemake's lock files for it) for the runs after it, held for
    its life; first refuse (NeurospecError) when another run is alive here without its lock."""
    for path, info in read_records():
        if int(info["pid"]) == os.getpid() and info["host"] == socket.gethostname():
            continue
        state = run_state(path, info)
        if state == "gone":
            path.unlink(missing_ok=True)
            continue
        locks = info.get("locks", {})
        # (a run that recorded no lock, --nolock, cannot lose it)
        if state == "live" and any(_digest(Path(k)) != d for k, d in locks.items()):
            raise NeurospecError(
                f"another run of this workflow, {_describe(info)}, is still working in {Path.cwd()} and its "
                "Snakemake lock is gone (snakemake --unlock?): this run could delete the outputs it is "
                f"writing; wait until it ends (or stop it: kill {info['pid']}), then run again")
    RECORDS.mkdir(parents=True, exist_ok=True)
    mine = RECORDS / f"{socket.gethostname()}-{os.getpid()}.json"
    fh = open(mine, "w", encoding="utf-8")
    fcntl.flock(fh, fcntl.LOCK_EX)
    locks = {str(Path(lock).resolve()): _digest(Path(lock)) for lock in lock_files}
    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
               "locks": {k: d for k, d in locks.items() if d is not None}}, fh)
    fh.flush()
    _held[str(mine)] = fh
    return mine


def release_workdir() -> None:
    """The end of this run (onsuccess/onerror): its record goes."""
    for name, fh in list(_held.items()):
        Path(name).unlink(missing_ok=True)
        fh.close()
        del _held[name]
