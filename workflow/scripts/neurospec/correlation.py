"""Translation quality against specialization, per direction: Spearman's rho with a bootstrap interval.

For every translation direction (en->xx or xx->en, xx the non-English language) and every scoring
method, with ``g`` the method's group for the direction (the pair for pair methods such as
``frequency``, the language xx for language methods):

``n_selected``  how many (layer, neuron) the method selected for ``g``;
``iou_family``  mean IoU of ``g``'s selection with the groups of the other languages of xx's family
                (pair methods: directions of the same kind, en->yy with en->xx, yy->en with xx->en);
``iou_rest``    the same with the groups of the other families;

IoU pooled over layers (the IoU of the layer x neuron sets, from the method's IoU table); plus
``tier_size``, xx's EC40 training-set size (its resource tier: 5M, 1M, 100k, 50k sentence pairs).

Each measure is correlated with the direction's baseline chrF++ by Spearman's rho, over all directions
and within each direction kind, with a percentile bootstrap interval (``scipy.stats.bootstrap``:
directions resampled with replacement, ``n_boot`` times, seeded; resamples in which a variable is
constant are skipped and counted).  With one value per direction, n is the number of directions:
20 or 80, so intervals are wide, and many measures are tested at once.  ``plot_correlation`` draws a
labelled scatter per measure.
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from . import languages as L  # noqa: E402
from .errors import NeurospecError  # noqa: E402
from .atomic import save_png  # noqa: E402
from .tables import read_metadata, read_table, write_table  # noqa: E402

logger = logging.getLogger("neurospec")

MEASURES = ("n_selected", "iou_family", "iou_rest")
SCOPES = ("all", "en-xx", "xx-en")
MEASURE_COLUMNS = ("pair", "direction", "lang", "family", "tier", "chrf", "method", "measure", "value")
CORRELATION_COLUMNS = ("method", "measure", "scope", "n", "rho", "ci_low", "ci_high", "p_value", "n_boot",
                       "level", "seed")
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

    ``translation`` is the translation score table (its "base" rows are used); ``methods`` maps a
    method to (score table, IoU table, score metadata).
    """
    base = translation[translation["condition"] == "base"]
    if base.empty:
        raise NeurospecError("the translation score table has no baseline row")
    pairs = L.sort_pairs(base["pair"].astype(str).tolist())
    info = base.set_index("pair")
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
    return long[list(MEASURE_COLUMNS)]


