"""Scoring methods on synthetic count tables with planted language- and family-specific neurons."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from neurospec.score import scoring
from neurospec.errors import NeurospecError
from neurospec.languages import language
from neurospec.tables import SCORE_SCHEMA, read_table, write_counts
from synthetic_counts import pair_meta, sentence_table, write_tables

LANGS = ("en", "de", "sv", "fr", "es", "ru", "uk", "hi", "ar")  # five EC40 families, English Germanic
N_LAYERS, N_NEURONS = 4, 512
N_OWN, N_FAMILY = 4, 4  # planted neurons per language, and shared by each family of two or more


def synthetic(seed: int = 0, planted: bool = True, n_tokens: int = 3000, langs=LANGS):
    """Per-pair count tables (xx-en counts xx's tokens, en-xx counts English) and the planted truth.

    Every neuron fires with a base rate in [0.3, 0.6], the same in every language.  Planted
    neurons fire at 0.9 in their language (or in every language of their family) and at a rate in
    [0.2, 0.4] elsewhere.  Each pair has n_tokens / 30 sentences of 30 tokens, tokens independent;
    a neuron's mean activation is its firing rate.  Returns (tables, truth) with
    truth = {language: set of (layer, neuron)}.
    """
    rng = np.random.default_rng(seed)
    n_units = N_LAYERS * N_NEURONS
    base = rng.uniform(0.3, 0.6, n_units)
    rates = {lang: base.copy() for lang in langs}
    truth: dict[str, set] = {lang: set() for lang in langs}
    if planted:
        families: dict[str, list[str]] = {}
        for lang in langs:
            families.setdefault(language(lang).family, []).append(lang)
        groups = [[lang] for lang in langs for _ in range(N_OWN)]
        groups += [members for members in families.values() if len(members) > 1 for _ in range(N_FAMILY)]
        units = rng.choice(n_units, size=len(groups), replace=False)
        for unit, members in zip(units, groups):
            low = rng.uniform(0.2, 0.4)
            for lang in langs:
                rates[lang][unit] = 0.9 if lang in members else low
            for lang in members:
                truth[lang].add((int(unit) // N_NEURONS, int(unit) % N_NEURONS))
    tables = {}
    n_sent = n_tokens // 30
    for xx in langs[1:]:
        for src, tgt in ((xx, "en"), ("en", xx)):
            p = np.broadcast_to(rates[src], (n_sent, n_units))
            tables[f"{src}-{tgt}"] = sentence_table(rng, p, np.full(n_sent, 30), N_LAYERS, mu=p,
                                                    meta=pair_meta(f"{src}-{tgt}"))
    return tables, truth


def cells(scores: pd.DataFrame) -> set:
    return set(zip(scores["group"], scores["layer"].astype(int), scores["neuron"].astype(int)))


def truth_cells(truth: dict) -> set:
    return {(g, layer, neuron) for g, units in truth.items() for layer, neuron in units}


def precision_recall(found: set, expected: set) -> tuple[float, float]:
    hit = len(found & expected)
    return (hit / len(found) if found else 1.0), hit / len(expected)


@pytest.fixture(scope="module")
def planted():
    tables, truth = synthetic(seed=0)
    stacked = scoring.stack_counts(tables, "gate_active")
    pooled = scoring.pool_by_language(stacked, scoring.counted_languages(tables))
    return tables, truth, stacked, pooled


@pytest.fixture(scope="module")
def null():
    tables, _ = synthetic(seed=1, planted=False)
    stacked = scoring.stack_counts(tables, "gate_active")
    return tables, stacked, scoring.pool_by_language(stacked, scoring.counted_languages(tables))


def assert_score_table(df: pd.DataFrame):
    assert list(df.columns) == list(SCORE_SCHEMA.names)
    assert df["layer"].dtype == np.int32 and df["neuron"].dtype == np.int32
    assert df["score"].dtype == np.float64
    keys = list(zip(df["group"], df["layer"], df["neuron"]))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


# ---------------------------------------------------------------------------- stacking, pooling


def test_stack_and_pool(planted):
    tables, _, stacked, pooled = planted
    n_units = N_LAYERS * N_NEURONS
    assert list(stacked.columns) == [*scoring.STACK_COLUMNS, "rate_sum", "rate_sumsq", "n_sentences", "act_sum",
                                     "act_sumsq"]
    assert len(stacked) == len(tables) * n_units
    assert list(stacked["group"].cat.categories) == list(tables)
    de_en = stacked[stacked["group"] == "de-en"]
    assert (de_en["count"].to_numpy() == tables["de-en"][0]["gate_active"].to_numpy()).all()
    assert set(pooled["group"]) == set(LANGS)
    # English pools the eight en-xx pairs: counts and tokens add up.
    en = pooled[pooled["group"] == "en"]
    expected = sum(tables[f"en-{xx}"][0]["gate_active"].to_numpy() for xx in LANGS[1:])
    assert (en["count"].to_numpy() == expected).all()
    assert (en["n_tokens"] == 8 * 3000).all()
    de = pooled[pooled["group"] == "de"]
    assert (de["count"].to_numpy() == tables["de-en"][0]["gate_active"].to_numpy()).all()
    # the per-sentence and activation sums pool too, with the sentences
    expected = sum(tables[f"en-{xx}"][0]["gate_active_rate_sumsq"].to_numpy() for xx in LANGS[1:])
    np.testing.assert_allclose(en["rate_sumsq"].to_numpy(), expected, rtol=1e-12)
    assert (en["n_sentences"] == 8 * 100).all() and (de["n_sentences"] == 100).all()
    np.testing.assert_array_equal(de["act_sum"].to_numpy(), tables["de-en"][0]["act_sum"].to_numpy())
    # a column only some tables have is left out
    bare = {pair: (df[["layer", "neuron", "active"]], meta) for pair, (df, meta) in tables.items()}
    assert list(scoring.stack_counts(bare, "active").columns) == list(scoring.STACK_COLUMNS)


def test_stack_sorts_rows_and_checks_them():
    tables, _ = synthetic(seed=2, planted=False, langs=("en", "de"))
    df, meta = tables["de-en"]
    shuffled = df.sample(frac=1.0, random_state=0)
    stacked = scoring.stack_counts({"de-en": (shuffled, meta), "en-de": tables["en-de"]}, "active")
    assert (stacked[stacked["group"] == "de-en"]["count"].to_numpy() == df["active"].to_numpy()).all()
    with pytest.raises(NeurospecError, match="disagree on their layer x neuron rows"):
        scoring.stack_counts({"de-en": (df.iloc[:-1], meta), "en-de": tables["en-de"]}, "active")
    other = df.copy()
    other.loc[0, "neuron"] = 9999
    with pytest.raises(NeurospecError, match="disagree"):
        scoring.stack_counts({"de-en": (df, meta), "x": (other, meta)}, "active")
    with pytest.raises(NeurospecError, match="unknown count column 'bogus'"):
        scoring.stack_counts(tables, "bogus")
    with pytest.raises(NeurospecError, match="counted no tokens"):
        scoring.stack_counts({"de-en": (df, {**meta, "n_tokens": 0})}, "active")
    with pytest.raises(NeurospecError, match="outside"):
        scoring.stack_counts({"de-en": (df, {**meta, "n_tokens": 10})}, "active")
    with pytest.raises(NeurospecError, match="no count tables"):
        scoring.stack_counts({}, "active")
    stacked = scoring.stack_counts(tables, "active")
    with pytest.raises(NeurospecError, match="no counted language for group"):
        scoring.pool_by_language(stacked, {"de-en": "de"})


def test_dense_accepts_any_row_order_and_rejects_ragged(planted):
    _, _, stacked, _ = planted
    shuffled = stacked.sample(frac=1.0, random_state=1)
    shuffled["group"] = shuffled["group"].astype(str)
    a = scoring.frequency(stacked, 10)
    b = scoring.frequency(shuffled, 10)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(NeurospecError, match="layer x neuron"):
        scoring.frequency(stacked.iloc[1:], 10)


# ---------------------------------------------------------------------------- frequency


def brute_force_frequency(stacked: pd.DataFrame, k: float) -> set:
    out = set()
    for (group, layer), part in stacked.groupby(["group", "layer"], observed=True):
        rows = sorted(zip(part["count"].tolist(), part["neuron"].tolist()), key=lambda t: (-t[0], t[1]))
        total = sum(c for c, _ in rows)
        mass = 0
        for count, neuron in rows:
            if mass * 100 >= k * total:  # the previous neuron reached k percent
                break
            out.add((str(group), int(layer), int(neuron)))
            mass += count
    return out


@pytest.mark.parametrize("k", [0.5, 10, 37.5, 100])
def test_frequency_matches_brute_force_with_ties(k):
    rng = np.random.default_rng(3)
    layer = np.repeat(np.arange(3), 40).astype(np.int32)
    neuron = np.tile(np.arange(40), 3).astype(np.int32)
    tables = {}
    for g in ("a", "b"):
        counts = rng.integers(0, 4, len(layer))  # many ties
        counts[layer == 2] = 0 if g == "a" else counts[layer == 2]  # a layer with no activation
        tables[g] = (pd.DataFrame({"layer": layer, "neuron": neuron, "active": counts}), {"n_tokens": 10})
    stacked = scoring.stack_counts(tables, "active")
    scores = scoring.frequency(stacked, k)
    assert_score_table(scores)
    assert cells(scores) == brute_force_frequency(stacked, k)
    assert not (scores["group"].eq("a") & scores["layer"].eq(2)).any()
    # score: the neuron's share of its layer's mass
    part = stacked[(stacked["group"] == "b") & (stacked["layer"] == 1)]
    row = scores[(scores["group"] == "b") & (scores["layer"] == 1)].iloc[0]
    assert row["score"] == pytest.approx(
        part.set_index("neuron").loc[row["neuron"], "count"] / part["count"].sum())
    # the selection reaches k percent, and would not without its last neuron
    for (g, lay), sel in scores.groupby(["group", "layer"]):
        total = stacked[(stacked["group"] == g) & (stacked["layer"] == lay)]["count"].sum()
        assert sel["score"].sum() * total >= k / 100 * total - 1e-9
        assert (sel["score"].sum() - sel["score"].min()) * 100 < k


def test_frequency_recovers_planted_neurons(planted):
    tables, truth, stacked, _ = planted
    scores = scoring.frequency(stacked, 10)
    assert_score_table(scores)
    assert cells(scores) == brute_force_frequency(stacked, 10)
    for pair in tables:
        lang = tables[pair][1]["counted_lang"]
        sel = {(lay, n) for g, lay, n in cells(scores) if g == pair}
        assert truth[lang] <= sel, pair  # recall 1: a 0.9 neuron is among the top of its layer
        others = set().union(*(truth[x] for x in LANGS if x != lang)) - truth[lang]
        assert not (sel & others), pair  # a neuron planted for another language is at 0.2-0.4 here
    # the selection holds about k percent of each layer's mass, with few neurons
    per = scores.groupby(["group", "layer"])["score"].sum()
    assert ((per >= 0.10) & (per < 0.11)).all()


def test_frequency_bad_k(planted):
    _, _, stacked, _ = planted
    for k in (0, -1, 100.5, float("nan"), True, "10"):
        with pytest.raises(NeurospecError, match=r"scoring\.k"):
            scoring.frequency(stacked, k)


# ---------------------------------------------------------------------------- LAPE


def test_lape_recovers_planted_neurons(planted):
    _, truth, _, pooled = planted
    n_planted = len(set().union(*truth.values()))
    top_rate = n_planted / (N_LAYERS * N_NEURONS)  # the budget of the planted neurons
    scores = scoring.lape(pooled, filter_rate=0.95, top_rate=top_rate, activation_bar_ratio=0.95)
    assert_score_table(scores)
    precision, recall = precision_recall(cells(scores), truth_cells(truth))
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    # a neuron assigned to several languages (family-shared) has one score
    assert (scores.groupby(["layer", "neuron"])["score"].nunique() == 1).all()
    # default rate: 1% of 2048 = 20 neurons, all planted ones (precision), the lowest entropy first
    default = scoring.lape(pooled)
    assert cells(default) <= truth_cells(truth) and len(default) > 0


def test_lape_on_null_tables_ranks_but_scores_near_zero(planted, null):
    _, _, pooled = null
    scores = scoring.lape(pooled)
    # LAPE ranks, it does not test: it keeps ~1% of neurons even without structure, with tiny scores
    assert len(scores) > 0 and scores["score"].max() < 0.01
    _, truth, _, planted_pooled = planted
    found = scoring.lape(planted_pooled, top_rate=0.05)
    is_planted = [c in truth_cells(truth) for c in zip(found["group"], found["layer"], found["neuron"])]
    assert sum(is_planted) == len(truth_cells(truth))
    assert found["score"][is_planted].min() > 2 * scores["score"].max()


def test_lape_reference_semantics():
    """Thresholds are torch.kthvalue(round(n x rate)) of all probabilities, compared with '>'."""
    layer = np.zeros(10, dtype=np.int32)
    neuron = np.arange(10, dtype=np.int32)
    # p for a: 0.0 .. 0.9; b: all 0.1; the 95% quantile of 20 values is the 19th smallest = 0.8
    a = pd.DataFrame({"layer": layer, "neuron": neuron, "active": np.arange(10)})
    b = pd.DataFrame({"layer": layer, "neuron": neuron, "active": np.ones(10, dtype=int)})
    stacked = scoring.stack_counts({"a": (a, {"n_tokens": 10}), "b": (b, {"n_tokens": 10})}, "active")
    scores = scoring.lape(stacked, filter_rate=0.95, top_rate=0.5, activation_bar_ratio=0.95)
    # only neuron 9 has p > 0.8: the filter leaves one neuron, although top_rate allows five
    assert cells(scores) == {("a", 0, 9)}
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert scores["score"].iloc[0] == pytest.approx(1 - h / math.log(2))
    for kwargs in ({"filter_rate": 1.5}, {"top_rate": 0}, {"activation_bar_ratio": -0.1}):
        with pytest.raises(NeurospecError, match=r"scoring\.lape\."):
            scoring.lape(stacked, **kwargs)
    with pytest.raises(NeurospecError, match="at least two languages"):
        scoring.lape(stacked[stacked["group"] == "a"])


# ---------------------------------------------------------------------------- contrast


def test_benjamini_hochberg_matches_q_values():
    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(size=300), rng.uniform(0, 1e-3, size=40), [0.0, 0.0]])
    m = len(p)
    order = np.argsort(p)
    q = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):  # brute force: q_(i) = min_{j >= i} p_(j) m / j
        running = min(running, p[order[rank - 1]] * m / rank)
        q[order[rank - 1]] = running
    for fdr in (0.001, 0.01, 0.05, 0.2, 1.0):
        assert (scoring.benjamini_hochberg(p, fdr) == (q < fdr)).all()
    assert scoring.benjamini_hochberg(p.reshape(2, -1), 0.05).shape == (2, m // 2)


def _hand_benjamini_hochberg(pvalues, fdr):
    """The package's hand-written BH before it called scipy (reference): sort the p-values under fdr,
    keep up to the largest rank i with p_(i) m < fdr i."""
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.reshape(-1)
    m = flat.size
    out = np.zeros(m, dtype=bool)
    cand = np.flatnonzero(flat < fdr)
    if cand.size:
        ps = np.sort(flat[cand])
        ok = np.flatnonzero(ps * m < fdr * np.arange(1, ps.size + 1))
        if ok.size:
            out[cand] = flat[cand] <= ps[ok[-1]]
    return out.reshape(p.shape)


def test_benjamini_hochberg_is_scipys_and_the_hand_versions():
    """scipy.stats.false_discovery_control on the p-values under fdr (scaled to all m tests) selects what
    it selects on all the p-values, and what the hand-written version selected: random p-values with
    planted signal, ties, NaN, and one case of 2 million tests."""
    from scipy import stats

    rng = np.random.default_rng(11)
    cases = []
    for trial in range(60):
        m = int(rng.integers(5, 3000))
        p = np.concatenate([rng.uniform(size=m), rng.uniform(0, 10.0 ** -rng.integers(2, 6),
                                                             size=int(rng.integers(0, 300)))])
        if trial % 3 == 0:
            p = np.round(p, 3)  # ties, and exact zeros
        if trial % 5 == 0:
            p[rng.integers(0, len(p), 3)] = np.nan
        cases.append(p)
    big = rng.uniform(size=2_000_000)
    big[:3000] = rng.uniform(0, 1e-5, 3000)
    cases.append(big)
    selected = 0
    for p in cases:
        finite = np.where(np.isnan(p), 1.0, p)  # scipy propagates NaN; the package counts it as p = 1
        full = stats.false_discovery_control(finite)
        for fdr in (0.001, 0.01, 0.05, 0.2, 1.0):
            got = scoring.benjamini_hochberg(p, fdr)
            assert (got == (full < fdr)).all()
            assert (got == _hand_benjamini_hochberg(p, fdr)).all()
            selected += int(got.sum())
    assert selected > 10_000  # the cases select something: the comparison is not between empty masks
    assert scoring.benjamini_hochberg(big, 0.01)[:3000].mean() > 0.9  # the planted small p-values


def _hand_welch_pvalue(a, a2, n1, b, b2, n2, alternative):
    """The package's hand-written Welch test from sums before it called scipy (reference)."""
    from scipy import special

    m1, m2 = a / n1, b / n2
    v1 = np.maximum(a2 - n1 * m1 * m1, 0.0) / (n1 - 1)
    v2 = np.maximum(b2 - n2 * m2 * m2, 0.0) / (n2 - 1)
    e1, e2 = v1 / n1, v2 / n2
    se = np.sqrt(e1 + e2)
    diff = m1 - m2
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(se > 0, diff / se, np.sign(diff) * np.inf)
        df = np.where(se > 0, (e1 + e2) ** 2 / (e1 * e1 / (n1 - 1) + e2 * e2 / (n2 - 1)), n1 + n2 - 2)
    t = np.where(np.isnan(t), 0.0, t)
    return special.stdtr(df, -t) if alternative == "greater" else 2.0 * special.stdtr(df, -np.abs(t))


@pytest.mark.parametrize("alternative", ["greater", "two-sided"])
def test_welch_pvalue_is_the_hand_versions(alternative):
    """scipy.stats.ttest_ind_from_stats(equal_var=False) gives the hand version's p-values (to 1e-11:
    scipy takes standard deviations and squares them again), and the same exact values where both
    variances are 0 (t = +-inf: p 0 or 1; equal means: t = 0)."""
    rng = np.random.default_rng(3)
    n_units, n_groups = 20000, 6
    n1 = rng.integers(2, 80, n_groups).astype(np.float64)
    n2 = n1.sum() - n1
    rates1, rates2 = rng.uniform(0, 1, (n_units, n_groups)), rng.uniform(0, 1, (n_units, n_groups))
    a, b = rates1 * n1, rates2 * n2
    a2 = a * rates1 + rng.uniform(0, 0.2, (n_units, n_groups)) * n1  # sum of squares >= n m^2
    b2 = b * rates2 + rng.uniform(0, 0.2, (n_units, n_groups)) * n2
    # no variance in either: 30 units whose group mean is above the rest's, 30 equal, 30 below
    mean1 = np.repeat([0.7, 0.7, 0.2], 30)[:, None]
    mean2 = np.repeat([0.2, 0.7, 0.7], 30)[:, None]
    a[:90], b[:90] = mean1 * n1, mean2 * n2
    a2[:90], b2[:90] = a[:90] * mean1, b[:90] * mean2
    got = scoring.welch_pvalue(a, a2, n1, b, b2, n2, alternative)
    want = _hand_welch_pvalue(a, a2, n1, b, b2, n2, alternative)
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-300)
    assert (got[:90] == want[:90]).all()
    exact = {"greater": (0.0, 0.5, 1.0), "two-sided": (0.0, 1.0, 0.0)}[alternative]
    assert [set(got[i:i + 30].ravel().tolist()) for i in (0, 30, 60)] == [{x} for x in exact]
    # the sentence-level contrast uses it: planted tables give the hand version's p-values
    tables, _ = synthetic(seed=2)
    pooled = scoring.pool_by_language(scoring.stack_counts(tables, "gate_active"),
                                      scoring.counted_languages(tables))
    d, _, p = scoring.sentence_contrast_statistics(pooled, alternative, rest="pooled")
    rate_sum, rate_sumsq = d.extra["rate_sum"].T, d.extra["rate_sumsq"].T  # (units, groups)
    n = d.n_sentences.astype(np.float64)
    want = _hand_welch_pvalue(rate_sum, rate_sumsq, n, rate_sum.sum(axis=1, keepdims=True) - rate_sum,
                              rate_sumsq.sum(axis=1, keepdims=True) - rate_sumsq, n.sum() - n, alternative)
    np.testing.assert_allclose(p, want, rtol=1e-11, atol=1e-300)


