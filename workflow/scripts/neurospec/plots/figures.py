"""Figures (PNG, matplotlib Agg) from score and IoU tables and from the activation tables.

Every ``plot_*`` function writes one PNG and returns the numbers it drew (a matrix, a table), so
tests and notebooks can check them.  Groups are ordered by family, then resource tier
(``languages.sort_key``); pair groups put the en->xx block, then xx->en, then pairs without English
(``languages.sort_pairs``).  Tick labels are coloured by family; lines mark family blocks.
``draw`` is the file-level entry point of the rule script.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import special  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

from . import style  # noqa: E402
from .. import languages as L  # noqa: E402
from ..errors import NeurospecError  # noqa: E402
from ..score.scoring import iou_matrix, read_iou, read_scores  # noqa: E402
from ..atomic import save_png  # noqa: E402
from ..tables import COUNT_COLUMNS, read_counts  # noqa: E402
from neurospec.variants import label as variant_label  # noqa: E402

logger = logging.getLogger("neurospec")

FAMILY_COLORS = style.FAMILY_COLORS  # one colour per family in every figure (neurospec.plots.style)
ARROW = "\u2192"


# --------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------


def is_pair(group: str) -> bool:
    return "-" in group


def group_table(groups: Sequence[str], langs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group in figure order: group, label, lang, family, tier, direction, block.

    ``lang`` is the group itself for language groups, the non-English side for pairs;
    ``direction`` is "en-xx"/"xx-en" for pairs, "" for languages; ``block`` changes where a
    family (or the direction) changes, English being a block of its own.
    """
    groups = [str(g) for g in groups]
    langs = L.language_table({c for g in groups for c in g.split("-")}) if langs is None else langs
    info = langs.set_index("code")
    pairs = [is_pair(g) for g in groups]
    if any(pairs) and not all(pairs):
        raise NeurospecError(f"cannot mix pair and language groups in one figure: {', '.join(groups)}")
    if groups and all(pairs):
        ordered = L.sort_pairs(groups)
        lang = [L.non_english(g) for g in ordered]
        direction = [L.direction(g) for g in ordered]
        label = [g.replace("-", ARROW) for g in ordered]
    else:
        ordered = sorted(groups, key=L.sort_key)
        lang, direction, label = ordered, [""] * len(ordered), ordered
    unknown = [x for x in lang if x not in info.index]
    if unknown:
        raise NeurospecError(f"unknown language code(s) {', '.join(unknown)} in groups")
    out = pd.DataFrame({"group": ordered, "label": label, "lang": lang, "direction": direction})
    out["family"] = [info.loc[x, "family"] for x in lang]
    out["tier"] = [info.loc[x, "tier"] for x in lang]
    out["block"] = [f"{d}/{L.sort_key(x)[0]}" for d, x in zip(direction, lang)]
    return out


def _boundaries(values: Sequence[str]) -> list[int]:
    """Indices i where values[i] differs from values[i - 1]."""
    return [i for i in range(1, len(values)) if values[i] != values[i - 1]]


def _family_legend(ax_or_fig, families: Sequence[str], **kwargs) -> None:
    present = L.families_in_order(families)
    handles = [Patch(color=style.color_of_family(f), label=f) for f in present]
    ax_or_fig.legend(handles=handles, title="family", fontsize=8, title_fontsize=8, **kwargs)


def _color_ticklabels(labels, families) -> None:
    for text, family in zip(labels, families):
        text.set_color(style.color_of_family(family))


def _tick_fontsize(n: int) -> float:
    return style.tick_fontsize(n)  # never under 6 pt: the figure grows instead


