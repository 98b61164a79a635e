"""How a rule's job runs its library task: in a persistent worker that stays warm for the whole run.

Rule scripts call two functions only, naming the task as ``"neurospec.<module>:<function>"``:

    run_task("neurospec.scoring:run_scoring", log=snakemake.log[0], paths=..., ...)
    run_model_task("neurospec.collect:collect_to_file", model=snakemake.params.model,
                   log=snakemake.log[0], pairs_path=..., out_path=..., ...)

A model task is ``function(loaded: LoadedModel, **kwargs)``; ``model`` holds ``load_model``'s keyword
arguments (model_id, revision, dtype, device, attn_implementation). Every task writes its outputs
itself, atomically. Either way the job's log gets the task's log lines, bad input is one line
``neurospec: error: ...`` and exit status 1, and a bug keeps its traceback.

**Why workers.** Starting Python, importing torch and transformers and loading the model costs far
more than a pair's forward passes (the demo: 47x; Aya-23-8B: ~16 GB per load). So a job does not do
the work itself: it hands the task to a *worker*, a process of this Snakemake run that has the
imports done and, for model tasks, the model loaded, and waits for the answer. Like Bazel's
persistent workers, a worker serves one task at a time, for any number of jobs:

- **model workers**, one per device: a job claims a device from ``devices.device_pool`` (the first
  free GPU; it waits when all are held) and the worker started there holds the device's lock for its
  life. The model is loaded once per device per run: by every collection and evaluation job of the
  run, whatever their order. On a cluster each SLURM job is its own run (its own Snakemake
  process), so the model is loaded once per SLURM job, shared by the jobs of a group.
- **CPU workers**, one per concurrently running CPU job (pair tables, scores, figures): they save
  the imports (pandas, pyarrow, matplotlib, scipy: ~2 s per job).

**Started with the run.** A local run that will load the model starts its first model worker as it
starts (the Snakefile's ``onstart`` calls ``start_model_worker_early``): the worker claims its device
as a job would and imports torch and transformers (about 7 s here) while the jobs before the first model
job (pair tables) run, instead of when that job arrives. A CPU task that itself needs torch (building
the demo model: ``run_task(..., uses_torch=True)``) goes to an idle model worker of the run when there
is one, so torch is imported once per run, not once per kind of worker.

**Lifetime.** A worker belongs to the Snakemake process whose pid ``common.smk`` puts into
``NEUROSPEC_RUN`` (inherited by every job). It exits when that process is gone (checked every 0.2 s,
so a killed run leaves no process holding a GPU), when the run ends (the Snakefile's
``onsuccess``/``onerror`` call ``shutdown_run``), or after ``NEUROSPEC_WORKER_IDLE_S`` seconds without
a task (default 600 for model workers, 60 for CPU workers). A job that is killed cancels its task
(the worker notices the closed connection): nothing half-written is left, and the worker goes on.
A worker that crashes fails the job it serves with one line naming it; the next job starts a fresh one.

**Where.** Sockets, pid files and lock files in a private directory per run
(``<tmp>/neurospec-<uid>/run-<hash>``, both 0700; a directory that is a symlink, another user's or
open to others is refused with one line); each worker's own log in ``results/logs/workers/``. The
directory of a run whose Snakemake process is gone (killed) is removed by the next run on the host.

**Who may use a worker.** Only the run's own jobs: each request carries the run's token (a random
``secrets.token_hex`` in the 0600 file ``token`` of the run's directory), checked with
``hmac.compare_digest``; and only the tasks in ``TASKS`` (what the rule scripts call) run. Anything
else is refused with one line, and nothing runs.

**Which library.** A worker imports the ``neurospec`` of the checkout whose job started it (that
library's directory first on ``sys.path``, ahead of any installed ``neurospec``) and names it (the path
of ``neurospec/__init__.py``) in its log and in each job's log; jobs and workers of different checkouts
never share a worker.
Without ``NEUROSPEC_RUN`` (library use, tests) or with ``NEUROSPEC_WORKERS=0`` every task runs in
the job's own process, as before: one model load per job.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import hmac
import importlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping

RUN_ENV = "NEUROSPEC_RUN"  # "<host>:<pid>" of the Snakemake process; set by workflow/rules/common.smk
RUN_SCOPE_ENV = "NEUROSPEC_RUN_SLURM_JOB"  # the SLURM job (if any) that run belongs to
MODE_ENV = "NEUROSPEC_WORKERS"  # "0": every task in the job's own process
IDLE_ENV = "NEUROSPEC_WORKER_IDLE_S"
IDLE_DEFAULT = {"model": 600.0, "cpu": 60.0}
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(message)s"
WATCH_S = 0.2  # how often a worker checks its run and its client
# what a model worker started with the run imports before its first task (start_model_worker_early)
EARLY_IMPORTS = ("torch", "transformers", "transformers.modeling_utils", "transformers.generation",
                 "neurospec.models", "neurospec.collect", "neurospec.ablation", "neurospec.translation")
START_TIMEOUT_S = 120.0  # a worker must accept connections this soon after its start
TOKEN_FILE = "token"  # the run's secret, in its private directory: requests without it are refused
# The only tasks a job may send to a worker (or run in its own process): what the rule scripts call.
TASKS = frozenset({
    "neurospec.ablation:ablate_to_file",
    "neurospec.ablation_figures:draw",
    "neurospec.collect:collect_to_file",
    "neurospec.correlation:correlate_to_file",
    "neurospec.correlation:draw_correlation",
    "neurospec.demo:build_model",
    "neurospec.figures:draw",
    "neurospec.figures:draw_many",
    "neurospec.gemma3:build_gemma3_model",
    "neurospec.pairs:write_pair_table",
    "neurospec.scoring:run_scoring",
    "neurospec.stability:run_stability",
    "neurospec.steering.figures:draw",
    "neurospec.steering.io:steer_to_file",
    "neurospec.tables:merge_shard_files",
    "neurospec.translation:translate_ablated_to_file",
    "neurospec.translation:translate_to_file",
    "neurospec.translation_quality:draw_quality",
    "neurospec.translation_quality:score_to_file",
})
# Tests only: more allowed tasks (comma-separated "module:function"), read from the environment of
# the run (whoever can set it can run any code as this user anyway).
EXTRA_TASKS_ENV = "NEUROSPEC_EXTRA_TASKS"
# how a worker starts: this library's directory first on sys.path, then the worker's main()
WORKER_MAIN = "import sys; sys.path.insert(0, sys.argv.pop(1)); from neurospec.workers import main; main()"

log = logging.getLogger("neurospec")


def allowed_tasks() -> frozenset[str]:
    """``TASKS``, and the tests' own tasks named in ``NEUROSPEC_EXTRA_TASKS``."""
    extra = os.environ.get(EXTRA_TASKS_ENV, "")
    return TASKS | {t.strip() for t in extra.split(",") if t.strip()}


