"""The headline table (neurospec.summary.headline) on planted tables, its landing-page cells
(neurospec.summary.display), and figures saved in several formats (neurospec.atomic.with_formats)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from neurospec import atomic
from neurospec.errors import NeurospecError
from neurospec.summary import display, headline

SCORES = pd.DataFrame({"group": ["de", "de", "ru", "ru"], "layer": [0, 1, 0, 2], "neuron": [5, 5, 5, 7],
                       "score": [1.0, 1.0, 1.0, 1.0]})
STABILITY = pd.DataFrame({"group": ["de", "de", "ru"], "layer": [0, 1, 0], "iou": [0.5, np.nan, 0.25],
                          "iou_chance": [0.1, np.nan, 0.05], "p_value": [0.01, np.nan, 0.2]})


def _ablation():
    """Two groups: de is specific with a CI above 0 and p 0.01; ru is not (a random set does more, p 1)."""
    rows = []
    for group, own, deltas, rand, low, p in (("de", "de", {"de": 0.4, "ru": 0.1}, 0.2, 0.1, 0.01),
                                             ("ru", "ru", {"de": 0.1, "ru": 0.2}, 0.3, -0.1, 1.0)):
        for lang, d in deltas.items():
            rows.append({"group": group, "eval_lang": lang, "condition": "selected", "seed": -1, "delta_nll": d,
                         "base_nll": 2.0, "delta_nll_low": low if lang == own else np.nan,
                         "p_controls": p if lang == own else np.nan, "n_neurons": 2})
        rows.append({"group": group, "eval_lang": own, "condition": "random", "seed": 0, "delta_nll": rand,
                     "base_nll": 2.0, "delta_nll_low": np.nan, "p_controls": np.nan, "n_neurons": 2})
    df = pd.DataFrame(rows).assign(rel_delta_nll=lambda d: d["delta_nll"] / d["base_nll"])
    return df, {"method": "lape", "group_lang": {"de": "de", "ru": "ru"}}


def _steering():
    rows = []
    # at alpha 4 the groups differ (de 0.9, ru 0.7): the interval over the two groups is [0.7, 0.9]
    for alpha, rates in ((2.0, {"de": 0.4, "ru": 0.4}), (4.0, {"de": 0.9, "ru": 0.7})):
        for group, success in rates.items():
            rows.append({"group": group, "mode": "add", "alpha": alpha, "prompt_kind": "translate",
                         "condition": "selected", "success": success, "success_low": success - 0.1,
                         "success_high": success + 0.1, "chrf": 30.0})
            rows.append({"group": group, "mode": "add", "alpha": alpha, "prompt_kind": "translate",
                         "condition": "random", "success": 0.05, "success_low": 0.0, "success_high": 0.1,
                         "chrf": 30.0})
    return pd.DataFrame(rows)


def test_a_headline_row_holds_each_stages_numbers():
    row = headline.headline_row("lape", SCORES, STABILITY, _ablation(), _steering(),
                                null_scores=SCORES.iloc[:1], null_stability=STABILITY.assign(iou=0.0))
    assert row["selected_neurons"] == 3 and row["selected_cells"] == 4 and row["null_selected_neurons"] == 1
    assert row["stability_iou"] == 0.375 and row["stability_chance"] == pytest.approx(0.075)
    assert row["stability_above_chance"] == 0.5 and row["null_stability_iou"] == 0.0
    assert (row["ablation_groups"], row["ablation_specific"], row["ablation_ci_above_zero"]) == (2, 1, 1)
    assert row["ablation_p_below_05"] == 1 and row["ablation_p_median"] == pytest.approx((0.01 + 1) / 2)
    assert row["ablation_delta_nll"] == pytest.approx(0.3)
    assert row["steering_alpha"] == 4.0 and row["steering_success"] == pytest.approx(0.8)
    assert row["steering_success_low"] == pytest.approx(0.7) and row["steering_random"] == pytest.approx(0.05)
    assert row["steering_success_high"] == pytest.approx(0.9)


def test_a_stage_that_did_not_run_is_empty_and_shown_as_a_dash(tmp_path):
    table = headline.headline([headline.headline_row("lape", SCORES, STABILITY)])
    assert list(table.columns) == list(headline.COLUMNS)
    r = table.iloc[0]
    assert pd.isna(r["null_selected_neurons"]) and pd.isna(r["ablation_groups"])
    assert str(table["selected_neurons"].dtype) == "Int64"  # counts stay whole numbers beside missing ones
    assert math.isnan(r["steering_success"])
    path = tmp_path / "headline.csv"
    table.to_csv(path, index=False)
    shown = display.landing(path)
    assert shown["header"] == list(display.HEADER)
    assert shown["rows"] == [["lape", "3", "—", "0.375 (0.075)", "—", "—", "—", "—", "—"]]
    assert display.landing(tmp_path / "missing.csv") is None
    # a headline.csv of an older layout (a column the landing page reads is missing): one clear error
    assert set(display.COLUMNS) <= set(headline.COLUMNS)
    table.drop(columns=["steering_random"]).to_csv(path, index=False)
    with pytest.raises(NeurospecError, match=r"headline.csv: written by an older neurospec \(no column "
                                             r"steering_random\); rebuild it with `snakemake .*headline.csv --force`"):
        display.landing(path)


def test_figures_are_saved_in_the_formats_of_the_running_task(tmp_path):
    import matplotlib.pyplot as plt

    def draw(path):
        fig, ax = plt.subplots()
        ax.set_title("lape (gate_active, top_rate=0.01)")
        atomic.save_png(fig, path)

    task = atomic.with_formats(draw)
    task(tmp_path / "a.png")  # no formats: the PNG only
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    task(tmp_path / "b.png", formats=["png", "svg", "pdf"])
    assert (tmp_path / "b.pdf").read_bytes().startswith(b"%PDF")
    svg = ET.parse(tmp_path / "b.svg").getroot()
    texts = ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "lape (gate_active, top_rate=0.01)" in texts  # text kept as text
    assert atomic.figure_paths("x/f.png", ["png", "svg"]) == ["x/f.svg"]
    with pytest.raises(NeurospecError, match="figures.format: eps is not one of png, svg, pdf"):
        task(tmp_path / "c.png", formats=["png", "eps"])


def test_the_steering_table_holds_each_selections_best_alpha(tmp_path):
    from neurospec.summary import tables

    df = _steering().assign(seed=0, lang="de", n_outputs=4, prompt_lang_share=0.5, nll=2.0)
    df.to_parquet(tmp_path / "lape@strict.parquet")
    csv, page = tmp_path / "steering.csv", tmp_path / "steering.html"
    table = tables.write_table("steering", str(csv), str(page), {"steering": [str(tmp_path / "lape@strict.parquet")]})
    assert table[["method", "prompt_kind", "mode", "alpha"]].values.tolist() == [["lape@strict", "translate", "add", 4.0]]
    assert table["selected"].iloc[0] == pytest.approx(0.8) and table["random"].iloc[0] == pytest.approx(0.05)
    assert pd.read_csv(csv)["selected"].iloc[0] == pytest.approx(0.8)
    assert "<td>lape@strict</td><td>translate</td><td>add</td><td>4</td><td>2</td><td>0</td><td>0.8</td>" in page.read_text()
    assert "<td>—</td>" in page.read_text()  # no residual baseline in this table