def correlations(measures: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Spearman's rho of chrF++ with every measure, over all directions and per direction kind."""
    rows = []
    for (method, measure), part in measures.groupby(["method", "measure"], sort=False):
        for scope in SCOPES:
            sub = part if scope == "all" else part[part["direction"] == scope]
            r = spearman(sub["value"].to_numpy(), sub["chrf"].to_numpy(), n_boot=n_boot, seed=seed, level=level)
            rows.append({"method": method, "measure": measure, "scope": scope, **r, "level": level, "seed": seed})
    out = pd.DataFrame(rows, columns=list(CORRELATION_COLUMNS))
    return out.astype({"n": "int64", "n_boot": "int64"})


def correlate_to_file(translation: str | os.PathLike, scores: Sequence[str | os.PathLike],
                      iou: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                      measures_path: str | os.PathLike, *, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> None:
    """Rule entry point: measures per direction and their correlations with chrF++, written atomically."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise NeurospecError(f"evaluate.correlation.n_boot must be an integer >= 0, got {n_boot!r}")
    table = read_table(translation, required=("pair", "condition", "chrf"))
    if len(scores) != len(iou):
        raise NeurospecError(f"{len(scores)} score tables but {len(iou)} IoU tables")
    methods = {}
    for s_path, i_path in zip(scores, iou):
        meta = read_metadata(s_path)
        method = str(meta.get("method") or os.path.basename(str(s_path)).removesuffix(".parquet"))
        methods[method] = (read_table(s_path, required=("group", "layer", "neuron")),
                           read_table(i_path, required=("layer", "group_a", "group_b", "n_a", "n_b", "intersection")),
                           meta)
    measures = measure_table(table, methods)
    result = correlations(measures, n_boot=n_boot, seed=seed, level=level)
    for r in result[result["scope"] == "all"].itertuples():
        logger.info("chrF++ vs %s %s: rho %.3f [%.3f, %.3f], n %d", r.method or "-", r.measure, r.rho, r.ci_low,
                    r.ci_high, r.n)
    meta = {"quality": "chrF++ (baseline)", "n_boot": n_boot, "seed": seed, "level": level,
            "methods": list(methods), "translation_scores": str(translation),
            "signatures": read_metadata(translation).get("signatures")}
    write_table(measures, measures_path, metadata=meta)
    write_table(result, out_path, metadata=meta)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def _family_color(code: str):
    return plt.get_cmap("tab10")(L.FAMILIES.index(L.language(code).family))


def _panel(ax, sub: pd.DataFrame, corr: pd.Series | None, xlabel: str, log_x: bool = False) -> dict[str, Any]:
    sub = sub[np.isfinite(sub["value"].to_numpy(np.float64))]
    x, y = sub["value"].to_numpy(np.float64), sub["chrf"].to_numpy(np.float64)
    for kind, marker in (("en-xx", "o"), ("xx-en", "^")):
        m = (sub["direction"] == kind).to_numpy()
        ax.scatter(x[m], y[m], c=[_family_color(lang) for lang in sub["lang"][m]], marker=marker, s=22,
                   edgecolors="black", linewidths=0.3, label=kind.replace("-", ARROW))
    for xi, yi, pair in zip(x, y, sub["pair"]):
        ax.annotate(pair.replace("-", ARROW), (xi, yi), fontsize=5, xytext=(2, 2), textcoords="offset points")
    if log_x and len(x) and (x > 0).all():
        ax.set_xscale("log")
    ax.set_xlabel(xlabel, fontsize=7)
    ax.tick_params(labelsize=6)
    if corr is not None and np.isfinite(corr["rho"]):
        ax.set_title(f"\u03c1 = {corr['rho']:+.2f} [{corr['ci_low']:+.2f}, {corr['ci_high']:+.2f}], n = {corr['n']}",
                     fontsize=7)
    else:
        why = ("fewer than 3 directions" if len(x) < 3 else "the measure is constant" if np.ptp(x) == 0
               else "chrF++ is constant" if np.ptp(y) == 0 else "")
        ax.set_title(f"\u03c1 undefined: {why}, n = {len(x)}" if why else f"\u03c1 undefined, n = {len(x)}",
                     fontsize=7)
    return {"x": x, "y": y, "labels": sub["pair"].tolist(), "rho": None if corr is None else corr["rho"]}


def plot_correlation(measures: pd.DataFrame, result: pd.DataFrame, path: str | os.PathLike,
                     demo: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """One labelled scatter of chrF++ against each measure: rows are methods, a last row the tier.

    Returns {(method, measure): {"x", "y", "labels", "rho"}} as drawn (finite values only).
    """
    methods = [m for m in dict.fromkeys(measures["method"]) if m]
    nrows = len(methods) + 1
    fig, axes = plt.subplots(nrows, len(MEASURES), figsize=(3.4 * len(MEASURES), 2.7 * nrows), squeeze=False)
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
    handles, labels = axes[0, 0].get_legend_handles_labels()
    families = [f for f in L.FAMILIES if f in set(measures["family"])]
    from matplotlib.patches import Patch

    handles += [Patch(color=plt.get_cmap("tab10")(L.FAMILIES.index(f)), label=f) for f in families]
    axes[-1, 1].legend(handles=handles, loc="center", fontsize=7, title="direction, family", title_fontsize=7)
    level = float(result["level"].iloc[0]) if len(result) else 0.95
    title = f"chrF++ per direction against specialization (Spearman \u03c1, bootstrap {level:.0%} interval)"
    if demo:
        title += "\ndemo model (random init): these numbers are noise"
    fig.suptitle(title, fontsize=10, color="crimson" if demo else "black")
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    return drawn


def draw_correlation(measures: str | os.PathLike, correlation: str | os.PathLike, output: str | os.PathLike,
                     demo: bool = False) -> None:
    """Rule entry point of the correlation figure."""
    plot_correlation(read_table(measures, required=MEASURE_COLUMNS),
                     read_table(correlation, required=CORRELATION_COLUMNS), output, demo=demo)