def _save(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    save_png(fig, path, dpi=dpi)


def method_title(meta: Mapping[str, Any]) -> str:
    params = meta.get("params") or {}
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{variant_label(meta)} ({meta.get('column', '?')}{', ' + text if text else ''})"


def _empty_figure(path, title: str, message: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# 1. IoU heatmaps per layer
# --------------------------------------------------------------------------------------------


def plot_iou_layers(iou_table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int],
                    path: str | os.PathLike, title: str = "") -> dict[int, np.ndarray]:
    """A grid of per-layer IoU heatmaps of ``groups`` (figure order); returns {layer: matrix}."""
    info = group_table(groups)
    order = info["group"].tolist()
    n, n_layers = len(order), len(layers)
    if n == 0 or n_layers == 0:
        _empty_figure(path, title, "no groups or layers to compare")
        return {}
    ncols = int(math.ceil(math.sqrt(n_layers)))
    nrows = int(math.ceil(n_layers / ncols))
    # a row per group at a legible font (>= 6 pt): the panel grows with the groups (neurospec.plots.style)
    panel = style.heatmap_inches(n) + 0.6
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols + 1.5, panel * nrows + 0.8), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#cccccc")
    fs = style.tick_fontsize(n)
    fam_lines = _boundaries(info["block"].tolist())
    dir_lines = _boundaries(info["direction"].tolist())
    out: dict[int, np.ndarray] = {}
    image = None
    for ax, layer in zip(axes.ravel(), layers):
        m = iou_matrix(iou_table, order, layer=int(layer))
        out[int(layer)] = m
        image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"layer {layer}", fontsize=10)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(info["label"], rotation=90, fontsize=fs)
        ax.set_yticklabels(info["label"], fontsize=fs)
        _color_ticklabels(ax.get_xticklabels(), info["family"])
        _color_ticklabels(ax.get_yticklabels(), info["family"])
        for i in fam_lines:
            ax.axhline(i - 0.5, color="white", lw=0.8)
            ax.axvline(i - 0.5, color="white", lw=0.8)
        for i in dir_lines:
            ax.axhline(i - 0.5, color="red", lw=1.6)
            ax.axvline(i - 0.5, color="red", lw=1.6)
        ax.tick_params(length=0, pad=1)
    for ax in axes.ravel()[n_layers:]:
        ax.axis("off")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="IoU of selected neurons (grey: both empty)")
    _family_legend(fig, info["family"], loc="upper left", bbox_to_anchor=(0.99, 0.97))
    fig.suptitle(f"{title}\nIoU of the selected neuron sets per layer, by family then tier"
                 + (" (red: en\u2192xx | xx\u2192en)" if dir_lines else ""), fontsize=12)
    _save(fig, path, dpi=style.dpi_for(panel * ncols + 1.5, panel * nrows + 0.8, 150 if n > 40 else 110))
    return out


# --------------------------------------------------------------------------------------------
# 2. en->xx against xx->en
# --------------------------------------------------------------------------------------------


def direction_iou(iou_table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int]) -> pd.DataFrame:
    """Per layer: mean IoU among en->xx pairs, among xx->en pairs, and of en->xx with xx->en for
    the same language (all off-diagonal; NaN where no such pair)."""
    info = group_table(groups)
    order = info["group"].tolist()
    d = info["direction"].to_numpy()
    lang = info["lang"].to_numpy()
    rows = []
    off = ~np.eye(len(order), dtype=bool)
    for layer in layers:
        m = iou_matrix(iou_table, order, layer=int(layer))
        out = {"layer": int(layer)}
        for name, mask in (
            (f"among en{ARROW}xx", off & (d[:, None] == "en-xx") & (d[None, :] == "en-xx")),
            (f"among xx{ARROW}en", off & (d[:, None] == "xx-en") & (d[None, :] == "xx-en")),
            (f"en{ARROW}xx with xx{ARROW}en, same xx", (d[:, None] == "en-xx") & (d[None, :] == "xx-en")
             & (lang[:, None] == lang[None, :])),
        ):
            vals = m[mask]
            out[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        rows.append(out)
    return pd.DataFrame(rows).set_index("layer")


def plot_direction_iou(iou_table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int],
                       path: str | os.PathLike, title: str = "") -> pd.DataFrame:
    """Mean pairwise IoU per layer among en->xx pairs against among xx->en pairs."""
    table = direction_iou(iou_table, groups, layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(layers) + 3), 4.2))
    styles = {0: ("#1f77b4", "o", "-"), 1: ("#d62728", "s", "-"), 2: ("#7f7f7f", "^", "--")}
    for i, column in enumerate(table.columns):
        color, marker, ls = styles[i]
        ax.plot(table.index, table[column], marker=marker, ls=ls, color=color, label=column, ms=4)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean pairwise IoU")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(list(table.index))
    ax.tick_params(axis="x", labelsize=_tick_fontsize(len(table)) + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}\nneuron overlap between translation directions, per layer", fontsize=10)
    _save(fig, path)
    return table


# --------------------------------------------------------------------------------------------
# 3. Specialized neurons per layer and group
# --------------------------------------------------------------------------------------------


def specialized_counts(scores: pd.DataFrame, groups: Sequence[str], layers: Sequence[int]) -> pd.DataFrame:
    """Number of selected neurons, groups (figure order) x layers."""
    info = group_table(groups)
    counts = scores.groupby(["group", "layer"]).size()
    table = counts.unstack("layer", fill_value=0) if len(counts) else pd.DataFrame()
    return table.reindex(index=info["group"], columns=[int(x) for x in layers], fill_value=0).fillna(0).astype(int)