def test_contrast_statistics_by_hand():
    layer = np.zeros(1, dtype=np.int32)
    neuron = np.zeros(1, dtype=np.int32)
    t = {"a": (pd.DataFrame({"layer": layer, "neuron": neuron, "active": [30]}), {"n_tokens": 100}),
         "b": (pd.DataFrame({"layer": layer, "neuron": neuron, "active": [10]}), {"n_tokens": 50}),
         "c": (pd.DataFrame({"layer": layer, "neuron": neuron, "active": [10]}), {"n_tokens": 150})}
    stacked = scoring.stack_counts(t, "active")
    d, log_odds, p = scoring.contrast_statistics(stacked, "two-sided", rest="pooled")
    _, _, p_greater = scoring.contrast_statistics(stacked, rest="pooled")
    # a: 30/100 against 20/200 (the rest pooled; the balanced rest: tests/unit/score/test_rest.py)
    assert log_odds[0, 0] == pytest.approx(math.log(30.5 / 70.5) - math.log(20.5 / 180.5))
    pooled = 50 / 300
    z = (0.3 - 0.1) / math.sqrt(pooled * (1 - pooled) * (1 / 100 + 1 / 200))
    assert p[0, 0] == pytest.approx(math.erfc(z / math.sqrt(2)))
    assert p_greater[0, 0] == pytest.approx(p[0, 0] / 2)  # z > 0
    assert p_greater[0, 2] > 0.5  # c fires less often than the rest (10/150 against 40/150)
    assert d.groups == ["a", "b", "c"]


