"""The numbers a reader asks first, read off a finished run: how much each method selects, how stable.

    python -m neurospec.tools.summary RESULTS_DIR [--json]

RESULTS_DIR is a run's directory (``results/{model}/{dataset}/{split}``, holding ``activations/``
and ``scores/``) or any directory above runs (``results/``): every run below it is summarized.
Per run it prints

1. every method's selection (its score table) with its split-half stability (its stability table):
   selected (group, neuron) cells, per group as a share of all the model's neurons, and the median
   split-half IoU against the median IoU expected by chance;
2. both contrast variants, ``unit: sentence`` and ``unit: token``, recomputed from the activation
   tables with the run's contrast parameters (only one of them is the workflow's ``contrast``):
   neurons selected per language and their split-half stability.

Nothing is hard-coded: the numbers come from the run's files, so they change when the run does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import NeurospecError
from ..score.scoring import CONTRAST_UNITS, contrast, counted_languages, distinct_sentences, method_columns, \
    pool_by_language, read_count_tables, read_scores, stack_counts
from ..score.stability import read_stability, stability, summarize
from ..tables import HALF
from neurospec.variants import label as variant_label


def find_runs(root: str | Path) -> list[Path]:
    """``root`` itself if it is a run (tables in scores/ and activations/), else every run below it."""
    root = Path(root)
    if not root.is_dir():
        raise NeurospecError(f"results directory {root} does not exist")

    def is_run(d: Path) -> bool:  # (results/logs/... has scores/ and activations/ too, of logs)
        return any((d / "scores").glob("*.parquet")) and any((d / "activations").glob("*.parquet"))

    if is_run(root):
        return [root]
    runs = sorted(p.parent for p in root.rglob("scores") if p.is_dir() and is_run(p.parent))
    if not runs:
        raise NeurospecError(f"no finished run under {root}: expected a directory holding scores/ and activations/")
    return runs


def _share(n: np.ndarray, n_units: int) -> list[float]:
    return [float(x) / n_units for x in n]


def method_overview(run: Path) -> pd.DataFrame:
    """One row per method with a score table: its selection and its split-half stability."""
    rows = []
    for path in sorted((run / "scores").glob("*.parquet")):
        if path.stem.endswith(("_iou", "_stability")):
            continue
        scores, meta = read_scores(path)
        n_units = int(meta.get("n_units") or 0)
        per_group = scores.groupby("group").size().reindex(meta["groups"], fill_value=0).to_numpy()
        row = {"method": variant_label(meta), "groups": len(meta["groups"]), "selected": int(len(scores)),
               "per_group_min": int(per_group.min()), "per_group_median": float(np.median(per_group)),
               "per_group_max": int(per_group.max()),
               "share_min": per_group.min() / n_units if n_units else math.nan,
               "share_max": per_group.max() / n_units if n_units else math.nan,
               "params": meta.get("params", {})}
        stab_path = run / "scores" / f"{path.stem}_stability.parquet"
        if stab_path.exists():
            row.update(summarize(read_stability(stab_path)[0]))
        rows.append(row)
    return pd.DataFrame(rows)


def contrast_variants(run: Path, params: dict[str, Any] | None = None, column: str | None = None) -> pd.DataFrame:
    """Both contrast units on the run's activation tables: one row per unit and language.

    ``params`` and ``column`` default to the run's (the contrast score table's metadata).
    """
    meta: dict[str, Any] = {}
    if (run / "scores" / "contrast.parquet").exists():
        meta = read_scores(run / "scores" / "contrast.parquet")[1]
    column = column or meta.get("column", "gate_active")
    base = {k: v for k, v in {**(meta.get("params") or {}), **(params or {})}.items() if k != "unit"}
    paths = sorted((run / "activations").glob("*.parquet"))
    if not paths:
        raise NeurospecError(f"no activation tables in {run / 'activations'}")
    columns = method_columns("contrast", column, {"unit": "sentence"})
    tables = read_count_tables(paths, [*columns, *(f"{c}_{HALF}" for c in columns)])
    langs = counted_languages(tables)
    stacked = pool_by_language(stack_counts(tables, column), langs, distinct_sentences(tables, langs))
    n_units = int((stacked["group"] == stacked["group"].iloc[0]).sum())
    langs = list(stacked["group"].cat.categories)
    rows = []
    for unit in CONTRAST_UNITS:
        p = {**base, "unit": unit}
        selected = contrast(stacked, **p).groupby("group").size().reindex(langs, fill_value=0)
        stab = summarize(stability(tables, "contrast", column, p)[0])
        for lang, n in selected.items():
            rows.append({"unit": unit, "language": lang, "selected": int(n), "share": n / n_units,
                         "n_units": n_units, **{f"stability_{k}": v for k, v in stab.items()},
                         "params": p, "column": column})
    return pd.DataFrame(rows)


def summarize_run(run: Path) -> dict[str, Any]:
    return {"run": str(run), "methods": method_overview(run), "contrast": contrast_variants(run)}


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _num(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


def to_markdown(summary: dict[str, Any]) -> str:
    """The two tables of a run, as Markdown."""
    lines = [f"### {summary['run']}", "", "Selections and their split-half stability (scores/*.parquet, "
             "scores/*_stability.parquet):", "",
             "| method | groups | selected cells | per group (min / median / max) | share of all neurons per group "
             "| split-half IoU (median) | chance IoU (median) | cells above chance |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in summary["methods"].to_dict("records"):
        lines.append(f"| {r['method']} | {r['groups']} | {r['selected']:,} | {r['per_group_min']:,} / "
                     f"{r['per_group_median']:,.0f} / {r['per_group_max']:,} | {_pct(r['share_min'])} to "
                     f"{_pct(r['share_max'])} | {_num(r.get('median_iou'))} | {_num(r.get('median_chance'))} | "
                     f"{_pct(r.get('share_above_chance'))} of {r.get('cells', 0)} |")
    c = summary["contrast"]
    shared = ", ".join(f"{k}={v}" for k, v in sorted(c["params"].iloc[0].items()) if k != "unit")
    lines += ["", f"Contrast, both units (recomputed from activations/: {shared or 'default parameters'}, "
              f"column {c['column'].iloc[0]}):", "",
              "| unit | selected (all languages) | per language (min / median / max) | share of all neurons "
              "per language | split-half IoU (median) | chance IoU (median) | cells above chance |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for unit, part in c.groupby("unit", sort=False):
        r = part.iloc[0]
        lines.append(f"| {unit} | {int(part['selected'].sum()):,} | {int(part['selected'].min()):,} / "
                     f"{part['selected'].median():,.0f} / {int(part['selected'].max()):,} | "
                     f"{_pct(part['share'].min())} to {_pct(part['share'].max())} | "
                     f"{_num(r['stability_median_iou'])} | {_num(r['stability_median_chance'])} | "
                     f"{_pct(r['stability_share_above_chance'])} of {r['stability_cells']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="python -m neurospec.tools.summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("results_dir", help="a run's directory (results/{model}/{dataset}/{split}) or one above runs")
    ap.add_argument("--json", action="store_true", help="print JSON records instead of Markdown tables")
    args = ap.parse_args(argv)
    try:
        summaries = [summarize_run(run) for run in find_runs(args.results_dir)]
    except NeurospecError as exc:
        sys.exit(f"neurospec: error: {exc}")
    if args.json:
        print(json.dumps([{"run": s["run"], "methods": s["methods"].to_dict("records"),
                           "contrast": s["contrast"].to_dict("records")} for s in summaries], indent=1, default=str))
    else:
        print("\n\n".join(to_markdown(s) for s in summaries))
    return summaries


if __name__ == "__main__":
    main()
