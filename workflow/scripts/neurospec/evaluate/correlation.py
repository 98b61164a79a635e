"""Translation quality against specialization, per direction: Spearman's rho, clustered by language.

For every translation direction (en->xx or xx->en, xx the non-English language) and every scoring
method, with ``g`` the method's group for the direction (the pair for pair methods such as
``frequency``, the language xx for language methods):

``n_selected``  how many (layer, neuron) the method selected for ``g``;
``iou_family``  mean IoU of ``g``'s selection with the groups of the other languages of xx's family
                (pair methods: directions of the same kind, en->yy with en->xx, yy->en with xx->en);
``iou_rest``    the same with the groups of the other families;

IoU pooled over layers (the IoU of the layer x neuron sets, from the method's IoU table); plus
``tier_size``, xx's EC40 training-set size (its resource tier: 5M, 1M, 100k, 50k sentence pairs).

Each measure is correlated by Spearman's rho with a translation quality (column ``quality``):
``chrf``, the direction's baseline chrF++, and ``delta_chrf``, its change with the method's own
neurons ablated (ablated - baseline, from the translation score table's ablated rows; only where
they exist, and not for ``tier_size``, which belongs to no method), over all directions and within
each direction kind (``scope``).

The unit is the language, not the direction.  Both directions of a language share its tier, its
script, its training data and, for language methods, the very same x value: they are not two
independent observations.  So

* the interval is a cluster bootstrap: the languages xx of the scope (``n`` of them; ``n_directions``
  directions) are resampled with replacement (``np.random.default_rng(seed).integers(0, n,
  size=(n_boot, n))``, languages in sorted order), each drawn language brings all its directions,
  rho is recomputed (ranks included) on every resample, and the interval is the percentile interval
  (``np.percentile``, linear) of the resamples in which rho is defined (``n_boot`` counts them);
* the p-value is a cluster permutation test where a language has several directions: the chrF++
  values of whole languages are permuted between languages (a language's en->xx value goes with
  the en->xx direction of the language it is assigned to, its xx->en value with the xx->en one;
  languages with a different set of directions are permuted among themselves), ``n_perm`` times
  (``np.random.default_rng([seed, 1])``), p = (1 + #{|rho*| >= |rho|}) / (1 + n_perm), two-sided.
  Each direction kind's values stay in that kind, so a rho over all directions that only reflects
  a difference between the kinds (x and chrF++ both higher into English) is not significant, even
  where the bootstrap interval, which keeps that difference, excludes 0.  The smallest p is
  1 / (1 + n_perm).
  Within one direction kind each language has one direction; there the unit is the direction
  (column ``unit``), the bootstrap is the plain one, and p is scipy's Spearman test (column ``p_test``);
* ``q_value`` is the Benjamini-Hochberg adjusted p-value (``scipy.stats.false_discovery_control``)
  over the family of all rows of the table with a p-value (every method x measure x quality x scope);
  the scopes overlap, so the family is conservative rather than independent;
* ``partial_rho`` is Spearman's rho controlling for resource tier and script: both variables are
  ranked, each rank vector is regressed (least squares, with an intercept) on the tier as an
  ordinal (high 0, medium 1, low 2, extremely-low 3) and on the script as Latin vs not, and the
  residuals are correlated (Pearson).  ``partial_ci_low/high`` is its interval from the same cluster
  resamples (ranks and regression redone on each).  Undefined (NaN) for ``tier_size`` (the
  confound itself), when fewer than 3 residual degrees of freedom remain, or when a residual is 0.

``plot_correlation`` draws a labelled scatter per measure against baseline chrF++.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import matplotlib

from .. import plots  # noqa: E402, F401  (matplotlib's Agg backend, chosen in neurospec/plots/__init__.py)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from ..plots import style  # noqa: E402
from .. import languages as L  # noqa: E402
from ..errors import NeurospecError  # noqa: E402
from ..atomic import save_png  # noqa: E402
from ..tables import read_metadata, read_table, write_table  # noqa: E402
from neurospec.variants import label as variant_label  # noqa: E402

logger = logging.getLogger("neurospec")

MEASURES = ("n_selected", "iou_family", "iou_rest")
SCOPES = ("all", "en-xx", "xx-en")
MEASURE_COLUMNS = ("pair", "direction", "lang", "family", "tier", "chrf", "delta_chrf", "method", "measure",
                   "value")
QUALITIES = ("chrf", "delta_chrf")
CORRELATION_COLUMNS = ("method", "measure", "quality", "scope", "unit", "n", "n_directions", "rho", "ci_low",
                       "ci_high", "p_value", "p_test", "q_value", "partial_rho", "partial_ci_low", "partial_ci_high",
                       "n_boot", "n_perm", "level", "seed")
MEASURE_LABELS = {"n_selected": "selected neurons", "iou_family": "mean IoU within family",
                  "iou_rest": "mean IoU with other families", "tier_size": "EC40 training pairs (tier)"}
ARROW = "\u2192"


# --------------------------------------------------------------------------------------------
# Spearman's rho and its bootstrap interval
# --------------------------------------------------------------------------------------------


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with the same row of ``b``; NaN where one is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    # a constant row has an exactly zero sum of squares; guard rounding as well
    return np.where(denom > 1e-12 * max(1.0, float(a.shape[1])), np.clip(r, -1.0, 1.0), np.nan)


# scipy >= 1.15 names the generator ``rng``; ``random_state``, the name before, will warn one day
_SEED_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _rank_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorized for scipy.stats.bootstrap); NaN where one is constant."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    n = x.shape[-1]
    rho = _row_pearson(stats.rankdata(x, axis=-1).reshape(-1, n), stats.rankdata(y, axis=-1).reshape(-1, n))
    return rho.reshape(x.shape[:-1])


def spearman(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict[str, float]:
    """Spearman's rho of the finite (x, y) pairs, its p-value and a percentile bootstrap interval.

    rho is the Pearson correlation of the average ranks (ties share their mean rank); the p-value is
    scipy's (t distribution).  The interval is ``scipy.stats.bootstrap``'s (paired, percentile
    method, ``n_boot`` resamples of the pairs with replacement, ``np.random.default_rng(seed)``).  A
    resample in which a variable is constant has no rho: such resamples are skipped, the interval
    is the percentile interval of the others (scipy again, from their bootstrap distribution), and
    ``n_boot`` in the result counts those used.  NaN everywhere when fewer than 3 pairs remain or a
    variable is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise NeurospecError(f"spearman: x has {x.shape} values, y {y.shape}")
    if not 0 < level < 1:
        raise NeurospecError(f"evaluate.correlation.level must lie in (0, 1), got {level!r}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    out = {"n": n, "rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n_boot": 0}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    rho = float(_rank_rho(x, y))
    p_value = float(stats.spearmanr(x, y).pvalue)
    out.update(rho=rho, p_value=p_value)
    if n_boot > 0:
        options = dict(paired=True, vectorized=True, method="percentile", confidence_level=level)
        with warnings.catch_warnings():  # a skipped resample makes the first interval NaN: not news
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap((x, y), _rank_rho, n_resamples=int(n_boot),
                                  **{_SEED_KEYWORD: np.random.default_rng(seed)}, **options)
        boot = res.bootstrap_distribution
        defined = np.isfinite(boot)
        if not defined.all() and defined.any():
            res = stats.bootstrap((x, y), _rank_rho, n_resamples=0, **options,
                                  bootstrap_result=SimpleNamespace(bootstrap_distribution=boot[defined]))
        if defined.any():
            out.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high),
                       n_boot=int(defined.sum()))
    return out


