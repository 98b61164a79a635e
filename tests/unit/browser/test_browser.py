"""The neuron browser's library: the top contexts against an independent recomputation (forward
hooks on down_proj, one sentence at a time), the union of selections, the page's probabilities."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from neurospec import models
from neurospec.data import demo
from neurospec.browser import contexts, page
from neurospec.errors import NeurospecError

TEMPLATE = "Sentence: {src}"  # the source starts after this prefix: its span is known by hand
PREFIX = len("Sentence: ")


@pytest.fixture(scope="module")
def loaded(small_model_dir):
    return models.load_model(str(small_model_dir), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def tables():
    return [demo.build_pair_table(p, "validation", max_samples=30) for p in ("en-de", "ru-en")]


def recompute(lm, tokenizer, tables, neurons, max_sentences, top_k):
    """Per (layer, neuron): every counted token's activation, one sentence at a time, with hooks on
    each decoder layer's mlp.down_proj (not neurospec's taps); counted = the tokens whose character
    offsets overlap the source's span in the prompt.  Returns {(layer, neuron): [(value, key)]}
    sorted by value, largest first, and {key: value} of every token."""
    values: dict[tuple[int, int], list[tuple[float, tuple[str, int, int]]]] = {}
    layers = lm.model.layers
    for df, _ in tables:
        pair = f"{df['src_lang'].iloc[0]}-{df['tgt_lang'].iloc[0]}"
        d = df.sort_values("id").iloc[:max_sentences]
        for sid, src in zip(d["id"], d["src"]):
            text = TEMPLATE.format(src=src)
            enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
            offs = np.array(enc["offset_mapping"]).reshape(-1, 2)
            counted = (offs[:, 0] < PREFIX + len(src)) & (offs[:, 1] > PREFIX)
            seen = {}
            handles = [layers[layer].mlp.down_proj.register_forward_pre_hook(
                lambda m, a, layer=layer: seen.__setitem__(layer, a[0][0].detach().clone())) for layer in neurons]
            with torch.no_grad():
                lm(input_ids=torch.tensor([enc["input_ids"]]))
            for h in handles:
                h.remove()
            positions = np.flatnonzero(counted)
            for layer, idx in neurons.items():
                acts = seen[layer].numpy()[positions][:, idx]  # [counted tokens, selected neurons]
                for j, n in enumerate(idx):
                    values.setdefault((layer, int(n)), []).extend(
                        (float(a), (pair, int(sid), int(p))) for a, p in zip(acts[:, j], positions))
    return {k: sorted(v, key=lambda t: -t[0]) for k, v in values.items()}


def test_contexts_equal_an_independent_recomputation(loaded, tables):
    neurons = {0: np.array([3, 40, 95]), 2: np.array([0, 17])}
    top_k, max_sentences = 5, 12
    table, meta = contexts.top_contexts(loaded, tables, neurons, top_k=top_k, max_sentences=max_sentences,
                                        template=TEMPLATE, token_budget=128)  # several batches
    lm = models.load_model(str(loaded.info["model"]), dtype="float32", device="cpu").lm
    expected = recompute(lm, loaded.tokenizer, tables, neurons, max_sentences, top_k)
    assert meta["n_sentences"] == {"en-de": max_sentences, "ru-en": max_sentences}
    assert meta["n_tokens"] == sum(1 for v in expected[(0, 3)])  # every counted token seen once
    for (layer, neuron), ranked in expected.items():
        got = table[(table.layer == layer) & (table.neuron == neuron)].sort_values("rank")
        assert got["rank"].tolist() == list(range(top_k))
        # the stored values are the top_k of the recomputed ones
        np.testing.assert_allclose(got["activation"], [v for v, _ in ranked[:top_k]], rtol=1e-5, atol=1e-5)
        # and each stored token has that value in the recomputation (ties may pick either token)
        by_key = {k: v for v, k in ranked}
        for row in got.itertuples():
            assert by_key[(row.pair, row.sentence_id, row.position)] == pytest.approx(row.activation, abs=1e-5)
        assert set(got["lang"]) <= {"en", "ru"}  # token_scope source: en-de counts en, ru-en counts ru


def test_context_text_is_the_sentence_around_the_token(loaded, tables):
    table, _ = contexts.top_contexts(loaded, tables, {1: np.array([7])}, top_k=3, max_sentences=5,
                                     template=TEMPLATE)
    sources = {(f"{df['src_lang'].iloc[0]}-{df['tgt_lang'].iloc[0]}", int(i)): s
               for df, _ in tables for i, s in zip(df["id"], df["src"])}
    for row in table.itertuples():
        src = sources[(row.pair, row.sentence_id)]
        # the window's text is a piece of the source (tokens decoded together, spaces kept)
        assert (row.left + row.token + row.right).strip() in src
        ids = loaded.tokenizer(TEMPLATE.format(src=src))["input_ids"]
        assert ids[row.position] == row.token_id


def test_fewer_counted_tokens_than_top_k_give_fewer_rows(loaded, tables):
    table, meta = contexts.top_contexts(loaded, tables[:1], {0: np.array([1])}, top_k=1000, max_sentences=2,
                                        template=TEMPLATE)
    assert len(table) == meta["n_tokens"] < 1000
    assert table["activation"].is_monotonic_decreasing


def test_bad_top_k_is_one_line(loaded, tables):
    with pytest.raises(NeurospecError, match="browser.top_k must be at least 1, not 0"):
        contexts.top_contexts(loaded, tables, {0: np.array([1])}, top_k=0, template=TEMPLATE)
    with pytest.raises(NeurospecError, match=r"the score tables name layer\(s\) \[7\]"):
        contexts.top_contexts(loaded, tables, {7: np.array([1])}, top_k=2, template=TEMPLATE)


def test_selected_neurons_is_the_union_over_methods():
    a = pd.DataFrame({"group": ["de", "de", "fr"], "layer": [0, 1, 1], "neuron": [5, 2, 2], "score": 1.0})
    b = pd.DataFrame({"group": ["en-de"], "layer": [1], "neuron": [9], "score": 1.0})
    got = contexts.selected_neurons({"x": a, "y": b})
    assert {k: v.tolist() for k, v in got.items()} == {0: [5], 1: [2, 9]}


def _counts(lang, pair, n_tokens, gate):
    gate = np.asarray(gate)
    df = pd.DataFrame({"layer": np.repeat(np.arange(gate.shape[0]), gate.shape[1]),
                       "neuron": np.tile(np.arange(gate.shape[1]), gate.shape[0]), "gate_active": gate.reshape(-1)})
    return df, {"counted_lang": lang, "pair": pair, "n_tokens": n_tokens}


def test_page_data_probabilities_methods_and_contexts():
    counts = [_counts("de", "de-en", 10, [[1, 2], [3, 4]]), _counts("de", "de-fr", 30, [[3, 0], [1, 0]]),
              _counts("en", "en-de", 20, [[0, 5], [10, 20]])]
    scores = {"lape": pd.DataFrame({"group": ["de"], "layer": [1], "neuron": [0], "score": [0.5]})}
    ctx = pd.DataFrame({"layer": [1, 1], "neuron": [0, 0], "rank": [1, 0], "activation": [1.5, 2.5],
                        "pair": ["de-en", "de-fr"], "lang": ["de", "de"], "sentence_id": [3, 4],
                        "position": [7, 8], "token": ["b", "a"], "left": ["x", "y"], "right": ["", "z"]})
    data = page.page_data(ctx, scores, counts, column="gate_active", run={"model": "m"})
    assert data["languages"] == ["en", "de"]  # English first (the figures' order)
    (nr,) = data["neurons"]
    assert (nr["l"], nr["n"]) == (1, 0)
    assert nr["p"] == [10 / 20, (3 + 1) / 40]  # per language: summed counts over summed tokens
    assert nr["m"] == [["lape", "de", 0.5]]
    assert [c[0] for c in nr["c"]] == [2.5, 1.5]  # by rank
    assert nr["c"][0] == [2.5, "de-fr", "de", 4, 8, "y", "a", "z"]


def test_rendered_page_keeps_text_inside_its_script():
    data = {"run": {}, "languages": [], "methods": [], "neurons": [
        {"l": 0, "n": 0, "m": [], "p": [], "c": [[1.0, "en-de", "en", 0, 0, "</script><b>", "x", "\u2028"]]}]}
    html = page.render(data)
    inline = re.search(r'<script id="data" type="application/json">(.*?)</script>', html, re.S).group(1)
    assert json.loads(inline) == data  # nothing in the data closed the script element early


def test_row_chunks_give_the_same_contexts(loaded, tables, monkeypatch):
    neurons = {0: np.array([3, 40, 95]), 1: np.array([11])}
    kwargs = dict(top_k=4, max_sentences=6, template=TEMPLATE)
    whole, _ = contexts.top_contexts(loaded, tables, neurons, **kwargs)
    monkeypatch.setattr(contexts, "CHUNK_ELEMENTS", 7)  # 2 tokens per chunk for 3 neurons, 7 for 1
    chunked, _ = contexts.top_contexts(loaded, tables, neurons, **kwargs)
    # the same values at every rank; which of two exactly equal activations is kept at the last rank
    # may differ (the demo model repeats a token's layer-0 activation exactly)
    columns = ["layer", "neuron", "rank", "activation"]
    pd.testing.assert_frame_equal(whole[columns], chunked[columns])
    assert len(whole) == 16
