"""Collection: counts equal an independent one-sentence-at-a-time recomputation from the weights
(tests/reference.py; every architecture through load_model: tests/unit/model/test_architectures.py)."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from neurospec.collect import collect, encoding
from neurospec.collect import counting as counting_module  # (tests name a parameter `counting`)
from neurospec import batching
from neurospec.data import demo, ec40
from neurospec.errors import NeurospecError
from neurospec.languages import counted_language, group_language
from neurospec.models import load_model
from neurospec.prompts import render
from neurospec.tables import ADDITIVE_COLUMNS, COUNT_COLUMNS, read_counts, read_metadata, read_table
from reference import assert_stats_equal, hooked_target_counts, reference_counts
from reference import table_arrays as _table_arrays

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
    got = _table_arrays(df, n_layers)
    ref, ref_tokens = reference_counts(loaded64, pairs, TEMPLATE, token_scope)
    assert meta["n_tokens"] == ref_tokens > 0
    assert_stats_equal(got, ref)  # counts exact, every sum (per-sentence rates too) to 1e-9
    assert meta["n_rate_sentences"] == 24 and meta["n_rate_sentences_even"] == 12
    # the table is non-trivial: neither all-zero nor all-maximal, and the halves are proper parts
    assert 0 < got["active"].mean() < ref_tokens
    assert 0 < meta["n_tokens_even"] < meta["n_tokens"]
    assert (got["active_even"] <= got["active"]).all() and (got["active_even"] < got["active"]).any()
    if token_scope == "all":
        assert meta["n_tokens"] == meta["n_prompt_tokens"]
    else:
        assert meta["n_tokens"] < meta["n_prompt_tokens"]


def test_sentences_without_counted_tokens_have_no_rate(loaded64):
    """Prompts cut before their source sentence count no token: they are left out of the rates."""
    pairs = _demo_pairs("en-sv", 10)
    pairs.loc[pairs.index[::3], "src"] = "A fairly long sentence about the Kingdom of Norway and Peru " * 3
    template = "{src}"
    long_template = "A long preamble before the sentence to translate into {tgt_name} follows: {src}"
    for tmpl, max_length in ((template, 8), (long_template, 9)):
        df, meta = collect.collect_pair(loaded64, pairs, template=tmpl, max_length=max_length, token_budget=64)
        ref, ref_tokens = reference_counts(loaded64, pairs, tmpl, "source", max_length=max_length)
        assert meta["n_tokens"] == ref_tokens
        assert_stats_equal(_table_arrays(df, 3), ref)
    assert meta["n_rate_sentences"] < meta["n_sentences"] == 10  # the long template left no room
    rate_max = df["nonzero_rate_sum"].max()
    assert rate_max <= meta["n_rate_sentences"] + 1e-9  # each rate is at most 1


def test_counts_on_real_ec40_sentences(loaded64, ec40_dir):
    pairs, _ = ec40.build_pair_table("en-ru", "validation", local_dir=ec40_dir, max_samples=6)
    df, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=512)
    ref, ref_tokens = reference_counts(loaded64, pairs, TEMPLATE, "source")
    assert meta["n_tokens"] == ref_tokens
    assert_stats_equal(_table_arrays(df, loaded64.model.config.num_hidden_layers), ref)


def test_batched_equals_one_by_one(small_model_dir):
    loaded = load_model(str(small_model_dir), dtype="float32", device="cpu")
    pairs = _demo_pairs("ar-en", 40)
    batched, meta_b = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=4096)
    single, meta_s = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=1)
    assert meta_b["n_tokens"] == meta_s["n_tokens"]
    assert_stats_equal(_table_arrays(batched, 3), _table_arrays(single, 3), rtol=1e-5)


@pytest.mark.parametrize("token_scope", ["source", "target"])
def test_shards_sum_to_the_whole(loaded64, token_scope):
    from neurospec.tables import sum_count_tables

    pairs = _demo_pairs("en-fr", 30)
    whole, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_scope=token_scope)
    parts = [collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_scope=token_scope, shard=i, n_shards=3)
             for i in range(3)]
    summed, meta_sum = sum_count_tables(parts)
    assert list(summed.columns) == list(whole.columns)
    assert_stats_equal(_table_arrays(summed, 3), _table_arrays(whole, 3))  # every additive column
    for key in ("n_tokens", "n_tokens_even", "n_rate_sentences", "n_rate_sentences_even"):
        assert meta_sum[key] == meta[key], key
    assert meta_sum["n_sentences"] == 30 and meta["n_rate_sentences_even"] == int((pairs["id"] % 2 == 0).sum())
    assert meta_sum["counted_lang"] == ("fr" if token_scope == "target" else "en")


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
    batches = batching.make_batches(lengths, 2048)
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


def _fail_once(loaded, monkeypatch, exc: BaseException):
    """Make the first multi-row batch fail half-way through its forward pass with ``exc``."""
    forward = loaded.model.forward
    calls = {"n": 0}

    def flaky_forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1 and kwargs["input_ids"].shape[0] > 1:
            layer = loaded.model.layers[1]
            handle = layer.register_forward_hook(lambda *a: (_ for _ in ()).throw(exc))
            try:
                return forward(*args, **kwargs)
            finally:
                handle.remove()
        return forward(*args, **kwargs)

    monkeypatch.setattr(loaded.model, "forward", flaky_forward)


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 79.10 GiB total capacity)"),
], ids=["OutOfMemoryError", "cublas", "cudnn", "runtime-oom"])
def test_out_of_memory_halves_the_budget_and_loses_nothing(loaded64, monkeypatch, caplog, exc):
    pairs = _demo_pairs("en-ru", 30)
    reference, ref_meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=4096)
    _fail_once(loaded64, monkeypatch, exc)
    events = []
    release = counting_module.CountHooks.release

    def recording_release(self):
        release(self)
        events.append(("release", self._scratch is None and self._rows is None and not self._gates))

    def recording_empty_cache():
        # outside the except block: the exception's traceback (and the batch's tensors it holds) is gone
        events.append(("empty_cache", sys.exc_info()[0] is None))

    monkeypatch.setattr(counting_module.CountHooks, "release", recording_release)
    monkeypatch.setattr(torch.cuda, "empty_cache", recording_empty_cache)
    with caplog.at_level("WARNING", logger="neurospec"):
        df, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=4096)
    assert "token budget halved to 2048" in caplog.text
    # the scratch buffers, then the cached memory, were released before the retry (and at exit)
    assert events[:2] == [("release", True), ("empty_cache", True)]
    assert df.equals(reference) and meta["n_tokens"] == ref_meta["n_tokens"]


def test_other_runtime_errors_propagate(loaded64, monkeypatch):
    pairs = _demo_pairs("en-ru", 30)
    _fail_once(loaded64, monkeypatch, RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"))
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=4096)
    assert not encoding.is_out_of_memory(RuntimeError("CUDA error: device-side assert triggered"))


def test_out_of_memory_on_one_prompt_is_one_clear_error(loaded64, monkeypatch):
    pairs = _demo_pairs("en-ru", 1)
    forward = loaded64.model.forward

    def failing(*args, **kwargs):
        raise RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")

    monkeypatch.setattr(loaded64.model, "forward", failing)
    with pytest.raises(NeurospecError, match=r"out of device memory on a single prompt of \d+ tokens"):
        collect.collect_pair(loaded64, pairs, template=TEMPLATE)
    monkeypatch.setattr(loaded64.model, "forward", forward)


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
    ref, ref_tokens = reference_counts(loaded, pairs, TEMPLATE, "source")
    assert meta["n_tokens"] == ref_tokens and meta["dtype"] == "bfloat16"
    assert_stats_equal(_table_arrays(df, loaded.model.config.num_hidden_layers), ref, rtol=1e-5)


# ---------------------------------------------------------------------------- counting implementations


def todays_counts(loaded, enc: encoding.Encoded, budget: int):
    """The schema-1 collector's arithmetic (before per-sentence statistics), as the reference for
    the existing columns: per layer, the batch's float32 counted-token mask [batch*seq] times 0/1
    indicator matrices written by torch.gt/torch.ne (float64 for float64 models), and times h."""
    from neurospec.architectures import resolve_mlp_taps

    taps = resolve_mlp_taps(loaded.model)
    n = loaded.model.config.intermediate_size
    counts = np.zeros((3, len(taps), n), dtype=np.int64)
    sums = np.zeros((len(taps), n))
    state = {}

    def as_mask(t):
        return state["mask"].to(torch.float64 if t.dtype == torch.float64 else torch.float32)

    def indicator(fn, t):
        m = as_mask(t)
        return (m @ fn(t, 0).to(m.dtype)).to(torch.int64).numpy()

    def down(layer):
        def hook(module, args):
            h = args[0].reshape(-1, args[0].shape[-1])
            counts[0, layer] += indicator(torch.gt, h)
            counts[1, layer] += indicator(torch.ne, h)
            sums[layer] += (as_mask(h) @ h.to(as_mask(h).dtype)).double().numpy()
        return hook

    def gate(layer):
        def hook(module, args, output):
            counts[2, layer] += indicator(torch.gt, output.reshape(-1, output.shape[-1]))
        return hook

    handles = [t.down_input.register_forward_pre_hook(down(t.layer)) for t in taps]
    handles += [t.gate.register_forward_hook(gate(t.layer)) for t in taps]
    try:
        with torch.inference_mode():
            for rows in batching.make_batches(enc.lengths, budget):
                ids, counted, _, _ = encoding.batch_tensors(enc, rows, loaded.tokenizer.pad_token_id, loaded.device)
                state["mask"] = counted.reshape(-1).float()
                loaded.model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return counts, sums


def _encoded(loaded, pairs):
    enc = encoding.encode(loaded.tokenizer, pairs["src"].tolist(), pairs["src_lang"].tolist(),
                         pairs["tgt_lang"].tolist(), template=TEMPLATE)
    enc.even = pairs["id"].to_numpy()[enc.kept] % 2 == 0
    return enc


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("counting", ["matmul", "fused-uncompiled"])
def test_existing_columns_equal_todays_path(small_model_dir, dtype, counting):
    loaded = load_model(str(small_model_dir), dtype=dtype, device="cpu")
    pairs = pd.concat([_demo_pairs("ru-en", 25), _demo_pairs("en-hi", 25)], ignore_index=True)
    pairs["id"] = range(len(pairs))
    enc = _encoded(loaded, pairs)
    totals, even, stats = counting_module.run_counts(loaded, enc, 512, counting=counting)
    assert stats["counting"] == counting and stats["padding_efficiency"] < 1.0  # padded batches
    old_counts, old_sums = todays_counts(loaded, enc, 512)
    np.testing.assert_array_equal(totals[:3].astype(np.int64), old_counts)
    rtol = 1e-9 if dtype == "float64" else 1e-5  # float32: sums over other groupings of the same values
    np.testing.assert_allclose(totals[3], old_sums, rtol=rtol, atol=rtol * np.abs(old_sums).max())
    assert (totals[:3] == np.rint(totals[:3])).all() and (even[:3] <= totals[:3]).all()


@pytest.mark.parametrize("counting", ["matmul", "fused-uncompiled"])
def test_inf_and_nan_on_padding_never_reach_the_sums(loaded64, counting):
    """Padding is selected out, not multiplied by 0: inf * 0 would turn act_sum into NaN."""
    pairs = _demo_pairs("de-en", 24)
    reference, _ = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=1)  # no padding
    pad = loaded64.tokenizer.pad_token_id
    state = {"poisoned": 0}

    def find_padding(module, args, kwargs):
        state["pad"] = kwargs["input_ids"] == pad

    def poison(module, args):  # the last layer only: no attention after it, real tokens stay finite
        h = args[0].clone()
        values = torch.tensor([float("inf"), float("-inf"), float("nan")], dtype=h.dtype)
        where = state["pad"].nonzero()
        h[where[:, 0], where[:, 1]] = values[torch.arange(len(where)) % 3][:, None]
        state["poisoned"] += len(where)
        return (h,)

    handles = [loaded64.model.register_forward_pre_hook(find_padding, with_kwargs=True),
               loaded64.model.layers[-1].mlp.down_proj.register_forward_pre_hook(poison)]
    try:
        df, _ = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_budget=1024, counting=counting)
        enc = _encoded(loaded64, pairs)
        _, old_sums = todays_counts(loaded64, enc, 1024)
    finally:
        for h in handles:
            h.remove()
    assert state["poisoned"] > 0  # there was padding, and it held inf, -inf and NaN
    assert np.isnan(old_sums[-1]).all()  # multiplying by the mask: 0 * inf = NaN in every neuron
    assert all(np.isfinite(df[c]).all() for c in ADDITIVE_COLUMNS)
    assert_stats_equal(_table_arrays(df, 3), _table_arrays(reference, 3))


def test_fused_falls_back_to_matmul_when_compiling_fails(loaded64, monkeypatch, caplog):
    pairs = _demo_pairs("en-uk", 20)
    reference, _ = collect.collect_pair(loaded64, pairs, template=TEMPLATE, counting="matmul")

    def broken(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("InductorError: no working C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level("WARNING", logger="neurospec"):
        df, _ = collect.collect_pair(loaded64, pairs, template=TEMPLATE, counting="fused")
    assert "fused counting is unavailable (RuntimeError: InductorError" in caplog.text
    assert df.equals(reference)


@pytest.mark.slow
def test_fused_compiled_equals_matmul(small_model_dir, caplog):
    """The CUDA default, torch.compile of fused_row_stats, here through inductor's CPU backend."""
    loaded = load_model(str(small_model_dir), dtype="float32", device="cpu")
    pairs = _demo_pairs("en-fr", 40)
    matmul, _ = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=512, counting="matmul")
    with caplog.at_level("INFO", logger="neurospec"):
        fused, _ = collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=512, counting="fused")
    assert "fused counting is unavailable" not in caplog.text and ", fused counting" in caplog.text
    assert_stats_equal(_table_arrays(fused, 3), _table_arrays(matmul, 3), rtol=1e-5)


