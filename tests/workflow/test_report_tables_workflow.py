"""What a researcher reads first, through `snakemake` and `snakemake --report` on the shared run: the
headline table (summary/headline.csv and the report's landing page) equals the per-method tables read
here independently, the main tables are in the report under "Tables" with the parquet's values, and
`figures.format: [png, svg]` writes every figure as SVG too (valid XML, the PNG's title text) in a
rerun whose terminal shows one line per rule."""

from __future__ import annotations

import base64
import csv
import html
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neurospec.tables import read_metadata
from workflow_utils import copy_run, report_entries, snakemake, write_shared_config

RESULTS = "results/demo-small/demo/validation"
METHODS = ("frequency", "frequency_language", "lape", "contrast", "diffmeans")


def _headline(workdir: Path) -> dict[str, dict[str, str]]:
    with open(workdir / RESULTS / "summary" / "headline.csv", newline="") as fh:
        return {r["method"]: r for r in csv.DictReader(fh)}


def _close(text: str, value: float) -> bool:
    return (text == "" and (value is None or math.isnan(value))) or math.isclose(float(text), value, rel_tol=1e-9)


def _expected(workdir: Path, method: str) -> dict[str, float]:
    """The headline row of ``method`` from its own tables, computed here with pandas only."""
    scores = pd.read_parquet(workdir / RESULTS / "scores" / f"{method}.parquet")
    stab = pd.read_parquet(workdir / RESULTS / "scores" / f"{method}_stability.parquet")
    stab = stab[np.isfinite(stab["iou"])]
    abl = pd.read_parquet(workdir / RESULTS / "ablation" / f"{method}.parquet")
    own_lang = read_metadata(workdir / RESULTS / "ablation" / f"{method}.parquet")["group_lang"]
    abl = abl[abl["budget"].isna()] if "budget" in abl.columns else abl
    specific, ci, p, delta = 0, 0, [], []
    for group, lang in own_lang.items():
        sel = abl[(abl["group"] == group) & (abl["condition"] == "selected")].set_index("eval_lang")
        rand = abl[(abl["group"] == group) & (abl["condition"] == "random") & (abl["eval_lang"] == lang)]
        own = sel.loc[lang, "delta_nll"] / sel.loc[lang, "base_nll"]
        others = (sel["delta_nll"] / sel["base_nll"]).drop(lang)
        specific += bool(own > others.max() and own > (rand["delta_nll"] / rand["base_nll"]).max())
        ci += bool(sel.loc[lang, "delta_nll_low"] > 0)
        p.append(sel.loc[lang, "p_controls"])
        delta.append(sel.loc[lang, "delta_nll"])
    return {"selected_neurons": len(scores.groupby(["layer", "neuron"])), "selected_cells": len(scores),
            "stability_iou": stab["iou"].median(), "stability_chance": stab["iou_chance"].median(),
            "stability_above_chance": float((stab["p_value"] < 0.05).mean()),
            "ablation_delta_nll": float(np.median(delta)),
            "ablation_groups": len(own_lang), "ablation_specific": specific, "ablation_ci_above_zero": ci,
            "ablation_p_below_05": sum(x < 0.05 for x in p), "ablation_p_median": float(np.median(p)),
            "null_selected_neurons": math.nan, "steering_success": math.nan}


def test_the_headline_table_equals_each_methods_own_tables(shared_run):
    workdir, _ = shared_run
    rows = _headline(workdir)
    assert list(rows) == list(METHODS)
    for method in METHODS:
        expected = _expected(workdir, method)
        assert expected["ablation_groups"] == (6 if method == "frequency" else 4)
        for column, value in expected.items():
            assert _close(rows[method][column], value), (method, column, rows[method][column], value)


