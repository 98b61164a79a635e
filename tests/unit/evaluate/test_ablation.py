"""Ablation: the NLL equals a plain cross-entropy, the conditions equal independent weight edits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformers as tf

from neurospec.evaluate.ablation import ablate_to_file, ablation_table
from neurospec.evaluate.controls import (LEVEL, N_BOOT, bootstrap_delta_ci, budget_selections, ci_rng, p_controls,
                                         random_controls)
from neurospec.evaluate.nll import HeldOut, OutputHead, Scorer, chunked_nll, held_out_by_language
from neurospec.languages import group_language
from neurospec.plots.ablation_figures import read as read_ablation
from neurospec.errors import NeurospecError
from neurospec.interventions import mean_activations
from neurospec.models import LoadedModel
from neurospec.tables import PAIR_SCHEMA, SCORE_SCHEMA, write_counts, write_table
from synthetic_counts import complete

SENTENCES = {
    "en": ["Germany", "Republic of India", "Russian ruble", "Hebrew", "Arabic script", "a"],
    "de": ["Deutschland", "Republik Indien", "Russischer Rubel", "Hebräisch"],
    "ru": ["Германия", "Республика Индия", "Российский рубль"],
}


def _tokenizer(model_dir):
    return tf.AutoTokenizer.from_pretrained(str(model_dir))


def _randomize(model, std=0.3, seed=0):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval().requires_grad_(False)


def _make(kind: str, vocab: int, dtype=torch.float64):
    """Small causal LMs of several classes: Cohere (logit_scale), Gemma 2/3 (final logit
    soft-capping, set low so that it bites), Llama with MLP biases (no output scaling)."""
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2)
    if kind == "cohere":
        model = tf.CohereForCausalLM(tf.CohereConfig(**common, logit_scale=0.25))
    elif kind == "gemma2":
        model = tf.Gemma2ForCausalLM(tf.Gemma2Config(**common, head_dim=8, final_logit_softcapping=2.0))
    elif kind == "gemma3":
        model = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**common, head_dim=8, final_logit_softcapping=3.0))
    elif kind == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common, mlp_bias=True))
    else:
        raise ValueError(kind)
    model.config._attn_implementation = "eager"
    return _randomize(model).to(dtype)


def _loaded(model, tokenizer) -> LoadedModel:
    dtype = next(model.parameters()).dtype
    return LoadedModel(model.base_model, tokenizer, torch.device("cpu"), dtype,
                       {"model": "test", "model_class": type(model).__name__}, lm=model)


@torch.no_grad()
def _reference_nll(lm, tokenizer, text: str) -> tuple[float, int]:
    """Plain cross-entropy of one sentence from lm(...).logits: (summed NLL, predicted tokens)."""
    ids = torch.as_tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])
    logits = lm(input_ids=ids, use_cache=False).logits[0].double()
    return float(F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum")), ids.shape[1] - 1


# --------------------------------------------------------------------------------------------


def test_chunked_log_softmax_equals_the_full_one():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(37, 16, generator=gen, dtype=torch.float64)
    head = torch.nn.Linear(16, 1000, bias=False).double()
    targets = torch.randint(0, 1000, (37,), generator=gen)
    full = -torch.log_softmax(head(hidden), dim=-1).gather(1, targets[:, None])[:, 0]
    for chunk in (1, 5, 36, 37, 100):
        torch.testing.assert_close(chunked_nll(head, hidden, targets, chunk), full, rtol=1e-12, atol=1e-12)
    # float32 hidden states: computed in float32, equal to the float64 result to float32 precision
    got = chunked_nll(head.float(), hidden.float(), targets, 8)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("kind", ["cohere", "gemma2", "gemma3", "llama"])
def test_nll_equals_plain_cross_entropy_one_sentence_at_a_time(small_model_dir, kind, dtype):
    tok = _tokenizer(small_model_dir)
    lm = _make(kind, len(tok), dtype)
    texts = [t for lang in SENTENCES for t in SENTENCES[lang]]
    # a small token budget and tiny head chunks: several padded batches, chunks across sentences
    scorer = Scorer(_loaded(lm, tok), texts, token_budget=24, chunk_tokens=3)
    assert len(scorer.batches) > 2
    got = scorer.nll()
    reference = [_reference_nll(lm, tok, t) for t in texts]
    # float64 is not exact end to end: transformers' eager attention takes its softmax in float32
    # (softmax(..., dtype=torch.float32).to(query.dtype)), and a padded row rounds differently on some
    # CPUs (9.8e-9 relative on an AVX2 VM, 2026-12-07): 1e-7 relative still catches any padding or
    # position error, which moves an NLL by 1e-2 or more
    tol = 1e-7 if dtype == torch.float64 else 2e-4
    np.testing.assert_allclose(got, [r[0] for r in reference], rtol=tol, atol=tol)
    assert scorer.n_predicted.tolist() == [r[1] for r in reference]
    assert scorer.check_head() < (1e-12 if dtype == torch.float64 else 1e-5)
    if kind != "llama":  # the output scaling matters: without it the NLL would differ
        head = OutputHead(lm)
        head.multiply = head.cap = None
        scorer.head = head
        assert np.abs(scorer.nll() - got).max() > 1e-2


def test_an_unknown_output_scaling_is_one_clear_error(small_model_dir):
    class Doubled(tf.LlamaForCausalLM):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    tok = _tokenizer(small_model_dir)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    cfg._attn_implementation = "eager"
    lm = _randomize(Doubled(cfg))
    scorer = Scorer(_loaded(lm, tok), ["Germany", "Deutschland"])
    with pytest.raises(NeurospecError, match=r"Doubled: cannot reproduce the LM's logits .* not one neurospec knows"):
        scorer.check_head()


def test_a_model_without_lm_head_is_one_clear_error(small_model_dir):
    tok = _tokenizer(small_model_dir)
    lm = _make("llama", len(tok))
    loaded = LoadedModel(lm.base_model, tok, torch.device("cpu"), torch.float64, {"model": "x"}, lm=None)
    with pytest.raises(NeurospecError, match="ablation .* needs the model's LM head"):
        Scorer(loaded, ["Germany"])


# --------------------------------------------------------------------------------------------


def _pair_table(pair, ids, src, tgt, split="test"):
    s, t = pair.split("-")
    df = pd.DataFrame({"id": ids, "src_lang": s, "tgt_lang": t, "src": src, "tgt": tgt})
    return df, {"pair": pair, "split": split}


def test_held_out_sentences_are_each_languages_side_with_provenance():
    tables = [
        _pair_table("en-de", [2, 0, 1], ["Russia", "Germany", "India"], ["Russland", "Deutschland", "Indien"]),
        _pair_table("ru-en", [0, 1, 2], ["Германия", "", "Индия"], ["Germany", "Nothing", "Peru"]),
    ]
    held = held_out_by_language(tables)
    assert held.split == "test" and held.languages == ["en", "de", "ru"]
    # sorted by id; the English of the second table adds only what is new; empty lines dropped
    assert held.texts == {"en": ["Germany", "India", "Russia", "Nothing", "Peru"],
                          "de": ["Deutschland", "Indien", "Russland"], "ru": ["Германия", "Индия"]}
    assert held.sources["en"] == [{"pair": "en-de", "side": "src", "ids": [0, 1, 2]},
                                  {"pair": "ru-en", "side": "tgt", "ids": [1, 2]}]
    assert held.sources["ru"] == [{"pair": "ru-en", "side": "src", "ids": [0, 2]}]
    two = held_out_by_language(tables, max_sentences=2)
    assert two.texts["en"] == ["Germany", "India"] and two.sources["en"] == [
        {"pair": "en-de", "side": "src", "ids": [0, 1]}]
    with pytest.raises(NeurospecError, match="different splits"):
        held_out_by_language([tables[0], _pair_table("en-ru", [0], ["x"], ["y"], split="validation")])
    with pytest.raises(NeurospecError, match="max_sentences must be at least 1"):
        held_out_by_language(tables, max_sentences=0)


def test_random_controls_have_the_selections_layer_sizes_and_differ_by_seed():
    selection = {0: np.array([1, 2, 3]), 2: np.array([7]), 3: np.array([], dtype=np.int64)}
    a = random_controls(selection, 48, "de", [0, 1, 2])
    assert len(a) == 3
    for control in a:
        assert {k: len(v) for k, v in control.items()} == {0: 3, 2: 1, 3: 0}
        assert all(len(set(v.tolist())) == len(v) and (v < 48).all() for v in control.values())
    as_tuples = [tuple(np.concatenate(list(c.values())).tolist()) for c in a]
    assert len(set(as_tuples)) == 3  # seeds 0, 1, 2 draw different sets
    again = random_controls(selection, 48, "de", [0, 1, 2])  # reproducible
    assert [tuple(np.concatenate(list(c.values())).tolist()) for c in again] == as_tuples
    other = random_controls(selection, 48, "ru", [0])  # another group draws its own
    assert tuple(np.concatenate(list(other[0].values())).tolist()) != as_tuples[0]


def test_group_language():
    assert group_language("de") == "de" and group_language("de-en") == "de" and group_language("en-de") == "en"


# --------------------------------------------------------------------------------------------


SELECTIONS = {"de": {0: np.array([1, 5, 7]), 2: np.array([0, 47])}, "ru": {1: np.array([3, 4, 30])},
              "en": {}}


@torch.no_grad()
def _edited_nll(lm, tok, held: HeldOut, selection, values=None) -> dict[str, float]:
    """Independent mechanism: zero down_proj's weight columns (and, for patching, move
    W[:, i] * value into down_proj's bias) on a copy, then plain cross-entropy sentence by sentence."""
    import copy

    model = copy.deepcopy(lm)
    for layer, idx in selection.items():
        proj = model.model.layers[layer].mlp.down_proj
        if values is not None:
            proj.bias += (proj.weight[:, idx] * torch.as_tensor(values[layer, idx], dtype=proj.weight.dtype)).sum(1)
        proj.weight[:, idx] = 0.0
    out = {}
    for lang, texts in held.texts.items():
        pairs = [_reference_nll(model, tok, t) for t in texts]
        out[lang] = sum(p[0] for p in pairs) / sum(p[1] for p in pairs)
    return out