def resolve(target: str) -> Callable[..., Any]:
    """``"neurospec.collect:collect_to_file"`` (a registered task, ``TASKS``) -> the function."""
    _check_target(target)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_target(target: str) -> None:
    """A task outside the registry is refused before anything is imported."""
    from .errors import NeurospecError

    if not isinstance(target, str) or target not in allowed_tasks():
        raise NeurospecError(f"task {target!r} refused: it is not one of neurospec's registered tasks "
                             "(neurospec.workers.TASKS)")


def library() -> str:
    """The ``neurospec`` this process runs: the path of its ``__init__.py``."""
    return str(Path(__file__).resolve().parent / "__init__.py")


# ----------------------------------------------------------------------------------------------
# The job's side
# ----------------------------------------------------------------------------------------------


def run_task(target: str, *, log: str | None = None, uses_torch: bool = False, **kwargs: Any) -> None:
    """Run a CPU task as a rule's job. ``uses_torch``: the task imports torch and transformers (building
    a model), so an idle model worker of this run, which has them imported, serves it when there is one."""
    _run(target, None, log, kwargs, uses_torch=uses_torch)


def run_model_task(target: str, *, model: Mapping[str, Any], log: str | None = None, **kwargs: Any) -> None:
    """Run a task that needs the model: ``function(loaded, **kwargs)`` on a device of ``model['device']``."""
    _run(target, dict(model), log, kwargs)