def _cells(page: str) -> list[list[str]]:
    """The rows of the (one) table of a page, cells unescaped."""
    return [[html.unescape(c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", page, re.S)]


def test_the_report_opens_on_the_headline_and_holds_the_tables(shared_run):
    workdir, _ = shared_run
    report = (workdir / "report.html").read_text(errors="replace")
    results, categories = report_entries(report)
    names = ("headline", "scores", "stability", "ablation", "translation_quality")
    tables = {f"{RESULTS}/summary/{n}.html" for n in names}
    # one category, each table one click in it (two clicks from the landing page)
    assert set(categories["Tables"]["Other"]) == tables and tables <= set(results)
    pages = {Path(p).stem: base64.b64decode(results[p]["data_uri"].split("base64,", 1)[1]).decode() for p in tables}
    for name, page in pages.items():  # the report embeds the files the run wrote
        assert page == (workdir / RESULTS / "summary" / f"{name}.html").read_text()
    # a value in each equals the parquet's (floats shown to 4 significant digits)
    freq = pd.read_parquet(workdir / RESULTS / "scores" / "frequency.parquet")
    rows = _cells(pages["scores"])
    head, en_de = rows[0], next(r for r in rows if r[:2] == ["frequency", "en-de"])
    assert int(en_de[head.index("selected")]) == int((freq["group"] == "en-de").sum())
    assert int(en_de[head.index("layer 1")]) == int(((freq["group"] == "en-de") & (freq["layer"] == 1)).sum())
    stab = pd.read_parquet(workdir / RESULTS / "scores" / "lape_stability.parquet")
    rows = _cells(pages["stability"])
    lape = [r for r in rows if r[0] == "lape"]
    assert len(lape) == len(stab)
    i = int(np.flatnonzero(np.isfinite(stab["iou_chance"]))[0])  # a cell with a selection on both halves
    assert lape[i][rows[0].index("group")] == stab["group"].iloc[i]
    assert lape[i][rows[0].index("iou_chance")] == f"{stab['iou_chance'].iloc[i]:.4g}"
    shown = {r[rows[0].index("iou_chance")] for r in lape}
    assert ("—" in shown) == bool(stab["iou_chance"].isna().any())  # an empty cell is shown as —
    quality = pd.read_parquet(workdir / RESULTS / "translation" / "scores.parquet")
    rows = _cells(pages["translation_quality"])
    assert len(rows) - 1 == len(quality)
    assert rows[1][rows[0].index("chrf")] == f"{quality['chrf'].iloc[0]:.4g}"
    # the landing page: the headline table, a row per method, "—" where no null run or steering exists
    landing = report[report.index("Headline"):].replace("\\u2014", "—")  # (a JSON string in the page)
    headline = _headline(workdir)
    for method in METHODS:
        row = re.search(rf"<tr><td>{method}</td>(.*?)</tr>", landing, re.S)
        assert row, method
        cells = [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row.group(1))]
        r = headline[method]
        assert cells[0] == r["selected_neurons"] and cells[1] == "—" and cells[-1] == "—"
        assert cells[2] == f"{float(r['stability_iou']):.3g} ({float(r['stability_chance']):.3g})"
        assert cells[4] == f"{r['ablation_specific']}/{r['ablation_groups']}"


def test_a_headline_table_of_an_older_layout_is_one_line_in_the_report(shared_run, tmp_path):
    """A headline.csv without a column the landing page reads (an older neurospec wrote it): `snakemake
    --report` names the file and the fix in one line and exits non-zero, and writes no report."""
    workdir = copy_run(shared_run[0], tmp_path / "old", f"{RESULTS}/summary")
    path = workdir / RESULTS / "summary" / "headline.csv"
    table = pd.read_csv(path)
    table.drop(columns=["null_selected_neurons"]).to_csv(path, index=False)
    result = snakemake(workdir, "--report", "old-report.html", configfile=write_shared_config(workdir, {}),
                       check=False)
    assert result.returncode != 0 and not (workdir / "old-report.html").exists()
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("neurospec:")]
    assert lines == [f"neurospec: error: {RESULTS}/summary/headline.csv: written by an older neurospec (no column "
                     f"null_selected_neurons); rebuild it with `snakemake {RESULTS}/summary/headline.csv --force`, "
                     "then make the report again"]


@pytest.fixture(scope="module")
def svg_rerun(shared_run, tmp_path_factory):
    """A copy of the shared run without its figures and tables, rerun with figures.format [png, svg]."""
    workdir = copy_run(shared_run[0], tmp_path_factory.mktemp("svg-rerun"))
    for sub in ("figures", "summary"):
        for f in (workdir / RESULTS / sub).rglob("*.*"):
            f.unlink()
    cfg = write_shared_config(workdir, {"figures": {"format": ["png", "svg"]}}, name="config-svg.yaml")
    return workdir, snakemake(workdir, configfile=cfg)


def test_svg_figures_are_written_beside_the_pngs_with_their_titles(svg_rerun):
    workdir, _ = svg_rerun
    pngs = sorted((workdir / RESULTS / "figures").rglob("*.png"))
    assert len(pngs) == 5 * 6 + 1 + 1 + 2 + 1  # 6 per method, direction IoU, activations, translation, specificity
    for png in pngs:
        svg = png.with_suffix(".svg")
        root = ET.parse(svg).getroot()  # valid XML
        assert root.tag == "{http://www.w3.org/2000/svg}svg", svg
    # the SVG keeps its text as text: the IoU figure's title names the method and its parameters, as the PNG's
    svg = ET.parse(workdir / RESULTS / "figures" / "lape" / "iou_layers.svg").getroot()
    texts = " ".join("".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    meta = read_metadata(workdir / RESULTS / "scores" / "lape_iou.parquet")
    params = ", ".join(f"{k}={v}" for k, v in meta["params"].items())
    assert f"lape ({meta['column']}, {params})" in texts, texts[:500]
    assert not list((workdir / RESULTS / "figures").rglob("*.pdf"))  # only the formats asked for


def test_a_run_prints_one_line_per_rule_and_ends_on_the_summary_and_the_report(svg_rerun):
    workdir, proc = svg_rerun
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    steps = [line for line in lines if re.match(r"^\[\d\d:\d\d:\d\d\] \d+/\d+ ", line)]
    rules = [re.match(r"^\[[\d:]+\] \d+/\d+ (\w+)", s).group(1) for s in steps]
    assert len(rules) == len(set(rules)), steps  # one line per rule, however many jobs it ran
    assert "figure_method: 5 jobs ✓" in " ".join(steps) and "summary_table: 5 jobs ✓" in " ".join(steps)
    # Snakemake's header (the profile, "Building DAG", a copied .snakemake's migration: 2), the stats line,
    # the steps, the end (3 lines)
    assert len(lines) <= 3 + 2 + 1 + len(rules) + 3, proc.stderr
    assert lines[-2] == f"neurospec: the summary: {RESULTS}/summary/headline.csv (every table: {RESULTS}/summary/)"
    assert lines[-1] == "neurospec: the report: snakemake --report report.html  (then open report.html in a browser)"


def test_the_headline_table_holds_the_null_models_selection_when_its_run_exists(shared_run, tmp_path):
    """A null run of lape (model.null_weights: shuffle) beside the shared run's real one: the real run's
    headline table gives the null's selected neurons and split-half IoU, read here from its tables."""
    workdir = copy_run(shared_run[0], tmp_path)
    only_lape = {"scoring": {"methods": ["lape"]}, "evaluate": {"enabled": False}, "browser": {"enabled": False}}
    null_dir = "results/demo-small-null/demo/validation"
    null_cfg = write_shared_config(workdir, {**only_lape, "model": {"null_weights": "shuffle"}}, name="null.yaml")
    snakemake(workdir, f"{null_dir}/scores/lape.parquet", f"{null_dir}/scores/lape_stability.parquet",
              configfile=null_cfg)
    cfg = write_shared_config(workdir, only_lape, name="real.yaml")
    snakemake(workdir, f"{RESULTS}/summary/headline.csv", configfile=cfg)
    row = _headline(workdir)["lape"]
    null = pd.read_parquet(workdir / null_dir / "scores" / "lape.parquet")
    null_stab = pd.read_parquet(workdir / null_dir / "scores" / "lape_stability.parquet")
    assert int(row["null_selected_neurons"]) == len(null.groupby(["layer", "neuron"])) > 0
    assert _close(row["null_stability_iou"], null_stab["iou"][np.isfinite(null_stab["iou"])].median())
    assert _close(row["selected_neurons"], _expected(workdir, "lape")["selected_neurons"])
    assert row["ablation_groups"] == "" and row["steering_success"] == ""  # evaluation off: empty
