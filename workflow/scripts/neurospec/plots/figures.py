"""Figures (PNG, matplotlib Agg) from score and IoU tables and from the activation tables.

Every ``plot_*`` function writes one PNG and returns the numbers it drew (a matrix, a table), so
tests and notebooks can check them.  Groups are ordered by family, then resource tier
(``languages.sort_key``); pair groups put the en->xx block, then xx->en, then pairs without English
(``languages.sort_pairs``).  Tick labels are coloured by family; lines mark family blocks.
``draw`` is the file-level entry point of the rule script.

This module draws the specialized counts and the activation probabilities and dispatches every
figure (``draw``, ``draw_many``); the groups' order and the shared axes are in ``group_axes``, the IoU
figures in ``iou_figures``, the clustering in ``clustering_figure``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..atomic import with_formats
from ..errors import NeurospecError
from ..score.scoring import read_iou, read_scores
from ..tables import COUNT_COLUMNS, read_counts
from .group_axes import (boundaries, color_ticklabels, family_legend, group_table, is_pair, method_title, save_figure,
                         tick_fontsize)
from .iou_figures import plot_direction_iou, plot_family_iou, plot_iou_layers
from .clustering_figure import plot_clustering


logger = logging.getLogger("neurospec")

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
    ax.set_yticklabels(info["label"], fontsize=tick_fontsize(n))
    color_ticklabels(ax.get_yticklabels(), info["family"])
    ax.set_xticks(range(n_layers))
    ax.set_xticklabels(table.columns, fontsize=tick_fontsize(n_layers))
    ax.set_xlabel("layer")
    for i in boundaries(info["block"].tolist()):
        ax.axhline(i - 0.5, color="white", lw=0.8)
    for i in boundaries(info["direction"].tolist()):
        ax.axhline(i - 0.5, color="cyan", lw=1.6)
    if n * n_layers <= 600:
        top = table.to_numpy().max() if n and n_layers else 0
        for (i, j), v in np.ndenumerate(table.to_numpy()):
            ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                    color="black" if v > 0.6 * top else "white")
    fig.colorbar(image, ax=ax, label="selected neurons", shrink=0.8)
    family_legend(ax, info["family"], loc="upper left", bbox_to_anchor=(1.25, 1.0))
    total = int(table.to_numpy().sum())
    ax.set_title(f"{title}\nselected neurons per group and layer (total {total})", fontsize=10)
    save_figure(fig, path)
    return table

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
    save_figure(fig, path)
    return summary


# --------------------------------------------------------------------------------------------
# Rule entry point
# --------------------------------------------------------------------------------------------

FIGURES = ("iou_layers", "direction_iou", "specialized_counts", "family_iou", "clustering",
           "activation_probability")


@with_formats
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


@with_formats
def draw_many(outputs: Mapping[str, str | os.PathLike], scores: str | None = None, iou: str | None = None,
              activations: Sequence[str] | None = None, token_scope: str = "source") -> dict[str, Any]:
    """Draw every figure named in ``outputs`` ({figure: path}) from the same inputs (one job per method)."""
    return {figure: draw(figure, path, scores=scores, iou=iou, activations=activations, token_scope=token_scope)
            for figure, path in outputs.items()}
