"""The right unit: "the rest" of a language with every other language equal (scoring.rest), and a
sentence counted by several pairs (EC40's multi-parallel English) counted once."""

from __future__ import annotations

import math
import unicodedata
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurospec.score import scoring
from neurospec.collect.collect import counted_hashes, sentence_hash
from neurospec.errors import NeurospecError
from neurospec.interventions import MeanPatchValues, mean_activations
from neurospec.score.stability import half_tables
from neurospec.tables import read_metadata, read_table, sum_count_tables
from synthetic_counts import complete, write_tables
from workflow_utils import SMALL_CONFIG, snakemake, write_config

LAYER = np.zeros(1, dtype=np.int32)
NEURON = np.zeros(1, dtype=np.int32)


def rate_table(r: np.ndarray, hashes=None, counted_lang: str | None = None, n_tokens: int = 100):
    """A one-neuron count table from explicit per-sentence rates ``r`` (column "active")."""
    meta = {"n_tokens": n_tokens, "n_rate_sentences": len(r)}
    if counted_lang:
        meta["counted_lang"] = counted_lang
    if hashes is not None:
        meta["counted_hashes_even"] = sorted({h for i, h in enumerate(hashes) if i % 2 == 0})
        meta["counted_hashes_odd"] = sorted({h for i, h in enumerate(hashes) if i % 2 == 1})
    df = pd.DataFrame({"layer": LAYER, "neuron": NEURON, "active": [len(r)], "active_rate_sum": [r.sum()],
                       "active_rate_sumsq": [(r * r).sum()]})
    return df, meta


# ---------------------------------------------------------------------------- balanced rest, by hand


def test_balanced_welch_by_hand():
    rng = np.random.default_rng(3)
    rates = {"a": rng.uniform(0.3, 0.9, 12), "b": rng.uniform(0.1, 0.6, 40), "c": rng.uniform(0.1, 0.5, 7),
             "d": rng.uniform(0.0, 0.4, 25)}
    stacked = scoring.stack_counts({g: rate_table(r) for g, r in rates.items()}, "active")
    d, log_odds, p = scoring.sentence_contrast_statistics(stacked, rest="balanced")
    _, _, p_two = scoring.sentence_contrast_statistics(stacked, "two-sided", rest="balanced")
    _, _, p_pooled = scoring.sentence_contrast_statistics(stacked, rest="pooled")
    for gi, g in enumerate(d.groups):
        x = rates[g]
        others = [r for h, r in rates.items() if h != g]
        L = len(others)
        m_rest = np.mean([r.mean() for r in others])  # every other language weighs 1/L
        c = [r.var(ddof=1) / len(r) / L ** 2 for r in others]
        v_rest = sum(c)
        c1 = x.var(ddof=1) / len(x)
        t = (x.mean() - m_rest) / math.sqrt(c1 + v_rest)
        df = (c1 + v_rest) ** 2 / (c1 ** 2 / (len(x) - 1) + sum(ci ** 2 / (len(r) - 1) for ci, r in zip(c, others)))
        assert p[0, gi] == pytest.approx(stats.t.sf(t, df), rel=1e-9)
        assert p_two[0, gi] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
        n2 = sum(len(r) for r in others)
        a, b = x.sum(), m_rest * n2
        assert log_odds[0, gi] == pytest.approx(math.log((a + .5) / (len(x) - a + .5))
                                                - math.log((b + .5) / (n2 - b + .5)))
    # the pooled rest is another test ('b' has 40 of the 84 sentences of the rest of 'a')
    assert p_pooled[0, 0] != pytest.approx(p[0, 0], rel=1e-2)
    # two groups: the balanced rest is the other group, i.e. Welch's two-sample test
    two = scoring.stack_counts({g: rate_table(rates[g]) for g in ("a", "b")}, "active")
    _, _, p2 = scoring.sentence_contrast_statistics(two, rest="balanced")
    assert p2[0, 0] == pytest.approx(stats.ttest_ind(rates["a"], rates["b"], equal_var=False,
                                                     alternative="greater").pvalue, rel=1e-9)
    # no variance anywhere: the difference of the means is exact; a language of one sentence: one line
    const = {g: rate_table(np.full(5, v)) for g, v in (("a", 1.0), ("b", 0.0), ("c", 0.0))}
    _, _, pc = scoring.sentence_contrast_statistics(scoring.stack_counts(const, "active"), rest="balanced")
    assert pc[0].tolist() == [0.0, 1.0, 1.0]
    few = {**{g: rate_table(r) for g, r in rates.items()}, "e": rate_table(np.array([0.5]))}
    with pytest.raises(NeurospecError, match="rest: balanced needs at least two sentences in every language; "
                                             "'e' has 1"):
        scoring.sentence_contrast_statistics(scoring.stack_counts(few, "active"), rest="balanced")
    with pytest.raises(NeurospecError, match="scoring.rest 'mean': choose one of balanced, pooled"):
        scoring.contrast(stacked, rest="mean")


