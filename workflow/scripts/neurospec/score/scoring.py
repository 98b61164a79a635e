"""Which neurons specialize in which group (a translation direction or a language): four methods.

All methods start from a *stacked* count table, one row per group x layer x neuron::

    group, layer, neuron, count, n_tokens [, rate_sum, rate_sumsq, n_sentences] [, act_sum, act_sumsq]

where ``count`` is the number of counted tokens on which the neuron fired (one of the count
table's criteria, ``gate_active`` by default) and ``n_tokens`` the number of tokens counted for
the group; when the count tables hold them, ``rate_sum``/``rate_sumsq`` are the sums over the
group's ``n_sentences`` sentences of each sentence's firing rate (same criterion) and of its
square, and ``act_sum``/``act_sumsq`` the sums of the activation and of its square over tokens.
Groups are translation directions (``stack_counts``) or languages (``pool_by_language``, which
sums the directions that counted the same language's tokens: every column is additive).

Every method returns the long table of ``SCORE_SCHEMA`` (``group, layer, neuron, score``) holding
the *selected* (group, neuron) cells only, sorted by group, layer, neuron:

``frequency``  Tan, Wu & Monz (EMNLP 2024), per group and layer: the fewest neurons that hold
               ``k`` percent of the layer's activation mass.  score = share of the layer's mass.
``lape``       Tang et al. (ACL 2024): low entropy of activation probabilities across languages.
               score = 1 - entropy / log(number of groups).
``contrast``   ours: each language against the rest, Welch's t-test on per-sentence
               firing rates (``unit="sentence"``, default) or a two-proportion z-test on tokens
               (``unit="token"``), Benjamini-Hochberg FDR control.  score = log-odds ratio.
``diffmeans``  baseline: per language and layer, the ``k`` neurons whose mean activation differs
               most from the rest's (absolute difference).  score = the difference.

"The rest" of a language (``rest``, the workflow's ``scoring.rest``): ``balanced`` (the workflow's
default), the unweighted mean of the other languages' own means, every language weighing the
same; ``pooled``, the other languages' sentences or tokens pooled, where the language with the most
(EC40's English, counted by every en-xx pair) dominates.  A sentence that several pairs count
(EC40's multi-parallel English) is one sentence unit: ``distinct_sentences`` and
``pool_by_language``'s ``distinct``.

``iou`` compares the selected sets of every two groups per layer.  The functions here are pure
(no Snakemake); ``run_scoring`` is the file-level entry point of the rule scripts.
"""

from __future__ import annotations


from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from ..errors import NeurospecError
from ..tables import COUNT_COLUMNS, SCORE_SCHEMA, read_counts, read_metadata, read_table, write_table

logger = logging.getLogger("neurospec")

from .methods import (  # noqa: F401 (neurospec.score.scoring is the stage's API)
    ALTERNATIVES,
    CONTRAST_UNITS,
    RESTS,
    contrast,
    contrast_statistics,
    diffmeans,
    frequency,
    lape,
    sentence_contrast_statistics,
)
from .overlap import iou, iou_matrix  # noqa: F401
from .statistics import benjamini_hochberg, welch_pvalue  # noqa: F401
from .stacking import (  # noqa: F401
    ACTIVATION_STACK_COLUMNS,
    HASH_KEYS,
    IOU_COLUMNS,
    SCORE_COLUMNS,
    SENTENCE_STACK_COLUMNS,
    STACK_COLUMNS,
    UNIT_EXTRAS,
    dense,
    distinct_sentences,
    pool_by_language,
    stack_counts,
    table_hashes,
)

# method name -> (groups it scores: "pair" or "language", function)
METHODS: dict[str, tuple[str, Callable[..., pd.DataFrame]]] = {
    "frequency": ("pair", frequency),
    "frequency_language": ("language", frequency),
    "lape": ("language", lape),
    "contrast": ("language", contrast),
    "diffmeans": ("language", diffmeans),
}


