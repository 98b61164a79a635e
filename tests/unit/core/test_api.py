"""neurospec.intervene on a user's transformers model: each mode's effect on down_proj's input,
measured with an independent hook, the model restored after the block (also after an exception),
and the errors of a wrong call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import neurospec
from neurospec.errors import NeurospecError


@pytest.fixture(scope="module")
def lm(small_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(small_model_dir, dtype=torch.float32).eval()


IDS = torch.tensor([[1, 5, 9, 13, 2, 7]])
SELECTION = {0: np.array([2, 50]), 2: np.array([7])}


def down_inputs(lm):
    """Each layer's down_proj input [seq, neurons] after any intervention's hooks (registered later)."""
    seen = {}
    hooks = [layer.mlp.down_proj.register_forward_pre_hook(
        lambda m, a, i=i: seen.__setitem__(i, a[0][0].clone())) for i, layer in enumerate(lm.model.layers)]
    with torch.no_grad():
        logits = lm(input_ids=IDS).logits
    for h in hooks:
        h.remove()
    return seen, logits


def test_modes_change_exactly_the_selected_neurons(lm):
    base, base_logits = down_inputs(lm)
    values = np.random.default_rng(0).normal(size=(3, 96))
    cases = [
        (("zero", None, 1.0), lambda h, l, i: torch.zeros_like(h[:, i])),
        (("set", 0.75, 2.0), lambda h, l, i: torch.full_like(h[:, i], 1.5)),
        (("mean", values, 1.0),
         lambda h, l, i: torch.as_tensor(values[l, i], dtype=h.dtype).expand(h.shape[0], -1)),
        (("add", values, 0.5), None),  # checked on layer 0 only: later layers see changed inputs
    ]
    for (mode, vals, alpha), expect in cases:
        with neurospec.intervene(lm, SELECTION, mode=mode, values=vals, alpha=alpha):
            got, logits = down_inputs(lm)
        assert not torch.equal(logits, base_logits), mode
        idx = SELECTION[0]
        if mode == "add":
            want = base[0][:, idx] + torch.as_tensor(0.5 * values[0, idx], dtype=torch.float32)
            torch.testing.assert_close(got[0][:, idx], want)
        else:
            for layer, i in SELECTION.items():
                torch.testing.assert_close(got[layer][:, i], expect(got[layer], layer, i))
        others = np.setdiff1d(np.arange(96), idx)
        torch.testing.assert_close(got[0][:, others], base[0][:, others])  # layer 0's other neurons untouched
        after, after_logits = down_inputs(lm)
        assert torch.equal(after_logits, base_logits), f"{mode}: the model is not restored"


def test_the_model_is_restored_after_an_exception(lm):
    _, base_logits = down_inputs(lm)
    with pytest.raises(RuntimeError, match="boom"):
        with neurospec.intervene(lm, SELECTION, mode="add", values=3.0):
            raise RuntimeError("boom")
    assert torch.equal(down_inputs(lm)[1], base_logits)


def test_wrong_calls_are_one_line(lm):
    with pytest.raises(NeurospecError, match="intervene mode 'scale': choose one of zero, mean, set, add"):
        with neurospec.intervene(lm, SELECTION, mode="scale"):
            pass
    with pytest.raises(NeurospecError, match=r"takes one group's selection, \{layer: indices\}"):
        with neurospec.intervene(lm, {"de": SELECTION}):
            pass
    with pytest.raises(NeurospecError, match="mode 'set' needs values"):
        with neurospec.intervene(lm, SELECTION, mode="set"):
            pass
    with pytest.raises(NeurospecError, match=r"values have shape \(2, 2\); the model's is \(3, 96\)"):
        with neurospec.intervene(lm, SELECTION, mode="add", values=np.zeros((2, 2))):
            pass
    with pytest.raises(NeurospecError, match="selection names layer 5; the model has layers 0..2"):
        with neurospec.intervene(lm, {5: [1]}, mode="add"):
            pass
