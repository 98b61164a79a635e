"""Finding or starting a worker for a job: worker slots of a run (socket, pid file, busy lock), one
per device for model workers and one per concurrent CPU job; starting a worker process; ending a run's
workers (``shutdown_run``)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

from .protocol import encode, receive, send
from .rundir import RUN_ENV, TOKEN_FILE, pid_alive, private_dir, run_dir, run_dir_path, run_id, run_token
from .tasks import library

IDLE_ENV = "NEUROSPEC_WORKER_IDLE_S"
IDLE_DEFAULT = {"model": 600.0, "cpu": 60.0}
START_TIMEOUT_S = 120.0  # a worker must accept connections this soon after its start
# how a worker starts: this library's directory first on sys.path, then the worker's main()
WORKER_MAIN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from neurospec.run.server import main; main()"


class WorkerError(Exception):
    """The worker could not be started or reached, or died while serving this job."""


class WorkerGone(WorkerError):
    """The worker exited on its own (idle) as the job connected, before it read the task: nothing ran."""



def _env_key(kind: str, model: Mapping[str, Any] | None) -> str:
    """Workers are shared by jobs that run the same Python in the same directory (and the same model)."""
    spec = {"kind": kind, "python": sys.executable, "cwd": os.getcwd(), "library": library(),
            "model": {k: v for k, v in (model or {}).items() if k != "device"}}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]


def _slot_name(device: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in device)


class Worker:
    """A worker slot of this run: its socket, pid file and busy lock (held by the job it serves)."""

    def __init__(self, directory: Path, name: str):
        self.name = name
        self.sock = directory / f"{name}.sock"
        self.pidfile = directory / f"{name}.pid"
        self.busy = directory / f"{name}.busy"
        self._busy_fh: IO | None = None
        self.proc: subprocess.Popen | None = None

    # -- the busy lock: whoever holds it is this slot's only client (and may start its worker) --
    def try_hold(self) -> bool:
        fh = open(self.busy, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._busy_fh = fh
        return True

    def hold(self) -> None:
        fh = open(self.busy, "a+")
        fcntl.flock(fh, fcntl.LOCK_EX)
        self._busy_fh = fh

    def let_go(self) -> None:
        if self._busy_fh is not None:
            fcntl.flock(self._busy_fh, fcntl.LOCK_UN)
            self._busy_fh.close()
            self._busy_fh = None

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def connect(self, timeout: float | None = None) -> socket.socket | None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(self.sock))
        except OSError:
            s.close()
            return None
        s.settimeout(timeout)
        return s

    def alive(self) -> bool:
        pid = self.pid()
        if pid is None or not pid_alive(pid):
            return False
        s = self.connect()
        if s is None:
            return False
        s.close()
        return True

    def start(self, kind: str, model: Mapping[str, Any] | None, device: str | None,
              device_lock: IO | None, early: bool = False) -> None:
        """Start this slot's worker process (the caller holds the busy lock) and wait until it listens."""
        for stale in (self.sock, self.pidfile):
            stale.unlink(missing_ok=True)
        host, run_pid = run_id()
        logs = Path("results/logs/workers")
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{host}-{run_pid}-{self.name}.log"
        pkg_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH")) if p)}
        run_token(self.sock.parent)  # exists before the worker reads it
        # this library first on the worker's sys.path (not `-m`: that would put the cwd first)
        args = [sys.executable, "-c", WORKER_MAIN, pkg_root, "--socket", str(self.sock), "--pidfile",
                str(self.pidfile), "--run-pid", str(run_pid), "--kind", kind, "--name", self.name,
                "--token-file", str(self.sock.parent / TOKEN_FILE),
                "--idle", str(float(os.environ.get(IDLE_ENV) or IDLE_DEFAULT[kind]))]
        if model is not None:
            args += ["--model", json.dumps({**model, "device": device or model.get("device", "auto")})]
        if early:
            args += ["--early"]
        fds = ()
        if device_lock is not None:
            args += ["--device-lock-fd", str(device_lock.fileno())]
            if device is not None:  # the workers of this run's other models that may share this GPU
                args += ["--neighbours", f"model-*-{_slot_name(device)}.pid"]
            fds = (device_lock.fileno(),)
        with open(self.log_path, "a", encoding="utf-8") as out:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True, pass_fds=fds, cwd=os.getcwd())
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerError(f"the {kind} worker exited at its start (status {self.proc.returncode}): "
                                  f"{_last_line(self.log_path)} (log: {self.log_path})")
            s = self.connect()
            if s is not None:
                s.close()
                return
            time.sleep(0.01)
        self.proc.kill()
        raise WorkerError(f"the {kind} worker did not start listening within {START_TIMEOUT_S:.0f} s "
                          f"(log: {self.log_path})")

    def discard(self, pid: int | None) -> None:
        """Forget a worker that failed its job (the caller holds the busy lock): make sure it is gone and
        remove its socket and pid file, so that the next job starts a fresh one."""
        if pid is not None and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for path in (self.sock, self.pidfile):
            path.unlink(missing_ok=True)

    def call(self, payload: bytes) -> dict[str, Any]:
        """Send one task and wait for its answer (the worker dying is a WorkerError naming it)."""
        s = self.connect()
        if s is None:
            raise WorkerError(f"cannot reach the worker {self.name} (socket {self.sock})")
        pid = self.pid()
        try:
            send(s, payload)
            reply = receive(s)
        except OSError as exc:
            reply = None
            why = str(exc)
        else:
            why = "it closed the connection without an answer"
        finally:
            s.close()
        if reply is None:
            log_path = getattr(self, "log_path", None) or _worker_log_guess(self.name)
            last = _last_line(log_path)
            self.discard(pid)
            if "idle for" in last and last.endswith("exiting"):
                # it timed out as this job connected: it never read the task (a task logs its start first)
                raise WorkerGone(f"the worker {self.name} (pid {pid}) exited idle as this job connected")
            raise WorkerError(f"the worker {self.name} (pid {pid}) died while serving this job ({why}); its "
                              f"last log line: {last}; rerun to start a fresh one")
        return reply


