"""How a rule's job runs its library task: ``run_task`` (CPU) and ``run_model_task`` (needs the model).

Rule scripts call these two functions only, naming the task as ``"module:function"``:

    run_task("neurospec.scoring:run_scoring", log=snakemake.log[0], paths=..., ...)
    run_model_task("neurospec.collect:collect_to_file", model=snakemake.params.model,
                   log=snakemake.log[0], pairs_path=..., out_path=..., ...)

A model task is ``function(loaded: LoadedModel, **kwargs)``; it writes its outputs atomically.
``model`` holds ``load_model``'s keyword arguments (model_id, revision, dtype, device,
attn_implementation).  Either way the job's log gets the task's log lines, a ``NeurospecError`` becomes
one line and exit status 1, and any other exception keeps its traceback.

This version runs every task in the job's own process (one model load per job).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def resolve(target: str) -> Callable[..., Any]:
    """``"neurospec.collect:collect_to_file"`` -> the function."""
    module, _, name = target.partition(":")
    if not module.startswith("neurospec.") or not name:
        raise ValueError(f"task {target!r} is not of the form 'neurospec.<module>:<function>'")
    return getattr(importlib.import_module(module), name)


def run_task(target: str, *, log: str | None = None, **kwargs: Any) -> None:
    """Run a CPU task as a rule's job."""
    from .errors import one_line_errors

    with one_line_errors(log):
        resolve(target)(**kwargs)


def run_model_task(target: str, *, model: Mapping[str, Any], log: str | None = None, **kwargs: Any) -> None:
    """Run a task that needs the model: claim a device, load the model, call ``function(loaded, **kwargs)``."""
    from .devices import claim_device
    from .errors import one_line_errors
    from .models import load_model

    with one_line_errors(log):
        with claim_device(model.get("device", "auto")) as dev:
            loaded = load_model(**{**model, "device": dev})
            resolve(target)(loaded, **kwargs)