def test_plain_mlp_counts_its_activation_as_the_gate(loaded64):
    """GPT-2 (no separate gate): gate_active == active, per sentence too, in both implementations."""
    from transformers import GPT2Config, GPT2Model

    from neurospec.models import LoadedModel

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(vocab_size=600, n_embd=32, n_layer=2, n_head=4, n_positions=256))
    model = model.double().eval()
    loaded = LoadedModel(model, loaded64.tokenizer, torch.device("cpu"), torch.float64, {})
    pairs = _demo_pairs("en-de", 16)
    tables = [collect.collect_pair(loaded, pairs, template=TEMPLATE, token_budget=256, counting=c)[0]
              for c in ("matmul", "fused-uncompiled")]
    for df in tables:
        for suffix in ("", "_rate_sum", "_rate_sumsq", "_even", "_rate_sum_even"):
            np.testing.assert_array_equal(df["gate_active" + suffix], df["active" + suffix])
        assert 0 < df["active"].mean() < df["nonzero"].mean()
    assert_stats_equal(_table_arrays(tables[0], 2), _table_arrays(tables[1], 2))


# --------------------------------------------------------------------------------------------
# collect.token_scope "target": the reference translation fed in after the prompt (teacher forcing),
# counting its tokens only; checked against reference.hooked_target_counts (one sentence at a time,
# hooks on mlp.down_proj's input), and through Snakemake on the demo config.
# --------------------------------------------------------------------------------------------