def test_balanced_rest_keeps_the_fdr_when_languages_differ_in_size():
    """No language differs: the balanced sentence test's p-values are about uniform although one
    language has ten times the sentences of the others and every language has its own spread."""
    rng = np.random.default_rng(11)
    n_units = 400
    base = rng.uniform(0.2, 0.7, n_units)
    tables = {}
    for lang, n_sent, spread in (("en", 300, 0.2), ("de", 30, 0.8), ("fr", 30, 0.5), ("ru", 40, 0.6)):
        r = np.clip(base + spread * (rng.beta(2, 2, size=(n_sent, n_units)) - 0.5), 0, 1)
        df = pd.DataFrame({"layer": np.zeros(n_units, dtype=np.int32), "neuron": np.arange(n_units, dtype=np.int32),
                           "active": np.full(n_units, n_sent), "active_rate_sum": r.sum(0),
                           "active_rate_sumsq": (r * r).sum(0)})
        tables[lang] = (df, {"n_tokens": 10 * n_sent, "n_rate_sentences": n_sent})
    _, _, p = scoring.sentence_contrast_statistics(scoring.stack_counts(tables, "active"), rest="balanced")
    assert 0.03 < (p < 0.05).mean() < 0.07 and 0.45 < (p < 0.5).mean() < 0.55


def test_balanced_token_contrast_by_hand():
    counts = {"a": (90, 300), "b": (200, 2000), "c": (30, 500), "d": (10, 100)}  # (fired, tokens)
    tables = {g: (pd.DataFrame({"layer": LAYER, "neuron": NEURON, "active": [k]}), {"n_tokens": n})
              for g, (k, n) in counts.items()}
    stacked = scoring.stack_counts(tables, "active")
    d, log_odds, p = scoring.contrast_statistics(stacked, rest="balanced")
    for gi, g in enumerate(d.groups):
        k, n = counts[g]
        others = [v for h, v in counts.items() if h != g]
        L = len(others)
        p_rest = sum(ko / no for ko, no in others) / L
        n_eff = L ** 2 / sum(1 / no for _, no in others)
        pbar = (k + p_rest * n_eff) / (n + n_eff)
        z = (k / n - p_rest) / math.sqrt(pbar * (1 - pbar) * (1 / n + 1 / n_eff))
        assert p[0, gi] == pytest.approx(stats.norm.sf(z), rel=1e-9)
        n2 = sum(no for _, no in others)
        b = p_rest * n2
        assert log_odds[0, gi] == pytest.approx(math.log((k + .5) / (n - k + .5)) - math.log((b + .5) / (n2 - b + .5)))
    # equal sizes: the balanced rest is the pooled rest
    equal = {g: (pd.DataFrame({"layer": LAYER, "neuron": NEURON, "active": [k]}), {"n_tokens": 400})
             for g, k in (("a", 90), ("b", 30), ("c", 41))}
    s = scoring.stack_counts(equal, "active")
    for x, y in zip(scoring.contrast_statistics(s, rest="balanced")[1:], scoring.contrast_statistics(s)[1:]):
        np.testing.assert_allclose(x, y, rtol=1e-12)