@pytest.mark.parametrize("mode", ["zero", "mean"])
def test_ablation_conditions_equal_independent_weight_edits(small_model_dir, mode):
    tok = _tokenizer(small_model_dir)
    lm = _make("llama", len(tok))
    held = HeldOut({lang: list(t) for lang, t in SENTENCES.items()})
    values = np.random.default_rng(0).normal(size=(3, 48))
    df, meta = ablation_table(_loaded(lm, tok), SELECTIONS, held, mode=mode, random_sets=2, seed=10,
                              mean_values=(lambda lang: values * (2.0 if lang == "ru" else 1.0)),
                              token_budget=32, chunk_tokens=7)
    assert list(df.columns) == ["group", "eval_lang", "condition", "seed", "n_neurons", "n_tokens", "nll",
                                "base_nll", "delta_nll", "rel_delta_nll", "delta_nll_low", "delta_nll_high",
                                "p_controls", "budget"]
    assert len(df) == 3 * 3 * 3  # groups x (selected + 2 random) x languages
    base = _edited_nll(lm, tok, held, {})
    n_neurons = lm.config.intermediate_size
    for group, selection in SELECTIONS.items():
        v = (values * (2.0 if group == "ru" else 1.0)) if mode == "mean" else None
        controls = random_controls(selection, n_neurons, group, [10, 11])
        for condition, seed, sel in [("selected", -1, selection), ("random", 10, controls[0]),
                                     ("random", 11, controls[1])]:
            expected = _edited_nll(lm, tok, held, sel, v)
            got = df[(df.group == group) & (df.condition == condition) & (df.seed == seed)].set_index("eval_lang")
            assert sorted(got.index) == ["de", "en", "ru"]
            for lang in got.index:
                assert got.loc[lang, "nll"] == pytest.approx(expected[lang], rel=1e-9)
                assert got.loc[lang, "base_nll"] == pytest.approx(base[lang], rel=1e-9)
                assert got.loc[lang, "delta_nll"] == pytest.approx(expected[lang] - base[lang], abs=1e-9)
                assert got.loc[lang, "n_neurons"] == sum(len(x) for x in selection.values())
            if sel:
                assert (got["delta_nll"].abs() > 1e-4).any()  # the intervention changed something
            else:
                assert (got["delta_nll"] == 0).all()  # an empty selection is exactly the baseline
    tokens = df.groupby("eval_lang")["n_tokens"].unique()
    assert all(len(v) == 1 for v in tokens)
    assert meta["eval_languages"] == ["en", "de", "ru"] and meta["seeds"] == [10, 11]
    assert meta["n_passes"] == 1 + 2 * 3  # baseline once; 'en' selected nothing, nor its controls


