"""Spearman's rho and its bootstrap interval on data with known correlation; measures per direction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurospec.evaluate import correlation as C
from neurospec.evaluate import spearman as S
from neurospec.plots import correlation_figure as F
from neurospec.score.scoring import iou


def test_spearman_equals_scipy_with_ties():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=40).astype(float)  # many ties
    y = x + rng.normal(size=40)
    r = S.spearman(x, y, n_boot=200, seed=0)
    ref = stats.spearmanr(x, y)
    assert r["rho"] == pytest.approx(ref.statistic, abs=1e-12) and r["p_value"] == pytest.approx(ref.pvalue)
    assert r["n"] == 40 and r["ci_low"] < r["rho"] < r["ci_high"]


def test_monotone_data_give_rho_one_and_a_degenerate_interval():
    x = np.arange(20.0)
    r = S.spearman(x, np.exp(x / 3), n_boot=500, seed=0)
    assert r["rho"] == pytest.approx(1.0) and r["ci_low"] == pytest.approx(1.0) and r["ci_high"] == pytest.approx(1.0)
    r = S.spearman(x, -x ** 3, n_boot=500, seed=0)
    assert r["rho"] == pytest.approx(-1.0) and r["ci_high"] == pytest.approx(-1.0)


def test_null_interval_covers_zero_and_has_the_expected_width():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=400), rng.normal(size=400)
    r = S.spearman(x, y, n_boot=2000, seed=0)
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
        r = S.spearman(x, y, n_boot=400, seed=sim)
        hits += r["ci_low"] <= true <= r["ci_high"]
    assert 0.88 <= hits / n_sims <= 0.99


def test_undefined_cases_and_seeding():
    assert math.isnan(S.spearman([1, 2], [3, 4])["rho"])  # fewer than 3
    assert math.isnan(S.spearman([1, 1, 1, 1], [1, 2, 3, 4])["rho"])  # constant
    r = S.spearman([1, 2, np.nan, 4], [2, 1, 3, 5], n_boot=200, seed=7)
    assert r["n"] == 3  # the NaN pair is dropped
    again = S.spearman([1, 2, np.nan, 4], [2, 1, 3, 5], n_boot=200, seed=7)
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
        r = S.spearman(x, y, n_boot=n_boot, seed=trial, level=level)
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
    assert set(result["quality"]) == {"chrf"}  # no ablated row: no delta rows
    row = result.set_index(["method", "measure", "scope"]).loc[("frequency", "n_selected", "all")]
    assert row["rho"] == pytest.approx(-1.0) and row["ci_high"] == pytest.approx(-1.0)
    assert row["n"] == 6 and row["n_directions"] == 12 and row["unit"] == "language"  # six languages xx
    per_kind = result.set_index(["method", "measure", "scope"]).loc[("frequency", "n_selected", "xx-en")]
    assert per_kind["n"] == per_kind["n_directions"] == 6 and per_kind["unit"] == "direction"
    tier = measures[measures["measure"] == "tier_size"].set_index("pair")["value"]
    assert tier["en-sv"] == 1_000_000 and tier["hi-en"] == 5_000_000
    drawn = F.plot_correlation(measures, result, tmp_path / "c.png", demo=True)
    x = drawn[("frequency", "n_selected")]
    assert sorted(x["labels"]) == sorted(pairs) and x["rho"] == pytest.approx(-1.0)
    np.testing.assert_allclose(x["y"], 80.0 - x["x"])
    import matplotlib.image as mpimg

    assert mpimg.imread(tmp_path / "c.png")[..., :3].std() > 0.05


# --------------------------------------------------------------------------------------------
# The language as the unit: cluster bootstrap, cluster permutation test, BH, partial rho, delta
# --------------------------------------------------------------------------------------------

LANGS = ["de", "nl", "sv", "is", "fr", "es", "ro", "ru", "cs", "uk", "hi", "bn", "mr", "ar", "he", "ha"]


def _two_directions(x_lang, y_out, y_in, langs):
    """Long arrays over both directions: x the same for a language's two directions (language method)."""
    x = np.r_[x_lang, x_lang]
    y = np.r_[y_out, y_in]
    return x, y, list(langs) * 2, ["en-xx"] * len(langs) + ["xx-en"] * len(langs)


