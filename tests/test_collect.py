"""Collection: counts equal an independent one-sentence-at-a-time recomputation from the weights
(tests/reference.py; every architecture through load_model: tests/test_architectures.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from neurospec import collect, demo, ec40
from neurospec.errors import NeurospecError
from neurospec.models import load_model
from reference import reference_counts, table_arrays

TEMPLATE = "Translate from {src_name} to {tgt_name}: {src}"


@pytest.fixture(scope="module")
def loaded64(small_model_dir):
    return load_model(str(small_model_dir), dtype="float64", device="cpu")


def _demo_pairs(pair: str, n: int) -> pd.DataFrame:
    df, _ = demo.build_pair_table(pair, "validation", max_samples=n)
    return df


@pytest.mark.parametrize("token_scope", ["source", "all"])
def test_counts_equal_independent_recomputation(loaded64, token_scope):
    pairs = pd.concat([_demo_pairs("en-de", 12), _demo_pairs("hi-en", 12)], ignore_index=True)
    pairs["id"] = range(len(pairs))
    df, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_scope=token_scope,
                                    token_budget=256)
    n_layers = loaded64.model.config.num_hidden_layers
    counts, sums = table_arrays(df, n_layers)
    ref_counts, ref_sums, ref_tokens = reference_counts(loaded64, pairs, TEMPLATE, token_scope)
    assert meta["n_tokens"] == ref_tokens > 0
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-9, atol=1e-9)
    # the table is non-trivial: neither all-zero nor all-maximal
    assert 0 < counts[0].mean() < ref_tokens
    if token_scope == "all":
        assert meta["n_tokens"] == meta["n_prompt_tokens"]
    else:
        assert meta["n_tokens"] < meta["n_prompt_tokens"]


def test_counts_on_real_ec40_sentences(loaded64, ec40_dir):
    pairs, _ = ec40.build_pair_table("en-ru", "validation", local_dir=ec40_dir, max_samples=6)
    df, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=512)
    counts, sums = table_arrays(df, loaded64.model.config.num_hidden_layers)
    ref_counts, ref_sums, ref_tokens = reference_counts(loaded64, pairs, TEMPLATE, "source")
    assert meta["n_tokens"] == ref_tokens
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-9, atol=1e-9)


def test_batched_equals_one_by_one(small_model_dir):
    loaded = load_model(str(small_model_dir), dtype="float32", device="cpu")
    pairs = _demo_pairs("ar-en", 40)
    batched, meta_b = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=4096)
    single, meta_s = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=1)
    assert meta_b["n_tokens"] == meta_s["n_tokens"]
    for col in ("active", "nonzero", "gate_active"):
        np.testing.assert_array_equal(batched[col].to_numpy(), single[col].to_numpy())
    np.testing.assert_allclose(batched["act_sum"], single["act_sum"], rtol=1e-4, atol=1e-4)


def test_shards_sum_to_the_whole(loaded64):
    from neurospec.tables import sum_count_tables

    pairs = _demo_pairs("en-fr", 30)
    whole, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE)
    parts = [collect.collect_pair(loaded64, pairs, template=TEMPLATE, shard=i, n_shards=3) for i in range(3)]
    summed, meta_sum = sum_count_tables(parts)
    for col in ("active", "nonzero", "gate_active"):
        np.testing.assert_array_equal(summed[col].to_numpy(), whole[col].to_numpy())
    np.testing.assert_allclose(summed["act_sum"], whole["act_sum"], rtol=1e-9)
    assert meta_sum["n_tokens"] == meta["n_tokens"] and meta_sum["n_sentences"] == 30


def test_truncation_and_empty_sentences_are_counted(loaded64):
    pairs = pd.DataFrame({"id": [0, 1, 2, 3], "src_lang": "en", "tgt_lang": "de",
                          "src": ["A fairly long sentence about the Kingdom of Norway " * 4, "   ", "", "Peru"],
                          "tgt": ["x", "y", "z", "Peru"]})
    df, meta = collect.collect_pair(loaded64, pairs, template="{src}", token_scope="all", max_length=16)
    assert meta["n_skipped"] == 2 and meta["n_sentences"] == 2 and meta["n_truncated"] == 1
    lengths = len(loaded64.tokenizer("Peru")["input_ids"])
    assert meta["n_tokens"] == 16 + lengths


def test_make_batches_respects_budget_and_fill():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 120, size=500))
    batches = collect.make_batches(lengths, 2048)
    assert sorted(i for b in batches for i in b) == list(range(500))
    real = sum(lengths)
    processed = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    for b in batches:
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 2048
    assert real / processed >= 0.95


def test_bad_template_is_one_clear_error(loaded64):
    pairs = _demo_pairs("en-de", 2)
    with pytest.raises(NeurospecError, match=r"unknown placeholder \{language\}"):
        collect.collect_pair(loaded64, pairs, template="Translate to {language}: {src}")
    with pytest.raises(NeurospecError, match=r"\{src\} exactly once"):
        collect.collect_pair(loaded64, pairs, template="Translate to {tgt_name}")


def test_out_of_memory_halves_the_budget_and_loses_nothing(loaded64, monkeypatch, caplog):
    pairs = _demo_pairs("en-ru", 30)
    reference, ref_meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=4096)
    forward = loaded64.model.forward
    calls = {"n": 0}

    def flaky_forward(*args, **kwargs):  # fails half-way through the first multi-row batch
        calls["n"] += 1
        if calls["n"] == 1 and kwargs["input_ids"].shape[0] > 1:
            layer = loaded64.model.layers[1]
            handle = layer.register_forward_hook(lambda *a: (_ for _ in ()).throw(torch.OutOfMemoryError("boom")))
            try:
                return forward(*args, **kwargs)
            finally:
                handle.remove()
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded64.model, "forward", flaky_forward)
    with caplog.at_level("WARNING", logger="neurospec"):
        df, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=4096)
    assert "token budget halved to 2048" in caplog.text
    assert df.equals(reference) and meta["n_tokens"] == ref_meta["n_tokens"]


def test_empty_shard_has_the_full_shape(loaded64):
    from neurospec.tables import sum_count_tables

    pairs = _demo_pairs("de-en", 3)
    whole, _ = collect.collect_pair(loaded64, pairs, template=TEMPLATE)
    parts = [collect.collect_pair(loaded64, pairs, template=TEMPLATE, shard=i, n_shards=5,
                                  pair_meta={"pair": "de-en"}) for i in range(5)]
    assert [m["n_sentences"] for _, m in parts].count(0) == 2
    assert all(len(df) == len(whole) and m["pair"] == "de-en" for df, m in parts)
    summed, meta = sum_count_tables(parts)
    assert summed[["active", "nonzero", "gate_active"]].equals(whole[["active", "nonzero", "gate_active"]])


def test_bfloat16_counts_match_a_bfloat16_recomputation(small_model_dir):
    """The half-precision path (float32 indicator and sum buffers) on the CPU, as on a GPU in bf16."""
    loaded = load_model(str(small_model_dir), dtype="bfloat16", device="cpu")
    pairs = _demo_pairs("en-de", 8)
    df, meta = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=1)  # no padding
    ref_counts, ref_sums, ref_tokens = reference_counts(loaded, pairs, TEMPLATE, "source")
    counts, sums = table_arrays(df, loaded.model.config.num_hidden_layers)
    assert meta["n_tokens"] == ref_tokens and meta["dtype"] == "bfloat16"
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-5, atol=1e-6 * np.abs(ref_sums).max())
