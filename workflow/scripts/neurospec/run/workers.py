"""How a rule's job runs its library task: in a persistent worker that stays warm for the whole run.

Rule scripts call two functions only, naming the task by its function (a function object, or a
``task_ref`` that names it without importing its module, the function imported under ``TYPE_CHECKING``
beside it for "go to definition"; either is sent as ``"neurospec.<module>:<function>"``):

    run_task(scoring.run_scoring, log=snakemake.log[0], paths=..., ...)
    run_model_task(collect_to_file, model=snakemake.params.model,
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

import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from .pool import IDLE_ENV, Worker, WorkerError, WorkerGone, acquire, shutdown_run  # noqa: F401 (the run's API)
from .rundir import (  # noqa: F401 (the run's API)
    RUN_ENV,
    RUN_SCOPE_ENV,
    pid_alive,
    run_dir,
    run_dir_path,
    run_token,
    runs_dir,
)
from .protocol import encode
from .tasks import EXTRA_TASKS_ENV, TASKS, check_target, library, resolve, task_name, task_ref  # noqa: F401

MODE_ENV = "NEUROSPEC_WORKERS"  # "0": every task in the job's own process

log = logging.getLogger("neurospec")


# ----------------------------------------------------------------------------------------------
# The job's side
# ----------------------------------------------------------------------------------------------


def run_task(target: str | Callable[..., Any], *, log: str | None = None, uses_torch: bool = False, **kwargs: Any) -> None:
    """Run a CPU task as a rule's job. ``uses_torch``: the task imports torch and transformers (building
    a model), so an idle model worker of this run, which has them imported, serves it when there is one."""
    _run(target, None, log, kwargs, uses_torch=uses_torch)


def run_model_task(target: str | Callable[..., Any], *, model: Mapping[str, Any], log: str | None = None, **kwargs: Any) -> None:
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
            and pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid))):
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
    with acquire(model, early=True) as worker:
        return worker is not None and worker.proc is not None


def _run(target: str, model: dict[str, Any] | None, log_path: str | None, kwargs: dict[str, Any],
         uses_torch: bool = False) -> None:
    from ..errors import NeurospecError

    target = task_name(target)
    try:
        check_target(target)
    except NeurospecError as exc:
        _fail(str(exc), log_path)
    if not workers_enabled():
        return _run_here(target, model, log_path, kwargs)
    request = {"op": "task", "target": target, "model": model, "kwargs": kwargs,
               "log": str(Path(log_path).resolve()) if log_path else None, "cwd": os.getcwd(),
               "library": library()}
    try:
        encode(request)
    except TypeError as exc:  # a bug in a rule script, not bad input
        raise TypeError(f"task {target}: arguments must be JSON-serialisable: {exc}") from None
    for attempt in range(2):  # a worker that exited idle as the job connected ran nothing: once more
        try:
            with acquire(model, uses_torch=uses_torch) as worker:
                reply = worker.call(encode({**request, "token": run_token(worker.sock.parent)}))
            break
        except WorkerGone as exc:
            if attempt:
                _fail(str(exc), log_path)
        except (WorkerError, NeurospecError) as exc:  # NeurospecError: the run's directory is not private
            _fail(str(exc), log_path)
        except OSError as exc:  # starting the worker: its log in results/logs/workers, the run's directory
            from ..errors import user_error

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
    from ..errors import one_line_errors

    with one_line_errors(log_path):
        log.info("neurospec library %s (in the job's own process)", library())
        if model is None:
            resolve(target)(**kwargs)
            return
        from ..devices import claim_device
        from ..models import load_model

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
