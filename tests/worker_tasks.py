"""Tasks for tests/unit/run/test_workers.py, run inside workers (this directory is on their PYTHONPATH)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from neurospec.errors import NeurospecError
from neurospec.tables import atomic_path

log = logging.getLogger("neurospec")


def whoami(path: str) -> None:
    """Write the pid of the process running the task."""
    log.info("whoami task in pid %d", os.getpid())
    Path(path).write_text(json.dumps({"pid": os.getpid()}))


def model_info(loaded, path: str, hold_s: float = 0.0) -> None:
    """Write which process and which loaded model object served the task (and on which device)."""
    log.info("model_info task started in pid %d", os.getpid())
    time.sleep(hold_s)
    Path(path).write_text(json.dumps({"pid": os.getpid(), "model_object": id(loaded.model),
                                      "device": loaded.info.get("device_requested"),
                                      "n_layers": loaded.model.config.num_hidden_layers}))


def slow_write(path: str, seconds: float) -> None:
    """Write ``path`` atomically after ``seconds``: a job killed before then must leave nothing."""
    log.info("slow_write started")
    with atomic_path(path) as tmp:
        tmp.write_text("partial")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.02)
        tmp.write_text("complete")


def fail(message: str) -> None:
    raise NeurospecError(message)


def bug() -> None:
    raise ValueError("a bug in a task")


def crash() -> None:
    log.info("about to crash")
    os._exit(3)


def leave_hooks(loaded, path: str) -> None:
    """A task that leaves the model changed: the gate taps' ``ActFn`` wrappers installed on every
    ``mlp.act_fn`` and a forward pre-hook on every ``down_proj``, never removed."""
    from neurospec.architectures import resolve_mlp_taps

    taps = resolve_mlp_taps(loaded.model)
    for tap in taps:
        tap.down_input.register_forward_pre_hook(lambda module, args: None)
    Path(path).write_text(json.dumps(model_state_of(loaded)))


def model_state(loaded, path: str) -> None:
    """Write what the next task finds: the model object, its hooks and its act_fn types."""
    Path(path).write_text(json.dumps(model_state_of(loaded)))


def model_state_of(loaded) -> dict:
    modules = list(loaded.model.modules())
    return {"pid": os.getpid(), "model_object": id(loaded.model),
            "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules),
            "act_fns": sorted(type(m.act_fn).__name__ for m in modules if hasattr(m, "act_fn")),
            "n_modules": len(modules)}
