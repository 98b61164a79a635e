"""The tasks a job may hand to a worker (``TASKS``, the allowlist) and how a task is named:
``"neurospec.<module>:<function>"``, from a function object or a ``task_ref``."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Callable

# The only tasks a job may send to a worker (or run in its own process): what the rule scripts call.
TASKS = frozenset({
    "neurospec.evaluate.ablation:ablate_to_file",
    "neurospec.plots.ablation_figures:draw",
    "neurospec.browser.contexts:contexts_to_file",
    "neurospec.browser.page:write_page",
    "neurospec.collect.collect:collect_to_file",
    "neurospec.compare.compare:run_compare",
    "neurospec.evaluate.correlation:correlate_to_file",
    "neurospec.plots.correlation_figure:draw_correlation",
    "neurospec.data.demo:build_model",
    "neurospec.plots.figures:draw",
    "neurospec.plots.figures:draw_many",
    "neurospec.model.gemma3:build_gemma3_model",
    "neurospec.data.pairs:write_pair_table",
    "neurospec.score.scoring:run_scoring",
    "neurospec.score.stability:run_stability",
    "neurospec.steering.figures:draw",
    "neurospec.steering.io:steer_to_file",
    "neurospec.summary.tables:write_table",
    "neurospec.tables:merge_shard_files",
    "neurospec.evaluate.translation:translate_ablated_to_file",
    "neurospec.evaluate.translation:translate_to_file",
    "neurospec.evaluate.translation_quality:draw_quality",
    "neurospec.evaluate.translation_quality:score_to_file",
})
# Tests only: more allowed tasks (comma-separated "module:function"), read from the environment of
# the run (whoever can set it can run any code as this user anyway).
EXTRA_TASKS_ENV = "NEUROSPEC_EXTRA_TASKS"


class TaskRef(str):
    """A task named by ``"module:function"`` without importing its module (a rule script's job need
    not import torch or pandas: the worker does). ``task_ref`` makes one; rule scripts import the
    function itself under ``TYPE_CHECKING`` beside it, so "go to definition" reaches it."""


def task_ref(target: str) -> TaskRef:
    """``"neurospec.evaluate.ablation:ablate_to_file"`` -> a TaskRef (checked against ``TASKS`` first)."""
    check_target(target)
    return TaskRef(target)


def task_name(task: str | Callable[..., Any]) -> str:
    """What a job sends its worker: a task function (or a TaskRef, or a string) as ``"module:function"``."""
    if isinstance(task, str):
        return str(task)
    module, name = getattr(task, "__module__", None), getattr(task, "__qualname__", None)
    if not module or not name:
        raise TypeError(f"a task is a module-level function or 'module:function', not {task!r}")
    return f"{module}:{name}"


def allowed_tasks() -> frozenset[str]:
    """``TASKS``, and the tests' own tasks named in ``NEUROSPEC_EXTRA_TASKS``."""
    extra = os.environ.get(EXTRA_TASKS_ENV, "")
    return TASKS | {t.strip() for t in extra.split(",") if t.strip()}


def resolve(target: str) -> Callable[..., Any]:
    """``"neurospec.collect.collect:collect_to_file"`` (a registered task, ``TASKS``) -> the function."""
    check_target(target)
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def check_target(target: str) -> None:
    """A task outside the registry is refused before anything is imported."""
    from ..errors import NeurospecError

    if not isinstance(target, str) or target not in allowed_tasks():
        raise NeurospecError(f"task {target!r} refused: it is not one of neurospec's registered tasks "
                             "(neurospec.run.workers.TASKS)")


def library() -> str:
    """The ``neurospec`` this process runs: the path of its ``__init__.py``."""
    return str(Path(__file__).resolve().parents[1] / "__init__.py")