def test_target_counts_equal_a_hooked_recount_of_the_references(loaded64):
    pairs = pd.concat([_demo_pairs("en-de", 12), _demo_pairs("hi-en", 12)], ignore_index=True)
    pairs["id"] = range(len(pairs))
    df, meta = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_scope="target", token_budget=256)
    got = _table_arrays(df, loaded64.model.config.num_hidden_layers)
    ref, ref_tokens, _ = hooked_target_counts(loaded64, pairs, TEMPLATE)
    # n_tokens: the references' tokens, tokenized by hand
    by_hand = sum(len(loaded64.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in pairs["tgt"])
    assert meta["n_tokens"] == ref_tokens == by_hand > 0
    assert_stats_equal(got, ref)  # counts exact, every sum (per-sentence rates too) to 1e-9
    assert meta["n_sentences"] == meta["n_rate_sentences"] == 24 and meta["n_rate_sentences_even"] == 12
    assert meta["token_scope"] == "target" and meta["n_truncated"] == 0 and meta["n_skipped"] == 0
    assert meta["counted_lang"] == "de" and meta["src_lang"] == "en"  # the first row's pair: en-de
    assert "reference translation" in meta["counted_tokens"]
    # prompts and references were both run; only the references were counted
    prompts = sum(len(loaded64.tokenizer(render(TEMPLATE, r.src, r.src_lang, r.tgt_lang)[0])["input_ids"])
                  for r in pairs.itertuples())
    assert meta["n_prompt_tokens"] == prompts + by_hand
    assert 0 < got["active"].mean() < ref_tokens and 0 < meta["n_tokens_even"] < meta["n_tokens"]
    # not the source's counts: the same prompts counting their source differ
    source, _ = collect.collect_pair(loaded64, pairs, template=TEMPLATE, token_scope="source", token_budget=256)
    assert not np.array_equal(source["active"].to_numpy(), df["active"].to_numpy())


def test_target_truncation_keeps_the_prompt_and_cuts_the_reference(loaded64):
    pairs = _demo_pairs("en-fr", 10)
    pairs.loc[pairs.index[::3], "tgt"] = "Une phrase assez longue sur le Royaume de Norvège et le Pérou " * 3
    pairs.loc[pairs.index[1], "tgt"] = "   "  # an empty reference: skipped, like an empty source
    template = "{src}"
    long_template = "A long preamble before the sentence to translate into {tgt_name} follows: {src}"
    for tmpl, max_length in ((template, 12), (long_template, 16)):
        df, meta = collect.collect_pair(loaded64, pairs, template=tmpl, token_scope="target",
                                        max_length=max_length, token_budget=64)
        ref, ref_tokens, ref_truncated = hooked_target_counts(loaded64, pairs, tmpl, max_length=max_length)
        assert meta["n_tokens"] == ref_tokens and meta["n_truncated"] == ref_truncated
        assert_stats_equal(_table_arrays(df, 3), ref)
        assert meta["n_skipped"] == 1 and meta["n_sentences"] == 9
    assert ref_truncated >= 4  # the long references at least
    assert meta["n_rate_sentences"] < meta["n_sentences"]  # the long template left some no reference token


def test_target_scope_drops_an_eos_the_tokenizer_appends_to_the_prompt():
    """The reference follows the prompt's text: an end-of-sequence token after the prompt is dropped,
    and none is appended after the reference."""
    class EosTokenizer:  # BOS, one id per character, and EOS when special tokens are added
        eos_token_id = 2

        def __call__(self, texts, add_special_tokens, return_attention_mask):
            return {"input_ids": [([1] if add_special_tokens else []) + [ord(c) for c in t]
                                  + ([2] if add_special_tokens else []) for t in texts]}

    enc = encoding.encode(EosTokenizer(), ["ab", "c", " "], ["en"] * 3, ["de"] * 3, template="{src}",
                         token_scope="target", tgt=["xyz", "w", "v"], max_length=5)
    assert enc.input_ids == [[1, ord("a"), ord("b"), ord("x"), ord("y")], [1, ord("c"), ord("w")]]
    assert [m.tolist() for m in enc.counted] == [[False] * 3 + [True] * 2, [False, False, True]]
    assert enc.n_truncated == 1 and enc.n_skipped == 1 and enc.kept == [0, 1]


def test_target_scope_needs_the_references():
    with pytest.raises(NeurospecError, match="token_scope 'target' needs the pair table's reference"):
        encoding.encode(None, ["Peru"], ["en"], ["de"], template=TEMPLATE, token_scope="target")
    with pytest.raises(NeurospecError, match="choose one of source, all, target"):
        encoding.encode(None, ["Peru"], ["en"], ["de"], template=TEMPLATE, token_scope="tgt")


def test_counted_language_and_ablation_group_language_follow_the_scope():
    assert counted_language("en", "de", "target") == "de"
    assert counted_language("en", "de", "source") == counted_language("en", "de", "all") == "en"
    assert group_language("en-de", "target") == "de" and group_language("de-en", "target") == "en"
    assert group_language("en-de") == "en" and group_language("de", "target") == "de"
    with pytest.raises(NeurospecError, match="collect.token_scope 'both'"):
        counted_language("en", "de", "both")


def test_target_scope_through_snakemake(tmp_path):
    """The demo config with collect.token_scope: target: each count table's n_tokens is the number of
    its references' tokens (tokenized by hand); the language methods pool by target language; the
    ablation and the ablated translation name each pair group's language as its target."""
    from transformers import AutoTokenizer

    from workflow_utils import SMALL_CONFIG, snakemake, write_config

    pairs = ["en-de", "de-en", "en-ru", "ru-en"]
    cfg = write_config(tmp_path, {"pairs": pairs, "collect": {"token_scope": "target"},
                                  "evaluate": {"ablation": {"max_sentences": 6, "random_sets": 1},
                                               "translate": {"max_sentences": 3, "max_new_tokens": 6,
                                                             "ablation_mode": "mean"}}})
    results = tmp_path / "results/demo-small/demo/validation"
    rel = results.relative_to(tmp_path)
    targets = [f"{rel}/scores/{m}.parquet" for m in ("frequency", "lape", "contrast")]
    targets += [f"{rel}/ablation/frequency.parquet", f"{rel}/translation/ablated/frequency.parquet",
                f"{rel}/figures/frequency/clustering.png"]
    snakemake(tmp_path, *targets, configfile=cfg)
    tok = AutoTokenizer.from_pretrained(tmp_path / "results/models/demo")
    for pair in pairs:
        table = read_table(tmp_path / f"results/data/demo/validation/{pair}.parquet")
        assert 0 < len(table) <= SMALL_CONFIG["dataset"]["max_samples"]
        by_hand = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in table["tgt"])
        df, meta = read_counts(results / f"activations/{pair}.parquet", ["active"])
        assert meta["n_tokens"] == by_hand > 0, pair
        assert meta["token_scope"] == "target" and meta["counted_lang"] == pair.split("-")[1]
        assert int(df["active"].max()) <= by_hand
    lape = read_metadata(results / "scores/lape.parquet")
    assert sorted(lape["groups"]) == ["de", "en", "ru"]  # en is counted by de-en and ru-en only
    assert sorted(read_metadata(results / "scores/frequency.parquet")["groups"]) == sorted(pairs)
    ablation = read_metadata(results / "ablation/frequency.parquet")
    assert ablation["token_scope"] == "target"
    assert ablation["group_lang"] == {p: p.split("-")[1] for p in pairs}
    ablated = read_metadata(results / "translation/ablated/frequency.parquet")
    assert ablated["token_scope"] == "target"
    for pair, info in ablated["pairs"].items():  # each direction ablates its own, target-side, neurons
        assert info["group"] == pair and info["selected_on"] == pair.split("-")[1]


