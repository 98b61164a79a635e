"""Split-half stability: halves from the count tables, chance IoU, planted against null data, the figure."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from neurospec.score import scoring, stability
from neurospec.errors import NeurospecError
from neurospec.tables import ADDITIVE_COLUMNS, TOTAL_COLUMNS
from synthetic_counts import pair_meta, sentence_table, write_tables
from test_scoring import LANGS, N_LAYERS, N_NEURONS, synthetic

PARAMS = {  # each method's parameters (the planted budget for lape, as in test_scoring)
    "frequency": {"k": 10},
    "frequency_language": {"k": 10},
    "lape": {"filter_rate": 0.95, "top_rate": 48 / (N_LAYERS * N_NEURONS), "activation_bar_ratio": 0.95},
    "contrast": {"fdr": 0.01, "min_log_odds": 1.0, "unit": "sentence"},
    "diffmeans": {"k": 4},
}


def exchangeable_null(seed: int = 3, n_sent: int = 100):
    """Every neuron fires at 0.45 on every token of every language: no neuron is special anywhere."""
    rng = np.random.default_rng(seed)
    tables = {}
    for xx in LANGS[1:]:
        for pair in (f"{xx}-en", f"en-{xx}"):
            p = np.full((n_sent, N_LAYERS * N_NEURONS), 0.45)
            tables[pair] = sentence_table(rng, p, np.full(n_sent, 30), N_LAYERS, mu=0.45, meta=pair_meta(pair))
    return tables


@pytest.fixture(scope="module")
def planted():
    return synthetic(seed=0)


def test_half_tables_split_every_column_and_sum_to_the_whole(planted):
    tables, _ = planted
    even, odd = stability.half_tables(tables, "even"), stability.half_tables(tables, "odd")
    df, meta = tables["de-en"]
    for col in TOTAL_COLUMNS:
        np.testing.assert_array_equal(even["de-en"][0][col], df[f"{col}_even"])
        np.testing.assert_allclose(even["de-en"][0][col] + odd["de-en"][0][col], df[col], rtol=1e-12)
    assert even["de-en"][1]["n_tokens"] == meta["n_tokens_even"] == 50 * 30
    assert odd["de-en"][1]["n_rate_sentences"] == meta["n_rate_sentences"] - meta["n_rate_sentences_even"] == 50
    assert list(even["de-en"][0].columns) == ["layer", "neuron", *TOTAL_COLUMNS]
    with pytest.raises(NeurospecError, match="unknown half"):
        stability.half_tables(tables, "first")
    one = {"de-en": (df, {**meta, "n_tokens_even": meta["n_tokens"]})}  # every token in the even half
    with pytest.raises(NeurospecError, match="the odd half of 'de-en'.*counted no tokens"):
        stability.half_tables(one, "odd")


def test_chance_iou_by_enumeration():
    for n, a, b in ((6, 2, 3), (5, 5, 2), (7, 0, 3), (4, 3, 3)):
        ious = [len(set(x) & set(y)) / len(set(x) | set(y))
                for x in itertools.combinations(range(n), a) for y in itertools.combinations(range(n), b)]
        assert stability.chance_iou(n, a, b) == pytest.approx(np.mean(ious), abs=1e-12), (n, a, b)
    assert math.isnan(stability.chance_iou(10, 0, 0))
    assert stability.chance_iou(10, 10, 10) == pytest.approx(1.0)


def test_strong_planted_neurons_are_stable(planted):
    tables, _ = planted
    for method in ("contrast", "lape"):
        table, meta = stability.stability(tables, method, "gate_active", PARAMS[method])
        assert list(table.columns) == list(stability.STABILITY_COLUMNS)
        assert len(table) == len(LANGS) * N_LAYERS and meta["method"] == method
        s = stability.summarize(table)
        assert s["median_iou"] >= 0.9 and s["median_chance"] < 0.02, (method, s)
        assert s["share_above_chance"] == 1.0, (method, s)
    token, _ = stability.stability(tables, "contrast", "gate_active", {**PARAMS["contrast"], "unit": "token"})
    assert stability.summarize(token)["median_iou"] >= 0.9


@pytest.mark.parametrize("method", ["frequency", "frequency_language", "lape", "diffmeans"])
def test_rankers_on_null_data_are_at_chance(method):
    """No structure: the methods that always select (they rank) agree between halves only by chance."""
    table, _ = stability.stability(exchangeable_null(), method, "gate_active", PARAMS[method])
    s = stability.summarize(table)
    assert s["cells"] >= 0.8 * len(table) > 0  # lape assigns a kept neuron only to languages over its bar
    assert abs(s["median_iou"] - s["median_chance"]) < 0.05 + 0.5 * s["median_chance"], s
    assert s["share_above_chance"] <= 0.2, s


def test_contrast_on_null_data_selects_nothing_in_either_half():
    table, _ = stability.stability(exchangeable_null(), "contrast", "gate_active", PARAMS["contrast"])
    assert (table["n_even"] + table["n_odd"]).sum() <= 1
    assert stability.summarize(table)["cells"] <= 1


def test_files_and_figure(planted, tmp_path):
    tables, _ = planted
    paths = write_tables(tables, tmp_path)
    stability.run_stability(paths, tmp_path / "contrast_stability.parquet", "contrast", "gate_active",
                            PARAMS["contrast"])
    table, meta = stability.read_stability(tmp_path / "contrast_stability.parquet")
    assert meta["groups"] == sorted(LANGS) and meta["params"] == PARAMS["contrast"]
    assert meta["halves"].startswith("even")
    drawn = stability.draw_stability(tmp_path / "contrast_stability.parquet", tmp_path / "s.png")
    data = (tmp_path / "s.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    # the figure's numbers: observed far above chance in every layer, groups in figure order
    per_layer = drawn["per_layer"]
    assert (per_layer["median_iou"] >= 0.9).all() and (per_layer["median_chance"] < 0.05).all()
    assert drawn["groups"][0] == "en" and drawn["iou"].shape == (len(LANGS), N_LAYERS)
    assert drawn["summary"]["share_above_chance"] == 1.0
    # null data: nothing selected anywhere still draws, and says so
    (tmp_path / "null").mkdir()
    null_paths = write_tables(exchangeable_null(), tmp_path / "null")
    stability.run_stability(null_paths, tmp_path / "n.parquet", "contrast", "gate_active", PARAMS["contrast"])
    empty = stability.draw_stability(tmp_path / "n.parquet", tmp_path / "n.png")
    assert empty["summary"]["cells"] <= 1 and (tmp_path / "n.png").stat().st_size > 5000
    with pytest.raises(NeurospecError, match="unknown scoring method"):
        stability.run_stability(paths, tmp_path / "x.parquet", "nope", "gate_active", {})


def test_reads_only_what_the_method_needs(planted, tmp_path):
    """Stability reads the method's columns and their even halves, nothing else."""
    tables, _ = planted
    slim = {}
    for pair, (df, meta) in tables.items():
        keep = ["layer", "neuron", "gate_active", "gate_active_even", "act_sum", "act_sum_even"]
        slim[pair] = (df[keep], meta)
    table, _ = stability.stability(slim, "diffmeans", "gate_active", {"k": 4})
    assert (table["n_even"] == 4).all()
    assert set(ADDITIVE_COLUMNS) > set(scoring.method_columns("diffmeans", "gate_active"))
    pd.testing.assert_frame_equal(table, stability.stability(tables, "diffmeans", "gate_active", {"k": 4})[0])