def test_bad_ablation_settings_are_one_clear_error(small_model_dir):
    tok = _tokenizer(small_model_dir)
    loaded = _loaded(_make("llama", len(tok)), tok)
    held = HeldOut({"de": ["Deutschland"]})
    with pytest.raises(NeurospecError, match="mode 'half'"):
        ablation_table(loaded, SELECTIONS, held, mode="half")
    with pytest.raises(NeurospecError, match="needs the count tables"):
        ablation_table(loaded, SELECTIONS, held, mode="mean")
    with pytest.raises(NeurospecError, match="no held-out sentence of de has a token to predict"):
        ablation_table(loaded, SELECTIONS, HeldOut({"de": [""]}), random_sets=0)


def test_ablate_to_file_reads_scores_tables_and_count_means(small_model_dir, tmp_path):
    """The file-level task: groups from the score metadata, mean values excluding the group's language."""
    tok = _tokenizer(small_model_dir)
    lm = _make("llama", len(tok))
    scores = pd.DataFrame({"group": ["de-en", "de-en", "ru-en"], "layer": [0, 2, 1], "neuron": [5, 0, 3],
                           "score": [1.0, 1.0, 1.0]})
    write_table(scores, tmp_path / "scores.parquet", SCORE_SCHEMA,
                metadata={"method": "frequency", "group_kind": "pair", "groups": ["de-en", "en-de", "ru-en"],
                          "params": {"k": 10}, "column": "gate_active"})
    paths = []
    for pair, (src, tgt) in {"de-en": ("de", "en"), "ru-en": ("ru", "en")}.items():
        df, meta = _pair_table(pair, list(range(len(SENTENCES[src]))), SENTENCES[src], SENTENCES["en"][:len(SENTENCES[src])])
        write_table(df, tmp_path / f"{pair}.parquet", PAIR_SCHEMA, metadata=meta)
        paths.append(str(tmp_path / f"{pair}.parquet"))
    rng = np.random.default_rng(1)
    counts = {}
    for pair, lang in {"de-en": "de", "en-de": "en", "ru-en": "ru"}.items():
        df = pd.DataFrame({"layer": np.repeat(np.arange(3), 48).astype(np.int32),
                           "neuron": np.tile(np.arange(48), 3).astype(np.int32),
                           "active": 0, "nonzero": 0, "gate_active": 0, "act_sum": rng.normal(size=144) * 50})
        meta = {"pair": pair, "counted_lang": lang, "n_tokens": int(rng.integers(10, 100))}
        write_counts(complete(df), tmp_path / f"counts-{pair}.parquet", meta)
        counts[pair] = (df, meta)
    out = tmp_path / "ablation.parquet"
    ablate_to_file(_loaded(lm, tok), scores_path=str(tmp_path / "scores.parquet"), pair_tables=paths,
                   out_path=str(out), count_tables=[str(tmp_path / f"counts-{p}.parquet") for p in counts],
                   mode="mean", random_sets=1, max_sentences=3, seed=0)
    df, meta = read_ablation(str(out))
    assert sorted(df["group"].unique()) == ["de-en", "en-de", "ru-en"]
    assert meta["group_lang"] == {"de-en": "de", "en-de": "en", "ru-en": "ru"}
    assert meta["n_sentences"] == {"en": 3, "de": 3, "ru": 3} and meta["eval_split"] == "test"
    assert meta["method"] == "frequency" and meta["mode"] == "mean" and meta["demo_model"] is False
    assert meta["controls"] == "layer and firing-rate decile" and meta["rate_column"] == "gate_active"
    assert meta["control_overlap"] == {}
    # de-en's neurons are patched to their mean over the tables of the other languages (en, ru)
    held = HeldOut({"en": SENTENCES["en"][:3], "de": SENTENCES["de"][:3], "ru": SENTENCES["ru"][:3]})
    values = mean_activations(counts, exclude=["de"])
    expected = _edited_nll(lm, tok, held, {0: np.array([5]), 2: np.array([0])}, values)
    got = df[(df.group == "de-en") & (df.condition == "selected")].set_index("eval_lang")["nll"]
    for lang in ("en", "de", "ru"):
        assert got[lang] == pytest.approx(expected[lang], rel=1e-9)
    assert (df[df.group == "en-de"]["delta_nll"] == 0).all()  # selected nothing