def test_contrast_recovers_planted_neurons(planted):
    _, truth, _, pooled = planted
    scores = scoring.contrast(pooled)
    assert_score_table(scores)
    precision, recall = precision_recall(cells(scores), truth_cells(truth))
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert (scores["score"] > 1.0).all()
    # English pools 8 x more tokens: its planted neurons are found too
    assert {(lay, n) for g, lay, n in cells(scores) if g == "en"} == truth["en"]


def test_contrast_controls_false_discoveries(null):
    _, _, pooled = null
    assert scoring.contrast(pooled).empty
    # without the effect-size threshold the FDR still bounds discoveries under the global null
    loose = scoring.contrast(pooled, fdr=0.05, min_log_odds=0.0)
    assert len(loose) <= 3
    for kwargs in ({"fdr": 0}, {"fdr": 1.5}, {"min_log_odds": -1}):
        with pytest.raises(NeurospecError, match=r"scoring\.contrast\."):
            scoring.contrast(pooled, **kwargs)


def test_contrast_fdr_on_mixed_tables(planted):
    _, truth, _, pooled = planted
    # one-sided tests: the strong *negative* effects of planted neurons in their other languages
    # do not loosen the BH threshold for the positive ones we report
    scores = scoring.contrast(pooled, fdr=0.05, min_log_odds=0.0)
    precision, recall = precision_recall(cells(scores), truth_cells(truth))
    assert recall == 1.0 and precision >= 0.9, precision
    two_sided = scoring.contrast(pooled, fdr=0.05, min_log_odds=0.0, alternative="two-sided")
    assert len(two_sided) >= len(scores)