def enter_run() -> None:
    """Make this Snakemake process the run that workers belong to (the main process at its start,
    onstart; a Snakemake process started for jobs when it reads the Snakefile).

    A Snakemake process started for a single job *inside* a run keeps the run's workers: the SLURM
    plugin runs each job of a SLURM job (of a job group too) as ``srun ... snakemake`` under the
    Snakemake process of that SLURM job, on the same host, in the same SLURM job, while that process
    lives. Anything else (a local run; a SLURM job, whose submitting Snakemake is elsewhere) is a run
    of its own.
    """
    scope = os.environ.get("SLURM_JOB_ID", "")
    inherited = os.environ.get(RUN_ENV, "")
    host, _, pid = inherited.rpartition(":")
    if (inherited and os.environ.get(RUN_SCOPE_ENV, "") == scope and host == socket.gethostname()
            and pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid))):
        return
    os.environ[RUN_ENV] = f"{socket.gethostname()}:{os.getpid()}"
    os.environ[RUN_SCOPE_ENV] = scope


def workers_enabled() -> bool:
    return bool(os.environ.get(RUN_ENV)) and os.environ.get(MODE_ENV, "1") != "0"


def start_model_worker_early(model: Mapping[str, Any]) -> bool:
    """Start the run's first model worker as the run starts (the Snakefile's ``onstart``, for local
    runs with a job that loads the model), so that its imports of torch and transformers (seconds;
    more on a cluster's shared filesystem) overlap the jobs that come before the first model job
    (pair tables, building the model) instead of delaying it. The worker claims its device as a job
    would, and is then the one that job finds: the model is still loaded once, by the first model
    task. Returns whether one was started (False: workers are off, one runs already, or every
    device is busy; jobs then start their worker as usual)."""
    if not workers_enabled():
        return False
    with _acquire(model, early=True) as worker:
        return worker is not None and worker.proc is not None


def _run(target: str, model: dict[str, Any] | None, log_path: str | None, kwargs: dict[str, Any],
         uses_torch: bool = False) -> None:
    from .errors import NeurospecError

    try:
        _check_target(target)
    except NeurospecError as exc:
        _fail(str(exc), log_path)
    if not workers_enabled():
        return _run_here(target, model, log_path, kwargs)
    request = {"op": "task", "target": target, "model": model, "kwargs": kwargs,
               "log": str(Path(log_path).resolve()) if log_path else None, "cwd": os.getcwd(),
               "library": library()}
    try:
        _encode(request)
    except TypeError as exc:  # a bug in a rule script, not bad input
        raise TypeError(f"task {target}: arguments must be JSON-serialisable: {exc}") from None
    for attempt in range(2):  # a worker that exited idle as the job connected ran nothing: once more
        try:
            with _acquire(model, uses_torch=uses_torch) as worker:
                reply = worker.call(_encode({**request, "token": run_token(worker.sock.parent)}))
            break
        except WorkerGone as exc:
            if attempt:
                _fail(str(exc), log_path)
        except (WorkerError, NeurospecError) as exc:  # NeurospecError: the run's directory is not private
            _fail(str(exc), log_path)
        except OSError as exc:  # starting the worker: its log in results/logs/workers, the run's directory
            from .errors import user_error

            line = user_error(exc)
            if line is None:
                raise
            _fail(line, log_path)
    if reply.get("status") == "error":
        print(f"neurospec: error: {reply['message']}", file=sys.stderr, flush=True)
        raise SystemExit(1)
    if reply.get("status") != "ok":
        print(reply.get("traceback", "neurospec: the worker answered nothing useful"), file=sys.stderr, flush=True)
        raise SystemExit(1)


def _run_here(target: str, model: dict[str, Any] | None, log_path: str | None, kwargs: dict[str, Any]) -> None:
    """The task in this process (no worker): claim a device and load the model for this job alone."""
    from .errors import one_line_errors

    with one_line_errors(log_path):
        log.info("neurospec library %s (in the job's own process)", library())
        if model is None:
            resolve(target)(**kwargs)
            return
        from .devices import claim_device
        from .models import load_model

        with claim_device(model.get("device", "auto")) as dev:
            loaded = load_model(**{**model, "device": dev})
            resolve(target)(loaded, **kwargs)


