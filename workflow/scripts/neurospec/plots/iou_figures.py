"""Figures of the IoU tables: IoU per layer between groups (``plot_iou_layers``), between translation
directions (``plot_direction_iou``) and within and across families (``plot_family_iou``); each writes one
PNG and returns the numbers it drew."""

from __future__ import annotations

import math
import os
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import style
from ..score.scoring import iou_matrix
from .group_axes import (ARROW, boundaries, color_ticklabels, empty_figure, family_legend, group_table, save_figure,
                         tick_fontsize)


def plot_iou_layers(iou_table: pd.DataFrame, groups: Sequence[str], layers: Sequence[int],
                    path: str | os.PathLike, title: str = "") -> dict[int, np.ndarray]:
    """A grid of per-layer IoU heatmaps of ``groups`` (figure order); returns {layer: matrix}."""
    info = group_table(groups)
    order = info["group"].tolist()
    n, n_layers = len(order), len(layers)
    if n == 0 or n_layers == 0:
        empty_figure(path, title, "no groups or layers to compare")
        return {}
    ncols = int(math.ceil(math.sqrt(n_layers)))
    nrows = int(math.ceil(n_layers / ncols))
    # a row per group at a legible font (>= 6 pt): the panel grows with the groups (neurospec.plots.style)
    panel = style.heatmap_inches(n) + 0.6
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel * ncols + 1.5, panel * nrows + 0.8), squeeze=False)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#cccccc")
    fs = style.tick_fontsize(n)
    fam_lines = boundaries(info["block"].tolist())
    dir_lines = boundaries(info["direction"].tolist())
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
        color_ticklabels(ax.get_xticklabels(), info["family"])
        color_ticklabels(ax.get_yticklabels(), info["family"])
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
    family_legend(fig, info["family"], loc="upper left", bbox_to_anchor=(0.99, 0.97))
    fig.suptitle(f"{title}\nIoU of the selected neuron sets per layer, by family then tier"
                 + (" (red: en\u2192xx | xx\u2192en)" if dir_lines else ""), fontsize=12)
    save_figure(fig, path, dpi=style.dpi_for(panel * ncols + 1.5, panel * nrows + 0.8, 150 if n > 40 else 110))
    return out


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
    ax.tick_params(axis="x", labelsize=tick_fontsize(len(table)) + 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}\nneuron overlap between translation directions, per layer", fontsize=10)
    save_figure(fig, path)
    return table


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
    save_figure(fig, path)
    return table