def _planted_table():
    """de's neurons hurt German by 1.0, everything else by 0.1; ru's hurt Russian by 0.05 only,
    less than one of its random controls (0.08); random controls hurt by 0.02 otherwise."""
    rows = []
    for group in ("de", "ru"):
        for lang in ("en", "de", "ru"):
            own = lang == group
            sel = (1.0 if group == "de" else 0.05) if own else 0.1 * (group == "de")
            rows.append((group, lang, "selected", -1, 5, 100, 3.0 + sel, 3.0, sel))
            for seed, d in ((0, 0.02), (1, 0.08 if (group, lang) == ("ru", "ru") else 0.02)):
                rows.append((group, lang, "random", seed, 5, 100, 3.0 + d, 3.0, d))
    df = pd.DataFrame(rows, columns=["group", "eval_lang", "condition", "seed", "n_neurons", "n_tokens", "nll",
                                     "base_nll", "delta_nll"])
    meta = {"method": "lape", "mode": "zero", "random_sets": 2, "eval_languages": ["en", "de", "ru"],
            "group_lang": {"de": "de", "ru": "ru"}, "demo_model": True}
    return df, meta


def test_figures_recover_planted_specificity(tmp_path):
    import matplotlib.image as mpimg

    from neurospec.plots.ablation_figures import delta_matrix, plot_heatmap, plot_specificity

    df, meta = _planted_table()
    matrix = delta_matrix(df, meta)
    assert list(matrix.index) == ["de", "ru"] and list(matrix.columns) == ["en", "de", "ru"]
    assert matrix.loc["de", "de"] == pytest.approx(1.0 - 0.02)
    assert matrix.loc["ru", "ru"] == pytest.approx(0.05 - 0.05)
    assert matrix.loc["de", "en"] == pytest.approx(0.1 - 0.02)
    drawn = plot_heatmap(df, meta, tmp_path / "heat.png")
    pd.testing.assert_frame_equal(drawn, matrix)
    spec = plot_specificity([(df, meta), (df.assign(delta_nll=0.0), {**meta, "method": "contrast"})],
                            tmp_path / "spec.png").set_index(["method", "group"])
    assert spec.loc[("lape", "de"), "specific"] and not spec.loc[("lape", "ru"), "specific"]
    # on the relative scale: delta / base NLL (3.0)
    assert spec.loc[("lape", "de"), "own"] == pytest.approx(1.0 / 3)
    assert spec.loc[("lape", "de"), "others"] == pytest.approx(0.1 / 3)
    assert spec.loc[("lape", "ru"), "random_max"] == pytest.approx(0.08 / 3)
    assert not spec.loc["contrast", "specific"].any()  # nothing beats ties
    for png in ("heat.png", "spec.png"):
        pixels = mpimg.imread(tmp_path / png)[..., :3]
        assert (pixels < 0.9).mean() > 0.02