def _fail(message: str, log_path: str | None) -> None:
    line = f"neurospec: error: {message}"
    if log_path:
        try:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%H:%M:%S')} ERROR {line}\n")
        except OSError:
            pass  # the log cannot take it (a full disk, a read-only folder): stderr still does
    print(line, file=sys.stderr, flush=True)
    raise SystemExit(1)


class WorkerError(Exception):
    """The worker could not be started or reached, or died while serving this job."""


class WorkerGone(WorkerError):
    """The worker exited on its own (idle) as the job connected, before it read the task: nothing ran."""


def _run_id() -> tuple[str, int]:
    host, _, pid = os.environ[RUN_ENV].rpartition(":")
    return host, int(pid)


def runs_dir() -> Path:
    """``<tmp>/neurospec-<uid>``: the parent of every run's directory on this host (not created here)."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 40:  # Unix socket paths are limited to ~107 bytes
        base = Path("/tmp")
    return base / f"neurospec-{os.getuid()}"


def _run_dir_path(run: str) -> Path:
    return runs_dir() / ("run-" + hashlib.sha1(run.encode()).hexdigest()[:10])


def run_dir(run: str | None = None) -> Path:
    """The private directory of a run's workers (sockets, pid files, busy locks, the run's token),
    created 0700 with its parent and verified (NeurospecError, one line, when it is not private).
    The run that creates it removes the directories of this host's runs that are gone."""
    run = run or os.environ[RUN_ENV]
    top = runs_dir()
    private_dir(top)
    d = _run_dir_path(run)
    if private_dir(d):
        remove_dead_run_dirs(keep=d)
    info = d / "run.json"
    if not info.exists():
        info.write_text(json.dumps({"run": run}) + "\n")
    return d


def private_dir(path: Path) -> bool:
    """Create ``path`` with mode 0700 unless it exists; then make sure it is a directory (not a
    symlink) of this user that no one else may use: NeurospecError naming it otherwise. Returns
    whether it was created here."""
    from .errors import NeurospecError

    created = False
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask
        created = True
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        problem = "is not a directory"
    elif st.st_uid != os.getuid():
        problem = f"belongs to uid {st.st_uid}, not to you (uid {os.getuid()})"
    elif st.st_mode & 0o077:
        problem = f"is open to other users (mode {stat.S_IMODE(st.st_mode):04o}, must be 0700)"
    else:
        return created
    raise NeurospecError(f"the workers' directory {path} {problem}: another user could run code as you "
                         "through it; remove it (or have its owner remove it), or set TMPDIR to a private "
                         "directory (a path of at most 40 characters), then rerun")


def run_token(directory: Path) -> str:
    """The run's secret (created by the first of its processes to ask): a 0600 file of this user."""
    from .errors import NeurospecError

    path = directory / TOKEN_FILE
    if not os.path.lexists(path):
        tmp = directory / f".{TOKEN_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # atomic and complete: the first process's token wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as fh:
        st = os.fstat(fh.fileno())
        token = fh.read().strip()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077 or len(token) != 64:
        raise NeurospecError(f"the workers' token {path} is not a private file of yours (mode 0600, 64 hex "
                             "digits): remove its directory and rerun")
    return token