# ---------------------------------------------------------------------------- IoU


def test_iou_by_hand():
    sel = pd.DataFrame({
        "group": ["a", "a", "a", "b", "b", "c", "a"],
        "layer": [0, 0, 0, 0, 0, 0, 1],
        "neuron": [1, 2, 3, 2, 3, 9, 5],
        "score": 1.0,
    })
    out = scoring.iou(sel, groups=["a", "b", "c", "d"], layers=[0, 1])
    assert list(out.columns) == list(scoring.IOU_COLUMNS)
    assert len(out) == 2 * 10  # 4 groups: 10 unordered pairs with a == b, per layer
    row = out.set_index(["layer", "group_a", "group_b"])
    assert row.loc[(0, "a", "b"), "iou"] == pytest.approx(2 / 3)
    assert row.loc[(0, "a", "b"), ["n_a", "n_b", "intersection"]].tolist() == [3, 2, 2]
    assert row.loc[(0, "a", "c"), "iou"] == 0.0
    assert row.loc[(0, "a", "a"), "iou"] == 1.0
    assert row.loc[(0, "c", "d"), "iou"] == 0.0
    assert math.isnan(row.loc[(0, "d", "d"), "iou"])  # both empty
    assert row.loc[(1, "a", "a"), "iou"] == 1.0 and row.loc[(1, "a", "b"), "iou"] == 0.0
    m = scoring.iou_matrix(out, ["a", "b", "c", "d"], layer=0)
    assert m[0, 1] == m[1, 0] == pytest.approx(2 / 3) and m[2, 2] == 1.0
    pooled = scoring.iou_matrix(out, ["a", "b"])
    assert pooled[0, 1] == pytest.approx(2 / 4)  # (layer 0: 2 of 3) + (layer 1: 0 of 1)
    default = scoring.iou(sel)
    assert sorted(set(default["group_a"])) == ["a", "b", "c"]
    with pytest.raises(NeurospecError, match="not among the groups"):
        scoring.iou(sel, groups=["a", "b"])