def _hand_rho(x, y):
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return np.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _hand_partial(x, y, langs):
    """Ranks, least squares (numpy lstsq) on [1, tier ordinal, Latin], Pearson of the residuals."""
    from neurospec import languages as L

    z = np.array([[1.0, L.TIERS.index(L.language(c).tier), L.language(c).script == "Latin"] for c in langs])
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    ex = rx - z @ np.linalg.lstsq(z, rx, rcond=None)[0]
    ey = ry - z @ np.linalg.lstsq(z, ry, rcond=None)[0]
    return float(np.corrcoef(ex, ey)[0, 1])


def test_cluster_bootstrap_equals_a_hand_loop_over_languages():
    """An independent loop: the same seed draws languages (sorted codes), each brings both its
    directions, rho (and the partial rho) recomputed with fresh ranks, np.percentile of the defined."""
    rng = np.random.default_rng(11)
    langs = LANGS[:12]
    x_lang = rng.integers(0, 4, size=12).astype(float)  # ties: some resamples are constant
    x, y, cl, kinds = _two_directions(x_lang, x_lang + rng.normal(size=12), x_lang + rng.normal(size=12), langs)
    n_boot, seed, level = 500, 5, 0.9
    r = S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=n_boot, n_perm=0, seed=seed, level=level)
    codes = sorted(set(langs))
    draws = np.random.default_rng(seed).integers(0, len(codes), size=(n_boot, len(codes)))
    boot, pboot = [], []
    for row in draws:
        idx = [i for j in row for i in range(len(x)) if cl[i] == codes[j]]
        boot.append(_hand_rho(x[idx], y[idx]))
        pboot.append(_hand_partial(x[idx], y[idx], [cl[i] for i in idx]))
    boot, pboot = np.array(boot), np.array(pboot)
    lo, hi = np.percentile(boot[np.isfinite(boot)], [5, 95])
    plo, phi = np.percentile(pboot[np.isfinite(pboot)], [5, 95])
    assert r["n"] == 12 and r["n_directions"] == 24 and r["unit"] == "language"
    assert r["rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert r["ci_low"] == pytest.approx(lo, abs=1e-12) and r["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert r["partial_ci_low"] == pytest.approx(plo, abs=1e-12) and r["partial_ci_high"] == pytest.approx(phi, abs=1e-12)
    assert r["n_boot"] == np.isfinite(boot).sum()
    assert r["p_test"] == "" and math.isnan(r["p_value"])  # n_perm 0: no test


def test_unequal_clusters_take_the_loop_and_still_equal_the_hand_loop():
    """One language with a single direction (the other NaN): resamples have varying lengths."""
    rng = np.random.default_rng(12)
    langs = LANGS[:8]
    x_lang = rng.normal(size=8)
    x, y, cl, kinds = _two_directions(x_lang, x_lang + rng.normal(size=8), x_lang + rng.normal(size=8), langs)
    y[3] = np.nan
    r = S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=300, n_perm=200, seed=1, level=0.95, partial=False)
    ok = np.isfinite(y)
    x, y, cl = x[ok], y[ok], [c for c, k in zip(cl, ok) if k]
    codes = sorted(set(cl))
    draws = np.random.default_rng(1).integers(0, len(codes), size=(300, len(codes)))
    boot = np.array([_hand_rho(x[idx], y[idx]) for idx in
                     ([i for j in row for i in range(len(x)) if cl[i] == codes[j]] for row in draws)])
    lo, hi = np.percentile(boot[np.isfinite(boot)], [2.5, 97.5])
    assert r["n"] == 8 and r["n_directions"] == 15
    assert r["ci_low"] == pytest.approx(lo, abs=1e-12) and r["ci_high"] == pytest.approx(hi, abs=1e-12)
    assert r["p_test"] == "cluster permutation" and 0 < r["p_value"] <= 1 and math.isnan(r["partial_rho"])