def method_columns(method: str, column: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """The count table columns ``method`` reads (so that scoring reads no more than it needs)."""
    if method not in METHODS:
        raise NeurospecError(f"unknown scoring method {method!r}; known: {', '.join(METHODS)}")
    if column not in COUNT_COLUMNS:
        raise NeurospecError(f"unknown count column {column!r} (key 'scoring.column'); "
                             f"choose one of {', '.join(COUNT_COLUMNS)}")
    params = params or {}
    columns = [column]
    if method == "contrast" and params.get("unit", "sentence") == "sentence":
        columns += [f"{column}_rate_sum", f"{column}_rate_sumsq"]
    if method == "diffmeans":
        columns += ["act_sum"]
    return columns


def read_count_tables(paths: Sequence[str | os.PathLike],
                      columns: Sequence[str] | None = None) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """Count tables keyed by their pair (metadata ``pair``, else the file name); ``columns``: as
    ``tables.read_counts`` (default all)."""
    out: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for path in paths:
        df, meta = read_counts(path, columns)
        pair = str(meta.get("pair") or Path(path).stem)
        if pair in out:
            raise NeurospecError(f"two count tables are for pair {pair!r} (second: {path})")
        meta = dict(meta)
        meta["_path"] = str(path)
        out[pair] = (df, meta)
    return out


def counted_languages(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]]) -> dict[str, str]:
    """Group -> the language whose tokens were counted (metadata ``counted_lang``)."""
    out = {}
    for group, (_, meta) in tables.items():
        lang = meta.get("counted_lang")
        if not lang:
            raise NeurospecError(f"count table of {group!r} ({meta.get('_path', '?')}) lacks the "
                                 "'counted_lang' metadata key: recollect it with this version")
        out[group] = str(lang)
    return out


def score_tables(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], method: str, column: str,
                 params: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Run ``method`` on count tables: (scores, iou, metadata for both files)."""
    if method not in METHODS:
        raise NeurospecError(f"unknown scoring method {method!r}; known: {', '.join(METHODS)}")
    group_kind, func = METHODS[method]
    params = dict(params or {})
    stacked = stack_counts(tables, column)
    distinct = langs = None
    if group_kind == "language":
        langs = counted_languages(tables)
        sentence_units = method == "contrast" and params.get("unit", "sentence") == "sentence"
        distinct = distinct_sentences(tables, langs) if sentence_units and "n_sentences" in stacked.columns else None
        stacked = pool_by_language(stacked, langs, distinct)
    try:
        scores = func(stacked, **params)
    except TypeError as exc:  # an unexpected parameter name
        raise NeurospecError(f"bad parameters {params} for method {method!r}: {exc}") from None
    d = dense(stacked)
    groups = sorted(d.groups)
    layers = sorted(set(d.layer.tolist()))
    overlap = iou(scores, groups=groups, layers=layers)
    meta = {
        "method": method,
        "group_kind": group_kind,
        "column": column,
        "params": params,
        "groups": groups,
        "layers": layers,
        "n_units": int(len(d.layer)),
        "n_tokens": {g: int(n) for g, n in zip(d.groups, d.n_tokens)},
        "pairs": list(tables),
    }
    if d.n_sentences is not None:  # the sentence units of each group: distinct counted sentences
        meta["n_sentences"] = {g: int(n) for g, n in zip(d.groups, d.n_sentences)}
        meta["n_sentence_rows"] = {g: int(sum(m.get("n_rate_sentences", 0) for p, (_, m) in tables.items()
                                              if (langs[p] if group_kind == "language" else p) == g))
                                   for g in d.groups}
    return scores, overlap, meta


def run_scoring(paths: Sequence[str | os.PathLike], scores_path: str | os.PathLike, iou_path: str | os.PathLike,
                method: str, column: str, params: Mapping[str, Any] | None = None,
                variant: str | None = None) -> None:
    """Rule entry point: read the activation tables, score, write scores and IoU (atomically).

    ``variant``: the name of a scoring.variants entry these parameters come from (neurospec.variants),
    recorded in the metadata (``variant``) so that every table and figure made from it is labelled."""
    tables = read_count_tables(paths, method_columns(method, column, params))
    logger.info("%s: %d count tables, column %s, parameters %s", method, len(tables), column, dict(params or {}))
    scores, overlap, meta = score_tables(tables, method, column, params)
    if variant:
        meta["variant"] = variant
    per_group = scores.groupby("group").size().reindex(meta["groups"], fill_value=0)
    logger.info("%s: %d selected (group, neuron) cells over %d groups; per group: %s", method, len(scores),
                len(meta["groups"]), ", ".join(f"{g}={n}" for g, n in per_group.items()))
    write_table(scores, scores_path, SCORE_SCHEMA, metadata=meta)
    write_table(overlap, iou_path, None, metadata=meta)


def read_result(path: str | os.PathLike, columns: Sequence[str], what: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A table of a method's results (``what``: "score", "stability") and its metadata, which must
    name the method, its groups and layers."""
    df = read_table(path, required=tuple(columns))
    meta = read_metadata(path)
    for key in ("method", "groups", "layers"):
        if key not in meta:
            raise NeurospecError(f"{what} table {path} lacks the {key!r} metadata key")
    return df, meta


def read_scores(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A score table and its metadata (method, group_kind, groups, layers, ...)."""
    return read_result(path, SCORE_COLUMNS, "score")


def read_iou(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    return read_table(path, required=IOU_COLUMNS), read_metadata(path)