# ---------------------------------------------------------------------------- files


def test_run_scoring_writes_tables(planted, tmp_path):
    tables, truth, _, _ = planted
    (tmp_path / "activations").mkdir()
    paths = write_tables(tables, tmp_path / "activations")
    scoring.run_scoring(paths, tmp_path / "contrast.parquet", tmp_path / "contrast_iou.parquet",
                        "contrast", "gate_active", {"fdr": 0.01, "min_log_odds": 1.0})
    scores, meta = scoring.read_scores(tmp_path / "contrast.parquet")
    assert meta["method"] == "contrast" and meta["group_kind"] == "language"
    assert meta["groups"] == sorted(LANGS) and meta["layers"] == list(range(N_LAYERS))
    assert precision_recall(cells(scores), truth_cells(truth))[1] >= 0.9
    overlap, _ = scoring.read_iou(tmp_path / "contrast_iou.parquet")
    assert len(overlap) == N_LAYERS * len(LANGS) * (len(LANGS) + 1) // 2
    scoring.run_scoring(paths, tmp_path / "f.parquet", tmp_path / "f_iou.parquet", "frequency", "gate_active",
                        {"k": 10})
    assert set(read_table(tmp_path / "f.parquet")["group"]) == set(tables)
    with pytest.raises(NeurospecError, match="unknown scoring method"):
        scoring.run_scoring(paths, tmp_path / "x.parquet", tmp_path / "y.parquet", "nope", "active", {})
    with pytest.raises(NeurospecError, match="bad parameters"):
        scoring.run_scoring(paths, tmp_path / "x.parquet", tmp_path / "y.parquet", "lape", "active", {"k": 1})
    df, meta = tables["de-en"]
    write_counts(df, tmp_path / "bad.parquet", metadata={"n_tokens": 3000, "pair": "de-en"})
    with pytest.raises(NeurospecError, match="counted_lang"):
        scoring.run_scoring([tmp_path / "bad.parquet", paths[2]], tmp_path / "x.parquet",
                            tmp_path / "y.parquet", "lape", "active", {})


