"""Stacked count tables, the input of every scoring method: one row per group x layer x neuron
(``stack_counts``: groups are translation directions; ``pool_by_language``: languages), the distinct
sentences behind them, and the dense arrays the methods compute on."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import NeurospecError
from ..tables import COUNT_COLUMNS, SCORE_SCHEMA

logger = logging.getLogger("neurospec")

STACK_COLUMNS = ("group", "layer", "neuron", "count", "n_tokens")
# Optional columns of a stacked table (every one additive over the groups that are pooled):
SENTENCE_STACK_COLUMNS = ("rate_sum", "rate_sumsq", "n_sentences")  # n_sentences: one value per group
ACTIVATION_STACK_COLUMNS = ("act_sum", "act_sumsq")
UNIT_EXTRAS = ("rate_sum", "rate_sumsq", *ACTIVATION_STACK_COLUMNS)  # one value per group and unit
SCORE_COLUMNS = tuple(SCORE_SCHEMA.names)
IOU_COLUMNS = ("layer", "group_a", "group_b", "n_a", "n_b", "intersection", "iou")


# --------------------------------------------------------------------------------------------
# Stacking and pooling
# --------------------------------------------------------------------------------------------


def stack_counts(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], column: str) -> pd.DataFrame:
    """One long table (group, layer, neuron, count, n_tokens, ...) from per-group count tables.

    ``tables`` maps a group name (e.g. the pair "en-de") to ``(count table, metadata)`` as
    ``tables.read_counts`` returns them.  Every table must hold the same layer x neuron rows.
    ``group`` is a categorical in the mapping's order.  The optional columns come along when every
    table has them: ``rate_sum``/``rate_sumsq`` from ``{column}_rate_sum``/``_rate_sumsq`` with
    ``n_sentences`` from the metadata's ``n_rate_sentences``; ``act_sum``/``act_sumsq``.
    """
    if column not in COUNT_COLUMNS:
        raise NeurospecError(f"unknown count column {column!r} (key 'scoring.column'); "
                             f"choose one of {', '.join(COUNT_COLUMNS)}")
    if not tables:
        raise NeurospecError("no count tables to score")
    ref_units = ref_group = None
    counts, n_tokens = [], []
    sources = {"rate_sum": f"{column}_rate_sum", "rate_sumsq": f"{column}_rate_sumsq",
               "act_sum": "act_sum", "act_sumsq": "act_sumsq"}
    extras = [x for x, col in sources.items() if all(col in df.columns for df, _ in tables.values())]
    if not all(isinstance(m.get("n_rate_sentences"), (int, np.integer)) for _, m in tables.values()):
        extras = [x for x in extras if not x.startswith("rate")]
    extra_values: dict[str, list[np.ndarray]] = {x: [] for x in extras}
    for group, (df, meta) in tables.items():
        missing = [c for c in ("layer", "neuron", column) if c not in df.columns]
        if missing:
            raise NeurospecError(f"count table of {group!r} lacks column(s) {', '.join(missing)}")
        n = meta.get("n_tokens")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise NeurospecError(f"count table of {group!r} has n_tokens={n!r}: it counted no tokens, "
                                 "so it cannot be scored (empty pair table, or every sentence skipped?)")
        d = df[["layer", "neuron", column, *(sources[x] for x in extras)]].sort_values(["layer", "neuron"],
                                                                                    kind="stable")
        units = d[["layer", "neuron"]].to_numpy(np.int64)
        if len(units) == 0:
            raise NeurospecError(f"count table of {group!r} has no rows")
        if ref_units is None:
            dup = (np.diff(units, axis=0) == 0).all(axis=1)
            if dup.any():
                layer, neuron = units[np.flatnonzero(dup)[0]]
                raise NeurospecError(f"count table of {group!r} holds layer {layer} neuron {neuron} twice")
            ref_units, ref_group = units, group
        elif units.shape != ref_units.shape or not np.array_equal(units, ref_units):
            raise NeurospecError(
                f"count tables disagree on their layer x neuron rows: {group!r} has {len(units)} rows "
                f"over layers {span(units[:, 0])}, {ref_group!r} has {len(ref_units)} over layers "
                f"{span(ref_units[:, 0])} (were they collected from the same model?)")
        c = d[column].to_numpy(np.int64)
        if (c < 0).any() or (c > n).any():
            raise NeurospecError(f"count table of {group!r} has {column!r} counts outside [0, n_tokens={n}]")
        counts.append(c)
        n_tokens.append(int(n))
        for x in extras:
            extra_values[x].append(d[sources[x]].to_numpy(np.float64))
    n_groups = len(counts)
    extra = {x: np.stack(v) for x, v in extra_values.items()}
    n_sentences = None
    if "rate_sum" in extra:
        n_sentences = np.array([int(m["n_rate_sentences"]) for _, m in tables.values()], dtype=np.int64)
    return stacked_frame([str(g) for g in tables], ref_units[:, 0], ref_units[:, 1], np.stack(counts),
                          np.asarray(n_tokens, dtype=np.int64), extra, n_sentences)


def span(values: np.ndarray) -> str:
    return f"{values.min()}..{values.max()}" if len(values) else "none"


def pool_by_language(stacked: pd.DataFrame, counted_lang: Mapping[str, str],
                     distinct: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Sum every column (``count``, ``n_tokens`` and the optional ones) of the groups (pairs) that
    counted the same language.

    ``counted_lang`` maps each group of ``stacked`` to its counted language (the source language
    of a pair).  Languages come out in order of first appearance among the groups.

    ``distinct`` (language -> number of distinct counted sentences over its pairs, from
    ``distinct_sentences``) makes a sentence counted by several pairs one unit: the language's
    ``n_sentences`` becomes that number n_u and its ``rate_sum``/``rate_sumsq`` are multiplied by
    n_u / N (N = the pooled rows), i.e. each row weighs 1 / (mean multiplicity).  When every pair
    counts the same sentence set (EC40's multi-parallel English: each sentence m times) this is
    each sentence's rate averaged over its m measures for the mean, and for the second moment the
    average of the squares (>= the square of the average), so the variance is never smaller than
    that of the averaged rates: conservative, and exact when the copies' rates are equal.  When the
    pairs' sets only partly overlap it is an approximation: the mean is the row mean (a sentence
    counted by more pairs weighs more) and n the distinct count.  Token counts are not changed.
    """
    d = dense(stacked)
    missing = [g for g in d.groups if g not in counted_lang]
    if missing:
        raise NeurospecError(f"no counted language for group(s) {', '.join(missing)}")
    langs = list(dict.fromkeys(str(counted_lang[g]) for g in d.groups))
    index = np.array([langs.index(str(counted_lang[g])) for g in d.groups])
    def pooled(values: np.ndarray) -> np.ndarray:  # (G, ...) -> (languages, ...)
        out = np.zeros((len(langs), *values.shape[1:]), dtype=values.dtype)
        np.add.at(out, index, values)
        return out

    n_sentences = None if d.n_sentences is None else pooled(d.n_sentences)
    extra = {x: pooled(v) for x, v in d.extra.items()}
    if distinct and n_sentences is not None:
        for li, lang in enumerate(langs):
            n_u = distinct.get(lang)
            if n_u is None:
                continue
            if not 0 < n_u <= n_sentences[li]:
                raise NeurospecError(f"language {lang!r}: {n_u} distinct counted sentences but "
                                     f"{int(n_sentences[li])} counted rows (count tables' metadata disagree)")
            for x in ("rate_sum", "rate_sumsq"):
                if x in extra:
                    extra[x][li] *= n_u / n_sentences[li]
            n_sentences[li] = n_u
    return stacked_frame(langs, d.layer, d.neuron, pooled(d.counts), pooled(d.n_tokens), extra, n_sentences)


