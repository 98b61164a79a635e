"""Stability of every selection: select on two disjoint halves of the sentences and compare.

Count tables hold every additive column over all sentences and over the sentences with an even
id alone (the "even" half, ``*_even`` columns); the "odd" half is the total minus the even half.
``half_tables`` turns count tables into the count tables of one half, so any scoring method runs
on a half unchanged.  ``stability`` runs a method on each half with the same parameters and
reports, per group and layer, the IoU of the two selections against the IoU expected by chance
for sets of those sizes drawn at random from the layer's neurons (hypergeometric overlap), and
the probability of an overlap at least as large by chance.

Why it matters: an IoU heatmap between languages is only worth reading where each language's own
selection would come out again on other sentences.  Split-half IoU near 1 says it would; near
chance says the selection is noise, and so is any overlap between groups drawn from it.

The halves are fixed by the sentences' ids (line index in the source file), so the same sentence
falls in the same half in every direction that shares a source file, in any shard.  Neighbouring
sentences of a document land in different halves: the halves share topics, so split-half IoU
says how stable a selection is under resampling sentences of the same corpus, not across corpora.
Each half holds about half of the data: a selection made on all sentences is at least as stable.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from typing import Any, Mapping, Sequence

import matplotlib

from .. import plots  # noqa: E402, F401  (matplotlib's Agg backend, chosen in neurospec/plots/__init__.py)
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats  # noqa: E402

from ..errors import NeurospecError  # noqa: E402
from .. import languages as L  # noqa: E402
from ..plots import style  # noqa: E402
from ..plots.group_axes import group_table, method_title  # noqa: E402

FAMILY_COLORS = style.FAMILY_COLORS  # one colour per family in every figure
from .scoring import METHODS, method_columns, read_count_tables, read_result, score_tables  # noqa: E402
from ..atomic import save_png, with_formats  # noqa: E402
from ..tables import HALF, TOTAL_COLUMNS, write_table  # noqa: E402

logger = logging.getLogger("neurospec")

HALVES = (HALF, "odd")
STABILITY_COLUMNS = ("group", "layer", "n_neurons", "n_even", "n_odd", "intersection", "iou", "iou_chance",
                     "p_value")
# Metadata of a count table that is split between the halves like the columns.
HALF_KEYS = ("n_tokens", "n_rate_sentences")


def half_tables(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
                half: str) -> dict[str, tuple[pd.DataFrame, dict[str, Any]]]:
    """The count tables of one half of the sentences: ``half`` "even" or "odd".

    Every additive column present with its ``_even`` column becomes that half's values (even:
    the ``_even`` column; odd: total - even), as do ``n_tokens`` and ``n_rate_sentences``.
    """
    if half not in HALVES:
        raise NeurospecError(f"unknown half {half!r}; choose one of {', '.join(HALVES)}")
    out: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {}
    for group, (df, meta) in tables.items():
        columns = {"layer": df["layer"].to_numpy(), "neuron": df["neuron"].to_numpy()}
        for col in TOTAL_COLUMNS:
            if col in df.columns and f"{col}_{HALF}" in df.columns:
                even = df[f"{col}_{HALF}"].to_numpy()
                columns[col] = even if half == HALF else df[col].to_numpy() - even
        m = dict(meta)
        for key in HALF_KEYS:
            if key in meta and f"{key}_{HALF}" in meta:
                m[key] = meta[f"{key}_{HALF}"] if half == HALF else meta[key] - meta[f"{key}_{HALF}"]
        if all(f"counted_hashes_{h}" in meta for h in HALVES):  # the half's counted sentences
            m["counted_hashes"] = meta[f"counted_hashes_{half}"]
        if not m.get("n_tokens"):
            raise NeurospecError(f"the {half} half of {group!r} ({meta.get('_path', 'count table')}) counted no "
                                 "tokens: stability needs sentences with even and with odd ids in every pair")
        out[group] = (pd.DataFrame(columns), m)
    return out


def chance_iou(n: int, a: int, b: int) -> float:
    """E[IoU] of two random subsets of sizes a and b of n elements (exact: the overlap is hypergeometric)."""
    if a + b == 0:
        return math.nan
    lo, hi = max(0, a + b - n), min(a, b)
    i = np.arange(lo, hi + 1)
    return float((stats.hypergeom.pmf(i, n, a, b) * i / (a + b - i)).sum())


def stability(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], method: str, column: str,
              params: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Split-half stability of ``method``'s selection: one row per group and layer (STABILITY_COLUMNS).

    n_even, n_odd: neurons selected on each half; iou: their intersection over union (NaN when
    both are empty); iou_chance: the IoU expected for random sets of those sizes among the layer's
    n_neurons; p_value: the chance of an intersection at least as large (hypergeometric).
    """
    selections, meta = {}, {}
    for half in HALVES:
        selections[half], _, meta = score_tables(half_tables(tables, half), method, column, params)
    groups, layers = meta["groups"], meta["layers"]
    first = next(iter(tables.values()))[0]
    n_neurons = first.groupby("layer").size().reindex(layers).to_numpy(np.int64)
    index = pd.MultiIndex.from_product([groups, layers], names=["group", "layer"])
    sizes = {h: selections[h].groupby(["group", "layer"]).size().reindex(index, fill_value=0).to_numpy(np.int64)
             for h in HALVES}
    both = selections[HALVES[0]].merge(selections[HALVES[1]], on=["group", "layer", "neuron"])
    inter = both.groupby(["group", "layer"]).size().reindex(index, fill_value=0).to_numpy(np.int64)
    a, b = sizes[HALVES[0]], sizes[HALVES[1]]
    n = np.tile(n_neurons, len(groups))
    union = a + b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    table = pd.DataFrame({
        "group": index.get_level_values("group").astype(str),
        "layer": index.get_level_values("layer").astype(np.int32),
        "n_neurons": n, "n_even": a, "n_odd": b, "intersection": inter, "iou": observed,
        "iou_chance": [chance_iou(int(x), int(y), int(z)) for x, y, z in zip(n, a, b)],
        "p_value": stats.hypergeom.sf(inter - 1, n, a, b),
    })
    out_meta = {key: meta[key] for key in ("method", "group_kind", "column", "params", "groups", "layers")}
    out_meta["halves"] = f"{HALF}: sentences with an even id; odd: the rest"
    return table, out_meta