# ---------------------------------------------------------------------------- sentence-level contrast


def test_sentence_contrast_statistics_by_hand():
    """Welch's t on the explicit per-sentence rates, against scipy.stats.ttest_ind(equal_var=False)."""
    from scipy import stats

    rng = np.random.default_rng(7)
    rates = {"a": rng.uniform(0.2, 0.9, 12), "b": rng.uniform(0.1, 0.6, 9), "c": rng.uniform(0.1, 0.5, 15)}
    layer, neuron = np.zeros(1, dtype=np.int32), np.zeros(1, dtype=np.int32)
    tables = {g: (pd.DataFrame({"layer": layer, "neuron": neuron, "active": [len(r)],
                                "active_rate_sum": [r.sum()], "active_rate_sumsq": [(r * r).sum()]}),
                  {"n_tokens": 100, "n_rate_sentences": len(r)}) for g, r in rates.items()}
    stacked = scoring.stack_counts(tables, "active")
    d, log_odds, p = scoring.sentence_contrast_statistics(stacked, rest="pooled")
    _, _, p_two = scoring.sentence_contrast_statistics(stacked, "two-sided", rest="pooled")
    for gi, g in enumerate(d.groups):
        rest = np.concatenate([r for h, r in rates.items() if h != g])
        assert p[0, gi] == pytest.approx(stats.ttest_ind(rates[g], rest, equal_var=False,
                                                         alternative="greater").pvalue, rel=1e-9)
        assert p_two[0, gi] == pytest.approx(stats.ttest_ind(rates[g], rest, equal_var=False).pvalue, rel=1e-9)
        a, n1, b, n2 = rates[g].sum(), len(rates[g]), rest.sum(), len(rest)
        assert log_odds[0, gi] == pytest.approx(math.log((a + .5) / (n1 - a + .5)) - math.log((b + .5) / (n2 - b + .5)))
    # no variance anywhere: the difference of the means is exact
    const = {g: (pd.DataFrame({"layer": layer, "neuron": neuron, "active": [5], "active_rate_sum": [v * 5],
                               "active_rate_sumsq": [v * v * 5]}), {"n_tokens": 50, "n_rate_sentences": 5})
             for g, v in (("a", 1.0), ("b", 0.0))}
    _, _, p = scoring.sentence_contrast_statistics(scoring.stack_counts(const, "active"))
    assert p[0].tolist() == [0.0, 1.0]
    # too few sentences, and count tables without per-sentence statistics: one clear line each
    few = dict(tables)
    few["a"] = (tables["a"][0], {"n_tokens": 100, "n_rate_sentences": 1})
    with pytest.raises(NeurospecError, match="at least two sentences in a group.*'a' has 1.*unit: token"):
        scoring.sentence_contrast_statistics(scoring.stack_counts(few, "active"), rest="pooled")
    bare = {g: (df[["layer", "neuron", "active"]], m) for g, (df, m) in tables.items()}
    with pytest.raises(NeurospecError, match="sentence-level contrast.*needs rate_sum, rate_sumsq"):
        scoring.contrast(scoring.stack_counts(bare, "active"))
    with pytest.raises(NeurospecError, match=r"scoring\.contrast\.unit 'word'"):
        scoring.contrast(stacked, unit="word")