def test_the_summary_command_prints_the_specific_groups(tmp_path, capsys):
    from neurospec.plots.ablation_figures import main

    df, meta = _planted_table()
    write_table(df, tmp_path / "lape.parquet", None, metadata=meta)
    assert main([str(tmp_path / "lape.parquet")]) == 0
    out = capsys.readouterr().out
    assert "lape: 1 of 2 groups specific (de)" in out
    assert out.splitlines()[0].split() == ["method", "group", "lang", "n_neurons", "own", "others", "others_max",
                                           "random", "random_max", "specific", "p_controls", "delta", "delta_low",
                                           "delta_high"]
    de = out.splitlines()[1].split()
    assert de[:3] == ["lape", "de", "de"] and float(de[11]) == pytest.approx(1.0)  # its own delta NLL
    assert "dose-response" not in out  # no budget rows
    with pytest.raises(SystemExit) as exc:  # a missing table: one line naming it, no traceback
        main([str(tmp_path / "lapee.parquet")])
    assert str(exc.value) == f"neurospec: error: input table {tmp_path / 'lapee.parquet'} does not exist"


def test_real_configs_default_to_twenty_random_sets_the_demo_keeps_two():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[3]
    schema = yaml.safe_load((root / "workflow/schemas/config.schema.yaml").read_text())
    ablation = schema["properties"]["evaluate"]["properties"]["ablation"]["properties"]
    assert ablation["random_sets"]["default"] == 20
    assert yaml.safe_load((root / "config/ec40-aya23.yaml").read_text())["evaluate"]["ablation"]["random_sets"] >= 20
    assert yaml.safe_load((root / "config/config.yaml").read_text())["evaluate"]["ablation"]["random_sets"] == 2


# --------------------------------------------------------------------------------------------
# Uncertainty and the relative scale


def _hand_ci(base, sel, counts, rng, n_boot, level):
    """The percentile bootstrap written out: resample sentences, ratio of sums, one resample at a time."""
    idx = rng.integers(0, len(counts), size=(n_boot, len(counts)))
    deltas = []
    for row in idx:
        tokens = sum(counts[i] for i in row)
        deltas.append(sum(sel[i] for i in row) / tokens - sum(base[i] for i in row) / tokens)
    deltas = sorted(deltas)
    return np.quantile(deltas, (1 - level) / 2), np.quantile(deltas, (1 + level) / 2)


def test_the_bootstrap_ci_is_the_hand_computed_percentile_interval():
    rng = np.random.default_rng(7)
    counts = rng.integers(3, 30, size=25)
    base = counts * rng.uniform(2.0, 4.0, size=25)
    sel = base + counts * rng.normal(0.3, 0.5, size=25)
    low, high = bootstrap_delta_ci(base, sel, counts, np.random.default_rng(11), n_boot=400, level=0.9)
    want = _hand_ci(base, sel, counts, np.random.default_rng(11), 400, 0.9)
    assert (low, high) == pytest.approx(want, rel=1e-12)
    point = (sel.sum() - base.sum()) / counts.sum()
    assert low < point < high and high - low > 0.05  # a real interval around the ratio-of-sums delta
    # one sentence with all the weight: no spread
    assert bootstrap_delta_ci(base[:1], sel[:1], counts[:1], np.random.default_rng(0)) == \
        pytest.approx((point1 := (sel[0] - base[0]) / counts[0], point1))


def test_the_empirical_p_value_counts_controls_at_least_as_large():
    assert p_controls(0.5, [0.1, 0.6, 0.5, 0.2]) == pytest.approx(3 / 5)  # 0.6 and the tie 0.5
    assert p_controls(0.7, [0.1, 0.6, 0.5, 0.2]) == pytest.approx(1 / 5)  # above every control
    assert p_controls(0.0, [0.1] * 20) == pytest.approx(1.0)
    assert p_controls(0.3, []) == 1.0  # no controls: no evidence


