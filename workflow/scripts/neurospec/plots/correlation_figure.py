"""The correlation figure: per method and measure, translation quality (baseline chrF++) against the
specialization measure, one labelled point per direction (colour: the language's family, marker: its
script, filled en->xx, hollow xx->en), with the rho of the panel's measure (``neurospec.evaluate.correlation``)."""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import languages as L
from ..atomic import save_png, with_formats
from ..evaluate.correlation import CORRELATION_COLUMNS, MEASURE_COLUMNS, MEASURES
from . import style
from ..tables import read_table


MEASURE_LABELS = {"n_selected": "selected neurons", "iou_family": "mean IoU within family",
                  "iou_rest": "mean IoU with other families", "tier_size": "EC40 training pairs (tier)"}


ARROW = "\u2192"


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


@with_formats
def draw_correlation(measures: str | os.PathLike, correlation: str | os.PathLike, output: str | os.PathLike,
                     demo: bool = False) -> None:
    """Rule entry point of the correlation figure."""
    plot_correlation(read_table(measures, required=MEASURE_COLUMNS),
                     read_table(correlation, required=CORRELATION_COLUMNS), output, demo=demo)
