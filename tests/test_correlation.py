"""Spearman's rho and its bootstrap interval on data with known correlation; measures per direction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurospec import correlation as C
from neurospec.scoring import iou


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = x + rng.normal(size=40)
    r = C.spearman(x, y, n_boot=200, seed=0)
    ref = stats.spearmanr(x, y)
    assert r["rho"] == pytest.approx(ref.statistic, abs=1e-12) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["n"] == 40 and r["ci_low"] < r["rho"] < r["ci_high"]


def test_monotone_data_give_rho_one_and_a_degenerate_interval():
    x = np.arange(20.0)
    r = C.spearman(x, np.exp(x / 3), n_boot=500, seed=0)
    assert r["rho"] == pytest.approx(1.0) and r["ci_low"] == pytest.approx(1.0) and r["ci_high"] == pytest.approx(1.0)
    r = C.spearman(x, -x ** 3, n_boot=500, seed=0)
    assert r["rho"] == pytest.approx(-1.0) and r["ci_high"] == pytest.approx(-1.0)


def test_null_interval_covers_zero_and_has_the_expected_width():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=400), rng.normal(size=400)
    r = C.spearman(x, y, n_boot=2000, seed=0)
    assert r["ci_low"] < 0 < r["ci_high"] and abs(r["rho"]) < 0.15
    # the sampling s.d. of rho under independence is about 1/sqrt(n - 1): the 95% interval spans ~3.9 of them
    assert (r["ci_high"] - r["ci_low"]) == pytest.approx(2 * 1.96 / math.sqrt(399), rel=0.2)


def test_bootstrap_interval_covers_the_true_rho_about_95_percent_of_the_time():
    """Bivariate normal with Pearson r = 0.6: Spearman's population rho is (6 / pi) asin(r / 2)."""
    rng = np.random.default_rng(3)
    true = 6 / math.pi * math.asin(0.3)
    cov = [[1, 0.6], [0.6, 1]]
    hits, n_sims = 0, 300
    for sim in range(n_sims):
        x, y = rng.multivariate_normal([0, 0], cov, size=60).T
        r = C.spearman(x, y, n_boot=400, seed=sim)
        hits += r["ci_low"] <= true <= r["ci_high"]
    assert 0.88 <= hits / n_sims <= 0.99


def test_undefined_cases_and_seeding():
    assert math.isnan(C.spearman([1, 2], [3, 4])["rho"])  # fewer than 3
    assert math.isnan(C.spearman([1, 1, 1, 1], [1, 2, 3, 4])["rho"])  # constant
    r = C.spearman([1, 2, np.nan, 4], [2, 1, 3, 5], n_boot=200, seed=7)
    assert r["n"] == 3  # the NaN pair is dropped
    again = C.spearman([1, 2, np.nan, 4], [2, 1, 3, 5], n_boot=200, seed=7)
    assert r == again
    # resamples of one pair repeated (3 / 27 of them) are constant: skipped and not counted
    assert 0 < 200 - r["n_boot"] < 60


