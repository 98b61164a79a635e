"""The selection methods, each ``method(stacked, **params) -> SCORE_SCHEMA table`` of the selected
cells: ``frequency``, ``lape``, ``contrast`` (with Welch's t / two-proportion z and Benjamini-Hochberg)
and ``diffmeans``. What each computes: ``neurospec.score.scoring``'s docstring and docs/methods.md."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from scipy import special

from ..errors import NeurospecError
from .statistics import benjamini_hochberg, welch_pvalue
from .stacking import Dense, check_number, dense, score_frame

logger = logging.getLogger("neurospec")


def frequency(stacked: pd.DataFrame, k: float = 10) -> pd.DataFrame:
    """Tan, Wu & Monz (2024): per group and layer, the fewest neurons holding ``k`` percent of the mass.

    The layer's neurons are sorted by count, descending (ties by neuron index, ascending), and
    taken until their cumulative count reaches ``k`` percent of the layer's total count; the
    neuron whose count crosses the threshold is included.  A layer with no activation selects
    nothing.  score = the neuron's count / the layer's total count (its share of the mass).
    """
    k = check_number("k", k, 0, 100, low_open=True, key="scoring.k (percent)")
    d = dense(stacked)
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
    return score_frame(d.groups, g, d.layer[u], d.neuron[u], s)


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
    filter_rate = check_number("filter_rate", filter_rate, 0, 1, False, key="scoring.lape.filter_rate")
    top_rate = check_number("top_rate", top_rate, 0, 1, True, key="scoring.lape.top_rate")
    activation_bar_ratio = check_number("activation_bar_ratio", activation_bar_ratio, 0, 1, False,
                                         key="scoring.lape.activation_bar_ratio")
    d = dense(stacked)
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
    return score_frame(d.groups, group_i, d.layer[units], d.neuron[units], score)


ALTERNATIVES = ("greater", "two-sided")


RESTS = ("balanced", "pooled")


def _check_rest(rest: str) -> str:
    if rest not in RESTS:
        raise NeurospecError(f"scoring.rest {rest!r}: choose one of {', '.join(RESTS)}")
    return rest


def contrast_statistics(stacked: pd.DataFrame, alternative: str = "greater",
                        chunk: int = 1 << 20, rest: str = "balanced") -> tuple[Dense, np.ndarray, np.ndarray]:
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
    d = dense(stacked)
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
                                 chunk: int = 1 << 20, rest: str = "balanced") -> tuple[Dense, np.ndarray, np.ndarray]:
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
    d = dense(stacked)
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
    fdr = check_number("fdr", fdr, 0, 1, True, key="scoring.contrast.fdr")
    min_log_odds = check_number("min_log_odds", min_log_odds, 0, math.inf, False,
                                 key="scoring.contrast.min_log_odds")
    if unit not in CONTRAST_UNITS:
        raise NeurospecError(f"scoring.contrast.unit {unit!r}: choose one of {', '.join(CONTRAST_UNITS)}")
    statistics = sentence_contrast_statistics if unit == "sentence" else contrast_statistics
    d, log_odds, pvalue = statistics(stacked, alternative, rest=rest)
    keep = benjamini_hochberg(pvalue, fdr) & (log_odds > min_log_odds)
    unit_i, group_i = np.nonzero(keep)
    return score_frame(d.groups, group_i, d.layer[unit_i], d.neuron[unit_i], log_odds[unit_i, group_i])


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
    d = dense(stacked)
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
    return score_frame(d.groups, g, d.layer[u], d.neuron[u], diff[g, u])