def test_partial_rho_equals_lstsq_on_ranks():
    rng = np.random.default_rng(13)
    x_lang = rng.normal(size=16)
    x, y, cl, kinds = _two_directions(x_lang, x_lang + rng.normal(size=16), rng.normal(size=16), LANGS)
    r = S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=0, n_perm=0)
    assert r["partial_rho"] == pytest.approx(_hand_partial(x, y, cl), abs=1e-12)
    assert r["partial_rho"] != pytest.approx(r["rho"], abs=1e-3)  # the control changed something
    # planted confounding: x and chrF++ both driven by tier and script, otherwise independent noise
    from neurospec import languages as L

    conf = np.array([L.TIERS.index(L.language(c).tier) + (L.language(c).script == "Latin") for c in LANGS], float)
    rng = np.random.default_rng(0)
    x_lang = conf + 0.3 * rng.normal(size=16)
    x, y, cl, kinds = _two_directions(x_lang, -conf + 0.3 * rng.normal(size=16), -conf + 0.3 * rng.normal(size=16),
                                      LANGS)
    planted = S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=500, n_perm=0, seed=0)
    assert planted["rho"] < -0.8 and planted["ci_high"] < -0.5  # a strong raw association...
    assert abs(planted["partial_rho"]) < 0.3 and planted["partial_ci_low"] < 0 < planted["partial_ci_high"]  # ...gone
    assert planted["partial_rho"] == pytest.approx(_hand_partial(x, y, cl), abs=1e-12)
    # the tier's own row has no partial (it is the confound)
    assert math.isnan(S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=0, n_perm=0, partial=False)["partial_rho"])


def test_resampling_directions_is_narrower_than_resampling_languages_when_they_are_copies():
    """Both directions of a language identical: the direction bootstrap counts each language twice
    and its interval is too narrow; the language bootstrap sees 16 languages.  The naive p-value
    (n = 32) is far smaller than the cluster permutation one."""
    rng = np.random.default_rng(14)
    x_lang = rng.normal(size=16)
    y_lang = 0.4 * x_lang + rng.normal(size=16)
    x, y, cl, kinds = _two_directions(x_lang, y_lang, y_lang, LANGS)
    by_language = S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=2000, n_perm=2000, seed=0)
    by_direction = S.spearman(x, y, n_boot=2000, seed=0)
    assert by_language["rho"] == pytest.approx(by_direction["rho"], abs=1e-12)
    width_lang = by_language["ci_high"] - by_language["ci_low"]
    width_dir = by_direction["ci_high"] - by_direction["ci_low"]
    assert width_dir < 0.85 * width_lang
    assert by_language["n"] == 16 and by_direction["n"] == 32
    # the language-level test of 16 languages is scipy's on the 16 distinct points (up to Monte Carlo)
    exact = stats.spearmanr(x_lang, y_lang).pvalue
    assert by_direction["p_value"] < 0.5 * exact
    assert by_language["p_value"] == pytest.approx(exact, abs=0.03)


def test_cluster_permutation_test_holds_its_level_where_the_direction_test_does_not():
    """Under the null, with a language's two directions identical copies: the cluster permutation
    test rejects about 5% of the time, scipy's test on the directions far more often."""
    rng = np.random.default_rng(15)
    langs = LANGS[:12]
    rej_cluster = rej_naive = 0
    n_sims = 200
    for sim in range(n_sims):
        x_lang, y_lang = rng.normal(size=12), rng.normal(size=12)
        x, y, cl, kinds = _two_directions(x_lang, y_lang, y_lang, langs)
        r = S.cluster_spearman(x, y, cl, kinds=kinds, n_boot=0, n_perm=400, seed=sim, partial=False)
        rej_cluster += r["p_value"] <= 0.05
        rej_naive += stats.spearmanr(x, y).pvalue <= 0.05
    assert rej_cluster / n_sims <= 0.09
    assert rej_naive / n_sims >= 0.12


