"""The worker's side: a process that serves one task at a time for the jobs of its run, keeps the
model loaded between tasks, routes each task's log lines to its job's log, and stops a task whose job
is gone (SIGUSR1). Started by ``pool.Worker.start`` as ``neurospec.run.server.main``."""

from __future__ import annotations

import argparse
import hmac
import importlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from .protocol import encode, receive, send
from .rundir import pid_alive
from .tasks import allowed_tasks, library, resolve

LOG_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(message)s"
WATCH_S = 0.2  # how often a worker checks its run and its client
# what a model worker started with the run imports before its first task (start_model_worker_early)
EARLY_IMPORTS = ("torch", "transformers", "transformers.modeling_utils", "transformers.generation",
                 "neurospec.models", "neurospec.collect.collect", "neurospec.evaluate.ablation", "neurospec.evaluate.translation")


class TaskCancelled(BaseException):
    """The job that asked for this task is gone (killed): stop it, write nothing."""


class Server:
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
            if not pid_alive(self.args.run_pid):
                os._exit(0)  # the run is gone (killed): free the device now
            with self.lock:
                running, client = self.running, self.client
                idle = time.monotonic() - self.last_active
            if not running and idle > self.args.idle:
                if self.args.device_lock_fd is not None and self.neighbour_alive():
                    continue  # it holds the GPU's lock for this run's other model too: stay while it lives
                self.logger.info("idle for %.0f s: exiting", idle)
                os._exit(0)
            if running and client is not None and _peer_closed(client) and not self.cancelled:
                self.cancelled = True
                signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)

    def neighbour_alive(self) -> bool:
        """Whether another model's worker of this run shares this worker's GPU (``--neighbours``: the
        glob of their pid files beside this worker's socket). Such a worker computes on the GPU without
        holding its lock (``pool._neighbours``), so the lock holder does not exit idle while it lives."""
        if not self.args.neighbours:
            return False
        own = Path(self.args.pidfile).resolve()
        for pidfile in Path(self.args.socket).parent.glob(self.args.neighbours):
            if pidfile.resolve() == own:
                continue
            try:
                if pid_alive(int(pidfile.read_text().strip())):
                    return True
            except (OSError, ValueError):
                continue
        return False

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
                request = receive(conn)
                if request is None:
                    continue
                refused = self.refusal(request)
                if refused:
                    self.logger.warning("refused a request: %s", refused)
                    send(conn, encode({"status": "error", "message": refused}))
                    continue
                if request.get("op") == "shutdown":
                    self.logger.info("shut down by the end of the run after %d task(s)", self.n_tasks)
                    for handler in self.logger.handlers:
                        handler.flush()
                    sys.stdout.flush()
                    send(conn, encode({"status": "ok"}))
                    os._exit(0)  # nothing to tear down: outputs are written, the device is freed now
                reply = self.run(conn, request)
                if reply is not None:
                    try:
                        send(conn, encode(reply))
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
                    "registered tasks (neurospec.run.workers.TASKS)")
        if request.get("library") != library():
            return (f"worker {self.args.name} runs the neurospec library {library()}, the job imported "
                    f"{request.get('library')} (a bug)")
        return None

    def run(self, conn: socket.socket, request: dict[str, Any]) -> dict[str, Any] | None:
        from ..errors import JobLogHandler, NeurospecError, user_error

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
                loaded = self.model(request["model"])
                whole = loaded.lm if loaded.lm is not None else loaded.model  # the LM head too
                with model_restored(whole, self.logger):  # the next task finds the model as loaded
                    function(loaded, **request["kwargs"])
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
                    send(conn, encode({"status": "bug", "traceback": text}))
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
        from ..errors import NeurospecError
        from ..models import load_model

        own = self.model_spec or dict(spec)
        if {k: v for k, v in spec.items() if k != "device"} != {k: v for k, v in own.items() if k != "device"}:
            raise NeurospecError(f"worker {self.args.name} serves model {own.get('model_id')!r} and was asked "
                                 f"for {spec.get('model_id')!r} (a bug)")
        if self.loaded is None:
            t0 = time.perf_counter()
            null = own.get("null_weights", "none")
            self.logger.info("loading model %s (revision %s%s) on %s", own.get("model_id"), own.get("revision"),
                             f", {null} null weights, seed {own.get('null_seed')}" if null != "none" else "",
                             own.get("device"))
            self.loaded = load_model(**own)
            self.load_seconds = time.perf_counter() - t0
            self.logger.info("model loaded in %.2f s on %s (%s attention); kept for the rest of the run",
                             self.load_seconds, self.loaded.device, self.loaded.info.get("attn_implementation"))
        else:
            self.logger.info("model %s already loaded by worker pid %d (in %.2f s, once for this run)",
                             own.get("model_id"), os.getpid(), self.load_seconds)
        return self.loaded


@contextmanager
def model_restored(model: Any, logger: logging.Logger | None = None) -> Iterator[None]:
    """The model as it was before the block, after it: a worker keeps one loaded model for many tasks,
    so whatever a task installs and leaves (a wrapper set as ``mlp.act_fn`` by
    ``architectures.resolve_mlp_taps``, a forward hook or pre-hook) is undone here, also after an
    exception: submodules and attributes set during the block are put back, hooks added are removed.
    Parameters and buffers are not copied (a task must not change weights in place)."""
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                  "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")
    before = [(module, dict(module._modules), {k: v for k, v in vars(module).items() if not k.startswith("_")},
               {name: set(getattr(module, name, {})) for name in hook_dicts}) for module in model.modules()]
    try:
        yield
    finally:
        undone = 0
        for module, children, attributes, hooks in before:
            if module._modules != children or any(module._modules[k] is not v for k, v in children.items()):
                module._modules.clear()
                module._modules.update(children)
                undone += 1
            for key, value in attributes.items():
                if vars(module).get(key, value) is not value or key not in vars(module):
                    object.__setattr__(module, key, value)
                    undone += 1
            for name, keys in hooks.items():
                registered = getattr(module, name, None)
                for key in [k for k in (registered or {}) if k not in keys]:
                    del registered[key]
                    undone += 1
        if undone and logger is not None:
            logger.info("the model restored after the task (%d wrapper(s), attribute(s) or hook(s) undone)", undone)


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
    ap = argparse.ArgumentParser(prog="python -m neurospec.run.server", description="a neurospec worker (started by jobs)")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--run-pid", type=int, required=True)
    ap.add_argument("--token-file", required=True, help="the run's token: requests without it are refused")
    ap.add_argument("--kind", choices=("cpu", "model"), required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--idle", type=float, default=600.0)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device-lock-fd", type=int, default=None)
    ap.add_argument("--neighbours", default=None,
                    help="glob of the pid files of this run's workers that share this worker's GPU")
    ap.add_argument("--early", action="store_true", help="import what model tasks need before the first one")
    args = ap.parse_args(argv)
    if args.device_lock_fd is not None:
        # this worker holds the device's lock until it exits; no process it starts may inherit it
        os.set_inheritable(args.device_lock_fd, False)
    Server(args).serve()


if __name__ == "__main__":
    main()
