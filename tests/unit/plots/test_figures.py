"""Figures: what each one draws (panels, titles, labels, the data in its images and lines) equals
the numbers it returns and the planted structure, and its PNG has ink (not a blank canvas)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from neurospec.plots import clustering_figure, figures, group_axes, iou_figures
from neurospec.score import scoring
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


@dataclass
class Panel:
    """What one axes drew."""

    title: str
    xlabel: str
    ylabel: str
    xticks: list[str]
    yticks: list[str]
    images: list[np.ma.MaskedArray]
    lines: dict[str, np.ndarray]  # legend label -> y data
    texts: list[str]
    bars: list[float] = field(default_factory=list)


@dataclass
class Drawn:
    suptitle: str
    panels: list[Panel]

    def titled(self, text: str) -> list[Panel]:
        return [p for p in self.panels if text in p.title]


def _describe(fig) -> Drawn:
    panels = []
    for ax in fig.axes:
        lines = {ln.get_label(): np.asarray(ln.get_ydata(), dtype=float) for ln in ax.get_lines()
                 if not ln.get_label().startswith("_")}
        panels.append(Panel(
            ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), [t.get_text() for t in ax.get_xticklabels()],
            [t.get_text() for t in ax.get_yticklabels()], [im.get_array() for im in ax.images], lines,
            [t.get_text() for t in ax.texts], [float(r.get_height()) for r in ax.patches if hasattr(r, "get_height")]))
    return Drawn(fig._suptitle.get_text() if fig._suptitle else "", panels)


@pytest.fixture
def drawn(monkeypatch):
    """figure file name -> what was drawn into it (recorded as figures saves it)."""
    record: dict[str, Drawn] = {}
    save = group_axes.save_figure

    def spy(fig, path, dpi=110):
        record[Path(path).name] = _describe(fig)
        save(fig, path, dpi)

    for module in (group_axes, figures, iou_figures, clustering_figure):  # each module saves through its import
        monkeypatch.setattr(module, "save_figure", spy)
    return record


def assert_png(path, min_ink: float = 0.02, min_colors: int = 2):
    """A PNG with ink: at least ``min_ink`` of its pixels not white, and ``min_colors`` colours."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(path)[..., :3]
    ink = (pixels < 0.97).any(axis=-1).mean()
    colors = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert ink >= min_ink, f"{path.name}: {ink:.1%} of the pixels have ink"
    assert colors >= min_colors, f"{path.name}: {colors} colours"


def test_group_order():
    info = group_axes.group_table(["ar", "de", "en", "hi", "fr", "sv"])
    assert info["group"].tolist() == ["en", "de", "sv", "fr", "hi", "ar"]  # family, then tier
    assert info["family"].tolist()[:3] == ["Germanic"] * 3
    assert group_axes.boundaries(info["block"].tolist()) == [1, 3, 4, 5]  # English is its own block
    pairs = group_axes.group_table(["de-en", "en-fr", "en-de", "fr-en"])
    assert pairs["group"].tolist() == ["en-de", "en-fr", "de-en", "fr-en"]
    assert pairs["label"].tolist()[0] == "en\u2192de"
    assert group_axes.boundaries(pairs["direction"].tolist()) == [2]
    with pytest.raises(NeurospecError, match="cannot mix"):
        group_axes.group_table(["de", "en-de"])


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
    assert clustering_figure.adjusted_rand_index(a, b) == pytest.approx(expected)
    assert clustering_figure.adjusted_rand_index(b, a) == pytest.approx(expected)


def _hand_adjusted_rand_index(a, b):
    """The package's hand-written ARI before it used scipy's crosstab and comb (reference)."""
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    n = len(a)
    if n < 2:
        return 1.0
    _, ia = np.unique(a.astype(str), return_inverse=True)
    _, ib = np.unique(b.astype(str), return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)

    def pairs(x):
        x = np.asarray(x, dtype=np.float64)
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    sum_a, sum_b = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = sum_a * sum_b / (n * (n - 1) / 2)
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:
        return 1.0 if index == maximum else 0.0
    return (index - expected) / (maximum - expected)