def summarize(table: pd.DataFrame) -> dict[str, float]:
    """Median split-half IoU and chance IoU over the (group, layer) cells with a selection, and the
    share of those cells whose overlap is above chance (p < 0.05)."""
    t = table[np.isfinite(table["iou"])]
    if t.empty:
        return {"cells": 0, "median_iou": math.nan, "median_chance": math.nan, "share_above_chance": math.nan}
    return {"cells": int(len(t)), "median_iou": float(t["iou"].median()),
            "median_chance": float(t["iou_chance"].median()),
            "share_above_chance": float((t["p_value"] < 0.05).mean())}


@with_formats
def run_stability(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, method: str, column: str,
                  params: Mapping[str, Any] | None = None, figure_path: str | os.PathLike | None = None,
                  variant: str | None = None) -> None:
    """Rule entry point: read the activation tables (the columns the method needs, both halves), write
    the stability table (atomically), and draw its figure into ``figure_path`` when given."""
    if method not in METHODS:
        raise NeurospecError(f"unknown scoring method {method!r}; known: {', '.join(METHODS)}")
    columns = method_columns(method, column, params)
    tables = read_count_tables(paths, [*columns, *(f"{c}_{HALF}" for c in columns)])
    table, meta = stability(tables, method, column, params)
    if variant:  # a scoring.variants entry (neurospec.variants): its label on the table and figure
        meta["variant"] = variant
    s = summarize(table)
    logger.info("%s: split-half IoU median %.3f against %.3f by chance over %d (group, layer) cells with a "
                "selection; %.0f%% above chance (p < 0.05)", method, s["median_iou"], s["median_chance"],
                s["cells"], 100 * s["share_above_chance"] if s["cells"] else 0)
    write_table(table, out_path, None, metadata=meta)
    if figure_path is not None:
        draw_stability(out_path, figure_path)