def _hand_bootstrap_interval(x, y, n_boot, seed, level):
    """The package's hand-written bootstrap before it called scipy.stats.bootstrap (reference):
    resample the pairs with np.random.default_rng(seed), rho of each resample, drop the undefined
    ones, np.percentile of the rest."""
    n = len(x)
    idx = np.random.default_rng(seed).integers(0, n, size=(int(n_boot), n))
    xr, yr = stats.rankdata(x[idx], axis=1), stats.rankdata(y[idx], axis=1)
    xr, yr = xr - xr.mean(axis=1, keepdims=True), yr - yr.mean(axis=1, keepdims=True)
    denom = np.sqrt((xr * xr).sum(axis=1) * (yr * yr).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.clip((xr * yr).sum(axis=1) / denom, -1, 1)
    boot = boot[denom > 1e-12 * n]
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return lo, hi, len(boot)


def test_bootstrap_interval_is_the_hand_versions():
    """scipy.stats.bootstrap (paired, percentile) draws the same resamples from the same seed as the
    hand version did and gives its interval to rounding (scipy's quantile interpolates in another
    order: the ends differ by at most a few units in the last place), and counts the same resamples
    when some are undefined (ties: constant resamples are skipped)."""
    rng = np.random.default_rng(8)
    skipped = 0
    for trial in range(60):
        n = int(rng.integers(4, 60))
        x = rng.normal(size=n)
        y = x * rng.uniform(-1, 2) + rng.normal(size=n)
        if trial % 3 == 0:  # few distinct values: some resamples are constant
            x, y = np.round(x / 2), np.round(y / 2)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        level, n_boot = (0.95, 0.9, 0.8)[trial % 3], (200, 999, 1000)[trial % 3]
        r = C.spearman(x, y, n_boot=n_boot, seed=trial, level=level)
        lo, hi, used = _hand_bootstrap_interval(x, y, n_boot, trial, level)
        assert r["n_boot"] == used
        assert r["ci_low"] == pytest.approx(lo, rel=0, abs=1e-14)
        assert r["ci_high"] == pytest.approx(hi, rel=0, abs=1e-14)
        skipped += n_boot - used
    assert skipped > 0  # the undefined-resample path was taken


# --------------------------------------------------------------------------------------------
# Measures
# --------------------------------------------------------------------------------------------

PAIRS = ["en-de", "en-sv", "en-ru", "de-en", "sv-en", "ru-en"]


def _iou_table(selection: dict[str, dict[int, list[int]]]):
    rows = [(g, layer, n) for g, sel in selection.items() for layer, idx in sel.items() for n in idx]
    scores = pd.DataFrame(rows, columns=["group", "layer", "neuron"]).assign(score=1.0)
    return scores, iou(scores, groups=sorted(selection), layers=[0, 1])


def _pooled(a, b):
    sa = {(layer, n) for layer, idx in a.items() for n in idx}
    sb = {(layer, n) for layer, idx in b.items() for n in idx}
    return len(sa & sb) / len(sa | sb)


def test_pair_measures_equal_a_recomputation_from_the_sets():
    sel = {"en-de": {0: [1, 2, 3], 1: [4]}, "en-sv": {0: [1, 2], 1: [4, 5]}, "en-ru": {0: [9], 1: [8, 4]},
           "de-en": {0: [5, 6]}, "sv-en": {0: [6], 1: [7]}, "ru-en": {1: [1, 2, 3]}}
    scores, overlap = _iou_table(sel)
    m = C.specialization_measures(PAIRS, scores, overlap, {"group_kind": "pair", "groups": sorted(sel)})
    value = m.set_index(["pair", "measure"])["value"]
    for pair in PAIRS:
        assert value[(pair, "n_selected")] == sum(len(v) for v in sel[pair].values())
    # en->de: family peer en->sv (Germanic); the rest: en->ru (same direction only)
    assert value[("en-de", "iou_family")] == pytest.approx(_pooled(sel["en-de"], sel["en-sv"]))
    assert value[("en-de", "iou_rest")] == pytest.approx(_pooled(sel["en-de"], sel["en-ru"]))
    assert value[("de-en", "iou_family")] == pytest.approx(_pooled(sel["de-en"], sel["sv-en"]))
    assert math.isnan(value[("ru-en", "iou_family")])  # no other Slavic xx->en direction
    assert value[("ru-en", "iou_rest")] == pytest.approx(
        np.mean([_pooled(sel["ru-en"], sel["de-en"]), _pooled(sel["ru-en"], sel["sv-en"])]))


def test_language_measures_use_the_non_english_language():
    sel = {"en": {0: [1, 2, 3]}, "de": {0: [1, 5]}, "sv": {0: [5], 1: [2]}, "ru": {1: [2, 3, 4]}}
    scores, overlap = _iou_table(sel)
    m = C.specialization_measures(PAIRS, scores, overlap, {"group_kind": "language", "groups": sorted(sel)})
    value = m.set_index(["pair", "measure"])["value"]
    assert value[("en-de", "n_selected")] == value[("de-en", "n_selected")] == 2
    assert value[("sv-en", "iou_family")] == pytest.approx(_pooled(sel["sv"], sel["de"]))
    # English is never a peer
    assert value[("ru-en", "iou_rest")] == pytest.approx(np.mean([_pooled(sel["ru"], sel["de"]),
                                                                  _pooled(sel["ru"], sel["sv"])]))


def test_planted_correlation_is_recovered_and_drawn(tmp_path):
    """chrF++ planted to fall with the number of selected neurons: rho = -1 for that measure."""
    pairs = ["en-de", "en-fr", "en-ru", "en-hi", "en-ar", "de-en", "fr-en", "ru-en", "hi-en", "ar-en",
             "en-sv", "sv-en"]
    size = {p: 10 + 3 * i for i, p in enumerate(pairs)}
    rows = [(p, 0, n) for p in pairs for n in range(size[p])]
    scores = pd.DataFrame(rows, columns=["group", "layer", "neuron"]).assign(score=1.0)
    overlap = iou(scores, groups=sorted(pairs), layers=[0])
    translation = pd.DataFrame({"pair": pairs, "condition": "base", "chrf": [80.0 - size[p] for p in pairs]})
    measures = C.measure_table(translation, {"frequency": (scores, overlap, {"group_kind": "pair",
                                                                             "groups": sorted(pairs)})})
    result = C.correlations(measures, n_boot=300, seed=0)
    row = result.set_index(["method", "measure", "scope"]).loc[("frequency", "n_selected", "all")]
    assert row["rho"] == pytest.approx(-1.0) and row["n"] == 12 and row["ci_high"] == pytest.approx(-1.0)
    per_kind = result.set_index(["method", "measure", "scope"]).loc[("frequency", "n_selected", "xx-en")]
    assert per_kind["n"] == 6
    tier = measures[measures["measure"] == "tier_size"].set_index("pair")["value"]
    assert tier["en-sv"] == 1_000_000 and tier["hi-en"] == 5_000_000
    drawn = C.plot_correlation(measures, result, tmp_path / "c.png", demo=True)
    x = drawn[("frequency", "n_selected")]
    assert sorted(x["labels"]) == sorted(pairs) and x["rho"] == pytest.approx(-1.0)
    np.testing.assert_allclose(x["y"], 80.0 - x["x"])
    import matplotlib.image as mpimg

    assert mpimg.imread(tmp_path / "c.png")[..., :3].std() > 0.05