def remove_dead_run_dirs(keep: Path | None = None) -> list[Path]:
    """Remove the directories of this host's runs whose Snakemake process is gone (a killed run leaves
    its directory behind; its workers exit by themselves). Only this user's private directories,
    never a symlink; a run on another host, or of unknown origin, is kept. Returns what was removed."""
    removed = []
    here = socket.gethostname()
    for d in sorted(runs_dir().glob("run-*")):
        if d == keep:
            continue
        try:
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
                continue
            host, _, pid = json.loads((d / "run.json").read_text())["run"].rpartition(":")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
        if host != here or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        workers_alive = [w for w in d.glob("*.pid") if (p := Worker(d, w.stem).pid()) and _pid_alive(p)]
        if not workers_alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


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
        if pid is None or not _pid_alive(pid):
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
        host, run_pid = _run_id()
        logs = Path("results/logs/workers")
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"{host}-{run_pid}-{self.name}.log"
        pkg_root = str(Path(__file__).resolve().parents[1])
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
        if pid is not None and _pid_alive(pid):
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
            _send(s, payload)
            reply = _receive(s)
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


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (an exited child not yet reaped, a zombie, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True
    if state == "Z":
        try:  # a zombie leader can still have threads exiting, holding the process's files (locks)
            if len(os.listdir(f"/proc/{pid}/task")) > 1:
                return True
        except OSError:
            pass
        try:
            os.waitpid(pid, os.WNOHANG)  # our own child (the job that started a worker): reap it
        except ChildProcessError:
            pass
        return False
    return True


@contextmanager
def _acquire(model: Mapping[str, Any] | None, *, early: bool = False,
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

    from .devices import device_pool, try_lock

    key = _env_key("model", model)
    pool = device_pool(str(model.get("device", "auto")))
    waited = False
    while True:
        for device, lock_path in pool:
            worker = Worker(directory, f"model-{key}-{_slot_name(device)}")
            if len(pool) == 1 and lock_path is None and not early:
                worker.hold()  # the one device: wait for its worker to be free
            elif not worker.try_hold():
                continue  # its worker serves another job of this run
            try:
                if not worker.alive():
                    device_lock = try_lock(lock_path) if lock_path is not None else None
                    if lock_path is not None and device_lock is None:
                        continue  # held by another run (or a job without workers)
                    try:
                        worker.start("model", model, device, device_lock, early=early)
                    finally:
                        if device_lock is not None:
                            device_lock.close()  # the worker holds the lock through its own descriptor
                yield worker
                return
            finally:
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
    from .errors import NeurospecError

    run = run or os.environ.get(RUN_ENV)
    if not run:
        return
    directory = _run_dir_path(run)
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
                _send(s, _encode({"op": "shutdown", "token": token}))
                _receive(s)
            except OSError:
                pass
            finally:
                s.close()
        if pid is not None:
            pids.append(pid)
    deadline = time.monotonic() + timeout
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Messages: 8-byte length, then JSON
# ----------------------------------------------------------------------------------------------


def _encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message).encode()


def _send(s: socket.socket, payload: bytes) -> None:
    s.sendall(struct.pack("!Q", len(payload)) + payload)


def _receive_exact(s: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = s.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _receive(s: socket.socket) -> dict[str, Any] | None:
    head = _receive_exact(s, 8)
    if head is None:
        return None
    body = _receive_exact(s, struct.unpack("!Q", head)[0])
    return None if body is None else json.loads(body)


# ----------------------------------------------------------------------------------------------
# The worker's side
# ----------------------------------------------------------------------------------------------


class TaskCancelled(BaseException):
    """The job that asked for this task is gone (killed): stop it, write nothing."""


class _Server:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.kind = args.kind
        self.model_spec = json.loads(args.model) if args.model else None
        self.loaded = None
        self.load_seconds = None
        self.n_tasks = 0
        self.last_active = time.monotonic()
        self.client: socket.socket | None = None  # the connection of the task being run
        self.running = False
        self.cancelled = False
        self.lock = threading.Lock()
        self.token = Path(args.token_file).read_text().strip().encode()
        self.allowed = allowed_tasks()
        self.job_handlers: list[logging.Handler] = []
        self.logger = logging.getLogger("neurospec")
        self.logger.setLevel(logging.INFO)
        own = logging.StreamHandler(sys.stdout)  # the worker's own log file
        own.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
        self.logger.addHandler(own)

    # -- watching: the run, the idle time, the client of the running task --
    def watch(self) -> None:
        while True:
            time.sleep(WATCH_S)
            if not _pid_alive(self.args.run_pid):
                os._exit(0)  # the run is gone (killed): free the device now
            with self.lock:
                running, client = self.running, self.client
                idle = time.monotonic() - self.last_active
            if not running and idle > self.args.idle:
                self.logger.info("idle for %.0f s: exiting", idle)
                os._exit(0)
            if running and client is not None and _peer_closed(client) and not self.cancelled:
                self.cancelled = True
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def _on_cancel(self, signum, frame) -> None:
        if self.running and self.cancelled:
            raise TaskCancelled()

    def serve(self) -> None:
        Path(self.args.pidfile).write_text(f"{os.getpid()}\n")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.args.socket)
        listener.listen(16)
        signal.signal(signal.SIGUSR1, self._on_cancel)
        threading.Thread(target=self.watch, daemon=True).start()
        self.logger.info("%s worker %s (pid %d) for run pid %d: listening; neurospec library %s", self.kind,
                         self.args.name, os.getpid(), self.args.run_pid, library())
        if self.args.early:
            self.import_early()
        while True:
            try:
                conn, _ = listener.accept()
            except TaskCancelled:
                continue
            with self.lock:  # a connection is activity: the idle watch must not exit under it
                self.last_active = time.monotonic()
            try:
                request = _receive(conn)
                if request is None:
                    continue
                refused = self.refusal(request)
                if refused:
                    self.logger.warning("refused a request: %s", refused)
                    _send(conn, _encode({"status": "error", "message": refused}))
                    continue
                if request.get("op") == "shutdown":
                    self.logger.info("shut down by the end of the run after %d task(s)", self.n_tasks)
                    for handler in self.logger.handlers:
                        handler.flush()
                    sys.stdout.flush()
                    _send(conn, _encode({"status": "ok"}))
                    os._exit(0)  # nothing to tear down: outputs are written, the device is freed now
                reply = self.run(conn, request)
                if reply is not None:
                    try:
                        _send(conn, _encode(reply))
                    except OSError:
                        pass  # the job is gone
            except TaskCancelled:
                pass
            finally:
                conn.close()
                with self.lock:
                    self.running = False
                    self.last_active = time.monotonic()
                self._drop_job_logs()

    def refusal(self, request: Any) -> str | None:
        """Why this request is refused (nothing of it runs), or None: it must carry the run's token and
        name a registered task."""
        token = request.get("token") if isinstance(request, dict) else None
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token):
            return (f"worker {self.args.name} refused a request without this run's token (only the jobs of "
                    "the run that started it may use it)")
        if request.get("op") == "shutdown":
            return None
        target = request.get("target")
        if request.get("op") != "task" or not isinstance(target, str) or target not in self.allowed:
            return (f"worker {self.args.name} refused task {target!r}: it is not one of neurospec's "
                    "registered tasks (neurospec.workers.TASKS)")
        if request.get("library") != library():
            return (f"worker {self.args.name} runs the neurospec library {library()}, the job imported "
                    f"{request.get('library')} (a bug)")
        return None

    def run(self, conn: socket.socket, request: dict[str, Any]) -> dict[str, Any] | None:
        from .errors import JobLogHandler, NeurospecError, user_error

        os.chdir(request["cwd"])
        self.n_tasks += 1
        t0 = time.perf_counter()
        target = request["target"]
        _reset_peak_memory()
        with self.lock:
            self.client, self.running, self.cancelled = conn, True, False
        try:
            if request.get("log"):
                Path(request["log"]).parent.mkdir(parents=True, exist_ok=True)
                handler = JobLogHandler(request["log"])
                handler.setFormatter(logging.Formatter(LOG_FORMAT, "%H:%M:%S"))
                self.logger.addHandler(handler)
                self.job_handlers.append(handler)
            self.logger.info("task %d of %s worker %s (pid %d): %s (neurospec library %s, the job's too)",
                             self.n_tasks, self.kind, self.args.name, os.getpid(), target, library())
            function = resolve(target)
            if request.get("model") is not None:
                function(self.model(request["model"]), **request["kwargs"])
            else:
                function(**request["kwargs"])
            self.logger.info("task done in %.2f s (%s)", time.perf_counter() - t0, _peak_memory())
            for handler in self.job_handlers:
                handler.check()  # a log the disk could not take fails the job, with its one line
            return {"status": "ok"}
        except TaskCancelled:
            self.logger.warning("task cancelled after %.2f s: its job is gone", time.perf_counter() - t0)
            return None
        except NeurospecError as exc:
            self.logger.error("neurospec: error: %s", exc)
            return {"status": "error", "message": str(exc)}
        except Exception as exc:
            line = user_error(exc)  # a disk or permission error: the user's, one line
            if line is not None:
                self.logger.error("neurospec: error: %s", line)
                return {"status": "error", "message": line}
            text = traceback.format_exc()
            self.logger.error("neurospec: unexpected error (a bug: please report it with this log)\n%s", text)
            if _device_broken(text):
                self.logger.error("the device is in an unusable state: this worker exits")
                try:
                    _send(conn, _encode({"status": "bug", "traceback": text}))
                finally:
                    os._exit(1)
            return {"status": "bug", "traceback": text}
        finally:
            with self.lock:
                self.client, self.running = None, False
            self._drop_job_logs()

    def import_early(self) -> None:
        """Import what model tasks need before the first one arrives (a job that connects meanwhile
        waits in the listen queue). A failure here is left to the task that needs the import."""
        t0 = time.perf_counter()
        try:
            for module in EARLY_IMPORTS:
                importlib.import_module(module)
        except Exception as exc:  # the task that imports it reports it in its job's log
            self.logger.warning("early import stopped: %s: %s", type(exc).__name__, exc)
        else:
            self.logger.info("started with the run: torch and transformers imported in %.2f s, before "
                             "its first task", time.perf_counter() - t0)
        with self.lock:
            self.last_active = time.monotonic()

    def _drop_job_logs(self) -> None:
        while self.job_handlers:
            handler = self.job_handlers.pop()
            self.logger.removeHandler(handler)
            handler.close()

    def model(self, spec: Mapping[str, Any]):
        """The loaded model: loaded at this worker's first task, kept for every later one."""
        from .errors import NeurospecError
        from .models import load_model

        own = self.model_spec or dict(spec)
        if {k: v for k, v in spec.items() if k != "device"} != {k: v for k, v in own.items() if k != "device"}:
            raise NeurospecError(f"worker {self.args.name} serves model {own.get('model_id')!r} and was asked "
                                 f"for {spec.get('model_id')!r} (a bug)")
        if self.loaded is None:
            t0 = time.perf_counter()
            self.logger.info("loading model %s (revision %s) on %s", own.get("model_id"), own.get("revision"),
                             own.get("device"))
            self.loaded = load_model(**own)
            self.load_seconds = time.perf_counter() - t0
            self.logger.info("model loaded in %.2f s on %s (%s attention); kept for the rest of the run",
                             self.load_seconds, self.loaded.device, self.loaded.info.get("attn_implementation"))
        else:
            self.logger.info("model %s already loaded by worker pid %d (in %.2f s, once for this run)",
                             own.get("model_id"), os.getpid(), self.load_seconds)
        return self.loaded