def correlated_null(seed: int, n_sent: int = 60, length: int = 40, n_langs: int = 6, n_units: int = 600):
    """No language differs from any other, but a neuron's firing rate varies from sentence to sentence
    (Beta(2, 2) around the neuron's base rate): tokens of one sentence are correlated."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.2, 0.7, n_units)
    tables = {}
    for lang in ("en", "de", "fr", "ru", "hi", "ar")[:n_langs]:
        p = np.clip(base + 0.6 * (rng.beta(2, 2, size=(n_sent, n_units)) - 0.5), 0, 1)  # sentence effects
        tables[f"{lang}-x"] = sentence_table(rng, p, np.full(n_sent, length), 2, meta={"counted_lang": lang})
    stacked = scoring.stack_counts(tables, "gate_active")
    return scoring.pool_by_language(stacked, scoring.counted_languages(tables))


def test_sentence_level_keeps_its_fdr_where_the_token_level_does_not():
    """Correlated tokens, no real difference: every discovery is false.  BH at 5% on valid p-values
    makes any discovery rare (P(V > 0) <= 0.05); the token-level test, treating 40 correlated tokens
    of a sentence as 40 independent draws, finds hundreds."""
    sentence_hits = token_hits = 0
    n_tests = 0
    for seed in range(3):
        pooled = correlated_null(seed)
        n_tests += len(pooled)
        sentence_hits += len(scoring.contrast(pooled, fdr=0.05, min_log_odds=0.0, unit="sentence"))
        token_hits += len(scoring.contrast(pooled, fdr=0.05, min_log_odds=0.0, unit="token"))
    assert sentence_hits <= 2, sentence_hits
    assert token_hits > 0.02 * n_tests, (token_hits, n_tests)
    # the sentence-level p-values are calibrated: about uniform under the null
    _, _, p = scoring.sentence_contrast_statistics(correlated_null(5))
    assert 0.03 < (p < 0.05).mean() < 0.07 and 0.45 < (p < 0.5).mean() < 0.55


def test_sentence_contrast_recovers_planted_neurons(planted):
    _, truth, _, pooled = planted
    scores = scoring.contrast(pooled, unit="sentence")
    assert_score_table(scores)
    precision, recall = precision_recall(cells(scores), truth_cells(truth))
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    # with independent tokens both units find the same neurons
    token = scoring.contrast(pooled, unit="token")
    assert len(cells(scores) ^ cells(token)) <= 0.1 * len(cells(token))


# ---------------------------------------------------------------------------- diffmeans


def test_diffmeans_recovers_planted_neurons(planted):
    _, truth, _, pooled = planted
    every_planted = set().union(*truth.values())
    k = max(sum(1 for u in every_planted if u[0] == layer) for layer in range(N_LAYERS))
    scores = scoring.diffmeans(pooled, k=k)
    assert_score_table(scores)
    assert (scores.groupby(["group", "layer"]).size() == k).all()
    assert len(scores) == len(LANGS) * N_LAYERS * k
    for lang, units in truth.items():
        mine = scores[scores["group"] == lang]
        sel = lambda m: {(int(r.layer), int(r.neuron)) for r in mine[m].itertuples()}  # noqa: E731
        # the language's planted neurons (own and family) are selected, with a positive difference ...
        assert units <= sel(mine["score"] > 0), lang
        # ... and the clear positive differences are exactly those; the clear negative ones are neurons
        # planted for other languages (they fire at 0.9 there, at 0.2-0.4 here): ranking by |diff|
        assert sel(mine["score"] > 0.1) == units, lang
        assert sel(mine["score"] < -0.1) <= every_planted - units, lang
    # score: the signed difference of mean activations, by hand for one cell (the rest balanced:
    # the mean of the other languages' means)
    d = scoring.dense(pooled)
    row = scores.iloc[0]
    g, u = d.groups.index(row["group"]), int(np.flatnonzero((d.layer == row["layer"]) & (d.neuron == row["neuron"]))[0])
    act, n = d.extra["act_sum"][:, u], d.n_tokens
    mean = act / n
    assert row["score"] == pytest.approx(mean[g] - (mean.sum() - mean[g]) / (len(n) - 1))


def test_diffmeans_parameters_and_inputs(planted):
    _, _, _, pooled = planted
    for k in (0, -2, 2.5, True, "3"):
        with pytest.raises(NeurospecError, match=r"scoring\.diffmeans\.k must be a positive integer"):
            scoring.diffmeans(pooled, k=k)
    with pytest.raises(NeurospecError, match=r"scoring\.diffmeans\.k = 513 exceeds the 512 neurons"):
        scoring.diffmeans(pooled, k=513)
    with pytest.raises(NeurospecError, match="diffmeans needs act_sum"):
        scoring.diffmeans(pooled.drop(columns=["act_sum", "act_sumsq"]), k=2)
    assert scoring.method_columns("diffmeans", "active", {"k": 5}) == ["active", "act_sum"]
    assert scoring.method_columns("contrast", "gate_active", {"unit": "token"}) == ["gate_active"]
    assert scoring.method_columns("contrast", "gate_active", {}) == [
        "gate_active", "gate_active_rate_sum", "gate_active_rate_sumsq"]