def test_adjusted_rand_index_is_the_hand_versions():
    """The scipy-based ARI equals the hand version exactly on random partitions (2 to 300 items, 1 to 12
    clusters, labels of mixed types), and a hand-worked case: items 1-6 as {1,2,3}{4,5,6} against
    {1,2}{3,4}{5,6}: 2 pairs together in both, 6 and 3 in each, 15 in all: expected 6 * 3 / 15 = 1.2,
    maximum 4.5, ARI (2 - 1.2) / (4.5 - 1.2) = 8 / 33."""
    assert clustering_figure.adjusted_rand_index([1, 1, 1, 2, 2, 2], [1, 1, 2, 2, 3, 3]) == pytest.approx(8 / 33, abs=1e-15)
    rng = np.random.default_rng(5)
    values = []
    for _ in range(300):
        n = int(rng.integers(2, 300))
        a = rng.integers(0, int(rng.integers(1, 13)), n)
        b = rng.integers(0, int(rng.integers(1, 13)), n)
        labels_b = [f"f{x}" for x in b] if n % 2 else b.tolist()
        got = clustering_figure.adjusted_rand_index(a.tolist(), labels_b)
        assert got == _hand_adjusted_rand_index(a.tolist(), labels_b)
        values.append(got)
    assert len(set(values)) > 100  # many different values were compared, not one degenerate case


def test_iou_layers(scored, tmp_path, drawn):
    out = tmp_path / "iou_layers.png"
    mats = iou_figures.plot_iou_layers(scored["contrast_iou"], scored["langs"], LAYERS, out, "contrast")
    assert_png(out, min_ink=0.2, min_colors=20)
    assert sorted(mats) == LAYERS
    order = group_axes.group_table(scored["langs"])["group"].tolist()
    assert order[0] == "en"
    fig = drawn["iou_layers.png"]
    assert fig.suptitle.startswith("contrast\nIoU of the selected neuron sets per layer")
    for layer in LAYERS:  # one panel per layer, drawing exactly the returned matrix, labelled in order
        (panel,) = fig.titled(f"layer {layer}")
        (image,) = panel.images
        np.testing.assert_array_equal(image.filled(np.nan), mats[layer])
        assert panel.xticks == panel.yticks == order
    assert any("IoU of selected neurons" in p.ylabel for p in fig.panels)  # the colour bar
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


def test_direction_iou(scored, tmp_path, drawn):
    out = tmp_path / "direction.png"
    table = iou_figures.plot_direction_iou(scored["frequency_iou"], scored["pairs"], LAYERS, out, "frequency")
    assert_png(out)
    (panel,) = drawn["direction.png"].panels
    assert (panel.xlabel, panel.ylabel) == ("layer", "mean pairwise IoU")
    assert list(panel.lines) == list(table.columns)  # the legend: the three comparisons
    for column, y in panel.lines.items():
        np.testing.assert_array_equal(y, table[column].to_numpy())
    assert list(table.index) == LAYERS and table.shape[1] == 3
    among_en_xx, among_xx_en = table.iloc[:, 0], table.iloc[:, 1]
    # every en->xx pair counts English tokens: more alike than the xx->en pairs
    assert (among_en_xx > among_xx_en).all(), table
    # by hand
    sel = pd.DataFrame({"group": ["en-de"] * 3 + ["en-fr"] * 3 + ["de-en"] * 2 + ["fr-en"] * 2,
                        "layer": 0, "neuron": [1, 2, 3, 1, 2, 4, 1, 5, 7, 8]})
    pairs = ["de-en", "en-de", "en-fr", "fr-en"]
    small = iou_figures.direction_iou(scoring.iou(sel, groups=pairs), pairs, [0])
    assert small.iloc[0].tolist() == pytest.approx([0.5, 0.0, (0.25 + 0.0) / 2])


