"""Which neurons specialize in which group (a translation direction or a language): three methods.

All methods start from a *stacked* count table, one row per group x layer x neuron::

    group, layer, neuron, count, n_tokens

where ``count`` is the number of counted tokens on which the neuron fired (one of the count
table's criteria, ``gate_active`` by default) and ``n_tokens`` the number of tokens counted for
the group.  Groups are translation directions (``stack_counts``) or languages
(``pool_by_language``, which sums the directions that counted the same language's tokens).

Every method returns the long table of ``SCORE_SCHEMA`` (``group, layer, neuron, score``) holding
the *selected* (group, neuron) cells only, sorted by group, layer, neuron:

``frequency``  Tan, Wu & Monz (EMNLP 2024), per group and layer: the fewest neurons that hold
               ``k`` percent of the layer's activation mass.  score = share of the layer's mass.
``lape``       Tang et al. (ACL 2024): low entropy of activation probabilities across languages.
               score = 1 - entropy / log(number of groups).
``contrast``   ours: each language against all others pooled, log-odds ratio and a two-proportion
               z-test with Benjamini-Hochberg FDR control.  score = log-odds ratio.

``iou`` compares the selected sets of every two groups per layer.  The functions here are pure
(no Snakemake); ``run_scoring`` is the file-level entry point of the rule scripts.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from .errors import NeurospecError
from .tables import COUNT_COLUMNS, SCORE_SCHEMA, read_counts, read_metadata, read_table, write_table

logger = logging.getLogger("neurospec")

STACK_COLUMNS = ("group", "layer", "neuron", "count", "n_tokens")
SCORE_COLUMNS = tuple(SCORE_SCHEMA.names)
IOU_COLUMNS = ("layer", "group_a", "group_b", "n_a", "n_b", "intersection", "iou")


# --------------------------------------------------------------------------------------------
# Stacking and pooling
# --------------------------------------------------------------------------------------------


def stack_counts(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], column: str) -> pd.DataFrame:
    """One long table (group, layer, neuron, count, n_tokens) from per-group count tables.

    ``tables`` maps a group name (e.g. the pair "en-de") to ``(count table, metadata)`` as
    ``tables.read_counts`` returns them.  Every table must hold the same layer x neuron rows.
    ``group`` is a categorical in the mapping's order.
    """
    if column not in COUNT_COLUMNS:
        raise NeurospecError(f"unknown count column {column!r} (key 'scoring.column'); "
                             f"choose one of {', '.join(COUNT_COLUMNS)}")
    if not tables:
        raise NeurospecError("no count tables to score")
    ref_units = ref_group = None
    counts, n_tokens = [], []
    for group, (df, meta) in tables.items():
        missing = [c for c in ("layer", "neuron", column) if c not in df.columns]
        if missing:
            raise NeurospecError(f"count table of {group!r} lacks column(s) {', '.join(missing)}")
        n = meta.get("n_tokens")
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise NeurospecError(f"count table of {group!r} has n_tokens={n!r}: it counted no tokens, "
                                 "so it cannot be scored (empty pair table, or every sentence skipped?)")
        d = df[["layer", "neuron", column]].sort_values(["layer", "neuron"], kind="stable")
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
                f"over layers {_span(units[:, 0])}, {ref_group!r} has {len(ref_units)} over layers "
                f"{_span(ref_units[:, 0])} (were they collected from the same model?)")
        c = d[column].to_numpy(np.int64)
        if (c < 0).any() or (c > n).any():
            raise NeurospecError(f"count table of {group!r} has {column!r} counts outside [0, n_tokens={n}]")
        counts.append(c)
        n_tokens.append(int(n))
    n_groups, n_units = len(counts), len(ref_units)
    codes = np.repeat(np.arange(n_groups, dtype=np.int32), n_units)
    return pd.DataFrame({
        "group": pd.Categorical.from_codes(codes, categories=[str(g) for g in tables]),
        "layer": np.tile(ref_units[:, 0].astype(np.int32), n_groups),
        "neuron": np.tile(ref_units[:, 1].astype(np.int32), n_groups),
        "count": np.concatenate(counts),
        "n_tokens": np.repeat(np.asarray(n_tokens, dtype=np.int64), n_units),
    })


def _span(values: np.ndarray) -> str:
    return f"{values.min()}..{values.max()}" if len(values) else "none"


def pool_by_language(stacked: pd.DataFrame, counted_lang: Mapping[str, str]) -> pd.DataFrame:
    """Sum ``count`` and ``n_tokens`` of the groups (pairs) that counted the same language.

    ``counted_lang`` maps each group of ``stacked`` to its counted language (the source language
    of a pair).  Languages come out in order of first appearance among the groups.
    """
    d = _dense(stacked)
    missing = [g for g in d.groups if g not in counted_lang]
    if missing:
        raise NeurospecError(f"no counted language for group(s) {', '.join(missing)}")
    langs = list(dict.fromkeys(str(counted_lang[g]) for g in d.groups))
    index = np.array([langs.index(str(counted_lang[g])) for g in d.groups])
    counts = np.zeros((len(langs), d.counts.shape[1]), dtype=np.int64)
    np.add.at(counts, index, d.counts)
    n_tokens = np.bincount(index, weights=d.n_tokens, minlength=len(langs)).astype(np.int64)
    return _stacked_frame(langs, d.layer, d.neuron, counts, n_tokens)


def _stacked_frame(groups, layer, neuron, counts, n_tokens) -> pd.DataFrame:
    n_groups, n_units = counts.shape
    return pd.DataFrame({
        "group": pd.Categorical.from_codes(np.repeat(np.arange(n_groups, dtype=np.int32), n_units),
                                           categories=list(groups)),
        "layer": np.tile(layer.astype(np.int32), n_groups),
        "neuron": np.tile(neuron.astype(np.int32), n_groups),
        "count": counts.reshape(-1).astype(np.int64),
        "n_tokens": np.repeat(np.asarray(n_tokens, dtype=np.int64), n_units),
    })


@dataclass
class _Dense:
    """A stacked table as arrays: counts[g, u] for group g and unit u = (layer[u], neuron[u])."""

    groups: list[str]
    layer: np.ndarray  # (U,) sorted by layer then neuron
    neuron: np.ndarray  # (U,)
    counts: np.ndarray  # (G, U) int64
    n_tokens: np.ndarray  # (G,) int64

    def layer_starts(self) -> np.ndarray:
        return np.flatnonzero(np.r_[True, self.layer[1:] != self.layer[:-1]])

    def layer_index(self) -> np.ndarray:
        return np.cumsum(np.r_[True, self.layer[1:] != self.layer[:-1]]) - 1


def _dense(stacked: pd.DataFrame) -> _Dense:
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
    n_groups = len(groups)
    if len(stacked) % n_groups:
        raise NeurospecError("groups of the stacked count table have different numbers of layer x neuron rows")
    n_units = len(stacked) // n_groups

    def shaped(order=None):
        take = (lambda a: a) if order is None else (lambda a: a[order])
        return tuple(take(a).reshape(n_groups, n_units) for a in (codes, layer, neuron, counts, n_tokens))

    def consistent(c, l, n):
        if not (c == np.arange(n_groups)[:, None]).all():
            return False
        if not ((l == l[0]).all() and (n == n[0]).all()):
            return False
        return bool(np.all((l[0, 1:] > l[0, :-1]) | ((l[0, 1:] == l[0, :-1]) & (n[0, 1:] > n[0, :-1]))))

    c, l, n, k, t = shaped()
    if not consistent(c, l, n):
        c, l, n, k, t = shaped(np.lexsort((neuron, layer, codes)))
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
    return _Dense(groups, l[0].copy(), n[0].copy(), np.ascontiguousarray(k), n_tok)


def _score_frame(groups: Sequence[str], group_idx, layer, neuron, score) -> pd.DataFrame:
    df = pd.DataFrame({
        "group": np.asarray(groups, dtype=object)[np.asarray(group_idx, dtype=np.int64)]
        if len(group_idx) else np.array([], dtype=object),
        "layer": np.asarray(layer, dtype=np.int32),
        "neuron": np.asarray(neuron, dtype=np.int32),
        "score": np.asarray(score, dtype=np.float64),
    })
    df["group"] = df["group"].astype(str)
    return df.sort_values(["group", "layer", "neuron"], kind="stable").reset_index(drop=True)


def _check_number(name: str, value, low: float, high: float, low_open: bool, high_open: bool = False,
                  key: str | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise NeurospecError(f"{key or name} must be a finite number, got {value!r}")
    lo_ok = value > low if low_open else value >= low
    hi_ok = value < high if high_open else value <= high
    if not (lo_ok and hi_ok):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise NeurospecError(f"{key or name} must lie in {interval}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------


def frequency(stacked: pd.DataFrame, k: float = 10) -> pd.DataFrame:
    """Tan, Wu & Monz (2024): per group and layer, the fewest neurons holding ``k`` percent of the mass.

    The layer's neurons are sorted by count, descending (ties by neuron index, ascending), and
    taken until their cumulative count reaches ``k`` percent of the layer's total count; the
    neuron whose count crosses the threshold is included.  A layer with no activation selects
    nothing.  score = the neuron's count / the layer's total count (its share of the mass).
    """
    k = _check_number("k", k, 0, 100, low_open=True, key="scoring.k (percent)")
    d = _dense(stacked)
    starts = d.layer_starts()
    lidx = d.layer_index()
    n_units = len(d.layer)
    units = np.arange(n_units)
    out_g, out_u, out_s = [], [], []
    for gi in range(len(d.groups)):
        c = d.counts[gi]
        # Sorted by layer, then count descending, then unit (= neuron, since units are sorted).
        order = np.lexsort((units, -c, lidx))
        cs = c[order]
        before = np.cumsum(cs) - cs  # mass of the neurons ranked ahead, across layers
        before = before - before[starts][lidx]  # ... within the layer (order keeps layer blocks)
        total = np.add.reduceat(c, starts)
        chosen = before.astype(np.float64) * 100.0 < k * total[lidx].astype(np.float64)
        sel = order[chosen]
        out_g.append(np.full(len(sel), gi))
        out_u.append(sel)
        out_s.append(c[sel] / total[lidx[sel]])
    g, u, s = np.concatenate(out_g), np.concatenate(out_u), np.concatenate(out_s)
    return _score_frame(d.groups, g, d.layer[u], d.neuron[u], s)


def _kth_smallest(flat: np.ndarray, rate: float) -> float:
    """``torch.kthvalue(flat, round(len * rate))``: the k-th smallest value, k clamped to [1, len]."""
    k = min(max(int(round(len(flat) * rate)), 1), len(flat))
    return float(np.partition(flat, k - 1)[k - 1])


def lape(stacked: pd.DataFrame, filter_rate: float = 0.95, top_rate: float = 0.01,
         activation_bar_ratio: float = 0.95) -> pd.DataFrame:
    """Tang et al. (2024), language activation probability entropy, as in their ``identify.py``.

    p[u, g] = count / n_tokens; p normalized across groups per neuron; entropy H of that
    distribution.  ``filter_rate``: a neuron is dropped unless some group's p exceeds the
    k-th smallest of all p (k = round(filter_rate x all p), torch ``kthvalue`` semantics, strict
    ``>``).  ``top_rate``: of all layer x neuron, round(top_rate x count) are kept, lowest entropy
    first (ties by layer, neuron).  ``activation_bar_ratio``: a kept neuron is assigned to every
    group whose p exceeds the same kind of quantile of all p; a kept neuron may belong to several
    groups, or to none.

    One deliberate difference from the reference code: it takes the lowest-entropy neurons among
    *all* neurons, giving filtered ones infinite entropy, so when fewer neurons than the top_rate
    budget pass the filter it keeps filtered ones too (which the activation bar then usually
    rejects); we keep only neurons that pass the filter.

    score = 1 - H / log(G) (G groups): 0 for a neuron equally likely to fire in every group,
    1 for one that fires in a single group only.  The method ranks, it does not test: it always
    keeps about top_rate of the neurons, even when nothing is language-specific; read its score.
    """
    filter_rate = _check_number("filter_rate", filter_rate, 0, 1, False, key="scoring.lape.filter_rate")
    top_rate = _check_number("top_rate", top_rate, 0, 1, True, key="scoring.lape.top_rate")
    activation_bar_ratio = _check_number("activation_bar_ratio", activation_bar_ratio, 0, 1, False,
                                         key="scoring.lape.activation_bar_ratio")
    d = _dense(stacked)
    n_groups = len(d.groups)
    if n_groups < 2:
        raise NeurospecError(f"LAPE needs at least two languages, got {n_groups} ({', '.join(d.groups)})")
    p = (d.counts / d.n_tokens[:, None]).T  # (U, G)
    total = p.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        normed = np.where(total > 0, p / total, 0.0)
        plogp = np.where(normed > 0, normed * np.log(normed), 0.0)
    entropy = -plogp.sum(axis=1)
    flat = p.reshape(-1)
    passing = (p > _kth_smallest(flat, filter_rate)).any(axis=1)
    n_keep = int(round(len(entropy) * top_rate))
    candidates = np.flatnonzero(passing)
    kept = candidates[np.argsort(entropy[candidates], kind="stable")][:n_keep]
    bar = _kth_smallest(flat, activation_bar_ratio)
    unit_i, group_i = np.nonzero(p[kept] > bar)
    units = kept[unit_i]
    score = 1.0 - entropy[units] / math.log(n_groups)
    return _score_frame(d.groups, group_i, d.layer[units], d.neuron[units], score)


def benjamini_hochberg(pvalues: np.ndarray, fdr: float) -> np.ndarray:
    """Boolean mask of the tests with Benjamini-Hochberg q-value < ``fdr`` (same shape as input).

    q_(i) = min_{j >= i} p_(j) m / j; only p-values under ``fdr`` can qualify, so only those are
    sorted (fast for millions of tests).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.reshape(-1)
    m = flat.size
    out = np.zeros(m, dtype=bool)
    cand = np.flatnonzero(flat < fdr)
    if cand.size:
        ps = np.sort(flat[cand])  # the smallest p-values: their global ranks are 1..len(cand)
        ok = np.flatnonzero(ps * m < fdr * np.arange(1, ps.size + 1))
        if ok.size:
            out[cand] = flat[cand] <= ps[ok[-1]]
    return out.reshape(p.shape)


