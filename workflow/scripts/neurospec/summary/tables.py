"""The main tables of a run as CSV (for programs) and HTML (for the report, category "Tables"): one
rule (``summary_table``) per table name, ``write_table`` its task. Every table is read off the stages'
own tables, nothing recomputed from counts:

- ``headline``: per selection, selected neurons, stability against chance and the null model, ablation
  specificity, steering success (``summary.headline``);
- ``scores``: per selection and group, selected (layer, neuron) cells in all and per layer;
- ``stability``: every selection's split-half stability table (per group and layer), one above the other;
- ``ablation``: per selection and group, its own language's delta NLL with its bootstrap interval and
  ``p_controls`` (the ablation table's columns), and its specificity (``plots.ablation_figures``);
- ``translation_quality``: the translation scores table (chrF++, BLEU, deltas and intervals per
  direction and condition);
- ``steering``: per selection, the best (mode, alpha) per prompt kind and the success of each condition
  there (``steering.summary.best_alpha``).
"""

from __future__ import annotations

import html
import math
import os
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from .. import atomic
from ..errors import NeurospecError
from ..plots.ablation_figures import own_selection, specificity
from ..score.scoring import read_scores
from ..score.stability import read_stability
from ..steering.summary import best_alpha
from ..tables import read_metadata, read_table
from .headline import headline_from_files

DASH = "—"  # a stage that did not run, or a value that does not exist


def _method(path: str) -> str:
    return os.path.basename(str(path)).removesuffix(".parquet").removesuffix("_stability")


def scores_table(scores: Sequence[str], **_: Any) -> pd.DataFrame:
    frames = []
    for p in scores:
        df, meta = read_scores(p)
        per_layer = df.groupby(["group", "layer"]).size().unstack("layer", fill_value=0)
        per_layer = per_layer.reindex(index=meta["groups"], fill_value=0)
        per_layer.columns = [f"layer {int(c)}" for c in per_layer.columns]
        per_layer.insert(0, "selected", per_layer.sum(axis=1).astype(int))
        frames.append(per_layer.reset_index().rename(columns={"index": "group"}).assign(method=_method(p)))
    df = pd.concat(frames, ignore_index=True)
    # in layer order (concat keeps the order it first meets them in); a layer one selection never picks from: 0
    layers = sorted((c for c in df.columns if c.startswith("layer ")), key=lambda c: int(c.split()[1]))
    df = df[[c for c in df.columns if c not in layers] + layers]
    df[layers] = df[layers].fillna(0).astype(int)
    return _first(df, "method")


def stability_table(stability: Sequence[str], **_: Any) -> pd.DataFrame:
    return _first(pd.concat([read_stability(p)[0].assign(method=_method(p)) for p in stability],
                            ignore_index=True), "method")


def ablation_table(ablation: Sequence[str], **_: Any) -> pd.DataFrame:
    frames = []
    for p in ablation:
        df, meta = read_table(p), read_metadata(p)
        spec = specificity(df, meta).drop(columns=["method", "p_controls"])
        rows = own_selection(df)
        sel = rows[rows["condition"] == "selected"]
        keep = [c for c in ("group", "eval_lang", "delta_nll", "delta_nll_low", "delta_nll_high", "p_controls")
                if c in sel.columns]
        own = spec.merge(sel[keep].rename(columns={"eval_lang": "lang"}), on=["group", "lang"], how="left")
        frames.append(own.rename(columns={"own": "rel_own", "others": "rel_others", "random": "rel_random"})
                      .drop(columns=["others_max", "random_max"]).assign(method=_method(p)))
    return _first(pd.concat(frames, ignore_index=True), "method")


def translation_quality_table(translation: Sequence[str], **_: Any) -> pd.DataFrame:
    return pd.concat([read_table(p) for p in translation], ignore_index=True)


def steering_table(steering: Sequence[str], **_: Any) -> pd.DataFrame:
    return _first(pd.concat([best_alpha(read_table(p)).assign(method=_method(p)) for p in steering],
                            ignore_index=True), "method")


def headline_table(methods: Sequence[str], scores: Sequence[str], **inputs: Sequence[str]) -> pd.DataFrame:
    return headline_from_files(methods, scores, **inputs)


def _first(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df[[column, *(c for c in df.columns if c != column)]]


# name -> (builder, title, what it is)
TABLES: dict[str, tuple[Callable[..., pd.DataFrame], str, str]] = {
    "headline": (headline_table, "Headline: every selection at a glance",
                 "Per selection: neurons selected (and by the null model, when its run exists), median "
                 "split-half IoU against chance, ablation specificity (groups specific, bootstrap interval "
                 "above 0, p_controls), steering success at the best alpha. Empty (—): the stage did not run."),
    "scores": (scores_table, "Selected neurons per group and layer",
               "Per selection and group: the (layer, neuron) cells it selected, in all and per layer."),
    "stability": (stability_table, "Split-half stability",
                  "Per selection, group and layer: IoU of the selections made on each half of the sentences, "
                  "the IoU expected by chance and the probability of that overlap by chance."),
    "ablation": (ablation_table, "Ablation on each group's own language",
                 "Per selection and group: delta NLL (nats/token) on its own language with its bootstrap "
                 "interval and p_controls against the matched random sets; relative deltas (delta / base NLL) "
                 "on its own language, the others and the random sets; specific: own above every other."),
    "translation_quality": (translation_quality_table, "Translation quality",
                            "Per direction and condition: chrF++, BLEU and their deltas against the baseline."),
    "steering": (steering_table, "Steering at the best alpha",
                 "Per selection and prompt kind: the best (mode, alpha) and the success of each condition there."),
}


def _cell(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def to_html(df: pd.DataFrame, title: str, about: str) -> str:
    """A standalone page: title, what the table is, the table (floats to 4 significant digits, — for empty)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "\n".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                     for row in df.itertuples(index=False))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
            "<style>body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
            "td:first-child{text-align:left}</style></head>\n"
            f"<body><h2>{html.escape(title)}</h2><p>{html.escape(about)}</p>\n"
            f"<table>\n<tr>{head}</tr>\n{body}\n</table></body></html>\n")


def build(name: str, **inputs: Any) -> pd.DataFrame:
    if name not in TABLES:
        raise NeurospecError(f"unknown summary table {name!r}; known: {', '.join(TABLES)}")
    return TABLES[name][0](**inputs)


def write_table(name: str, csv: str, html_path: str, inputs: Mapping[str, Sequence[str]],
                methods: Sequence[str] = ()) -> pd.DataFrame:
    """Rule summary_table: the table ``name`` of the run's ``inputs`` (kind -> paths) as CSV and HTML."""
    df = build(name, methods=list(methods), **{k: list(v) for k, v in inputs.items()})
    _, title, about = TABLES[name]
    atomic.write_text(csv, df.to_csv(index=False))
    atomic.write_text(html_path, to_html(df, title, about))
    return df