def test_specialized_counts(scored, tmp_path, drawn):
    out = tmp_path / "counts.png"
    table = figures.plot_specialized_counts(scored["contrast"], scored["langs"], LAYERS, out, "contrast")
    assert_png(out, min_ink=0.2, min_colors=10)
    heatmap = drawn["counts.png"].titled("selected neurons per group and layer")[0]
    np.testing.assert_array_equal(heatmap.images[0], table.to_numpy())
    assert heatmap.yticks == list(table.index) and heatmap.xticks == [str(c) for c in table.columns]
    assert f"(total {len(scored['contrast'])})" in heatmap.title
    assert heatmap.texts == [str(v) for v in table.to_numpy().ravel()]  # every cell annotated
    assert int(table.to_numpy().sum()) == len(scored["contrast"])
    expected = scored["contrast"].groupby(["group", "layer"]).size()
    for (g, layer), n in expected.items():
        assert table.loc[g, layer] == n
    assert table.index[0] == "en" and list(table.columns) == LAYERS
    truth = scored["truth"]
    assert table.sum(axis=1).to_dict() == {g: len(truth[g]) for g in table.index}


def test_family_iou(scored, tmp_path, drawn):
    out = tmp_path / "family.png"
    table = iou_figures.plot_family_iou(scored["contrast_iou"], scored["langs"], LAYERS, out, "contrast")
    assert_png(out)
    (panel,) = drawn["family.png"].panels
    assert list(panel.lines) == list(table.columns) and "within a language family" in panel.title
    for column, y in panel.lines.items():
        np.testing.assert_array_equal(y, table[column].to_numpy())
    assert list(table.columns) == ["same family", "different families"]
    # planted neurons are shared within families only
    assert (table["different families"] == 0).all()
    assert table["same family"].mean() > 0.1
    pair_table = iou_figures.family_iou(scored["frequency_iou"], scored["pairs"], LAYERS)
    assert list(pair_table.columns) == ["en\u2192xx: same family", "en\u2192xx: different families",
                                        "xx\u2192en: same family", "xx\u2192en: different families"]


def test_clustering_recovers_families(scored, tmp_path, drawn):
    out = tmp_path / "clustering.png"
    result = clustering_figure.plot_clustering(scored["contrast_iou"], scored["langs"], out, "contrast")
    assert_png(out)
    assert result["ari"] == pytest.approx(1.0)
    (panel,) = drawn["clustering.png"].panels
    labels = dict(zip(group_axes.group_table(scored["langs"])["group"], group_axes.group_table(scored["langs"])["label"]))
    assert panel.xticks == [labels[g] for g in result["leaves"]]  # the leaves, in the dendrogram's order
    assert "adjusted Rand index of 5 clusters against 5 families: 1.00" in panel.title
    c = result["clusters"]
    assert c["en"] == c["de"] == c["sv"] and c["fr"] == c["es"] and c["ru"] == c["uk"]
    assert len({c["en"], c["fr"], c["ru"], c["hi"], c["ar"]}) == 5
    # pair groups: the xx->en pairs are clustered (en->xx pairs all count English)
    pairs = clustering_figure.plot_clustering(scored["frequency_iou"], scored["pairs"], tmp_path / "p.png", "frequency")
    assert sorted(pairs["groups"]) == sorted(f"{x}-en" for x in LANGS[1:])
    assert -1.0 <= pairs["ari"] <= 1.0
    few = clustering_figure.plot_clustering(scored["contrast_iou"], ["de", "fr"], tmp_path / "few.png")
    assert np.isnan(few["ari"])
    assert_png(tmp_path / "few.png", min_ink=0.005)
    assert drawn["few.png"].panels[0].texts == ["clustering needs at least 3 groups, got 2"]


def test_activation_probability(scored, tmp_path, drawn):
    out = tmp_path / "p.png"
    summary = figures.plot_activation_probability(scored["tables"], out)
    assert_png(out)
    fig = drawn["p.png"]
    assert [p.title.split("\n")[0] for p in fig.panels] == ["active", "nonzero", "gate_active"]
    for panel in fig.panels:  # a histogram of shares: 50 bars summing to 1
        assert len(panel.bars) == 50 and sum(panel.bars) == pytest.approx(1.0)
    nonzero = fig.titled("nonzero")[0]
    assert nonzero.bars[-1] == pytest.approx(1.0)  # every neuron at p = 1: the degenerate criterion
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
    mats = iou_figures.plot_iou_layers(overlap, pairs, [0, 1], tmp_path / "big.png", "frequency")
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
