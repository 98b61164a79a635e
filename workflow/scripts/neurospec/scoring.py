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

import logging
import math
import os
from dataclasses import dataclass, field
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
                f"over layers {_span(units[:, 0])}, {ref_group!r} has {len(ref_units)} over layers "
                f"{_span(ref_units[:, 0])} (were they collected from the same model?)")
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
    return _stacked_frame([str(g) for g in tables], ref_units[:, 0], ref_units[:, 1], np.stack(counts),
                          np.asarray(n_tokens, dtype=np.int64), extra, n_sentences)


def _span(values: np.ndarray) -> str:
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
    d = _dense(stacked)
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
    return _stacked_frame(langs, d.layer, d.neuron, pooled(d.counts), pooled(d.n_tokens), extra, n_sentences)


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


def _stacked_frame(groups, layer, neuron, counts, n_tokens, extra: Mapping[str, np.ndarray] | None = None,
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
class _Dense:
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
    return _Dense(groups, l[0].copy(), n[0].copy(), np.ascontiguousarray(k), n_tok, extra, n_sentences)


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

    The q-values (BH adjusted p-values, q_(i) = min_{j >= i} p_(j) m / j) are
    ``scipy.stats.false_discovery_control``'s, computed for the p-values under ``fdr`` only: no other
    test can qualify (q >= p), and sorting only those keeps millions of tests fast.  That subset is
    exact: its c p-values are the c smallest, so their ranks among all m tests are their ranks
    among themselves, and every term p_(j) m / j with j > c is >= ``fdr`` and cannot bring a q-value
    under it; scipy computes the subset's q-values as if it were all the tests (m = c), so they are
    scaled by m / c (a q-value that scipy clips to 1 becomes m / c >= 1, which never qualifies).
    NaN p-values never qualify and count as tests (like p = 1).
    """
    from scipy import stats  # here, not at the top: only the contrast needs scipy.stats (~0.5 s to import)

    p = np.asarray(pvalues, dtype=np.float64)
    flat = p.reshape(-1)
    m = flat.size
    out = np.zeros(m, dtype=bool)
    cand = np.flatnonzero(flat < fdr)
    if cand.size:
        q = stats.false_discovery_control(flat[cand]) * (m / cand.size)
        out[cand] = q < fdr
    return out.reshape(p.shape)


ALTERNATIVES = ("greater", "two-sided")


RESTS = ("balanced", "pooled")


def _check_rest(rest: str) -> str:
    if rest not in RESTS:
        raise NeurospecError(f"scoring.rest {rest!r}: choose one of {', '.join(RESTS)}")
    return rest


def contrast_statistics(stacked: pd.DataFrame, alternative: str = "greater",
                        chunk: int = 1 << 20, rest: str = "balanced") -> tuple[_Dense, np.ndarray, np.ndarray]:
    """Per neuron and group, that group against all others pooled: (dense, log_odds, p_value).

    log_odds[u, g] = log((a + .5) / (n1 - a + .5)) - log((b + .5) / (n2 - b + .5)), with a of
    n1 tokens of group g and b of n2 tokens of the other groups firing; p_value from the
    two-proportion z-test with pooled variance (z = 0 when the neuron fires on every token or on
    none), one-sided ("greater": the group fires more often) or two-sided.  Tokens are treated as
    independent draws: tokens of one sentence are correlated, so p-values are optimistic, and
    with millions of tokens almost every difference is "significant": the effect-size
    threshold (min_log_odds) carries the selection.

    ``rest="pooled"``: the rest is the other groups' tokens pooled (b of n2 as above).
    ``rest="balanced"``: every other group weighs the same: the rest's proportion is
    p_rest = mean over the L = G - 1 other groups l of k_l / n_l, whose variance under a common p is
    p (1 - p) / n_eff with n_eff = L**2 / sum_l (1 / n_l); z = (a / n1 - p_rest) / se with
    se**2 = pbar (1 - pbar) (1 / n1 + 1 / n_eff), pbar = (a + p_rest n_eff) / (n1 + n_eff); the
    log-odds ratio takes b = p_rest n2.  With equal n_l both rests are the same test.
    """
    if alternative not in ALTERNATIVES:
        raise NeurospecError(f"unknown alternative {alternative!r}; choose one of {', '.join(ALTERNATIVES)}")
    balanced = _check_rest(rest) == "balanced"
    d = _dense(stacked)
    n_groups, n_units = d.counts.shape
    if n_groups < 2:
        raise NeurospecError(f"contrast needs at least two languages, got {n_groups} ({', '.join(d.groups)})")
    n1 = d.n_tokens.astype(np.float64)
    n2 = float(d.n_tokens.sum()) - n1
    n_rest = n2
    if balanced:  # the effective size of the mean of the other groups' proportions
        n_rest = (n_groups - 1) ** 2 / ((1.0 / n1).sum() - 1.0 / n1)
    inv = 1.0 / n1 + 1.0 / n_rest
    total = d.counts.sum(axis=0)
    share_total = (d.counts / n1[:, None]).sum(axis=0)
    log_odds = np.empty((n_units, n_groups))
    pvalue = np.empty((n_units, n_groups))
    step = max(1, chunk // n_groups)
    for lo in range(0, n_units, step):
        s = slice(lo, min(lo + step, n_units))
        a = d.counts[:, s].T.astype(np.float64)  # (u, G)
        if balanced:
            b = (share_total[s, None] - a / n1) / (n_groups - 1) * n2  # p_rest n2
            b_rest = b / n2 * n_rest
        else:
            b = b_rest = total[s, None] - a
        log_odds[s] = _log_odds_ratio(a, n1, b, n2)
        pooled = (a + b_rest) / (n1 + n_rest)
        se = np.sqrt(np.maximum(pooled * (1.0 - pooled), 0.0) * inv)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(se > 0, (a / n1 - b_rest / n_rest) / se, 0.0)
        pvalue[s] = special.ndtr(-z) if alternative == "greater" else 2.0 * special.ndtr(-np.abs(z))
    return d, log_odds, pvalue


def _log_odds_ratio(a: np.ndarray, n1, b: np.ndarray, n2) -> np.ndarray:
    """log((a + .5) / (n1 - a + .5)) - log((b + .5) / (n2 - b + .5)): a of n1 against b of n2."""
    return np.log(a + 0.5) - np.log(n1 - a + 0.5) - np.log(b + 0.5) + np.log(n2 - b + 0.5)


def sentence_contrast_statistics(stacked: pd.DataFrame, alternative: str = "greater",
                                 chunk: int = 1 << 20, rest: str = "balanced") -> tuple[_Dense, np.ndarray, np.ndarray]:
    """Per neuron and group, that group's sentences against all other groups' sentences pooled.

    Each sentence contributes one observation, its firing rate r (the share of its counted tokens
    on which the neuron fired).  The group's n1 sentences have mean m1 = sum(r) / n1 and variance
    v1 = (sum(r**2) - n1 m1**2) / (n1 - 1); the others' n2, m2, v2 likewise (totals minus the
    group's).  Welch's t = (m1 - m2) / sqrt(v1 / n1 + v2 / n2) with Welch-Satterthwaite degrees of
    freedom; p from Student's t (``welch_pvalue``, scipy's), one-sided ("greater") or two-sided.
    Where both variances are 0 the difference of the means is exact: t = +-inf (p = 0 or 1), or 0
    when the means are equal.

    The effect size is on the token-level test's scale: the log-odds ratio of the mean rates,
    log((sum(r) + .5) / (n1 - sum(r) + .5)) - the same for the rest, i.e. the token-level formula
    with sentences in place of tokens and rates in place of 0/1 (so ``min_log_odds`` means the same).
    Returns (dense, log_odds, p_value) with arrays of shape (units, groups).

    That is ``rest="pooled"``: the rest is every other group's sentences pooled, so a group with
    more sentences weighs more in it.  ``rest="balanced"``: every other group weighs the same.
    With m_l, v_l (from that group's rate sums as above) and n_l for each group l and the
    L = G - 1 groups l != g forming the rest::

        m_rest = (1/L) sum_l m_l                    (the mean of the group means)
        V_rest = (1/L**2) sum_l v_l / n_l           (the variance of that mean)
        t = (m_g - m_rest) / sqrt(v_g / n_g + V_rest)
        df = (v_g/n_g + V_rest)**2 / ((v_g/n_g)**2 / (n_g - 1) + sum_l (v_l/(n_l L**2))**2 / (n_l - 1))

    (Welch-Satterthwaite for a linear combination of independent group means); p from Student's t
    with df degrees of freedom.  Every group then needs two sentences.  The log-odds ratio takes
    the rest's sum as m_rest n2 (n2 = the other groups' sentences).
    """
    if alternative not in ALTERNATIVES:
        raise NeurospecError(f"unknown alternative {alternative!r}; choose one of {', '.join(ALTERNATIVES)}")
    d = _dense(stacked)
    rate_sum, rate_sumsq = d.require("the sentence-level contrast (scoring.contrast.unit: sentence)",
                                     "rate_sum", "rate_sumsq")
    n_groups, n_units = d.counts.shape
    if n_groups < 2:
        raise NeurospecError(f"contrast needs at least two languages, got {n_groups} ({', '.join(d.groups)})")
    n1 = d.n_sentences.astype(np.float64)
    n2 = float(n1.sum()) - n1
    balanced = _check_rest(rest) == "balanced"
    if balanced and (n1 < 2).any():
        bad = d.groups[int(np.flatnonzero(n1 < 2)[0])]
        raise NeurospecError(f"the sentence-level contrast with scoring.rest: balanced needs at least two "
                             f"sentences in every language; {bad!r} has {int(n1[d.groups.index(bad)])}: "
                             "use scoring.contrast.unit: token")
    if (n1 < 2).any() or (n2 < 2).any():
        bad = d.groups[int(np.flatnonzero((n1 < 2) | (n2 < 2))[0])]
        raise NeurospecError(f"the sentence-level contrast needs at least two sentences in a group and in the "
                             f"rest; {bad!r} has {int(n1[d.groups.index(bad)])} of {int(n1.sum())}: "
                             "use scoring.contrast.unit: token")
    total, total_sq = rate_sum.sum(axis=0), rate_sumsq.sum(axis=0)
    log_odds = np.empty((n_units, n_groups))
    pvalue = np.empty((n_units, n_groups))
    step = max(1, chunk // n_groups)
    for lo in range(0, n_units, step):
        s = slice(lo, min(lo + step, n_units))
        a, a2 = rate_sum[:, s].T, rate_sumsq[:, s].T  # (u, G)
        if balanced:
            log_odds[s], pvalue[s] = _balanced_welch(a, a2, n1, alternative)
            continue
        b, b2 = total[s, None] - a, total_sq[s, None] - a2
        log_odds[s] = _log_odds_ratio(a, n1, b, n2)
        pvalue[s] = welch_pvalue(a, a2, n1, b, b2, n2, alternative)
    return d, log_odds, pvalue


def _balanced_welch(a: np.ndarray, a2: np.ndarray, n: np.ndarray,
                    alternative: str) -> tuple[np.ndarray, np.ndarray]:
    """(log_odds, p_value), (u, G), of each group against the balanced rest (``sentence_contrast_statistics``)
    from the groups' sums ``a``, sums of squares ``a2`` (u, G) and sentences ``n`` (G,)."""
    from scipy import stats  # only the contrast needs scipy.stats (see benjamini_hochberg)

    n_groups = len(n)
    L = n_groups - 1
    m = a / n
    v = np.maximum(a2 - n * m * m, 0.0) / (n - 1)
    m_rest = (m.sum(axis=1, keepdims=True) - m) / L
    c = v / n  # each group mean's variance
    c_rest = c / (L * L)
    v_rest = np.maximum(c_rest.sum(axis=1, keepdims=True) - c_rest, 0.0)
    d_rest = (c_rest * c_rest / (n - 1))
    var = c + v_rest
    df_den = c * c / (n - 1) + np.maximum(d_rest.sum(axis=1, keepdims=True) - d_rest, 0.0)
    diff = m - m_rest
    n2 = n.sum() - n
    log_odds = _log_odds_ratio(a, n, m_rest * n2, n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = diff / np.sqrt(var)
        df = var * var / df_den
        p = stats.t.sf(t, df) if alternative == "greater" else 2.0 * stats.t.sf(np.abs(t), df)
    exact = ~(var > 0)  # both sides without variance: the difference of the means is exact
    if alternative == "greater":
        p_exact = np.where(diff > 0, 0.0, np.where(diff < 0, 1.0, 0.5))
    else:
        p_exact = np.where(diff != 0, 0.0, 1.0)
    p = np.where(exact, p_exact, p)
    # df_den can be 0 with var > 0 only by underflow; then df is inf: the normal limit
    return log_odds, np.asarray(p, dtype=np.float64)


def welch_pvalue(a: np.ndarray, a2: np.ndarray, n1, b: np.ndarray, b2: np.ndarray, n2,
                 alternative: str = "greater") -> np.ndarray:
    """P-values of Welch's t-test from sums: n1 observations with sum ``a`` and sum of squares ``a2``
    against n2 with ``b`` and ``b2`` (arrays broadcast), by ``scipy.stats.ttest_ind_from_stats``
    (equal_var=False).  Where both variances are 0 scipy divides 0 by 0 for equal means: that t is
    0 (p = 0.5 one-sided, 1 two-sided); unequal means give t = +-inf (p = 0 or 1) as in scipy.
    """
    from scipy import stats  # only the contrast needs scipy.stats (see benjamini_hochberg)

    m1, m2 = a / n1, b / n2
    v1 = np.maximum(a2 - n1 * m1 * m1, 0.0) / (n1 - 1)  # rounding can make it a hair below 0
    v2 = np.maximum(b2 - n2 * m2 * m2, 0.0) / (n2 - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        result = stats.ttest_ind_from_stats(m1, np.sqrt(v1), n1, m2, np.sqrt(v2), n2, equal_var=False,
                                            alternative=alternative)
    pvalue = np.asarray(result.pvalue, dtype=np.float64)
    undefined = np.isnan(pvalue) & (m1 == m2)  # 0 / 0: equal means, no variance
    return np.where(undefined, 0.5 if alternative == "greater" else 1.0, pvalue)


CONTRAST_UNITS = ("sentence", "token")


def contrast(stacked: pd.DataFrame, fdr: float = 0.01, min_log_odds: float = 1.0,
             alternative: str = "greater", unit: str = "sentence", rest: str = "balanced") -> pd.DataFrame:
    """Ours: neurons that fire more often for one language than for all the others.

    For every layer x neuron x language: a test of that language against the rest, on sentences
    (``unit="sentence"``: Welch's t on per-sentence firing rates, ``sentence_contrast_statistics``)
    or on tokens (``unit="token"``: two-proportion z-test, ``contrast_statistics``);
    Benjamini-Hochberg over all tests at level ``fdr``; a neuron is kept for a language when its
    q-value < ``fdr`` and its log-odds ratio > ``min_log_odds`` (positive specialization only).
    score = log-odds ratio (of the mean sentence rates, or of the token proportions).

    Sentences are the sampled units: tokens of one sentence share its topic, words and context,
    so the token-level test's p-values are too small whenever neurons' firing varies between
    sentences; the sentence-level test's are not.

    The test is one-sided by default: we report positive specialization only, and with
    two-sided p-values the many strong *negative* effects (a language-specific neuron is rarer
    in every other language) enter BH's ranking and loosen its threshold, so the false discovery
    rate among the reported positive cells would exceed ``fdr``.

    ``rest``: "balanced" (the workflow's default, ``scoring.rest``): the rest is the unweighted mean
    of the other languages' means, every language weighing the same; "pooled": the other
    languages' sentences (tokens) pooled, so the largest one (EC40's English) dominates it.
    """
    fdr = _check_number("fdr", fdr, 0, 1, True, key="scoring.contrast.fdr")
    min_log_odds = _check_number("min_log_odds", min_log_odds, 0, math.inf, False,
                                 key="scoring.contrast.min_log_odds")
    if unit not in CONTRAST_UNITS:
        raise NeurospecError(f"scoring.contrast.unit {unit!r}: choose one of {', '.join(CONTRAST_UNITS)}")
    statistics = sentence_contrast_statistics if unit == "sentence" else contrast_statistics
    d, log_odds, pvalue = statistics(stacked, alternative, rest=rest)
    keep = benjamini_hochberg(pvalue, fdr) & (log_odds > min_log_odds)
    unit_i, group_i = np.nonzero(keep)
    return _score_frame(d.groups, group_i, d.layer[unit_i], d.neuron[unit_i], log_odds[unit_i, group_i])


def diffmeans(stacked: pd.DataFrame, k: int = 50, rest: str = "balanced") -> pd.DataFrame:
    """Baseline: per group and layer, the ``k`` neurons whose mean activation differs most from the rest's.

    mean[g] = act_sum / n_tokens of group g; rest[g] = the mean of the other groups' means
    (``rest="balanced"``: each other group weighs the same) or the other groups' act_sum over their
    tokens (``rest="pooled"``); diff = mean[g] - rest[g].  Per group and layer the ``k`` neurons
    with the largest |diff| are kept (ties: lower neuron index first): the sign of the down_proj
    input is no signal by itself (up_proj's sign is arbitrary), and a difference-of-means steering
    vector weighs each neuron by its signed difference, so the largest magnitudes are what it uses
    most.  score = diff.  Like frequency and lape it ranks: it always keeps k neurons per group
    and layer.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise NeurospecError(f"scoring.diffmeans.k must be a positive integer, got {k!r}")
    d = _dense(stacked)
    (act_sum,) = d.require("diffmeans", "act_sum")
    n_groups = len(d.groups)
    if n_groups < 2:
        raise NeurospecError(f"diffmeans needs at least two languages, got {n_groups} ({', '.join(d.groups)})")
    starts = d.layer_starts()
    widths = np.diff(np.r_[starts, len(d.layer)])
    if k > widths.min():
        raise NeurospecError(f"scoring.diffmeans.k = {k} exceeds the {widths.min()} neurons of a layer")
    n = d.n_tokens.astype(np.float64)
    mean = act_sum / n[:, None]
    if _check_rest(rest) == "balanced":
        rest_mean = (mean.sum(axis=0)[None, :] - mean) / (n_groups - 1)
    else:
        rest_mean = (act_sum.sum(axis=0)[None, :] - act_sum) / (n.sum() - n)[:, None]
    diff = mean - rest_mean  # (G, U)
    lidx = d.layer_index()
    units = np.arange(len(d.layer))
    out_g, out_u = [], []
    for gi in range(n_groups):
        order = np.lexsort((units, -np.abs(diff[gi]), lidx))  # per layer, largest |diff| first
        rank = np.arange(len(order)) - starts[lidx[order]]
        sel = order[rank < k]
        out_g.append(np.full(len(sel), gi))
        out_u.append(sel)
    g, u = np.concatenate(out_g), np.concatenate(out_u)
    return _score_frame(d.groups, g, d.layer[u], d.neuron[u], diff[g, u])


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