HASH_KEYS = ("counted_hashes_even", "counted_hashes_odd")  # collection's metadata: see collect.counted_hashes


def table_hashes(meta: Mapping[str, Any]) -> set[str] | None:
    """The content hashes of the sentences a count table counted (those with a rate), or None for a
    table collected before they were recorded: ``counted_hashes`` (one half, see
    ``stability.half_tables``), else the union of the even and the odd half's."""
    if "counted_hashes" in meta:
        return set(meta["counted_hashes"])
    if all(k in meta for k in HASH_KEYS):
        return set(meta[HASH_KEYS[0]]) | set(meta[HASH_KEYS[1]])
    return None


def distinct_sentences(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
                       counted_lang: Mapping[str, str]) -> dict[str, int]:
    """Language -> the number of distinct sentences (content hashes) its pairs' tables counted.

    A language counted by one pair needs no hashes (its rows are its sentences: n_rate_sentences);
    one pooled over several pairs does: a table without them (collected by an older version) is an
    error, since its sentences may repeat across the pairs (EC40's English) and would count as
    independent units.
    """
    by_lang: dict[str, list[str]] = {}
    for group in tables:
        by_lang.setdefault(str(counted_lang[group]), []).append(group)
    out: dict[str, int] = {}
    for lang, groups in by_lang.items():
        union: set[str] = set()
        for group in groups:
            meta = tables[group][1]
            hashes = table_hashes(meta)
            if hashes is None:
                if len(groups) == 1:
                    break
                raise NeurospecError(
                    f"count table of {group!r} ({meta.get('_path', '?')}) lacks the 'counted_hashes_even' "
                    f"metadata key, so {lang!r} sentences counted by several pairs cannot be counted once: "
                    "it was collected by an older version; delete the run's activations/ folder and rerun")
            union |= hashes
        else:
            out[lang] = len(union)
    return out