def _table_with_ablation(tmp_path=None):
    pairs = [f"en-{c}" for c in LANGS[:10]] + [f"{c}-en" for c in LANGS[:10]]
    size = {p: 10 + 3 * i for i, p in enumerate(pairs)}
    rows = [(p, 0, n) for p in pairs for n in range(size[p])]
    scores = pd.DataFrame(rows, columns=["group", "layer", "neuron"]).assign(score=1.0)
    overlap = iou(scores, groups=sorted(pairs), layers=[0])
    base = pd.DataFrame({"pair": pairs, "condition": "base", "method": "", "chrf": [80.0 - size[p] for p in pairs],
                         "delta_chrf": 0.0})
    ablated = pd.DataFrame({"pair": pairs, "condition": "ablated", "method": "frequency", "chrf": np.nan,
                            "delta_chrf": [-0.5 * size[p] for p in pairs]})  # the larger, the more it hurts
    methods = {"frequency": (scores, overlap, {"group_kind": "pair", "groups": sorted(pairs)})}
    return pd.concat([base, ablated], ignore_index=True), methods


def test_delta_rows_come_with_ablated_rows_and_bh_q_values_are_scipys():
    translation, methods = _table_with_ablation()
    measures = C.measure_table(translation, methods)
    result = C.correlations(measures, n_boot=200, n_perm=200, seed=0)
    delta = result[result["quality"] == "delta_chrf"]
    # the method's three measures x three scopes; the tier belongs to no method: no delta row
    assert len(delta) == 9 and set(delta["method"]) == {"frequency"} and len(result) == 9 + 12
    row = delta.set_index(["measure", "scope"]).loc[("n_selected", "all")]
    assert row["rho"] == pytest.approx(-1.0) and row["n"] == 10 and row["n_directions"] == 20
    got = measures[(measures["measure"] == "n_selected")].set_index("pair")
    np.testing.assert_allclose(got["delta_chrf"], -0.5 * got["value"])
    assert measures.loc[measures["measure"] == "tier_size", "delta_chrf"].isna().all()
    # BH over every row with a p-value, against scipy on the table's own p-values
    p = result["p_value"].to_numpy(np.float64)
    ok = np.isfinite(p)
    assert ok.sum() >= 12
    np.testing.assert_allclose(result["q_value"].to_numpy()[ok], stats.false_discovery_control(p[ok]), rtol=0,
                               atol=1e-15)
    assert result["q_value"][~ok].isna().all()
    assert (result["q_value"][ok] >= result["p_value"][ok] - 1e-15).all()
    # without ablated rows there are no delta rows
    base_only = C.correlations(C.measure_table(translation[translation["condition"] == "base"], methods),
                               n_boot=0, n_perm=0)
    assert set(base_only["quality"]) == {"chrf"}


def test_correlate_to_file_writes_the_new_columns_and_names_the_family(tmp_path):
    from neurospec.tables import read_metadata, read_table, write_table

    translation, methods = _table_with_ablation()
    scores, overlap, meta = methods["frequency"]
    write_table(translation, tmp_path / "t.parquet", metadata={})
    write_table(scores, tmp_path / "frequency.parquet", metadata={**meta, "method": "frequency"})
    write_table(overlap, tmp_path / "frequency_iou.parquet", metadata={})
    C.correlate_to_file(tmp_path / "t.parquet", [tmp_path / "frequency.parquet"], [tmp_path / "frequency_iou.parquet"],
                        tmp_path / "c.parquet", tmp_path / "m.parquet", n_boot=100, n_perm=100, seed=3)
    result = read_table(tmp_path / "c.parquet")
    assert tuple(result.columns) == C.CORRELATION_COLUMNS
    family = read_metadata(tmp_path / "c.parquet")["q_value_family"]
    assert f"all {int(result['p_value'].notna().sum())} rows" in family
    with pytest.raises(C.NeurospecError, match="evaluate.correlation.n_perm must be an integer >= 0"):
        C.correlate_to_file(tmp_path / "t.parquet", [tmp_path / "frequency.parquet"],
                            [tmp_path / "frequency_iou.parquet"], tmp_path / "c2.parquet", tmp_path / "m2.parquet",
                            n_perm=-1)
    assert not (tmp_path / "c2.parquet").exists()


def test_a_negative_n_perm_is_one_config_line_through_snakemake(tmp_path):
    from workflow_utils import snakemake, write_config

    cfg = write_config(tmp_path, {"evaluate": {"correlation": {"n_perm": -1}}})
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg, check=False)
    assert proc.returncode != 0
    assert "neurospec: config error: key 'evaluate.correlation.n_perm': -1 is less than the minimum of 0" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