def plot_specialized_counts(scores: pd.DataFrame, groups: Sequence[str], layers: Sequence[int],
                            path: str | os.PathLike, title: str = "") -> pd.DataFrame:
    """Heatmap of the number of selected neurons per group (rows) and layer (columns)."""
    table = specialized_counts(scores, groups, layers)
    info = group_table(groups)
    n, n_layers = table.shape
    fig, ax = plt.subplots(figsize=(float(np.clip(0.3 * n_layers + 3.5, 5, 16)),
                                    float(np.clip(0.17 * n + 1.8, 3, 16))))
    image = ax.imshow(table.to_numpy(), aspect="auto", cmap="magma", interpolation="nearest",
                      vmin=0, vmax=max(1, int(table.to_numpy().max())) if n and n_layers else 1)
    ax.set_yticks(range(n))
    ax.set_yticklabels(info["label"], fontsize=_tick_fontsize(n))
    _color_ticklabels(ax.get_yticklabels(), info["family"])
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels(table.columns, fontsize=_tick_fontsize(n_layers))
    ax.set_xlabel("layer")
    for i in _boundaries(info["block"].tolist()):
        ax.axhline(i - 0.5, color="white", lw=0.8)
    for i in _boundaries(info["direction"].tolist()):
        ax.axhline(i - 0.5, color="cyan", lw=1.6)
    if n * n_layers <= 600:
        top = table.to_numpy().max() if n and n_layers else 0
        for (i, j), v in np.ndenumerate(table.to_numpy()):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                    color="black" if v > 0.6 * top else "white")
    fig.colorbar(image, ax=ax, label="selected neurons", shrink=0.8)
    _family_legend(ax, info["family"], loc="upper left", bbox_to_anchor=(1.25, 1.0))
    total = int(table.to_numpy().sum())
    ax.set_title(f"{title}\nselected neurons per group and layer (total {total})", fontsize=10)
    _save(fig, path)
    return table


# --------------------------------------------------------------------------------------------
# 4. Within and across families
# --------------------------------------------------------------------------------------------


def family_iou(iou_table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int]) -> pd.DataFrame:
    """Per layer: mean IoU over distinct groups of the same family and of different families.

    Pair groups are compared within one direction only (en->xx with en->xx, xx->en with xx->en),
    by the family of their non-English language.
    """
    info = group_table(groups)
    order = info["group"].tolist()
    fam = info["family"].to_numpy()
    d = info["direction"].to_numpy()
    off = ~np.eye(len(order), dtype=bool)
    same_fam = fam[:, None] == fam[None, :]
    series = []
    for direction in dict.fromkeys(d):
        prefix = "" if direction == "" else direction.replace("-", ARROW) + ": "
        in_dir = (d[:, None] == direction) & (d[None, :] == direction) & off
        series += [(f"{prefix}same family", in_dir & same_fam), (f"{prefix}different families", in_dir & ~same_fam)]
    rows = []
    for layer in layers:
        m = iou_matrix(iou_table, order, layer=int(layer))
        row = {"layer": int(layer)}
        for name, mask in series:
            vals = m[mask]
            row[name] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index("layer") if rows else pd.DataFrame()


def plot_family_iou(iou_table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int],
                    path: str | os.PathLike, title: str = "") -> pd.DataFrame:
    """Mean IoU within a family against across families, per layer."""
    table = family_iou(iou_table, groups, layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(layers) + 3), 4.2))
    colors = ["#1f77b4", "#1f77b4", "#d62728", "#d62728"]
    for i, column in enumerate(table.columns):
        ax.plot(table.index, table[column], color=colors[i % 4], ls="-" if i % 2 == 0 else "--",
                marker="o" if i % 2 == 0 else "x", ms=4, label=column)
    ax.set_xlabel("layer")
    ax.set_ylabel("mean pairwise IoU")
    ax.set_ylim(0, 1.02)
    if len(table):
        ax.set_xticks(list(table.index))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}\nneuron overlap within a language family (solid) and across families (dashed)",
                 fontsize=10)
    _save(fig, path)
    return table


# --------------------------------------------------------------------------------------------
# 5. Clustering against families
# --------------------------------------------------------------------------------------------


