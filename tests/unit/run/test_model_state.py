"""A task leaves the model as it found it: a model worker keeps one loaded model for every task of a
run, so a wrapper or hook that one task installs and leaves is gone before the next (run.server.model_restored)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neurospec.architectures import resolve_mlp_taps
from neurospec.interventions import intervene
from neurospec.models import load_model
from neurospec.run import workers
from neurospec.run.server import model_restored
from neurospec.run.workers import run_model_task
from test_workers import EXTRA_TASKS, _model, _worker_logs, run  # noqa: F401 (run: the fixture)


def _state(model) -> tuple:
    modules = list(model.modules())
    return (len(modules), sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules),
            tuple(id(m.act_fn) for m in modules if hasattr(m, "act_fn")))


def test_wrappers_and_hooks_left_by_a_block_are_undone_and_the_outputs_are_the_model_s(small_model_dir):
    loaded = load_model(str(small_model_dir), revision="main", dtype="float32", device="cpu")
    model = loaded.model
    ids = torch.tensor([[5, 17, 42, 7, 99]])
    with torch.no_grad():
        reference = model(ids).last_hidden_state
    found = _state(model)
    with model_restored(model):
        taps = resolve_mlp_taps(model)  # installs ActFn wrappers where the gate is read
        handles = [t.down_input.register_forward_pre_hook(lambda m, a: None) for t in taps]
        inside = _state(model)
        assert inside[1] == found[1] + len(taps) == found[1] + 3  # one pre-hook per layer, 3 layers
        del handles  # left behind, as a careless task would
    assert _state(model) == found  # the same act_fn objects, no hooks, no added modules
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, reference)
    with pytest.raises(RuntimeError, match="boom"), model_restored(model):  # also after an exception
        with intervene(model, {0: np.array([1, 2])}):
            resolve_mlp_taps(model)[0].down_input.register_forward_pre_hook(lambda m, a: None)
            raise RuntimeError("boom")
    assert _state(model) == found


def test_two_tasks_on_one_loaded_model_the_second_finds_it_as_loaded(run, monkeypatch, small_model_dir):
    monkeypatch.setenv(workers.EXTRA_TASKS_ENV, EXTRA_TASKS + ",worker_tasks:leave_hooks,worker_tasks:model_state")
    model = _model(small_model_dir)
    run_model_task("worker_tasks:model_state", model=model, log=str(run / "a.log"), path=str(run / "a.json"))
    run_model_task("worker_tasks:leave_hooks", model=model, log=str(run / "b.log"), path=str(run / "b.json"))
    run_model_task("worker_tasks:model_state", model=model, log=str(run / "c.log"), path=str(run / "c.json"))
    first, left, after = (json.loads((run / f"{x}.json").read_text()) for x in "abc")
    assert first["pid"] == left["pid"] == after["pid"] and first["model_object"] == after["model_object"]
    assert left["hooks"] == first["hooks"] + 3  # the middle task saw its own pre-hooks (3 layers)
    assert after == first  # the third found the model as the first did: no hook, the model's own act_fn
    (log_text,) = [t for name, t in _worker_logs(run).items() if "-model-" in name]
    assert log_text.count("loading model") == 1 and "the model restored after the task" in (run / "b.log").read_text()