def test_specificity_on_the_relative_scale_differs_from_raw_delta_where_base_nll_differs():
    from neurospec.plots.ablation_figures import specificity

    # de's neurons: +0.5 nats on German (base 5.0: +10%), +0.3 on English (base 1.5: +20%)
    rows = [("de", "de", "selected", -1, 3, 50, 5.5, 5.0, 0.5), ("de", "en", "selected", -1, 3, 50, 1.8, 1.5, 0.3),
            ("de", "de", "random", 0, 3, 50, 5.1, 5.0, 0.1), ("de", "en", "random", 0, 3, 50, 1.6, 1.5, 0.1)]
    df = pd.DataFrame(rows, columns=["group", "eval_lang", "condition", "seed", "n_neurons", "n_tokens", "nll",
                                     "base_nll", "delta_nll"])
    meta = {"method": "lape", "eval_languages": ["en", "de"], "group_lang": {"de": "de"}}
    spec = specificity(df, meta).iloc[0]
    assert spec["own"] == pytest.approx(0.1) and spec["others_max"] == pytest.approx(0.2)
    assert spec["random_max"] == pytest.approx(0.02) and not spec["specific"]  # raw delta would call it specific
    assert np.isnan(spec["p_controls"])  # an older table without the column


@torch.no_grad()
def _edited_sentences(lm, tok, texts, selection):
    """Per sentence (summed NLL, tokens) with down_proj's weight columns of ``selection`` zeroed."""
    import copy

    model = copy.deepcopy(lm)
    for layer, idx in selection.items():
        model.model.layers[layer].mlp.down_proj.weight[:, idx] = 0.0
    pairs = [_reference_nll(model, tok, t) for t in texts]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def test_ablation_rows_carry_the_bootstrap_ci_the_p_value_and_rel_delta(small_model_dir):
    tok = _tokenizer(small_model_dir)
    lm = _make("llama", len(tok))
    held = HeldOut({lang: list(t) for lang, t in SENTENCES.items()})
    selections = {"de": SELECTIONS["de"]}
    df, meta = ablation_table(_loaded(lm, tok), selections, held, random_sets=3, seed=4, token_budget=32)
    sel = df[df.condition == "selected"].set_index("eval_lang")
    rand = df[df.condition == "random"]
    assert rand[["delta_nll_low", "delta_nll_high", "p_controls"]].isna().all().all()
    np.testing.assert_allclose(df["rel_delta_nll"], df["delta_nll"] / df["base_nll"], rtol=1e-12)
    for lang, texts in SENTENCES.items():
        base, counts = _edited_sentences(lm, tok, texts, {})
        ablated, _ = _edited_sentences(lm, tok, texts, selections["de"])
        keep = counts > 0
        want = _hand_ci(base[keep], ablated[keep], counts[keep], ci_rng(4, "de", lang), N_BOOT, LEVEL)
        assert (sel.loc[lang, "delta_nll_low"], sel.loc[lang, "delta_nll_high"]) == pytest.approx(want, rel=1e-6)
        controls = rand[rand.eval_lang == lang]["delta_nll"].to_numpy()
        expected_p = (1 + (controls >= sel.loc[lang, "delta_nll"]).sum()) / 4
        assert sel.loc[lang, "p_controls"] == pytest.approx(expected_p)
    assert meta["ci"]["unit"] == "sentences" and meta["ci"]["n_boot"] == N_BOOT
    assert meta["ci"]["n"] == {"en": 6, "de": 4, "ru": 3}  # every sentence predicts at least one token
    assert meta["p_controls"]["n_controls"] == 3


# --------------------------------------------------------------------------------------------
# Matched budgets


def _flat(selection):
    return sorted((layer, int(n)) for layer, idx in selection.items() for n in idx)


def test_budget_selections_take_the_top_n_by_score_over_all_layers():
    scores = pd.DataFrame({"group": ["de"] * 5 + ["ru"] * 2, "layer": [0, 0, 1, 2, 2, 0, 1],
                           "neuron": [4, 9, 3, 1, 7, 2, 2], "score": [0.1, 0.5, 0.9, -2.0, 0.5, 1.0, 3.0]})
    tops, skipped = budget_selections(scores, [1, 3, 6], "frequency")
    # by score, largest first; the tie 0.5 (0, 9) and (2, 7) goes to the lower layer
    assert _flat(tops["de"][1]) == [(1, 3)]
    assert _flat(tops["de"][3]) == [(0, 9), (1, 3), (2, 7)]
    assert _flat(tops["ru"][1]) == [(1, 2)]
    assert 6 not in tops["de"] and skipped == {"de": [6], "ru": [3, 6]}
    # diffmeans keeps the largest |difference|: -2.0 first
    tops, _ = budget_selections(scores, [2], "diffmeans")
    assert _flat(tops["de"][2]) == [(1, 3), (2, 1)]
    with pytest.raises(NeurospecError, match="budgets must be positive integers"):
        budget_selections(scores, [0], "lape")