def test_diffmeans_balanced_by_hand():
    act = {"a": ([3.0, -1.0, 0.5], 10), "b": ([40.0, 0.0, 2.0], 100), "c": ([1.0, 2.0, -3.0], 20)}
    tables = {g: (pd.DataFrame({"layer": np.zeros(3, dtype=np.int32), "neuron": np.arange(3, dtype=np.int32),
                                "active": [0, 0, 0], "act_sum": s}), {"n_tokens": n}) for g, (s, n) in act.items()}
    stacked = scoring.stack_counts(tables, "active")
    for rest in ("balanced", "pooled"):
        got = scoring.diffmeans(stacked, k=3, rest=rest).set_index(["group", "neuron"])["score"]
        for g, (s, n) in act.items():
            others = [v for h, v in act.items() if h != g]
            for u in range(3):
                if rest == "balanced":  # the mean of the other languages' means
                    r = np.mean([so[u] / no for so, no in others])
                else:  # the other languages' tokens pooled
                    r = sum(so[u] for so, _ in others) / sum(no for _, no in others)
                assert got[(g, u)] == pytest.approx(s[u] / n - r, rel=1e-12)
    # 'a' neuron 0: 0.3 against (0.4 + 0.05) / 2 = 0.225 balanced, 41 / 120 pooled
    assert scoring.diffmeans(stacked, k=3, rest="balanced").iloc[0]["score"] == pytest.approx(0.3 - 0.225)


def test_mean_patching_balanced_by_hand(tmp_path):
    def table(values, n, lang):
        df = pd.DataFrame({"layer": np.repeat([0, 1], 2).astype(np.int32),
                           "neuron": np.tile([0, 1], 2).astype(np.int32),
                           "act_sum": np.asarray(values, dtype=np.float64)})
        return df, {"n_tokens": n, "counted_lang": lang}

    tables = {"en-de": table([10, 20, 30, 40], 10, "en"), "en-fr": table([30, 0, 10, 0], 30, "en"),
              "de-en": table([5, 5, 5, 5], 50, "de"), "fr-en": table([8, 16, 24, 32], 4, "fr")}
    en = np.array([[40, 20], [40, 40]]) / 40  # English's own mean: its two pairs' act_sum over their tokens
    fr = np.array([[8, 16], [24, 32]]) / 4
    de = np.full((2, 2), 0.1)
    np.testing.assert_allclose(mean_activations(tables, exclude=["de"], rest="balanced"), (en + fr) / 2)
    np.testing.assert_allclose(mean_activations(tables, exclude=["fr"], rest="balanced"), (en + de) / 2)
    np.testing.assert_allclose(mean_activations(tables, exclude=["de"], rest="pooled"),
                               np.array([[48, 36], [64, 72]]) / 44)
    for pair, (df, meta) in tables.items():  # through the count files, as the ablation reads them
        tables[pair] = (complete(df), {**meta, "pair": pair})
    paths = write_tables(tables, tmp_path)
    values = MeanPatchValues([str(p) for p in paths], "evaluate.ablation", rest="balanced")
    np.testing.assert_allclose(values.excluding(["de"]), (en + fr) / 2)
    np.testing.assert_allclose(values.excluding(["en"]), (de + fr) / 2)
    with pytest.raises(NeurospecError, match="scoring.rest 'x'"):
        mean_activations(tables, rest="x")


# ---------------------------------------------------------------------------- English counted once


def english_tables(rng, dup: int, hashes: bool = True):
    """English's 30 sentences counted by ``dup`` pairs with the same rates (the same sentences), and
    three other languages counted once each."""
    en = rng.uniform(0.2, 0.8, 30)
    ids = [f"{i:016x}" for i in range(30)]
    tables = {}
    for j, tgt in enumerate(("de", "fr", "ru")[:dup]):
        tables[f"en-{tgt}"] = rate_table(en, ids if hashes else None, "en", n_tokens=300)
    for lang, lo in (("de", 0.1), ("fr", 0.3), ("ru", 0.0)):
        r = rng.uniform(lo, lo + 0.5, 20)
        tables[f"{lang}-en"] = rate_table(r, [f"{lang}{i:014x}" for i in range(20)] if hashes else None, lang)
    return tables


def pooled_language_table(tables):
    langs = scoring.counted_languages(tables)
    return scoring.pool_by_language(scoring.stack_counts(tables, "active"), langs,
                                    scoring.distinct_sentences(tables, langs))


