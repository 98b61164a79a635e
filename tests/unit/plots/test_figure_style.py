"""One style in every figure (neurospec.plots.style): a family has the same colour in the IoU
heatmaps, the stability figure, translation quality and the correlation scatter (read from the drawn
artists); correlation labels never overlap with 80 directions; 80 directions stay legible."""

from __future__ import annotations

import matplotlib
import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from neurospec import languages as L
from neurospec.evaluate import correlation as C
from neurospec.evaluate import translation_quality
from neurospec.plots import figures
from neurospec.plots import style
from neurospec.score import stability
from neurospec.score.scoring import iou

matplotlib.use("Agg")

LANGS = ["de", "sv", "fr", "es", "ru", "uk", "hi", "bn", "ar", "he"]
ALL = [c for c in L.LANGUAGES if c != L.PIVOT]
PAIRS80 = [f"en-{c}" for c in ALL] + [f"{c}-en" for c in ALL]


def _scores(groups, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(g, layer, n) for g in groups for layer in range(4) for n in rng.choice(96, 12, replace=False)]
    return pd.DataFrame(rows, columns=["group", "layer", "neuron"]).assign(score=1.0)


def _measures(pairs, seed=0):
    rng = np.random.default_rng(seed)
    size = {p: int(rng.integers(5, 60)) for p in pairs}
    scores = pd.DataFrame([(p, 0, n) for p in pairs for n in range(size[p])],
                          columns=["group", "layer", "neuron"]).assign(score=1.0)
    overlap = iou(scores, groups=sorted(pairs), layers=[0])
    translation = pd.DataFrame({"pair": pairs, "condition": "base",
                                "chrf": [40 + rng.normal(0, 5) - 0.1 * size[p] for p in pairs]})
    measures = C.measure_table(translation, {"frequency": (scores, overlap, {"group_kind": "pair",
                                                                             "groups": sorted(pairs)})})
    return measures, C.correlations(measures, n_boot=20, seed=0)


def _tick_colors(fig) -> dict[str, str]:
    """family -> the colour of every tick label that names a language of it (one colour, or a failure)."""
    seen: dict[str, set[str]] = {}
    for ax in fig.axes:
        for text in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
            family = style.family_of(text.get_text().split(" ")[0])
            if family:
                seen.setdefault(family, set()).add(to_hex(text.get_color()))
    assert all(len(c) == 1 for c in seen.values()), seen
    return {f: c.pop() for f, c in seen.items()}


def _legend_colors(fig) -> dict[str, str]:
    """family -> the colour of its legend patch, in every legend of the figure."""
    out = {}
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            if text.get_text() in L.FAMILIES and hasattr(handle, "get_facecolor"):
                out[text.get_text()] = to_hex(handle.get_facecolor())
    return out


@pytest.fixture
def captured(monkeypatch):
    """figure name -> (figure, dpi) as each module saves it."""
    record = {}

    def spy(fig, path, dpi=110, close=True):
        record[str(path).rsplit("/", 1)[-1]] = (fig, dpi)

    monkeypatch.setattr(figures, "save_png", spy)
    monkeypatch.setattr(C, "save_png", spy)
    monkeypatch.setattr(stability, "save_png", spy)
    return record


def test_each_family_has_one_colour_in_every_figure(captured, tmp_path):
    expected = {f: to_hex(c) for f, c in style.FAMILY_COLORS.items()}
    assert len(set(expected.values())) == len(L.FAMILIES)  # five families, five colours
    overlap = iou(_scores(LANGS), groups=LANGS, layers=range(4))
    figures.plot_iou_layers(overlap, LANGS, range(4), tmp_path / "iou_layers.png", "contrast")
    figures.plot_specialized_counts(_scores(LANGS), LANGS, range(4), tmp_path / "specialized_counts.png", "contrast")
    figures.plot_clustering(overlap, LANGS, tmp_path / "clustering.png", "contrast")
    pairs = [f"en-{c}" for c in LANGS] + [f"{c}-en" for c in LANGS]
    C.plot_correlation(*_measures(pairs), tmp_path / "correlation.png")
    found = {}
    for name, (fig, _) in captured.items():
        colours = {**_tick_colors(fig), **_legend_colors(fig)}
        found[name] = colours
        for family, colour in colours.items():
            assert colour == expected[family], (name, family, colour)
    assert set(found) == {"iou_layers.png", "specialized_counts.png", "clustering.png", "correlation.png"}
    assert set(found["iou_layers.png"]) == set(L.FAMILIES)  # every family was checked there
    # the correlation scatter: every point of a language in its family's colour, marker of its script
    fig, _ = captured["correlation.png"]
    ax = fig.axes[0]
    points = [c for c in ax.collections if len(c.get_offsets()) == 1]
    assert len(points) == len(pairs)
    measures, _ = _measures(pairs)
    sub = measures[(measures["method"] == "frequency") & (measures["measure"] == "n_selected")]
    for collection, lang in zip(points, sub["lang"]):
        assert to_hex(collection.get_edgecolor()[0]) == expected[L.language(lang).family]
    # translation quality and stability take the same colours
    assert {to_hex(translation_quality.family_color(c)) for c in ("fr", "es", "it")} == {expected["Romance"]}
    assert stability.FAMILY_COLORS is style.FAMILY_COLORS


def test_script_markers_are_distinct_and_cover_every_script():
    scripts = {lang.script for lang in L.LANGUAGES.values()}
    assert scripts <= set(style.SCRIPT_MARKERS)
    assert len(set(style.SCRIPT_MARKERS.values())) == len(style.SCRIPT_MARKERS)
    assert style.script_marker("en-ru") == style.script_marker("uk") == style.SCRIPT_MARKERS["Cyrillic"]


def test_correlation_labels_do_not_overlap_with_80_directions(tmp_path):
    drawn = C.plot_correlation(*_measures(PAIRS80), tmp_path / "c.png", demo=True)
    for key, entry in drawn.items():
        boxes = entry["label_boxes"]
        assert len(boxes) == 80, key
        overlaps = [(i, j) for i in range(80) for j in range(i + 1, 80)
                    if boxes[i][0] < boxes[j][2] and boxes[j][0] < boxes[i][2]
                    and boxes[i][1] < boxes[j][3] and boxes[j][1] < boxes[i][3]]
        assert overlaps == [], (key, overlaps[:5])
    height, width = matplotlib.image.imread(tmp_path / "c.png").shape[:2]
    assert width * height <= 12_000_000


def test_80_directions_have_legible_ticks_in_a_sane_image(captured, tmp_path, monkeypatch):
    overlap = iou(_scores(PAIRS80), groups=PAIRS80, layers=range(4))
    figures.plot_iou_layers(overlap, PAIRS80, range(4), tmp_path / "iou_layers.png", "frequency")
    fig, dpi = captured["iou_layers.png"]
    sizes = [t.get_fontsize() for ax in fig.axes[:4] for t in ax.get_xticklabels() + ax.get_yticklabels()]
    assert len(sizes) == 4 * 2 * 80 and min(sizes) >= 6.0
    assert min(sizes) * dpi / 72 >= 8  # pixels per tick label at the saved dpi
    width, height = fig.get_size_inches() * dpi
    assert width * height <= 12_000_000 and max(width, height) <= 4000, (width, height)
    # the rows have room for their labels: a row's height in points is at least the font size
    ax = fig.axes[0]
    row_pt = ax.get_window_extent().height / 80 * 72 / fig.dpi
    assert row_pt >= min(sizes), row_pt