def test_budget_rows_ablate_the_top_n_with_their_own_controls(small_model_dir):
    from neurospec.interventions import rate_deciles

    tok = _tokenizer(small_model_dir)
    lm = _make("llama", len(tok))
    held = HeldOut({lang: list(t) for lang, t in SENTENCES.items()})
    scores = pd.DataFrame({"group": "de", "layer": [0, 0, 0, 2, 2], "neuron": [1, 5, 7, 0, 47],
                           "score": [0.2, 0.9, 0.1, 0.5, 0.3]})
    tops, skipped = budget_selections(scores, [2, 5, 9], "lape")
    assert skipped == {"de": [9]}
    deciles = rate_deciles(np.random.default_rng(0).random((3, 48)))
    df, meta = ablation_table(_loaded(lm, tok), {"de": SELECTIONS["de"]}, held, random_sets=2, seed=1,
                              token_budget=32, deciles=deciles, budgets=tops, budget_random_sets=1)
    own = df[df.budget.isna()]
    assert len(own) == 3 * 3 and meta["budget_random_sets"] == 1
    assert sorted(df.budget.dropna().unique().tolist()) == [2, 5]
    for n in (2, 5):
        d = df[df.budget == n]
        assert sorted(zip(d.condition, d.seed)) == sorted([("selected", -1)] * 3 + [("random", 1)] * 3)
        assert (d.n_neurons == n).all()
    # N = 5 is the whole selection: the same NLL as the own selection's row
    five = df[(df.budget == 5) & (df.condition == "selected")].set_index("eval_lang")["nll"]
    np.testing.assert_allclose(five.sort_index(), own[own.condition == "selected"].set_index("eval_lang")["nll"]
                               .sort_index(), rtol=1e-12)
    # N = 2: layer 0 neuron 5 (0.9) and layer 2 neuron 0 (0.5), as an independent weight edit
    expected = _edited_nll(lm, tok, held, {0: np.array([5]), 2: np.array([0])})
    two = df[(df.budget == 2) & (df.condition == "selected")].set_index("eval_lang")
    for lang in expected:
        assert two.loc[lang, "nll"] == pytest.approx(expected[lang], rel=1e-9)
        controls = df[(df.budget == 2) & (df.condition == "random") & (df.eval_lang == lang)]["delta_nll"]
        assert two.loc[lang, "p_controls"] == pytest.approx((1 + (controls >= two.loc[lang, "delta_nll"]).sum()) / 2)
    assert meta["n_passes"] == 1 + 3 + 2 * 2


def test_the_budget_figure_draws_the_planted_dose_response(tmp_path, capsys):
    import matplotlib.image as mpimg

    from neurospec.plots.ablation_figures import plot_budget

    rows = []
    for group in ("de", "ru"):
        for n in (10, 100):
            for lang in ("de", "ru"):
                sel = 0.01 * n if lang == group else 0.001 * n  # grows with N on the own language
                rows.append((group, lang, "selected", -1, n, 50, 3 + sel, 3.0, sel, sel / 3, sel - 0.1, sel + 0.1,
                             1 / 3, n))
                for seed in (0, 1):
                    d = 0.002 * n * (1 + seed)
                    rows.append((group, lang, "random", seed, n, 50, 3 + d, 3.0, d, d / 3, np.nan, np.nan, np.nan, n))
        rows.append((group, group, "selected", -1, 7, 50, 3.5, 3.0, 0.5, 0.5 / 3, 0.4, 0.6, 1 / 3, None))
    df = pd.DataFrame(rows, columns=["group", "eval_lang", "condition", "seed", "n_neurons", "n_tokens", "nll",
                                     "base_nll", "delta_nll", "rel_delta_nll", "delta_nll_low", "delta_nll_high",
                                     "p_controls", "budget"])
    df["budget"] = pd.array(df["budget"].tolist(), dtype="Int64")
    meta = {"method": "lape", "group_lang": {"de": "de", "ru": "ru"}, "eval_languages": ["de", "ru"]}
    data = plot_budget(df, meta, tmp_path / "budget.png").set_index(["group", "budget"])
    # the command prints the medians over groups per N: selected (0.1, 0.1) at 10, (1.0, 1.0) at 100
    from neurospec.plots.ablation_figures import main

    write_table(df, tmp_path / "lape.parquet", None, metadata=meta)
    capsys.readouterr()
    assert main([str(tmp_path / "lape.parquet")]) == 0
    lines = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("dose-response"))
    rows = [line.split() for line in lines[start + 1:] if line.split() and line.split()[-1][0].isdigit()]
    assert [[float(v) for v in r[-5:]] for r in rows] == [[10, 2, 0.1, 0.03, 0.04], [100, 2, 1.0, 0.3, 0.4]]
    assert sorted(data.index) == [("de", 10), ("de", 100), ("ru", 10), ("ru", 100)]  # not the own selection
    assert data.loc[("de", 100), "selected"] == pytest.approx(1.0)
    assert data.loc[("ru", 10), "low"] == pytest.approx(0.0) and data.loc[("ru", 10), "high"] == pytest.approx(0.2)
    assert data.loc[("de", 100), "random"] == pytest.approx((0.2 + 0.4) / 2)
    assert data.loc[("de", 100), "random_max"] == pytest.approx(0.4)
    assert (mpimg.imread(tmp_path / "budget.png")[..., :3] < 0.9).mean() > 0.01