def adjusted_rand_index(labels_a: Sequence, labels_b: Sequence) -> float:
    """Hubert & Arabie's adjusted Rand index of two partitions of the same items.

    From the contingency table (``scipy.stats.contingency.crosstab``) and pair counts
    (``scipy.special.comb``): (index - expected) / (maximum - expected), with index the pairs
    together in both partitions, maximum the mean of the pairs together in each, expected their
    product over all pairs.  scipy has no ARI and scikit-learn is not a dependency; where both
    partitions are trivial (one cluster, or all singletons) it is 1 when they agree, else 0.
    """
    a = np.asarray(labels_a, dtype=object)
    b = np.asarray(labels_b, dtype=object)
    if a.shape != b.shape or a.ndim != 1:
        raise NeurospecError("adjusted_rand_index needs two label sequences of the same length")
    from scipy.stats.contingency import crosstab  # here: scipy.stats takes ~0.5 s to import, for one figure

    n = len(a)
    if n < 2:
        return 1.0
    table = crosstab(a.astype(str), b.astype(str)).count

    def pairs(x):
        return float(special.comb(x, 2).sum())

    index = pairs(table)
    sum_a, sum_b = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = sum_a * sum_b / special.comb(n, 2)
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:  # both partitions trivial (one cluster, or all singletons)
        return 1.0 if index == maximum else 0.0
    return (index - expected) / (maximum - expected)


def clustering_groups(groups: Sequence[str], token_scope: str = "source") -> pd.DataFrame:
    """The groups clustered, with their language: all languages, or the pairs whose counted tokens
    are the non-English language's: xx->en (en->xx pairs all count English), or with collection's
    ``token_scope`` "target" (the reference translation counted) en->xx."""
    info = group_table(groups)
    if (info["direction"] != "").any():
        counts_target = L.counted_language("en", "xx", token_scope) == "xx"
        # pairs without English (xx-yy) are filed under their source language: kept when it is counted
        keep = ("en-xx",) if counts_target else ("xx-en", "xx-yy")
        info = info[info["direction"].isin(keep)]
    return info.reset_index(drop=True)


def plot_clustering(iou_table: pd.DataFrame, groups: Sequence[str], path: str | os.PathLike,
                    title: str = "", token_scope: str = "source") -> dict[str, Any]:
    """Average-linkage clustering of the groups on 1 - IoU (pooled over layers), against families.

    The tree is cut into as many clusters as there are families among the groups; the title
    gives the adjusted Rand index of that cut against the families.  Returns the distance
    matrix, the clusters, the ARI and the leaf order.
    """
    info = clustering_groups(groups, token_scope)
    order = info["group"].tolist()
    n = len(order)
    if n < 3:
        _empty_figure(path, title, f"clustering needs at least 3 groups, got {n}")
        return {"groups": order, "ari": float("nan"), "clusters": {}, "leaves": order}
    m = iou_matrix(iou_table, order)
    dist = 1.0 - np.nan_to_num(m, nan=0.0)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, 1.0)
    link = hierarchy.linkage(squareform(dist, checks=False), method="average")
    families = info["family"].tolist()
    k = len(set(families))
    clusters = hierarchy.fcluster(link, t=k, criterion="maxclust")
    ari = adjusted_rand_index(clusters, families)
    fig, ax = plt.subplots(figsize=(float(np.clip(0.22 * n + 3, 6, 20)), 5))
    dendro = hierarchy.dendrogram(link, labels=info["label"].tolist(), ax=ax, leaf_rotation=90,
                                  leaf_font_size=_tick_fontsize(n) + 1, color_threshold=0,
                                  above_threshold_color="#555555")
    fam_of = dict(zip(info["label"], families))
    for text in ax.get_xticklabels():
        family = fam_of.get(text.get_text())
        text.set_color(style.color_of_family(family) if family else "black")
    if k > 1:
        cut = link[-(k - 1), 2]
        ax.axhline(cut, color="grey", ls=":", lw=1)
    ax.set_ylabel("1 - IoU (average linkage)")
    _family_legend(ax, families, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{title}\nclustering by neuron overlap (all layers); labels coloured by family\n"
                 f"adjusted Rand index of {k} clusters against {k} families: {ari:.2f}", fontsize=10)
    _save(fig, path)
    leaves = [order[i] for i in dendro["leaves"]]
    return {"groups": order, "distance": dist, "ari": float(ari), "leaves": leaves,
            "clusters": dict(zip(order, clusters.tolist()))}


# --------------------------------------------------------------------------------------------
# 6. Activation probabilities per criterion
# --------------------------------------------------------------------------------------------