def read_stability(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A stability table and its metadata (method, params, groups, layers, ...)."""
    return read_result(path, STABILITY_COLUMNS, "stability")


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def plot_stability(table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int], path: str | os.PathLike,
                   title: str = "") -> dict[str, Any]:
    """Split-half IoU per layer against chance (left) and per group and layer (right).

    Left: each group's split-half IoU as a dot, the median over groups as a line, and the IoU
    expected by chance for the same set sizes as a dashed line (its median) over a grey band (its
    range).  Right: the split-half IoU of every group (rows, by family then tier) and layer; cells
    whose overlap is not above chance (p >= 0.05) are crossed, cells with nothing selected in
    either half are grey.  Returns the per-layer medians and the group x layer matrices.
    """
    info = group_table(groups)
    order = info["group"].tolist()
    layers = [int(x) for x in layers]
    t = table.set_index(["group", "layer"])
    index = pd.MultiIndex.from_product([order, layers])
    iou = t["iou"].reindex(index).to_numpy(np.float64).reshape(len(order), len(layers))
    chance = t["iou_chance"].reindex(index).to_numpy(np.float64).reshape(len(order), len(layers))
    pval = t["p_value"].reindex(index).to_numpy(np.float64).reshape(len(order), len(layers))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN layers: nothing selected there
        per_layer = pd.DataFrame({
            "layer": layers,
            "median_iou": np.nanmedian(iou, axis=0),
            "median_chance": np.nanmedian(chance, axis=0),
            "min_chance": np.nanmin(chance, axis=0),
            "max_chance": np.nanmax(chance, axis=0),
            "share_above_chance": [float((pval[:, j][np.isfinite(iou[:, j])] < 0.05).mean())
                                   if np.isfinite(iou[:, j]).any() else np.nan for j in range(len(layers))],
        }).set_index("layer")
    n, n_layers = len(order), len(layers)
    fig, (ax, hm) = plt.subplots(1, 2, figsize=(float(np.clip(0.5 * n_layers + 9, 10, 24)),
                                                float(np.clip(0.17 * n + 2.5, 4.2, 16))),
                                 gridspec_kw={"width_ratios": [1.1, 1.0]})
    x = np.arange(n_layers)
    ax.fill_between(x, per_layer["min_chance"], per_layer["max_chance"], color="#bbbbbb", alpha=0.5, lw=0,
                    label="chance, range over groups")
    ax.plot(x, per_layer["median_chance"], color="#555555", ls="--", lw=1.5, label="chance, median")
    rng = np.random.default_rng(0)
    for i, family in enumerate(info["family"]):
        ax.scatter(x + rng.uniform(-0.18, 0.18, n_layers), iou[i], s=9, alpha=0.6,
                   color=style.color_of_family(family), lw=0)
    ax.plot(x, per_layer["median_iou"], color="black", marker="o", ms=4, lw=1.8,
            label="split-half IoU, median (dots: groups, by family)")
    ax.set_xticks(x)
    ax.set_xticklabels(layers, fontsize=float(np.clip(320 / max(n_layers, 1), 5, 9)))
    ax.set_xlabel("layer")
    ax.set_ylabel("IoU of the selections on the two halves")
    ax.set_ylim(-0.02, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#cccccc")
    image = hm.imshow(np.ma.masked_invalid(iou), aspect="auto", cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    weak = np.isfinite(iou) & ~(pval < 0.05)
    yy, xx = np.nonzero(weak)
    hm.scatter(xx, yy, marker="x", s=float(np.clip(900 / max(n, n_layers, 1), 6, 40)), color="red", lw=1)
    hm.set_yticks(range(n))
    hm.set_yticklabels(info["label"], fontsize=float(np.clip(320 / max(n, 1), 3.5, 9)))
    for text, family in zip(hm.get_yticklabels(), info["family"]):
        text.set_color(style.color_of_family(family))
    hm.set_xticks(range(n_layers))
    hm.set_xticklabels(layers, fontsize=float(np.clip(320 / max(n_layers, 1), 5, 9)))
    hm.set_xlabel("layer")
    for i in range(1, n):  # family blocks
        if info["block"].iloc[i] != info["block"].iloc[i - 1]:
            hm.axhline(i - 0.5, color="white", lw=0.8)
    present = L.families_in_order(info["family"])
    hm.legend(handles=[Patch(color=style.color_of_family(f), label=f) for f in present], title="family", fontsize=7,
              title_fontsize=7, loc="upper left", bbox_to_anchor=(1.32, 1.0))
    fig.colorbar(image, ax=hm, shrink=0.8, label="split-half IoU (grey: nothing selected; red x: not above chance)")
    s = summarize(table)
    headline = ("nothing selected in either half" if not s["cells"] else
                f"median split-half IoU {s['median_iou']:.2f} against {s['median_chance']:.2f} by chance; "
                f"{s['share_above_chance']:.0%} of {s['cells']} group x layer cells above chance (p < 0.05)")
    fig.suptitle(f"{title}\nstability: selections on two disjoint halves of the sentences (even / odd ids)\n"
                 f"{headline}", fontsize=10, y=1.06)
    save_png(fig, path, dpi=110)
    return {"per_layer": per_layer, "iou": iou, "chance": chance, "groups": order, "summary": s}


def draw_stability(stability: str | os.PathLike, output: str | os.PathLike) -> dict[str, Any]:
    """Rule entry point: draw a method's stability figure from its stability table."""
    table, meta = read_stability(stability)
    return plot_stability(table, meta["groups"], meta["layers"], output, method_title(meta))
