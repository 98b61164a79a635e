"""The headline table of a run's report: per selection (method and variant) the numbers a reader asks
first, each read off the stage's own table (``headline``, a pure function of those tables):

- ``selected_neurons``: distinct (layer, neuron) the selection holds over all its groups
  (``scores/{method}.parquet``), ``selected_cells`` its (group, layer, neuron) rows;
- ``null_selected_neurons``: the same for the null model's run (``results/{model}-null/...``) when
  one exists, else empty;
- ``stability_iou`` / ``stability_chance``: median split-half IoU over the (group, layer) cells with
  a selection and the median IoU expected by chance (``scores/{method}_stability.parquet``,
  ``score.stability.summarize``), ``stability_above_chance`` the share of cells with p < 0.05,
  ``null_stability_iou`` the null model's median split-half IoU when its run exists;
- ablation (``ablation/{method}.parquet``, when ablation ran): ``ablation_groups`` evaluated on their own
  language, ``ablation_specific`` those specific (own-language relative delta NLL above every other
  language's and every random set's: ``plots.ablation_figures.specificity``), ``ablation_ci_above_zero``
  those whose own-language delta NLL's bootstrap interval lies above 0 (``delta_nll_low`` > 0),
  ``ablation_p_below_05`` those with ``p_controls`` < 0.05, ``ablation_p_median`` the median
  ``p_controls``, ``ablation_delta_nll`` the median own-language delta NLL;
- steering (``steering/{method}.parquet``, when steering ran): at the best (mode, alpha) of the first
  prompt kind (``steering.summary.best_alpha``): ``steering_alpha``, ``steering_success`` (mean over
  groups) with ``steering_success_low``/``_high`` (its bootstrap interval over groups) and
  ``steering_random`` (the matched random sets' mean success at that alpha).

A stage that did not run leaves its columns empty (NaN); the report shows them as "—".
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import pandas as pd

from ..plots.ablation_figures import own_selection, specificity
from ..score.scoring import read_scores
from ..score.stability import read_stability, summarize
from ..steering.summary import best_alpha
from ..tables import read_metadata, read_table

COLUMNS = ("method", "selected_neurons", "selected_cells", "null_selected_neurons", "stability_iou",
           "stability_chance", "stability_above_chance", "null_stability_iou", "ablation_groups",
           "ablation_specific", "ablation_ci_above_zero", "ablation_p_below_05", "ablation_p_median",
           "ablation_delta_nll", "steering_alpha", "steering_success", "steering_success_low",
           "steering_success_high", "steering_random")
NAN = math.nan


def neurons(scores: pd.DataFrame) -> int:
    """Distinct (layer, neuron) of a score table."""
    return int(len(scores[["layer", "neuron"]].drop_duplicates()))


def ablation_columns(ablation: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, float]:
    """The ablation columns of one selection (see the module's docstring)."""
    spec = specificity(ablation, meta)
    rows = own_selection(ablation)
    own = pd.DataFrame([{"group": g, "eval_lang": lang} for g, lang in meta["group_lang"].items()])
    sel = rows[rows["condition"] == "selected"].merge(own, on=["group", "eval_lang"]) if len(own) else rows[:0]
    p = sel["p_controls"].dropna() if "p_controls" in sel.columns else pd.Series(dtype=float)
    ci = sel["delta_nll_low"].dropna() if "delta_nll_low" in sel.columns else pd.Series(dtype=float)
    return {"ablation_groups": int(len(spec)), "ablation_specific": int(spec["specific"].sum()),
            "ablation_ci_above_zero": int((ci > 0).sum()) if len(ci) else NAN,
            "ablation_p_below_05": int((p < 0.05).sum()) if len(p) else NAN,
            "ablation_p_median": float(p.median()) if len(p) else NAN,
            "ablation_delta_nll": float(sel["delta_nll"].median()) if len(sel) else NAN}


def steering_columns(steering: pd.DataFrame) -> dict[str, float]:
    """The steering columns of one selection: its best alpha of the first prompt kind."""
    best = best_alpha(steering)
    if best.empty:
        return {}
    r = best.iloc[0]
    return {"steering_alpha": float(r["alpha"]), "steering_success": float(r["selected"]),
            "steering_success_low": float(r["selected_low"]), "steering_success_high": float(r["selected_high"]),
            "steering_random": float(r["random"])}


def headline_row(method: str, scores: pd.DataFrame, stability: pd.DataFrame | None = None,
                 ablation: tuple[pd.DataFrame, Mapping[str, Any]] | None = None,
                 steering: pd.DataFrame | None = None, null_scores: pd.DataFrame | None = None,
                 null_stability: pd.DataFrame | None = None) -> dict[str, Any]:
    """One selection's row of the headline table from its tables (None: that stage did not run)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS, NAN)
    row.update(method=method, selected_neurons=neurons(scores), selected_cells=int(len(scores)))
    if null_scores is not None:
        row["null_selected_neurons"] = neurons(null_scores)
    if stability is not None:
        s = summarize(stability)
        row.update(stability_iou=s["median_iou"], stability_chance=s["median_chance"],
                   stability_above_chance=s["share_above_chance"])
    if null_stability is not None:
        row["null_stability_iou"] = summarize(null_stability)["median_iou"]
    if ablation is not None:
        row.update(ablation_columns(*ablation))
    if steering is not None:
        row.update(steering_columns(steering))
    return row


# the columns that count (neurons, cells, groups): integers, missing where a stage did not run
COUNT_COLUMNS = ("selected_neurons", "selected_cells", "null_selected_neurons", "ablation_groups",
                 "ablation_specific", "ablation_ci_above_zero", "ablation_p_below_05")


def headline(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The headline table of ``headline_row``'s rows, in ``COLUMNS`` order."""
    df = pd.DataFrame(list(rows), columns=list(COLUMNS))
    # counts stay whole numbers (in the CSV too) where a stage or the null run is missing for some methods
    counts = [c for c in COUNT_COLUMNS if c in df.columns]
    df[counts] = df[counts].astype("Int64")
    return df


def _by_method(paths: Sequence[str | os.PathLike] | None, suffix: str = "") -> dict[str, str]:
    """{method: path} of tables named ``{method}{suffix}.parquet``."""
    out = {}
    for p in paths or []:
        stem = os.path.basename(str(p)).removesuffix(".parquet")
        if stem.endswith(suffix):
            out[stem.removesuffix(suffix)] = str(p)
    return out


def headline_from_files(methods: Sequence[str], scores: Sequence[str], stability: Sequence[str] = (),
                        ablation: Sequence[str] = (), steering: Sequence[str] = (), null_scores: Sequence[str] = (),
                        null_stability: Sequence[str] = ()) -> pd.DataFrame:
    """The headline table of a run's files: each list holds ``{method}.parquet`` (stability:
    ``{method}_stability.parquet``) tables of some of ``methods``; a method missing from a list did
    not run that stage."""
    found = {"scores": _by_method(scores), "stability": _by_method(stability, "_stability"),
             "ablation": _by_method(ablation), "steering": _by_method(steering),
             "null_scores": _by_method(null_scores), "null_stability": _by_method(null_stability, "_stability")}
    rows = []
    for m in methods:
        def get(kind, read):
            return read(found[kind][m]) if m in found[kind] else None
        rows.append(headline_row(
            m, read_scores(found["scores"][m])[0], stability=get("stability", lambda p: read_stability(p)[0]),
            ablation=get("ablation", lambda p: (read_table(p), read_metadata(p))),
            steering=get("steering", read_table), null_scores=get("null_scores", lambda p: read_scores(p)[0]),
            null_stability=get("null_stability", lambda p: read_stability(p)[0])))
    return headline(rows)

