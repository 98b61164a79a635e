"""Interventions at the input of down_proj equal independent mechanisms that edit the weights."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from neurospec.errors import NeurospecError
from neurospec.interventions import (firing_rates, intervene, matched_like, mean_activations, random_like,
                                     rate_deciles, selection_size, selections_from_scores)

H, I, L, V = 32, 48, 3, 97


def _llama():
    cfg = tf.LlamaConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                         num_attention_heads=4, num_key_value_heads=2, mlp_bias=True)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _gpt2():
    cfg = tf.GPT2Config(vocab_size=V, n_embd=H, n_inner=I, n_layer=L, n_head=4, n_positions=64)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _down(model, layer):
    """(weight as [out, in], bias) of the layer's down projection, for both layouts."""
    if hasattr(model, "transformer"):  # GPT-2: Conv1D, weight [in, out]
        proj = model.transformer.h[layer].mlp.c_proj
        return proj.weight.T, proj.bias, proj
    proj = model.model.layers[layer].mlp.down_proj
    return proj.weight, proj.bias, proj


SELECTION = {0: np.array([1, 5, 7]), 2: np.array([0, 47])}
IDS = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("make", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_zeroing_equals_zeroing_the_weight_columns(make):
    model = make()
    with torch.no_grad():
        base = model(input_ids=IDS).logits
        with intervene(model, SELECTION, "zero"):
            hooked = model(input_ids=IDS).logits
        after = model(input_ids=IDS).logits  # hooks removed
        for layer, idx in SELECTION.items():
            w, _, proj = _down(model, layer)
            w[:, idx] = 0.0  # a view of the parameter: edits it in place
        edited = model(input_ids=IDS).logits
    torch.testing.assert_close(hooked, edited, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, base)
    assert (hooked - base).abs().max() > 1e-3  # the intervention changed something


@pytest.mark.parametrize("make", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_mean_patching_equals_moving_the_neurons_into_the_bias(make):
    """h_i := v on every token  <=>  column i of W zeroed and W[:, i] * v added to the bias."""
    model = make()
    values = np.random.default_rng(0).normal(size=(L, I))
    with torch.no_grad():
        with intervene(model, SELECTION, "mean", values):
            hooked = model(input_ids=IDS).logits
        for layer, idx in SELECTION.items():
            w, b, _ = _down(model, layer)
            b += (w[:, idx] * torch.as_tensor(values[layer, idx], dtype=w.dtype)).sum(1)
            w[:, idx] = 0.0
        edited = model(input_ids=IDS).logits
    torch.testing.assert_close(hooked, edited, rtol=1e-5, atol=1e-5)


def test_the_hooks_go_away_after_an_exception():
    model = _llama()
    with torch.no_grad():
        base = model(input_ids=IDS).logits
        with pytest.raises(RuntimeError):
            with intervene(model.model, SELECTION):  # the base model works too
                raise RuntimeError("boom")
        torch.testing.assert_close(model(input_ids=IDS).logits, base)


def test_bad_selections_are_one_clear_error():
    model = _llama()
    with pytest.raises(NeurospecError, match=r"names layer 5; the model has layers 0..2"):
        with intervene(model, {5: np.array([0])}):
            pass
    with pytest.raises(NeurospecError, match=r"neurons outside 0..47"):
        with intervene(model, {0: np.array([48])}):
            pass
    with pytest.raises(NeurospecError, match=r"mode 'half'"):
        with intervene(model, SELECTION, "half"):
            pass
    with pytest.raises(NeurospecError, match=r"shape \(2, 48\)"):
        with intervene(model, SELECTION, "mean", np.zeros((2, I))):
            pass


def test_selections_random_controls_and_means():
    scores = pd.DataFrame({"group": ["de", "de", "de", "ru"], "layer": [0, 0, 2, 1],
                           "neuron": [7, 3, 4, 9], "score": [1.0, 2.0, 3.0, 4.0]})
    sel = selections_from_scores(scores)
    assert {g: {k: v.tolist() for k, v in s.items()} for g, s in sel.items()} == \
        {"de": {0: [3, 7], 2: [4]}, "ru": {1: [9]}}
    assert selection_size(sel["de"]) == 3
    rng = np.random.default_rng(1)
    controls = [random_like(sel["de"], 10, rng) for _ in range(50)]
    assert all({k: len(v) for k, v in c.items()} == {0: 2, 2: 1} for c in controls)
    assert all(len(set(c[0].tolist())) == 2 and c[0].max() < 10 for c in controls)
    assert len({tuple(c[0].tolist()) for c in controls}) > 10  # really random
    with pytest.raises(NeurospecError, match="more than its 1"):
        random_like(sel["de"], 1, rng)

    def table(sums):
        return pd.DataFrame({"layer": [0, 0, 1, 1], "neuron": [0, 1, 0, 1], "act_sum": sums})

    tables = {"en-de": (table([1.0, 2.0, 3.0, 4.0]), {"counted_lang": "en", "n_tokens": 2}),
              "de-en": (table([10.0, 0.0, 0.0, 10.0]), {"counted_lang": "de", "n_tokens": 8})}
    np.testing.assert_allclose(mean_activations(tables), [[1.1, 0.2], [0.3, 1.4]])
    np.testing.assert_allclose(mean_activations(tables, exclude=["de"]), [[0.5, 1.0], [1.5, 2.0]])
    with pytest.raises(NeurospecError, match="no count table"):
        mean_activations(tables, exclude=["de", "en"])


def test_mean_patch_values_read_the_tables_once_and_leave_the_language_out(tmp_path):
    from synthetic_counts import complete

    from neurospec.interventions import MeanPatchValues
    from neurospec.tables import write_counts

    rng = np.random.default_rng(3)
    paths, sums = [], {}
    for pair, lang, n in (("de-en", "de", 10), ("ru-en", "ru", 30), ("hi-en", "hi", 60)):
        df = pd.DataFrame({"layer": np.repeat(np.arange(2), 4).astype(np.int32),
                           "neuron": np.tile(np.arange(4), 2).astype(np.int32), "act_sum": rng.normal(size=8)})
        write_counts(complete(df), tmp_path / f"{pair}.parquet", {"pair": pair, "counted_lang": lang, "n_tokens": n})
        paths.append(str(tmp_path / f"{pair}.parquet"))
        sums[lang] = (df["act_sum"].to_numpy().reshape(2, 4), n)
    patch = MeanPatchValues(paths, "evaluate.ablation")
    assert patch.counted == {"de-en": "de", "ru-en": "ru", "hi-en": "hi"}
    expected = (sums["ru"][0] + sums["hi"][0]) / (30 + 60)
    np.testing.assert_allclose(patch.excluding(["de"]), expected, rtol=1e-12)
    assert patch.excluding(["de"]) is patch.excluding(("de",))  # computed once per exclusion
    with pytest.raises(NeurospecError, match="evaluate.ablation: mode 'mean' needs the count tables"):
        MeanPatchValues([], "evaluate.ablation")


def test_firing_rates_pool_counts_over_tables_and_deciles_rank_within_layers():
    def table(counts):
        return pd.DataFrame({"layer": [1, 1, 0, 0], "neuron": [0, 1, 0, 1], "gate_active": counts})

    tables = {"en-de": (table([1, 2, 3, 4]), {"n_tokens": 10}), "de-en": (table([9, 0, 7, 0]), {"n_tokens": 30})}
    # rows are sorted by (layer, neuron): layer 0 holds counts 3+7, 4+0; layer 1 holds 1+9, 2+0; 40 tokens
    np.testing.assert_allclose(firing_rates(tables, "gate_active"), [[10 / 40, 4 / 40], [10 / 40, 2 / 40]])
    with pytest.raises(NeurospecError, match="lacks column 'active'"):
        firing_rates(tables, "active")
    rates = np.array([np.arange(20.0), np.arange(20.0)[::-1], np.zeros(20)])
    deciles = rate_deciles(rates)
    assert deciles[0].tolist() == [i // 2 for i in range(20)]  # two neurons per decile, by rank
    assert deciles[1].tolist() == [9 - i // 2 for i in range(20)]
    assert (deciles[2] == deciles[2][0]).all()  # tied rates share a decile


def test_matched_controls_reproduce_the_selections_decile_histogram_per_layer():
    rng = np.random.default_rng(0)
    rates = rng.random((3, 200)) ** 3  # skewed, like firing rates
    deciles = rate_deciles(rates)
    # the most active neurons of layer 0 and 2 (what frequency and diffmeans pick), a mix in layer 1
    selection = {0: np.argsort(-rates[0])[:60:2], 1: np.arange(0, 200, 9), 2: np.argsort(-rates[2])[:5]}
    selection = {k: np.sort(v) for k, v in selection.items()}
    for seed in range(20):
        control, overlap = matched_like(selection, deciles, np.random.default_rng(seed))
        assert overlap == 0
        for layer, idx in selection.items():
            c = control[layer]
            assert len(set(c.tolist())) == len(c) == len(idx)  # without replacement
            assert not set(c.tolist()) & set(idx.tolist())  # never a selected neuron
            assert np.bincount(deciles[layer][c], minlength=10).tolist() == \
                np.bincount(deciles[layer][idx], minlength=10).tolist()
    # every other one of layer 0's 60 most active neurons: half of each of its top three deciles
    assert np.bincount(deciles[0][selection[0]], minlength=10).tolist() == [0] * 7 + [10, 10, 10]
    again, _ = matched_like(selection, deciles, np.random.default_rng(3))
    other, _ = matched_like(selection, deciles, np.random.default_rng(4))
    assert all((again[k] == matched_like(selection, deciles, np.random.default_rng(3))[0][k]).all() for k in again)
    assert any(not np.array_equal(again[k], other[k]) for k in again)  # another seed, another set


def test_a_matched_control_short_of_neurons_keeps_the_histogram_and_reports_the_overlap():
    deciles = rate_deciles(np.arange(20.0)[None, :])  # two neurons per decile
    selection = {0: np.array([18, 19, 0])}  # the whole top decile: no other neuron there
    control, overlap = matched_like(selection, deciles, np.random.default_rng(0))
    assert overlap == 2 and sorted(control[0].tolist()) == [1, 18, 19]
    with pytest.raises(NeurospecError, match="layers 0..0"):
        matched_like({1: np.array([0])}, deciles, np.random.default_rng(0))
    with pytest.raises(NeurospecError, match="outside 0..19"):
        matched_like({0: np.array([20])}, deciles, np.random.default_rng(0))