# --------------------------------------------------------------------------------------------
# The language as the unit: cluster bootstrap, cluster permutation test, partial rho
# --------------------------------------------------------------------------------------------


def confounds(langs: Sequence[str]) -> np.ndarray:
    """The design a partial rho regresses out, one row per language code: intercept, tier (ordinal:
    high 0, medium 1, low 2, extremely-low 3) and script (1 Latin, 0 other).  When a language has no
    EC40 tier (any language outside EC40), the tier column is left out: the partial rho is then on
    script alone."""
    rows = []
    for code in langs:
        lang = L.language(code)
        rows.append((1.0, float(L.TIERS.index(lang.tier)) if lang.tier in L.TIERS else np.nan,
                     1.0 if lang.script == "Latin" else 0.0))
    z = np.asarray(rows, dtype=np.float64).reshape(len(rows), 3)
    return z[:, [0, 2]] if np.isnan(z[:, 1]).any() else z



def _rank_stats(x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rho, partial rho) of every row of ``x`` (B x m) with the same row of ``y``; ``z`` (B x m x p)
    the confounds of each row (None: no partial).  Ranks are taken within each row."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rho = _row_pearson(rx, ry)
    partial = np.full(rho.shape, np.nan)
    if z is not None:
        m = x.shape[-1]
        hat = z @ np.linalg.pinv(z)  # B x m x m: projection onto the confounds' span
        ex = rx - (hat @ rx[..., None])[..., 0]
        ey = ry - (hat @ ry[..., None])[..., 0]
        partial = _row_pearson(ex, ey)
        # fewer than 3 residual degrees of freedom, or a rank vector the confounds explain: undefined
        dof = m - np.linalg.matrix_rank(z)
        cx = ((rx - rx.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        cy = ((ry - ry.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        flat = ((ex * ex).sum(axis=-1) <= 1e-10 * cx) | ((ey * ey).sum(axis=-1) <= 1e-10 * cy)
        partial = np.where((dof >= 3) & ~flat, partial, np.nan)
    return rho, partial


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return np.nan, np.nan
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _permutation_p(x: np.ndarray, y: np.ndarray, members: list[np.ndarray], rho: float, n_perm: int,
                   seed: int) -> float:
    """Two-sided p of rho when whole languages' y values are permuted between languages with the
    same set of directions (``members``: each language's indices, in direction order)."""
    rng = np.random.default_rng([seed, 1])
    strata: dict[tuple, list[np.ndarray]] = {}
    for idx, key in members:
        strata.setdefault(key, []).append(idx)
    perm = np.empty((n_perm, len(y)), dtype=np.int64)
    for blocks in strata.values():
        blocks = np.stack(blocks)  # k x s
        order = rng.permuted(np.broadcast_to(np.arange(len(blocks)), (n_perm, len(blocks))), axis=1)
        perm[:, blocks.ravel()] = blocks[order].reshape(n_perm, -1)
    rho_perm, _ = _rank_stats(np.broadcast_to(x, perm.shape), y[perm], None)
    extreme = np.abs(np.nan_to_num(rho_perm, nan=0.0)) >= abs(rho) - 1e-12
    return float((1 + extreme.sum()) / (1 + n_perm))


def cluster_spearman(x: Sequence[float], y: Sequence[float], clusters: Sequence[str], *,
                     kinds: Sequence[str] | None = None, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
                     level: float = 0.95, partial: bool = True) -> dict[str, Any]:
    """Spearman's rho of the finite (x, y) pairs with the language (``clusters``) as the unit.

    ``kinds`` (e.g. each direction's kind) orders a language's directions for the permutation test
    and keeps languages with different sets of directions apart; ``clusters`` are language codes
    (their tier and script are the confounds of the partial rho; ``partial=False`` skips it).  See
    the module docstring for the bootstrap, the test and the partial rho.  NaN where fewer than 3
    languages remain or a variable is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=object)
    kinds = np.asarray(kinds if kinds is not None else [""] * len(x), dtype=object)
    if not (x.shape == y.shape == clusters.shape == kinds.shape):
        raise NeurospecError(f"cluster_spearman: x has {x.shape} values, y {y.shape}, clusters {clusters.shape}")
    if not 0 < level < 1:
        raise NeurospecError(f"evaluate.correlation.level must lie in (0, 1), got {level!r}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, clusters, kinds = x[ok], y[ok], clusters[ok], kinds[ok]
    codes = sorted(set(clusters))
    members = []
    for c in codes:
        idx = np.flatnonzero(clusters == c)
        idx = idx[np.argsort(kinds[idx], kind="stable")]
        members.append((idx, tuple(kinds[idx])))
    k, sizes = len(codes), {len(idx) for idx, _ in members}
    out = {"unit": "language" if max(sizes, default=1) > 1 else "direction", "n": k, "n_directions": len(x),
           "rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "p_test": "",
           "partial_rho": np.nan, "partial_ci_low": np.nan, "partial_ci_high": np.nan, "n_boot": 0, "n_perm": 0}
    if k < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    z = confounds(clusters.tolist()) if partial else None
    rho, prho = _rank_stats(x[None], y[None], None if z is None else z[None])
    out.update(rho=float(rho[0]), partial_rho=float(prho[0]))
    if out["unit"] == "direction":
        out.update(p_value=float(stats.spearmanr(x, y).pvalue), p_test="spearman")
    elif n_perm > 0:
        out.update(p_value=_permutation_p(x, y, members, out["rho"], int(n_perm), seed),
                   p_test="cluster permutation", n_perm=int(n_perm))
    if n_boot > 0:
        draws = np.random.default_rng(seed).integers(0, k, size=(int(n_boot), k))
        boot, pboot = np.full(int(n_boot), np.nan), np.full(int(n_boot), np.nan)
        if len(sizes) == 1:  # every language has as many directions: one matrix of resamples
            blocks = np.stack([idx for idx, _ in members])
            for start in range(0, int(n_boot), 200):
                idx = blocks[draws[start:start + 200]].reshape(len(draws[start:start + 200]), -1)
                b, pb = _rank_stats(x[idx], y[idx], None if z is None else z[idx])
                boot[start:start + len(idx)], pboot[start:start + len(idx)] = b, pb
        else:
            for i, row in enumerate(draws):
                idx = np.concatenate([members[j][0] for j in row])
                b, pb = _rank_stats(x[idx][None], y[idx][None], None if z is None else z[idx][None])
                boot[i], pboot[i] = b[0], pb[0]
        lo, hi = _percentile(boot, level)
        plo, phi = _percentile(pboot, level) if np.isfinite(out["partial_rho"]) else (np.nan, np.nan)
        out.update(ci_low=lo, ci_high=hi, partial_ci_low=plo, partial_ci_high=phi,
                   n_boot=int(np.isfinite(boot).sum()))
    return out


# --------------------------------------------------------------------------------------------
# Specialization measures per direction
# --------------------------------------------------------------------------------------------


def pooled_iou(iou_table: pd.DataFrame) -> dict[frozenset, float]:
    """{ {a, b}: IoU of the layer x neuron sets } from a per-layer IoU table (a != b only)."""
    t = iou_table[iou_table["group_a"] != iou_table["group_b"]]
    sums = t.groupby(["group_a", "group_b"], sort=False)[["n_a", "n_b", "intersection"]].sum()
    out = {}
    for (a, b), row in sums.iterrows():
        union = float(row["n_a"] + row["n_b"] - row["intersection"])
        out[frozenset((str(a), str(b)))] = float(row["intersection"]) / union if union > 0 else np.nan
    return out


def method_group(pair: str, group_kind: str) -> str:
    """The group a direction is measured by: the pair itself (pair methods) or its non-English language."""
    if group_kind == "pair":
        return pair
    if group_kind == "language":
        return L.non_english(pair)
    raise NeurospecError(f"score table has group kind {group_kind!r}; expected 'pair' or 'language'")


def _peers(group: str, groups: Sequence[str], group_kind: str) -> tuple[list[str], list[str]]:
    """(same family, other families) among ``groups`` for ``group``; pairs only of the same direction."""
    if group_kind == "pair":
        lang = L.non_english(group)
        same_kind = [g for g in groups if g != group and "-" in g and L.direction(g) == L.direction(group)]
        keyed = [(g, L.non_english(g)) for g in same_kind]
    else:
        lang = group
        keyed = [(g, g) for g in groups if g != group and g != L.PIVOT]
    family = L.language(lang).family
    same = [g for g, x in keyed if L.language(x).family == family]
    rest = [g for g, x in keyed if L.language(x).family != family]
    return same, rest


def specialization_measures(pairs: Sequence[str], scores: pd.DataFrame, iou_table: pd.DataFrame,
                            meta: Mapping[str, Any]) -> pd.DataFrame:
    """n_selected, iou_family, iou_rest of every direction under one method (long: pair, measure, value).

    NaN where the direction's group is not among the method's groups (e.g. a language whose tokens no
    direction counted) or where a direction has no peer to compare with.
    """
    group_kind = str(meta.get("group_kind", ""))
    groups = [str(g) for g in meta.get("groups") or sorted(scores["group"].astype(str).unique())]
    sizes = scores.groupby(scores["group"].astype(str)).size()
    overlap = pooled_iou(iou_table)
    rows = []
    for pair in pairs:
        g = method_group(pair, group_kind)
        values = dict.fromkeys(MEASURES, np.nan)
        if g in groups:
            values["n_selected"] = float(sizes.get(g, 0))
            same, rest = _peers(g, groups, group_kind)
            for key, peers in (("iou_family", same), ("iou_rest", rest)):
                vals = [overlap.get(frozenset((g, h)), np.nan) for h in peers]
                vals = [v for v in vals if np.isfinite(v)]
                values[key] = float(np.mean(vals)) if vals else np.nan
        rows += [{"pair": pair, "measure": m, "value": v} for m, v in values.items()]
    return pd.DataFrame(rows)


def measure_table(translation: pd.DataFrame, methods: Mapping[str, tuple[pd.DataFrame, pd.DataFrame, Mapping]]
                  ) -> pd.DataFrame:
    """Every direction's chrF++ beside every measure: MEASURE_COLUMNS, one row per direction x measure.

    ``translation`` is the translation score table: its "base" rows give ``chrf``, its "ablated"
    rows of the row's method give ``delta_chrf`` (NaN where the method has no ablated row for the
    direction, and for ``tier_size``); ``methods`` maps a method to (score table, IoU table, score
    metadata).
    """
    base = translation[translation["condition"] == "base"]
    if base.empty:
        raise NeurospecError("the translation score table has no baseline row")
    pairs = L.sort_pairs(base["pair"].astype(str).tolist())
    info = base.set_index("pair")
    delta = {}
    if "method" in translation and "delta_chrf" in translation:
        ablated = translation[translation["condition"] == "ablated"]
        delta = {(str(r.method), str(r.pair)): float(r.delta_chrf) for r in ablated.itertuples()}
    frames = []
    for method, (scores, overlap, meta) in methods.items():
        m = specialization_measures(pairs, scores, overlap, meta)
        m.insert(0, "method", method)
        frames.append(m)
    tier = [{"method": "", "pair": p, "measure": "tier_size",
             "value": float(L.TIER_SIZES.get(L.language(L.non_english(p)).tier, np.nan))} for p in pairs]
    frames.append(pd.DataFrame(tier))
    long = pd.concat(frames, ignore_index=True)
    long["direction"] = [L.direction(p) for p in long["pair"]]
    long["lang"] = [L.non_english(p) for p in long["pair"]]
    long["family"] = [L.language(x).family for x in long["lang"]]
    long["tier"] = [L.language(x).tier for x in long["lang"]]
    long["chrf"] = info.loc[long["pair"], "chrf"].to_numpy(np.float64)
    long["delta_chrf"] = [delta.get((m, p), np.nan) for m, p in zip(long["method"], long["pair"])]
    return long[list(MEASURE_COLUMNS)]


def correlations(measures: pd.DataFrame, *, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
                 level: float = 0.95) -> pd.DataFrame:
    """Spearman's rho of chrF++ (and of delta chrF++ where there is one) with every measure, over all
    directions and per direction kind, the language as the unit; BH q-values over the whole table."""
    rows = []
    for (method, measure), part in measures.groupby(["method", "measure"], sort=False):
        for quality in QUALITIES:
            if quality not in part or not np.isfinite(part[quality].to_numpy(np.float64)).any():
                continue
            for scope in SCOPES:
                sub = part if scope == "all" else part[part["direction"] == scope]
                r = cluster_spearman(sub["value"].to_numpy(), sub[quality].to_numpy(), sub["lang"].to_numpy(),
                                     kinds=sub["direction"].to_numpy(), n_boot=n_boot, n_perm=n_perm, seed=seed,
                                     level=level, partial=measure != "tier_size")
                rows.append({"method": method, "measure": measure, "quality": quality, "scope": scope, **r,
                             "level": level, "seed": seed})
    out = pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
    out["q_value"] = bh_q_values(out["p_value"].to_numpy(np.float64))
    return out.astype({"n": "int64", "n_directions": "int64", "n_boot": "int64", "n_perm": "int64"})


def bh_q_values(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values of the finite ``p`` (the family); NaN where p is NaN."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q


def correlate_to_file(translation: str | os.PathLike, scores: Sequence[str | os.PathLike],
                      iou: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                      measures_path: str | os.PathLike, *, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, n_perm: int = 1000) -> None:
    """Rule entry point: measures per direction and their correlations with chrF++, written atomically."""
    for key, value in (("n_boot", n_boot), ("n_perm", n_perm)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise NeurospecError(f"evaluate.correlation.{key} must be an integer >= 0, got {value!r}")
    table = read_table(translation, required=("pair", "condition", "chrf"))
    if len(scores) != len(iou):
        raise NeurospecError(f"{len(scores)} score tables but {len(iou)} IoU tables")
    methods = {}
    for s_path, i_path in zip(scores, iou):
        meta = read_metadata(s_path)
        method = variant_label(meta) if meta.get("method") else os.path.basename(str(s_path)).removesuffix(".parquet")
        methods[method] = (read_table(s_path, required=("group", "layer", "neuron")),
                           read_table(i_path, required=("layer", "group_a", "group_b", "n_a", "n_b", "intersection")),
                           meta)
    measures = measure_table(table, methods)
    result = correlations(measures, n_boot=n_boot, n_perm=n_perm, seed=seed, level=level)
    for r in result[result["scope"] == "all"].itertuples():
        logger.info("%s vs %s %s: rho %.3f [%.3f, %.3f], p %.3g, q %.3g, partial rho %.3f, %d languages (%d "
                    "directions)", r.quality, r.method or "-", r.measure, r.rho, r.ci_low, r.ci_high, r.p_value,
                    r.q_value, r.partial_rho, r.n, r.n_directions)
    family = int(np.isfinite(result["p_value"].to_numpy(np.float64)).sum())
    meta = {"quality": {"chrf": "chrF++ (baseline)",
                        "delta_chrf": "delta chrF++ (the method's neurons ablated - baseline)"},
            "unit": "language (cluster bootstrap and cluster permutation test; one direction per language "
                    "within a direction kind: plain bootstrap, scipy's Spearman test)",
            "q_value_family": f"Benjamini-Hochberg over all {family} rows of this table with a p-value "
                              f"(method x measure x quality x scope)",
            "partial": "Spearman's rho of the rank residuals after least squares on intercept, tier "
                       "(ordinal 0-3) and script (Latin or not)",
            "n_boot": n_boot, "n_perm": n_perm, "seed": seed, "level": level,
            "methods": list(methods), "translation_scores": str(translation),
            "signatures": read_metadata(translation).get("signatures")}
    write_table(measures, measures_path, metadata=meta)
    write_table(result, out_path, metadata=meta)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def place_labels(ax, x: np.ndarray, y: np.ndarray, labels: Sequence[str], fontsize: float = 5.5) -> list:
    """Point labels that do not overlap each other, placed greedily (points in order of x): each label
    takes the first spot around its point, nearest first, whose box is free of the boxes already
    placed and inside the axes; a label moved away from its point gets a thin line to it. Call it once
    the axes have their final size. Returns the label artists."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    points = ax.transData.transform(np.column_stack([np.asarray(x, float), np.asarray(y, float)]))
    frame = ax.get_window_extent(renderer=renderer)
    pad = 1.0  # px between labels
    placed: list[tuple[float, float, float, float]] = []
    texts = []
    spots = [(r * np.cos(a), r * np.sin(a)) for r in (3, 8, 14, 22, 32, 45, 60, 80)
             for a in np.linspace(np.pi / 4, 2 * np.pi + np.pi / 4, 8, endpoint=False)]
    for i in np.argsort(points[:, 0], kind="stable"):
        px, py = points[i]
        text = ax.text(0, 0, labels[i], fontsize=fontsize, ha="left", va="bottom")
        box = text.get_window_extent(renderer=renderer)
        w, h = box.width, box.height
        best, best_hits = None, None
        for dx, dy in spots:
            x0 = px + dx - (w if dx < -0.5 else 0 if dx > 0.5 else w / 2)
            y0 = py + dy - (h if dy < -0.5 else 0 if dy > 0.5 else h / 2)
            cand = (x0 - pad, y0 - pad, x0 + w + pad, y0 + h + pad)
            hits = sum(cand[0] < b[2] and b[0] < cand[2] and cand[1] < b[3] and b[1] < cand[3] for b in placed)
            outside = cand[0] < frame.x0 or cand[2] > frame.x1 or cand[1] < frame.y0 or cand[3] > frame.y1
            score = hits + (0.5 if outside else 0)
            if best_hits is None or score < best_hits:
                best, best_hits = (x0, y0, cand, dx, dy), score
            if score == 0:
                break
        x0, y0, cand, dx, dy = best
        placed.append(cand)
        text.set_position(ax.transData.inverted().transform((x0, y0)))
        if np.hypot(dx, dy) > 10:
            cx, cy = ax.transData.inverted().transform((x0 + w / 2, y0 + h / 2))
            ax.plot([x[i], cx], [y[i], cy], color="#999999", lw=0.3, zorder=0)
        texts.append(text)
    return texts


def _panel(ax, sub: pd.DataFrame, corr: pd.Series | None, xlabel: str, log_x: bool = False) -> dict[str, Any]:
    sub = sub[np.isfinite(sub["value"].to_numpy(np.float64))]
    x, y = sub["value"].to_numpy(np.float64), sub["chrf"].to_numpy(np.float64)
    if log_x and len(x) and (x > 0).all():
        ax.set_xscale("log")
    # colour: the family; marker: the script (neurospec.plots.style); filled en->xx, hollow xx->en
    langs, kinds = sub["lang"].tolist(), sub["direction"].tolist()
    for i, (lang, kind) in enumerate(zip(langs, kinds)):
        color = style.family_color(lang)
        ax.scatter([x[i]], [y[i]], marker=style.script_marker(lang), s=24, linewidths=0.9,
                   facecolors=color if kind == "en-xx" else "none", edgecolors=color)
    labels = [p.replace("-", ARROW) for p in sub["pair"]]  # placed once the figure is laid out
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(labelsize=6)
    if corr is not None and np.isfinite(corr["rho"]):
        ax.set_title(f"\u03c1 = {corr['rho']:+.2f} [{corr['ci_low']:+.2f}, {corr['ci_high']:+.2f}], "
                     f"q = {corr['q_value']:.2g}, {corr['n']} languages", fontsize=7)
    else:
        why = ("fewer than 3 directions" if len(x) < 3 else "the measure is constant" if np.ptp(x) == 0
               else "chrF++ is constant" if np.ptp(y) == 0 else "")
        ax.set_title(f"\u03c1 undefined: {why}, n = {len(x)}" if why else f"\u03c1 undefined, n = {len(x)}",
                     fontsize=7)
    return {"x": x, "y": y, "labels": sub["pair"].tolist(), "rho": None if corr is None else corr["rho"],
            "texts": labels, "ax": ax}


def plot_correlation(measures: pd.DataFrame, result: pd.DataFrame, path: str | os.PathLike,
                     demo: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """One labelled scatter of chrF++ against each measure: rows are methods, a last row the tier.

    Returns {(method, measure): {"x", "y", "labels", "rho"}} as drawn (finite values only).
    """
    methods = [m for m in dict.fromkeys(measures["method"]) if m]
    nrows = len(methods) + 1
    # panels grow with the number of directions, so that their labels fit beside each other
    scale = max(1.0, float(np.sqrt(measures["pair"].nunique() / 20)))
    fig, axes = plt.subplots(nrows, len(MEASURES), figsize=(3.4 * scale * len(MEASURES), 2.7 * scale * nrows),
                             squeeze=False)
    if "quality" in result:
        result = result[result["quality"] == "chrf"]
    everything = result[result["scope"] == "all"].set_index(["method", "measure"])
    drawn = {}

    def corr(method, measure):
        return everything.loc[(method, measure)] if (method, measure) in everything.index else None

    for i, method in enumerate(methods):
        for j, measure in enumerate(MEASURES):
            ax = axes[i, j]
            sub = measures[(measures["method"] == method) & (measures["measure"] == measure)]
            drawn[(method, measure)] = _panel(ax, sub, corr(method, measure),
                                              f"{method}: {MEASURE_LABELS[measure]}")
            if j == 0:
                ax.set_ylabel("chrF++", fontsize=7)
    ax = axes[-1, 0]
    sub = measures[measures["measure"] == "tier_size"]
    drawn[("", "tier_size")] = _panel(ax, sub, corr("", "tier_size"), MEASURE_LABELS["tier_size"], log_x=True)
    ax.set_ylabel("chrF++", fontsize=7)
    for ax in axes[-1, 1:]:
        ax.axis("off")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    families = L.families_in_order(measures["family"])
    scripts = [sc for sc in style.SCRIPT_MARKERS if sc in {L.language(c).script for c in set(measures["lang"])}]
    handles = [Line2D([], [], ls="", marker="o", color="black", label=f"en{ARROW}xx (filled)"),
               Line2D([], [], ls="", marker="o", color="black", markerfacecolor="none", label=f"xx{ARROW}en (hollow)")]
    handles += [Patch(color=style.color_of_family(f), label=f) for f in families]
    handles += [Line2D([], [], ls="", marker=style.SCRIPT_MARKERS[sc], color="grey", label=sc) for sc in scripts]
    axes[-1, 1].legend(handles=handles, loc="center", fontsize=7, title="direction, family, script",
                       title_fontsize=7, ncol=2)
    level = float(result["level"].iloc[0]) if len(result) else 0.95
    title = (f"chrF++ per direction against specialization (Spearman \u03c1, {level:.0%} interval resampling "
             f"languages, BH q)")
    if demo:
        title += "\ndemo model (random init): these numbers are noise"
    fig.suptitle(title, fontsize=10, color="crimson" if demo else "black")
    fig.tight_layout()
    for entry in drawn.values():  # the labels, placed on the panels' final sizes
        texts = place_labels(entry.pop("ax"), entry["x"], entry["y"], entry.pop("texts"))
        entry["label_boxes"] = label_boxes(texts, fig)
    width, height = fig.get_size_inches()
    save_png(fig, path, dpi=style.dpi_for(width, height, 150))
    return drawn


def label_boxes(texts: Sequence, fig) -> list[tuple[float, float, float, float]]:
    """The display-space bounding boxes (x0, y0, x1, y1) of placed labels."""
    renderer = fig.canvas.get_renderer()
    boxes = []
    for t in texts:
        b = t.get_window_extent(renderer=renderer)
        boxes.append((b.x0, b.y0, b.x1, b.y1))
    return boxes


def draw_correlation(measures: str | os.PathLike, correlation: str | os.PathLike, output: str | os.PathLike,
                     demo: bool = False) -> None:
    """Rule entry point of the correlation figure."""
    plot_correlation(read_table(measures, required=MEASURE_COLUMNS),
                     read_table(correlation, required=CORRELATION_COLUMNS), output, demo=demo)
