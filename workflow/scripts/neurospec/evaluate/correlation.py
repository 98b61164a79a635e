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

The statistics are in ``neurospec.evaluate.spearman``; the figure, a labelled scatter per measure
against baseline chrF++, in ``neurospec.plots.correlation_figure``.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from neurospec.variants import label as variant_label
from .. import languages as L
from ..errors import NeurospecError
from ..tables import read_metadata, read_table, write_table
from .spearman import bh_q_values, cluster_spearman


logger = logging.getLogger("neurospec")

MEASURES = ("n_selected", "iou_family", "iou_rest")
SCOPES = ("all", "en-xx", "xx-en")
MEASURE_COLUMNS = ("pair", "direction", "lang", "family", "tier", "chrf", "delta_chrf", "method", "measure",
                   "value")
QUALITIES = ("chrf", "delta_chrf")
CORRELATION_COLUMNS = ("method", "measure", "quality", "scope", "unit", "n", "n_directions", "rho", "ci_low",
                       "ci_high", "p_value", "p_test", "q_value", "partial_rho", "partial_ci_low", "partial_ci_high",
                       "n_boot", "n_perm", "level", "seed")

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