def _worker_log_guess(name: str) -> Path | None:
    logs = sorted(Path("results/logs/workers").glob(f"*-{name}.log"), key=lambda p: p.stat().st_mtime)
    return logs[-1] if logs else None


def _last_line(path: Path | None) -> str:
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except (OSError, TypeError):
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _neighbours(directory: Path, device: str, key: str) -> list[Worker] | None:
    """This run's live model workers of other models on ``device``, held (busy) by the caller: a run
    with several models (``models:``) keeps one worker per model on a GPU, and only one of them
    computes at a time. None (nothing held) when one of them is busy."""
    held: list[Worker] = []
    for sock in sorted(directory.glob(f"model-*-{_slot_name(device)}.sock")):
        other = Worker(directory, sock.stem)
        if sock.stem.startswith(f"model-{key}-") or not other.alive():
            continue
        if not other.try_hold():
            for w in held:
                w.let_go()
            return None
        held.append(other)
    return held


@contextmanager
def acquire(model: Mapping[str, Any] | None, *, early: bool = False,
             uses_torch: bool = False) -> Iterator[Worker | None]:
    """A live worker for this job, held (busy) for the block: an idle one of this run, or a new one.

    ``early`` (``start_model_worker_early``): start a model worker that imports its libraries at once,
    and never wait: yields None when every device is busy. ``uses_torch`` (a CPU task): an idle model
    worker of this run first (torch imported, or being imported by an early start), then CPU workers."""
    directory = run_dir()
    if model is None and uses_torch:
        for sock in sorted(directory.glob("model-*.sock")):
            worker = Worker(directory, sock.stem)
            if not worker.try_hold():
                continue  # it serves a model job
            try:
                if worker.alive():
                    yield worker
                    return
            finally:
                worker.let_go()
    if model is None:
        key = _env_key("cpu", None)
        for i in range(1000):
            worker = Worker(directory, f"cpu-{key}-{i}")
            if worker.try_hold():
                break
        else:
            raise WorkerError("more than 1000 CPU workers are busy in this run")
        try:
            if not worker.alive():
                worker.start("cpu", None, None, None)
            yield worker
        finally:
            worker.let_go()
        return

    from ..devices import device_pool, try_lock

    key = _env_key("model", model)
    pool = device_pool(str(model.get("device", "auto")))
    waited = False
    while True:
        # a free GPU first; then (several models in one run) a GPU that this run's worker of another
        # model holds: the second model's worker shares it, each model loaded once (_neighbours)
        for share in (False, True):
            for device, lock_path in pool:
                worker = Worker(directory, f"model-{key}-{_slot_name(device)}")
                if len(pool) == 1 and lock_path is None and not early:
                    worker.hold()  # the one device: wait for its worker to be free
                elif not worker.try_hold():
                    continue  # its worker serves another job of this run
                neighbours: list[Worker] = []
                try:
                    # any GPU, also one named in the config (no lock file): one model computes on it at a time
                    if lock_path is not None or str(device).startswith("cuda"):
                        neighbours = _neighbours(directory, device, key)
                        if neighbours is None:
                            continue  # another model's worker of this run computes on this GPU
                    if not worker.alive():
                        device_lock = try_lock(lock_path) if lock_path is not None else None
                        if lock_path is not None and device_lock is None and not (share and neighbours):
                            continue  # held by another run (or a job without workers)
                        try:
                            worker.start("model", model, device, device_lock, early=early)
                        finally:
                            if device_lock is not None:
                                device_lock.close()  # the worker holds the lock through its own descriptor
                    yield worker
                    return
                finally:
                    for other in neighbours or ():
                        other.let_go()
                    worker.let_go()
        if early:
            yield None
            return
        if not waited:
            log_line = f"all {len(pool)} GPUs are busy (this run's workers, or other runs); waiting for one"
            print(f"neurospec: {log_line}", file=sys.stderr, flush=True)
            waited = True
        time.sleep(0.25)


def shutdown_run(run: str | None = None, timeout: float = 30.0) -> None:
    """End the workers of a run (the Snakefile's onsuccess/onerror): ask each to exit, then remove its files."""
    from ..errors import NeurospecError

    run = run or os.environ.get(RUN_ENV)
    if not run:
        return
    directory = run_dir_path(run)
    try:  # only a private directory of this user is touched (a refused one was reported already)
        if not directory.exists() or private_dir(directory):
            return
        token = run_token(directory)
    except (OSError, NeurospecError):
        return
    pids = []
    for sock in directory.glob("*.sock"):
        worker = Worker(directory, sock.stem)
        pid = worker.pid()
        s = worker.connect(timeout=5)
        if s is not None:
            try:
                send(s, encode({"op": "shutdown", "token": token}))
                receive(s)
            except OSError:
                pass
            finally:
                s.close()
        if pid is not None:
            pids.append(pid)
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(directory, ignore_errors=True)