def test_english_counted_once():
    once = pooled_language_table(english_tables(np.random.default_rng(5), 1))
    thrice = pooled_language_table(english_tables(np.random.default_rng(5), 3))
    assert thrice.set_index("group")["n_sentences"].to_dict() == {"en": 30, "de": 20, "fr": 20, "ru": 20}
    sentence_columns = ["group", "layer", "neuron", "rate_sum", "rate_sumsq", "n_sentences"]
    pd.testing.assert_frame_equal(thrice[sentence_columns], once[sentence_columns])  # tokens stay as counted
    for rest in ("balanced", "pooled"):
        _, lo1, p1 = scoring.sentence_contrast_statistics(once, rest=rest)
        _, lo3, p3 = scoring.sentence_contrast_statistics(thrice, rest=rest)
        np.testing.assert_allclose(lo3, lo1, rtol=1e-12)
        np.testing.assert_allclose(p3, p1, rtol=1e-9)
    # counted as rows (what the pooling did before): 90 English units, a smaller p-value for English
    tables = english_tables(np.random.default_rng(5), 3)
    rows = scoring.pool_by_language(scoring.stack_counts(tables, "active"), scoring.counted_languages(tables))
    assert rows.set_index("group")["n_sentences"]["en"] == 90
    _, _, p_rows = scoring.sentence_contrast_statistics(rows, "two-sided", rest="pooled")
    _, _, p_once = scoring.sentence_contrast_statistics(once, "two-sided", rest="pooled")
    assert p_rows[0, 0] < 0.5 * p_once[0, 0]
    # the score table's metadata: the distinct sentences and the rows
    _, _, meta = scoring.score_tables(tables, "contrast", "active", {"rest": "balanced"})
    assert meta["n_sentences"] == {"en": 30, "de": 20, "fr": 20, "ru": 20}
    assert meta["n_sentence_rows"] == {"en": 90, "de": 20, "fr": 20, "ru": 20}
    assert meta["params"]["rest"] == "balanced"


def test_partly_overlapping_pairs_count_the_union():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(0, 1, 30), rng.uniform(0, 1, 30)
    tables = {"en-de": rate_table(a, [f"s{i}" for i in range(30)], "en"),
              "en-fr": rate_table(b, [f"s{i}" for i in range(20, 50)], "en"),  # 10 shared
              "de-en": rate_table(rng.uniform(0, 1, 9), [f"d{i}" for i in range(9)], "de")}
    pooled = pooled_language_table(tables).set_index("group")
    assert pooled.loc["en", "n_sentences"] == 50
    # the rows' mean stays, the sums are those of 50 units
    assert pooled.loc["en", "rate_sum"] / 50 == pytest.approx((a.sum() + b.sum()) / 60)
    assert pooled.loc["en", "rate_sumsq"] == pytest.approx(((a * a).sum() + (b * b).sum()) * 50 / 60)


def test_stale_tables_without_hashes():
    tables = english_tables(np.random.default_rng(1), 3, hashes=False)
    langs = scoring.counted_languages(tables)
    with pytest.raises(NeurospecError, match=r"count table of 'en-de' \(\?\) lacks the 'counted_hashes_even' "
                                             r"metadata key, so 'en' sentences counted by several pairs"):
        scoring.distinct_sentences(tables, langs)
    # a language of one pair needs none: its rows are its sentences
    single = english_tables(np.random.default_rng(1), 1, hashes=False)
    assert scoring.distinct_sentences(single, scoring.counted_languages(single)) == {}
    # scoring methods on tokens never need them
    scoring.score_tables(tables, "contrast", "active", {"unit": "token", "min_log_odds": 0.0})