def _cuda():
    """torch.cuda when torch is already imported and CUDA is in use, else None (never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def _reset_peak_memory() -> None:
    cuda = _cuda()
    if cuda is not None:
        for i in range(cuda.device_count()):
            cuda.reset_peak_memory_stats(i)


def _peak_memory() -> str:
    """This task's peak device memory (CUDA) and the worker's peak resident memory, for the job log."""
    import resource

    text = f"worker peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"
    cuda = _cuda()
    if cuda is not None:
        peak = max(cuda.max_memory_allocated(i) for i in range(cuda.device_count()))
        text = f"peak GPU memory {peak / 2**20:.0f} MiB, " + text
    return text


def _peer_closed(conn: socket.socket) -> bool:
    """Whether the job at the other end of ``conn`` has gone (EOF or error), without consuming data."""
    import select

    try:
        readable, _, errored = select.select([conn], [], [conn], 0)
        if errored:
            return True
        if readable:
            return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (OSError, ValueError):
        return True
    return False


def _device_broken(text: str) -> bool:
    markers = ("CUDA error: an illegal", "device-side assert", "CUDA error: unspecified launch failure",
               "cudaErrorIllegalAddress", "CUDA error: misaligned address")
    return any(m in text for m in markers)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m neurospec.workers", description="a neurospec worker (started by jobs)")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--run-pid", type=int, required=True)
    ap.add_argument("--token-file", required=True, help="the run's token: requests without it are refused")
    ap.add_argument("--kind", choices=("cpu", "model"), required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--idle", type=float, default=600.0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device-lock-fd", type=int, default=None)
    ap.add_argument("--early", action="store_true", help="import what model tasks need before the first one")
    args = ap.parse_args(argv)
    if args.device_lock_fd is not None:
        # this worker holds the device's lock until it exits; no process it starts may inherit it
        os.set_inheritable(args.device_lock_fd, False)
    _Server(args).serve()


if __name__ == "__main__":
    main()