def stacked_frame(groups, layer, neuron, counts, n_tokens, extra: Mapping[str, np.ndarray] | None = None,
                   n_sentences: np.ndarray | None = None) -> pd.DataFrame:
    n_groups, n_units = counts.shape
    columns = {
        "group": pd.Categorical.from_codes(np.repeat(np.arange(n_groups, dtype=np.int32), n_units),
                                           categories=list(groups)),
        "layer": np.tile(np.asarray(layer).astype(np.int32), n_groups),
        "neuron": np.tile(np.asarray(neuron).astype(np.int32), n_groups),
        "count": counts.reshape(-1).astype(np.int64),
        "n_tokens": np.repeat(np.asarray(n_tokens, dtype=np.int64), n_units),
    }
    for x in UNIT_EXTRAS:
        if extra and x in extra:
            columns[x] = np.asarray(extra[x], dtype=np.float64).reshape(-1)
        if x == "rate_sumsq" and n_sentences is not None:
            columns["n_sentences"] = np.repeat(np.asarray(n_sentences, dtype=np.int64), n_units)
    return pd.DataFrame(columns)


@dataclass
class Dense:
    """A stacked table as arrays: counts[g, u] for group g and unit u = (layer[u], neuron[u])."""

    groups: list[str]
    layer: np.ndarray  # (U,) sorted by layer then neuron
    neuron: np.ndarray  # (U,)
    counts: np.ndarray  # (G, U) int64
    n_tokens: np.ndarray  # (G,) int64
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # UNIT_EXTRAS present: (G, U) float64
    n_sentences: np.ndarray | None = None  # (G,) int64, with rate_sum and rate_sumsq

    def require(self, what: str, *names: str) -> list[np.ndarray]:
        """The optional arrays ``names``, or one clear error saying that ``what`` needs them."""
        missing = [x for x in names if x not in self.extra]
        if missing:
            raise NeurospecError(f"{what} needs {', '.join(missing)} in the stacked count table; count "
                                 "tables of count schema version 2 hold them")
        return [self.extra[x] for x in names]

    def layer_starts(self) -> np.ndarray:
        return np.flatnonzero(np.r_[True, self.layer[1:] != self.layer[:-1]])

    def layer_index(self) -> np.ndarray:
        return np.cumsum(np.r_[True, self.layer[1:] != self.layer[:-1]]) - 1