def plot_activation_probability(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
                                path: str | os.PathLike, bins: int = 50) -> pd.DataFrame:
    """Histogram of p = count / n_tokens over all layer x neuron and tables, per criterion.

    Returns, per criterion: median, mean, the share of neurons with p > 0.99 and with p < 0.01.
    """
    if not tables:
        raise NeurospecError("no activation tables to draw")
    edges = np.linspace(0, 1, bins + 1)
    hist = {c: np.zeros(bins) for c in COUNT_COLUMNS}
    values: dict[str, list[np.ndarray]] = {c: [] for c in COUNT_COLUMNS}
    for name, (df, meta) in tables.items():
        n = meta.get("n_tokens")
        if not n:
            raise NeurospecError(f"activation table {name!r} counted no tokens")
        for c in COUNT_COLUMNS:
            p = df[c].to_numpy(np.float64) / n
            hist[c] += np.histogram(np.clip(p, 0, 1), bins=edges)[0]
            values[c].append(p.astype(np.float32))
    rows = []
    for c in COUNT_COLUMNS:
        p = np.concatenate(values[c])
        rows.append({"criterion": c, "median": float(np.median(p)), "mean": float(p.mean()),
                     "share_above_0.99": float((p > 0.99).mean()), "share_below_0.01": float((p < 0.01).mean())})
    summary = pd.DataFrame(rows).set_index("criterion")
    fig, axes = plt.subplots(1, len(COUNT_COLUMNS), figsize=(4.2 * len(COUNT_COLUMNS), 3.8), sharey=True)
    explain = {"nonzero": "down_proj input != 0", "active": "down_proj input > 0",
               "gate_active": "act_fn(gate_proj x) > 0"}
    for ax, c in zip(axes, COUNT_COLUMNS):
        share = hist[c] / max(hist[c].sum(), 1)
        ax.bar(edges[:-1], share, width=np.diff(edges), align="edge", color="#4c72b0", edgecolor="none")
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel("activation probability p = count / tokens")
        s = summary.loc[c]
        ax.set_title(f"{c}\n({explain[c]})", fontsize=10)
        ax.text(0.03, 0.97, f"median {s['median']:.2f}\np > 0.99: {s['share_above_0.99']:.0%}\n"
                f"p < 0.01: {s['share_below_0.01']:.0%}", transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of layer x neuron x table")
    fig.suptitle(f"activation probability per counting criterion ({len(tables)} tables)", fontsize=11, y=1.04)
    _save(fig, path)
    return summary


# --------------------------------------------------------------------------------------------
# Rule entry point
# --------------------------------------------------------------------------------------------

FIGURES = ("iou_layers", "direction_iou", "specialized_counts", "family_iou", "clustering",
           "activation_probability")


def draw(figure: str, output: str | os.PathLike, scores: str | None = None, iou: str | None = None,
         activations: Sequence[str] | None = None, token_scope: str = "source") -> Any:
    """Read the inputs a figure needs and draw it into ``output`` (``token_scope``: collection's, which
    says which pairs count the non-English language, for the clustering)."""
    if figure not in FIGURES:
        raise NeurospecError(f"unknown figure {figure!r}; known: {', '.join(FIGURES)}")
    if figure == "activation_probability":
        if not activations:
            raise NeurospecError("the activation_probability figure needs activation tables")
        tables = {}
        for p in activations:
            df, meta = read_counts(p, COUNT_COLUMNS)  # the counts only: tables hold many more columns
            tables[str(meta.get("pair") or Path(p).stem)] = (df, meta)
        return plot_activation_probability(tables, output)
    if figure == "specialized_counts":
        if not scores:
            raise NeurospecError(f"figure {figure} needs a score table")
        table, meta = read_scores(scores)
        return plot_specialized_counts(table, meta["groups"], meta["layers"], output, method_title(meta))
    if not iou:
        raise NeurospecError(f"figure {figure} needs an IoU table")
    table, meta = read_iou(iou)
    for key in ("groups", "layers"):
        if key not in meta:
            raise NeurospecError(f"IoU table {iou} lacks the {key!r} metadata key")
    groups, layers, title = meta["groups"], meta["layers"], method_title(meta)
    if figure == "iou_layers":
        return plot_iou_layers(table, groups, layers, output, title)
    if figure == "direction_iou":
        if not all(is_pair(g) for g in groups):
            raise NeurospecError(f"figure direction_iou needs pair groups; {iou} holds languages")
        return plot_direction_iou(table, groups, layers, output, title)
    if figure == "family_iou":
        return plot_family_iou(table, groups, layers, output, title)
    return plot_clustering(table, groups, output, title, token_scope)


def draw_many(outputs: Mapping[str, str | os.PathLike], scores: str | None = None, iou: str | None = None,
              activations: Sequence[str] | None = None, token_scope: str = "source") -> dict[str, Any]:
    """Draw every figure named in ``outputs`` ({figure: path}) from the same inputs (one job per method)."""
    return {figure: draw(figure, path, scores=scores, iou=iou, activations=activations, token_scope=token_scope)
            for figure, path in outputs.items()}
