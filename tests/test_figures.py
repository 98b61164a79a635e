"""Figures: PNGs are written, and the numbers they draw are the expected ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurospec import figures, scoring
from neurospec.errors import NeurospecError
from neurospec.tables import write_counts
from test_scoring import LANGS, N_LAYERS, synthetic

LAYERS = list(range(N_LAYERS))


@pytest.fixture(scope="module")
def scored():
    """Contrast (language groups) and frequency (pair groups) on the planted tables."""
    tables, truth = synthetic(seed=0)
    stacked = scoring.stack_counts(tables, "gate_active")
    pooled = scoring.pool_by_language(stacked, scoring.counted_languages(tables))
    contrast = scoring.contrast(pooled)
    freq = scoring.frequency(stacked, 10)
    langs, pairs = sorted(LANGS), sorted(tables)
    return {
        "tables": tables, "truth": truth, "langs": langs, "pairs": pairs,
        "contrast": contrast, "contrast_iou": scoring.iou(contrast, groups=langs, layers=LAYERS),
        "frequency": freq, "frequency_iou": scoring.iou(freq, groups=pairs, layers=LAYERS),
    }


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_group_order():
    info = figures.group_table(["ar", "de", "en", "hi", "fr", "sv"])
    assert info["group"].tolist() == ["en", "de", "sv", "fr", "hi", "ar"]  # family, then tier
    assert info["family"].tolist()[:3] == ["Germanic"] * 3
    assert figures._boundaries(info["block"].tolist()) == [1, 3, 4, 5]  # English is its own block
    pairs = figures.group_table(["de-en", "en-fr", "en-de", "fr-en"])
    assert pairs["group"].tolist() == ["en-de", "en-fr", "de-en", "fr-en"]
    assert pairs["label"].tolist()[0] == "en\u2192de"
    assert figures._boundaries(pairs["direction"].tolist()) == [2]
    with pytest.raises(NeurospecError, match="cannot mix"):
        figures.group_table(["de", "en-de"])


@pytest.mark.parametrize("a, b, expected", [
    ([0, 0, 1, 1], [0, 0, 1, 1], 1.0),
    ([0, 0, 1, 1], ["x", "x", "y", "y"], 1.0),  # label names do not matter
    ([0, 0, 1, 1], [0, 0, 1, 2], 4 / 7),
    ([0, 0, 1, 1], [0, 1, 0, 1], -0.5),
    ([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2], 0.24242424242424243),  # scikit-learn's documented example
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0),
    ([0, 1, 2, 3], [0, 1, 2, 3], 1.0),
    ([0, 0, 0, 0], [0, 1, 2, 3], 0.0),
])
def test_adjusted_rand_index(a, b, expected):
    assert figures.adjusted_rand_index(a, b) == pytest.approx(expected)
    assert figures.adjusted_rand_index(b, a) == pytest.approx(expected)


def test_iou_layers(scored, tmp_path):
    out = tmp_path / "iou_layers.png"
    mats = figures.plot_iou_layers(scored["contrast_iou"], scored["langs"], LAYERS, out, "contrast")
    assert_png(out)
    assert sorted(mats) == LAYERS
    order = figures.group_table(scored["langs"])["group"].tolist()
    assert order[0] == "en"
    for layer, m in mats.items():
        assert m.shape == (len(LANGS), len(LANGS))
        assert np.allclose(m, m.T, equal_nan=True)
        sets = {g: {n for gg, lay, n in zip(scored["contrast"]["group"], scored["contrast"]["layer"],
                                            scored["contrast"]["neuron"]) if gg == g and lay == layer}
                for g in order}
        i, j = order.index("de"), order.index("sv")
        union = sets["de"] | sets["sv"]
        assert m[i, j] == pytest.approx(len(sets["de"] & sets["sv"]) / len(union) if union else np.nan,
                                        nan_ok=True)
        for k, g in enumerate(order):
            assert (m[k, k] == 1.0) if sets[g] else np.isnan(m[k, k])


def test_direction_iou(scored, tmp_path):
    out = tmp_path / "direction.png"
    table = figures.plot_direction_iou(scored["frequency_iou"], scored["pairs"], LAYERS, out, "frequency")
    assert_png(out)
    assert list(table.index) == LAYERS and table.shape[1] == 3
    among_en_xx, among_xx_en = table.iloc[:, 0], table.iloc[:, 1]
    # every en->xx pair counts English tokens: more alike than the xx->en pairs
    assert (among_en_xx > among_xx_en).all(), table
    # by hand
    sel = pd.DataFrame({"group": ["en-de"] * 3 + ["en-fr"] * 3 + ["de-en"] * 2 + ["fr-en"] * 2,
                        "layer": 0, "neuron": [1, 2, 3, 1, 2, 4, 1, 5, 7, 8]})
    pairs = ["de-en", "en-de", "en-fr", "fr-en"]
    small = figures.direction_iou(scoring.iou(sel, groups=pairs), pairs, [0])
    assert small.iloc[0].tolist() == pytest.approx([0.5, 0.0, (0.25 + 0.0) / 2])


def test_specialized_counts(scored, tmp_path):
    out = tmp_path / "counts.png"
    table = figures.plot_specialized_counts(scored["contrast"], scored["langs"], LAYERS, out, "contrast")
    assert_png(out)
    assert int(table.to_numpy().sum()) == len(scored["contrast"])
    expected = scored["contrast"].groupby(["group", "layer"]).size()
    for (g, layer), n in expected.items():
        assert table.loc[g, layer] == n
    assert table.index[0] == "en" and list(table.columns) == LAYERS
    truth = scored["truth"]
    assert table.sum(axis=1).to_dict() == {g: len(truth[g]) for g in table.index}


def test_family_iou(scored, tmp_path):
    out = tmp_path / "family.png"
    table = figures.plot_family_iou(scored["contrast_iou"], scored["langs"], LAYERS, out, "contrast")
    assert_png(out)
    assert list(table.columns) == ["same family", "different families"]
    # planted neurons are shared within families only
    assert (table["different families"] == 0).all()
    assert table["same family"].mean() > 0.1
    pair_table = figures.family_iou(scored["frequency_iou"], scored["pairs"], LAYERS)
    assert list(pair_table.columns) == ["en\u2192xx: same family", "en\u2192xx: different families",
                                        "xx\u2192en: same family", "xx\u2192en: different families"]


def test_clustering_recovers_families(scored, tmp_path):
    out = tmp_path / "clustering.png"
    result = figures.plot_clustering(scored["contrast_iou"], scored["langs"], out, "contrast")
    assert_png(out)
    assert result["ari"] == pytest.approx(1.0)
    c = result["clusters"]
    assert c["en"] == c["de"] == c["sv"] and c["fr"] == c["es"] and c["ru"] == c["uk"]
    assert len({c["en"], c["fr"], c["ru"], c["hi"], c["ar"]}) == 5
    # pair groups: the xx->en pairs are clustered (en->xx pairs all count English)
    pairs = figures.plot_clustering(scored["frequency_iou"], scored["pairs"], tmp_path / "p.png", "frequency")
    assert sorted(pairs["groups"]) == sorted(f"{x}-en" for x in LANGS[1:])
    assert -1.0 <= pairs["ari"] <= 1.0
    few = figures.plot_clustering(scored["contrast_iou"], ["de", "fr"], tmp_path / "few.png")
    assert np.isnan(few["ari"])
    assert_png(tmp_path / "few.png")


def test_activation_probability(scored, tmp_path):
    out = tmp_path / "p.png"
    summary = figures.plot_activation_probability(scored["tables"], out)
    assert_png(out)
    assert summary.loc["nonzero", "share_above_0.99"] == 1.0  # nonzero counts every token
    assert 0.3 < summary.loc["gate_active", "median"] < 0.6
    assert summary.loc["gate_active", "share_above_0.99"] == 0.0


def test_draw_from_files(scored, tmp_path):
    paths = []
    for pair, (df, meta) in scored["tables"].items():
        paths.append(tmp_path / f"{pair}.parquet")
        write_counts(df, paths[-1], meta)
    for method in ("frequency", "lape"):
        scoring.run_scoring(paths, tmp_path / f"{method}.parquet", tmp_path / f"{method}_iou.parquet",
                            method, "gate_active", {})
    result = figures.draw("clustering", tmp_path / "c.png", scores=str(tmp_path / "lape.parquet"),
                          iou=str(tmp_path / "lape_iou.parquet"))
    assert_png(tmp_path / "c.png")
    assert -1.0 <= result["ari"] <= 1.0 and len(result["groups"]) == len(LANGS)
    counts = figures.draw("specialized_counts", tmp_path / "s.png", scores=str(tmp_path / "frequency.parquet"))
    assert counts.index[0].startswith("en-") and counts.shape == (len(paths), N_LAYERS)
    figures.draw("direction_iou", tmp_path / "d.png", iou=str(tmp_path / "frequency_iou.parquet"))
    figures.draw("activation_probability", tmp_path / "a.png", activations=[str(p) for p in paths[:2]])
    for name in ("s", "d", "a"):
        assert_png(tmp_path / f"{name}.png")
    with pytest.raises(NeurospecError, match="needs pair groups"):
        figures.draw("direction_iou", tmp_path / "x.png", iou=str(tmp_path / "lape_iou.parquet"))
    with pytest.raises(NeurospecError, match="unknown figure"):
        figures.draw("nope", tmp_path / "x.png")


def test_many_groups_render(tmp_path):
    """80 pair groups x 2 layers: labels and colour bars stay drawable."""
    from neurospec.languages import EC40_LANGUAGES

    pairs = [f"en-{x}" for x in EC40_LANGUAGES] + [f"{x}-en" for x in EC40_LANGUAGES]
    rng = np.random.default_rng(0)
    rows = [(g, layer, n) for g in pairs for layer in (0, 1) for n in rng.choice(200, 20, replace=False)]
    sel = pd.DataFrame(rows, columns=["group", "layer", "neuron"])
    overlap = scoring.iou(sel, groups=pairs, layers=[0, 1])
    mats = figures.plot_iou_layers(overlap, pairs, [0, 1], tmp_path / "big.png", "frequency")
    assert mats[0].shape == (80, 80)
    assert_png(tmp_path / "big.png")


def test_empty_selection_draws(tmp_path):
    """A method that selects nothing (contrast on data without structure) still gets its figures."""
    tables, _ = synthetic(seed=1, planted=False)
    paths = []
    for pair, (df, meta) in tables.items():
        paths.append(tmp_path / f"{pair}.parquet")
        write_counts(df, paths[-1], meta)
    scoring.run_scoring(paths, tmp_path / "c.parquet", tmp_path / "c_iou.parquet", "contrast", "gate_active", {})
    inputs = {"scores": str(tmp_path / "c.parquet"), "iou": str(tmp_path / "c_iou.parquet")}
    mats = figures.draw("iou_layers", tmp_path / "1.png", **inputs)
    assert all(np.isnan(m).all() for m in mats.values())
    assert figures.draw("specialized_counts", tmp_path / "2.png", **inputs).to_numpy().sum() == 0
    assert figures.draw("family_iou", tmp_path / "3.png", **inputs).isna().all().all()
    figures.draw("clustering", tmp_path / "4.png", **inputs)
    for i in range(1, 5):
        assert_png(tmp_path / f"{i}.png")