def dense(stacked: pd.DataFrame) -> Dense:
    missing = [c for c in STACK_COLUMNS if c not in stacked.columns]
    if missing:
        raise NeurospecError(f"stacked count table lacks column(s) {', '.join(missing)}")
    if stacked.empty:
        raise NeurospecError("stacked count table is empty")
    group = stacked["group"]
    if isinstance(group.dtype, pd.CategoricalDtype):
        cat = group.cat.remove_unused_categories()
    else:
        cat = pd.Categorical(group.astype(str), categories=pd.unique(group.astype(str)))
        cat = pd.Series(cat, index=group.index)
    codes = cat.cat.codes.to_numpy()
    groups = [str(g) for g in cat.cat.categories]
    layer = stacked["layer"].to_numpy(np.int64)
    neuron = stacked["neuron"].to_numpy(np.int64)
    counts = stacked["count"].to_numpy(np.int64)
    n_tokens = stacked["n_tokens"].to_numpy(np.int64)
    extra_names = [x for x in UNIT_EXTRAS if x in stacked.columns]
    if ("rate_sum" in extra_names) != ("n_sentences" in stacked.columns):
        raise NeurospecError("a stacked count table with rate_sum needs n_sentences, and the other way round")
    per_unit = [stacked[x].to_numpy(np.float64) for x in extra_names]
    if "n_sentences" in stacked.columns:
        per_unit.append(stacked["n_sentences"].to_numpy(np.int64))
    n_groups = len(groups)
    if len(stacked) % n_groups:
        raise NeurospecError("groups of the stacked count table have different numbers of layer x neuron rows")
    n_units = len(stacked) // n_groups

    def shaped(order=None):
        take = (lambda a: a) if order is None else (lambda a: a[order])
        return tuple(take(a).reshape(n_groups, n_units) for a in (codes, layer, neuron, counts, n_tokens, *per_unit))

    def consistent(c, l, n):
        if not (c == np.arange(n_groups)[:, None]).all():
            return False
        if not ((l == l[0]).all() and (n == n[0]).all()):
            return False
        return bool(np.all((l[0, 1:] > l[0, :-1]) | ((l[0, 1:] == l[0, :-1]) & (n[0, 1:] > n[0, :-1]))))

    c, l, n, k, t, *more = shaped()
    if not consistent(c, l, n):
        c, l, n, k, t, *more = shaped(np.lexsort((neuron, layer, codes)))
        if not consistent(c, l, n):
            raise NeurospecError("groups of the stacked count table disagree on their layer x neuron rows "
                                 "(or a group holds a layer x neuron row twice)")
    if not (t == t[:, :1]).all():
        raise NeurospecError("n_tokens is not constant within a group of the stacked count table")
    n_tok = t[:, 0].copy()
    if (n_tok <= 0).any():
        bad = groups[int(np.flatnonzero(n_tok <= 0)[0])]
        raise NeurospecError(f"group {bad!r} counted no tokens (n_tokens <= 0)")
    if (k < 0).any() or (k > n_tok[:, None]).any():
        raise NeurospecError("counts outside [0, n_tokens] in the stacked count table")
    extra = {x: np.ascontiguousarray(v) for x, v in zip(extra_names, more)}
    n_sentences = None
    if "n_sentences" in stacked.columns:
        s_all = more[-1]
        if not (s_all == s_all[:, :1]).all():
            raise NeurospecError("n_sentences is not constant within a group of the stacked count table")
        n_sentences = s_all[:, 0].copy()
    return Dense(groups, l[0].copy(), n[0].copy(), np.ascontiguousarray(k), n_tok, extra, n_sentences)


def score_frame(groups: Sequence[str], group_idx, layer, neuron, score) -> pd.DataFrame:
    df = pd.DataFrame({
        "group": np.asarray(groups, dtype=object)[np.asarray(group_idx, dtype=np.int64)]
        if len(group_idx) else np.array([], dtype=object),
        "layer": np.asarray(layer, dtype=np.int32),
        "neuron": np.asarray(neuron, dtype=np.int32),
        "score": np.asarray(score, dtype=np.float64),
    })
    df["group"] = df["group"].astype(str)
    return df.sort_values(["group", "layer", "neuron"], kind="stable").reset_index(drop=True)


def check_number(name: str, value, low: float, high: float, low_open: bool, high_open: bool = False,
                  key: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise NeurospecError(f"{key or name} must be a finite number, got {value!r}")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise NeurospecError(f"{key or name} must lie in {interval}, got {value!r}")
    return float(value)