ALTERNATIVES = ("greater", "two-sided")


def contrast_statistics(stacked: pd.DataFrame, alternative: str = "greater",
                        chunk: int = 1 << 20) -> tuple[_Dense, np.ndarray, np.ndarray]:
    """Per neuron and group, that group against all others pooled: (dense, log_odds, p_value).

    log_odds[u, g] = log((a + .5) / (n1 - a + .5)) - log((b + .5) / (n2 - b + .5)), with a of
    n1 tokens of group g and b of n2 tokens of the other groups firing; p_value from the
    two-proportion z-test with pooled variance (z = 0 when the neuron fires on every token or on
    none), one-sided ("greater": the group fires more often) or two-sided.  Tokens are treated as
    independent draws: tokens of one sentence are correlated, so p-values are optimistic, and
    with millions of tokens almost every difference is "significant": the effect-size
    threshold (min_log_odds) carries the selection.
    """
    if alternative not in ALTERNATIVES:
        raise NeurospecError(f"unknown alternative {alternative!r}; choose one of {', '.join(ALTERNATIVES)}")
    d = _dense(stacked)
    n_groups, n_units = d.counts.shape
    if n_groups < 2:
        raise NeurospecError(f"contrast needs at least two languages, got {n_groups} ({', '.join(d.groups)})")
    n1 = d.n_tokens.astype(np.float64)
    n2 = float(d.n_tokens.sum()) - n1
    inv = 1.0 / n1 + 1.0 / n2
    n_all = float(d.n_tokens.sum())
    total = d.counts.sum(axis=0)
    log_odds = np.empty((n_units, n_groups))
    pvalue = np.empty((n_units, n_groups))
    step = max(1, chunk // n_groups)
    for lo in range(0, n_units, step):
        s = slice(lo, min(lo + step, n_units))
        a = d.counts[:, s].T.astype(np.float64)  # (u, G)
        b = total[s, None] - a
        log_odds[s] = np.log(a + 0.5) - np.log(n1 - a + 0.5) - np.log(b + 0.5) + np.log(n2 - b + 0.5)
        pooled = (a + b) / n_all
        se = np.sqrt(pooled * (1.0 - pooled) * inv)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(se > 0, (a / n1 - b / n2) / se, 0.0)
        pvalue[s] = special.ndtr(-z) if alternative == "greater" else 2.0 * special.ndtr(-np.abs(z))
    return d, log_odds, pvalue


def contrast(stacked: pd.DataFrame, fdr: float = 0.01, min_log_odds: float = 1.0,
             alternative: str = "greater") -> pd.DataFrame:
    """Ours: neurons that fire more often for one language than for all the others pooled.

    For every layer x neuron x language (see ``contrast_statistics``): Benjamini-Hochberg over all
    tests at level ``fdr``; a neuron is kept for a language when its q-value < ``fdr`` and its
    log-odds ratio > ``min_log_odds`` (positive specialization only).  score = log-odds ratio.

    The test is one-sided by default: we report positive specialization only, and with
    two-sided p-values the many strong *negative* effects (a language-specific neuron is rarer
    in every other language) enter BH's ranking and loosen its threshold, so the false discovery
    rate among the reported positive cells would exceed ``fdr``.
    """
    fdr = _check_number("fdr", fdr, 0, 1, True, key="scoring.contrast.fdr")
    min_log_odds = _check_number("min_log_odds", min_log_odds, 0, math.inf, False,
                                 key="scoring.contrast.min_log_odds")
    d, log_odds, pvalue = contrast_statistics(stacked, alternative)
    keep = benjamini_hochberg(pvalue, fdr) & (log_odds > min_log_odds)
    unit_i, group_i = np.nonzero(keep)
    return _score_frame(d.groups, group_i, d.layer[unit_i], d.neuron[unit_i], log_odds[unit_i, group_i])


# --------------------------------------------------------------------------------------------
# Overlap
# --------------------------------------------------------------------------------------------


def iou(selected: pd.DataFrame, groups: Sequence[str] | None = None,
        layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Pairwise intersection over union of the groups' selected neuron sets, per layer.

    ``selected`` is a score table (group, layer, neuron, ...).  Rows for every layer and every
    unordered pair (a, b) with a before or equal to b in ``groups`` order (default: the groups
    present, sorted), so a square matrix can be built.  Pass ``groups`` and ``layers`` to include
    those with no selected neuron.  iou = 1 for a == b, NaN when both sets are empty.
    """
    missing = [c for c in ("group", "layer", "neuron") if c not in selected.columns]
    if missing:
        raise NeurospecError(f"selection table lacks column(s) {', '.join(missing)}")
    sel_groups = selected["group"].astype(str).to_numpy()
    groups = sorted(set(sel_groups)) if groups is None else [str(g) for g in groups]
    if len(set(groups)) != len(groups):
        raise NeurospecError("duplicate group names given to iou")
    unknown = sorted(set(sel_groups) - set(groups))
    if unknown:
        raise NeurospecError(f"selection holds group(s) {', '.join(unknown)} not among the groups compared")
    layer_col = selected["layer"].to_numpy(np.int64)
    layers = sorted(set(layer_col.tolist())) if layers is None else [int(x) for x in layers]
    unknown_layers = sorted(set(layer_col.tolist()) - set(layers))
    if unknown_layers:
        raise NeurospecError(f"selection holds layer(s) {unknown_layers} not among the layers compared")
    gidx = pd.Index(groups).get_indexer(sel_groups)
    neuron = selected["neuron"].to_numpy(np.int64)
    n_groups = len(groups)
    ia, ib = np.triu_indices(n_groups)
    frames = []
    for layer in layers:
        m = layer_col == layer
        uniq, col = np.unique(neuron[m], return_inverse=True)
        member = np.zeros((n_groups, len(uniq)), dtype=np.float32)
        member[gidx[m], col] = 1.0
        inter = np.rint(member @ member.T).astype(np.int64)
        n = member.sum(axis=1).astype(np.int64)
        union = n[ia] + n[ib] - inter[ia, ib]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(union > 0, inter[ia, ib] / np.maximum(union, 1), np.nan)
        frames.append(pd.DataFrame({
            "layer": np.full(len(ia), layer, dtype=np.int32),
            "group_a": np.asarray(groups, dtype=object)[ia],
            "group_b": np.asarray(groups, dtype=object)[ib],
            "n_a": n[ia], "n_b": n[ib], "intersection": inter[ia, ib], "iou": value,
        }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            IOU_COLUMNS, ("int32", object, object, "int64", "int64", "int64", "float64"))})
    out = pd.concat(frames, ignore_index=True)
    out["group_a"] = out["group_a"].astype(str)
    out["group_b"] = out["group_b"].astype(str)
    return out


def iou_matrix(iou_table: pd.DataFrame, groups: Sequence[str], layer: int | None = None) -> np.ndarray:
    """The square IoU matrix of ``groups`` (in that order) for one layer, or pooled over layers.

    Pooled (``layer=None``): the IoU of the (layer, neuron) sets, i.e. the sum of intersections
    over the sum of unions across layers.  NaN where both sets are empty.
    """
    t = iou_table if layer is None else iou_table[iou_table["layer"] == layer]
    t = t.groupby(["group_a", "group_b"], sort=False)[["n_a", "n_b", "intersection"]].sum().reset_index()
    index = pd.Index([str(g) for g in groups])
    ia, ib = index.get_indexer(t["group_a"]), index.get_indexer(t["group_b"])
    keep = (ia >= 0) & (ib >= 0)
    inter = t["intersection"].to_numpy(np.float64)[keep]
    union = (t["n_a"] + t["n_b"]).to_numpy(np.float64)[keep] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    out = np.full((len(index), len(index)), np.nan)
    out[ia[keep], ib[keep]] = value
    out[ib[keep], ia[keep]] = value
    return out


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

# method name -> (groups it scores: "pair" or "language", function)
METHODS: dict[str, tuple[str, Callable[..., pd.DataFrame]]] = {
    "frequency": ("pair", frequency),
    "frequency_language": ("language", frequency),
    "lape": ("language", lape),
    "contrast": ("language", contrast),
}


def read_count_tables(paths: Sequence[str | os.PathLike]) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """Count tables keyed by their pair (metadata ``pair``, else the file name)."""
    out: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for path in paths:
        df, meta = read_counts(path)
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
    if group_kind == "language":
        stacked = pool_by_language(stacked, counted_languages(tables))
    try:
        scores = func(stacked, **params)
    except TypeError as exc:  # an unexpected parameter name
        raise NeurospecError(f"bad parameters {params} for method {method!r}: {exc}") from None
    d = _dense(stacked)
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
    return scores, overlap, meta


def run_scoring(paths: Sequence[str | os.PathLike], scores_path: str | os.PathLike, iou_path: str | os.PathLike,
                method: str, column: str, params: Mapping[str, Any] | None = None) -> None:
    """Rule entry point: read the activation tables, score, write scores and IoU (atomically)."""
    tables = read_count_tables(paths)
    logger.info("%s: %d count tables, column %s, parameters %s", method, len(tables), column, dict(params or {}))
    scores, overlap, meta = score_tables(tables, method, column, params)
    per_group = scores.groupby("group").size().reindex(meta["groups"], fill_value=0)
    logger.info("%s: %d selected (group, neuron) cells over %d groups; per group: %s", method, len(scores),
                len(meta["groups"]), ", ".join(f"{g}={n}" for g, n in per_group.items()))
    write_table(scores, scores_path, SCORE_SCHEMA, metadata=meta)
    write_table(overlap, iou_path, None, metadata=meta)


def read_scores(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A score table and its metadata (method, group_kind, groups, layers, ...)."""
    df = read_table(path, required=SCORE_COLUMNS)
    meta = read_metadata(path)
    for key in ("method", "groups", "layers"):
        if key not in meta:
            raise NeurospecError(f"score table {path} lacks the {key!r} metadata key")
    return df, meta


def read_iou(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    return read_table(path, required=IOU_COLUMNS), read_metadata(path)