def test_clustering_takes_the_pairs_that_count_the_non_english_language():
    from neurospec.plots.clustering_figure import clustering_groups

    pairs = ["en-de", "de-en", "en-ru", "ru-en", "en-hi", "hi-en"]
    assert sorted(clustering_groups(pairs)["group"]) == ["de-en", "hi-en", "ru-en"]
    assert sorted(clustering_groups(pairs, "target")["group"]) == ["en-de", "en-hi", "en-ru"]
    assert sorted(clustering_groups(["de", "en", "ru"], "target")["group"]) == ["de", "en", "ru"]


def test_bench_compares_the_scopes_run_by_run(loaded64):
    """bench --token-scope: both scopes on the same pairs, alternating; each run's ratio is its target
    time over its source time, and the target scope processes prompt + reference, counting the reference."""
    from neurospec.tools.bench import compare_token_scopes

    pairs = _demo_pairs("en-de", 6)
    lines = []
    result = compare_token_scopes(loaded64, pairs["src"].tolist(), pairs["src_lang"].tolist(),
                                  pairs["tgt_lang"].tolist(), pairs["tgt"].tolist(), runs=3, token_budget=256,
                                  say=lines.append)
    assert len(result["ratios"]) == len(lines) == 3 and all(len(v) == 3 for v in result["seconds"].values())
    for k, ratio in enumerate(result["ratios"]):
        assert ratio == pytest.approx(result["seconds"]["target"][k] / result["seconds"]["source"][k])
        assert f"target / source {ratio:.3f}" in lines[k]
        cpu = result["cpu_seconds"]
        assert result["cpu_ratios"][k] == pytest.approx(cpu["target"][k] / cpu["source"][k]) and cpu["target"][k] > 0
    by_hand = sum(len(loaded64.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in pairs["tgt"])
    assert result["counted_tokens"]["target"] == by_hand
    processed = result["processed_tokens"]
    assert processed["target"] > processed["source"] > result["counted_tokens"]["source"]