def test_halves_and_shards_keep_the_hashes():
    ids = [f"{i:016x}" for i in range(30)]
    r = np.linspace(0.1, 0.9, 30)
    tables = {f"en-{t}": rate_table(r, ids, "en") for t in ("de", "fr")}
    for pair, (df, meta) in tables.items():  # the _even columns stability splits on
        tables[pair] = (df.assign(active_even=15, active_rate_sum_even=r[::2].sum(),
                                  active_rate_sumsq_even=(r[::2] ** 2).sum()),
                        {**meta, "n_rate_sentences_even": 15, "n_tokens_even": 50})
    tables["de-en"] = rate_table(r[:10], [f"d{i}" for i in range(10)], "de")
    tables["de-en"][1].update(n_rate_sentences_even=5, n_tokens_even=50)
    tables["de-en"] = (tables["de-en"][0].assign(active_even=5, active_rate_sum_even=1.0,
                                                  active_rate_sumsq_even=0.5), tables["de-en"][1])
    even = half_tables(tables, "even")
    assert even["en-de"][1]["counted_hashes"] == ids[::2]
    assert scoring.distinct_sentences(even, scoring.counted_languages(even)) == {"en": 15, "de": 5}
    assert scoring.distinct_sentences(half_tables(tables, "odd"), scoring.counted_languages(even))["en"] == 15
    # shards of one pair: the union of their hash sets; a shard without them: none at all
    df, meta = tables["en-de"]
    first = {**meta, "counted_hashes_even": ids[0:10:2], "counted_hashes_odd": ids[1:10:2]}
    second = {**meta, "counted_hashes_even": ids[10::2], "counted_hashes_odd": ids[11::2]}
    _, merged = sum_count_tables([(df, first), (df, second)])
    assert merged["counted_hashes_even"] == ids[::2] and merged["counted_hashes_odd"] == ids[1::2]
    stale = {k: v for k, v in second.items() if not k.startswith("counted_hashes")}
    _, merged = sum_count_tables([(df, first), (df, stale)])
    assert "counted_hashes_even" not in merged and "counted_hashes_odd" not in merged


def test_sentence_hash_and_counted_hashes():
    assert sentence_hash("  The cat\tsat.\n") == sentence_hash("The cat sat.") != sentence_hash("The cat sat")
    assert sentence_hash(unicodedata.normalize("NFD", "Café")) == sentence_hash("Café")
    assert len(sentence_hash("x")) == 16
    texts = ["a", "b", "a ", "c", "d"]
    # rows 0..4 kept but 4 (the prompt of row 1 has no counted token: no rate); ids: even for rows 0, 2
    enc = SimpleNamespace(kept=[0, 1, 2, 3], counted=[np.array([1]), np.array([0]), np.array([0, 1]), np.array([1])],
                          even=np.array([True, False, True, False]))
    assert counted_hashes(texts, enc) == {"counted_hashes_even": [sentence_hash("a")],
                                          "counted_hashes_odd": [sentence_hash("c")]}


# ---------------------------------------------------------------------------- through snakemake


def test_contrast_records_balanced_rest_and_english_distinct_n(tmp_path):
    cfg = write_config(tmp_path, {"scoring": {"k": 10, "diffmeans": {"k": 10}, "contrast": {"min_log_odds": 0.0}},
                                  "evaluate": {"ablation": {"mode": "mean", "random_sets": 1, "max_sentences": 5}}})
    snakemake(tmp_path, "results/demo-small/demo/validation/scores/contrast.parquet",
              "results/demo-small/demo/validation/ablation/contrast.parquet", configfile=cfg)
    results = tmp_path / "results/demo-small/demo/validation"
    meta = read_metadata(results / "scores/contrast.parquet")
    assert meta["params"]["rest"] == "balanced"  # the schema's default, passed through params
    assert read_metadata(results / "ablation/contrast.parquet")["mean_rest"] == "balanced"
    # each language's units: the distinct sentences (normalised text) of the pair tables that count
    # it (their source side), recomputed here from the pair tables; English: three pairs
    for lang in ("en", "de", "ru", "hi"):
        distinct, rows = set(), 0
        for pair in [p for p in SMALL_CONFIG["pairs"] if p.startswith(f"{lang}-")]:
            src = read_table(tmp_path / "results/data/demo/validation" / f"{pair}.parquet")["src"]
            src = src[src.str.strip() != ""]
            distinct |= {" ".join(unicodedata.normalize("NFC", s).split()) for s in src}
            rows += len(src)
        assert meta["n_sentences"][lang] == len(distinct), lang
        assert meta["n_sentence_rows"][lang] == rows, lang
    assert meta["n_sentences"]["en"] < meta["n_sentence_rows"]["en"]  # the demo's English is shared
    counts = read_metadata(results / "activations/en-de.parquet")
    assert len(counts["counted_hashes_even"]) + len(counts["counted_hashes_odd"]) >= 1