# --------------------------------------------------------------------------------------------
# controls_scope: own


def test_controls_scored_on_the_own_language_only_equal_the_all_language_pass(small_model_dir):
    """controls_scope own: the same selected rows, control rows on the group's own language only with
    the all-language pass's values (the sentences batched alone: equal to float64 rounding), the same
    p-values on the own language, and fewer tokens scored."""
    tok = _tokenizer(small_model_dir)
    lm = _make("llama", len(tok))
    held = HeldOut({lang: list(t) for lang, t in SENTENCES.items()})
    kwargs = dict(random_sets=3, seed=2, token_budget=32)
    full, meta_full = ablation_table(_loaded(lm, tok), SELECTIONS, held, **kwargs)
    own, meta_own = ablation_table(_loaded(lm, tok), SELECTIONS, held, controls_scope="own", **kwargs)
    key = ["group", "eval_lang", "condition", "seed"]
    sel_full = full[full.condition == "selected"].set_index(key)
    sel_own = own[own.condition == "selected"].set_index(key)
    for column in ["nll", "base_nll", "delta_nll", "delta_nll_low", "delta_nll_high"]:
        np.testing.assert_array_equal(sel_own[column], sel_full.loc[sel_own.index, column])
    rand = own[own.condition == "random"]
    # each group's controls on its own language only (group names are languages here), 3 each
    assert (rand["eval_lang"] == rand["group"]).all()
    assert rand.groupby("group").size().to_dict() == {"de": 3, "en": 3, "ru": 3}
    want = full[full.condition == "random"].set_index(key).loc[rand.set_index(key).index]
    np.testing.assert_allclose(rand.set_index(key)["nll"], want["nll"], rtol=1e-9)
    np.testing.assert_allclose(rand.set_index(key)["delta_nll"], want["delta_nll"], atol=1e-9)
    assert (rand["n_tokens"].to_numpy() == want["n_tokens"].to_numpy()).all()
    # the p-value on the own language is the all-language run's; on the other languages there is none
    on_own = sel_own.reset_index()
    mine = on_own[on_own.eval_lang == on_own.group].set_index("group")["p_controls"]
    theirs = sel_full.reset_index()
    theirs = theirs[theirs.eval_lang == theirs.group].set_index("group")["p_controls"]
    pd.testing.assert_series_equal(mine.sort_index(), theirs.sort_index())
    assert on_own[on_own.eval_lang != on_own.group]["p_controls"].isna().all()
    # "de" and "ru" select neurons (so do their controls); "en" selects none: its controls are the baseline
    assert meta_own["controls_scope"] == "own" and meta_full["controls_scope"] == "all"
    assert meta_own["n_passes"] == meta_full["n_passes"]
    n_lang = {lang: int(full[(full.eval_lang == lang)]["n_tokens"].iloc[0]) for lang in SENTENCES}
    per_pass = sum(n_lang.values())
    assert meta_full["tokens_scored"] == per_pass * meta_full["n_passes"]
    assert meta_own["tokens_scored"] == (per_pass * 3 + 3 * (n_lang["de"] + n_lang["ru"])
                                         + n_lang["de"] + n_lang["ru"] + n_lang["en"])


def test_an_unknown_controls_scope_is_one_clear_error(small_model_dir):
    tok = _tokenizer(small_model_dir)
    held = HeldOut({lang: list(t) for lang, t in SENTENCES.items()})
    with pytest.raises(NeurospecError, match=r"evaluate.ablation.controls_scope 'some': choose one of all, own"):
        ablation_table(_loaded(_make("llama", len(tok)), tok), SELECTIONS, held, controls_scope="some")


def test_the_heatmap_subtracts_controls_only_where_they_cover_every_cell():
    from neurospec.plots.ablation_figures import delta_matrix

    rows = [("de", "de", "selected", -1, 0.9), ("de", "en", "selected", -1, 0.2),
            ("de", "de", "random", 0, 0.1), ("de", "de", "random", 1, 0.3)]
    df = pd.DataFrame(rows, columns=["group", "eval_lang", "condition", "seed", "delta_nll"])
    meta = {"eval_languages": ["de", "en"]}
    own = delta_matrix(df, {**meta, "controls_scope": "own"})
    assert own.loc["de", "de"] == pytest.approx(0.9) and own.loc["de", "en"] == pytest.approx(0.2)
    full = delta_matrix(df, {**meta, "controls_scope": "all"})
    assert full.loc["de", "de"] == pytest.approx(0.9 - 0.2)
