"""Figures of the ablation stage (PNG, matplotlib Agg), from the ablation tables.

Every ``plot_*`` function writes one PNG and returns the numbers it drew, so tests and notebooks
can check them; ``draw`` is the file-level entry point of the rule script.

- ``heatmap``: per method, delta NLL of each group's neurons (rows) on each evaluated language
  (columns): the selected neurons' delta minus the mean delta of the group's random controls,
  so a cell is what the selection does beyond ablating as many random neurons per layer.
- ``specificity``: all methods side by side: per group, the relative delta NLL (delta / base NLL:
  languages of different base NLL on one scale) on its own language, the mean on the other
  languages, and the random controls' on its own language; a group is *specific* when its own
  language's exceeds every other language's and every control's.
- ``budget``: per method, the dose-response of ``evaluate.ablation.budgets``: delta NLL on each
  group's own language of its top N neurons and of N matched random ones, against N.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Mapping, Sequence

import matplotlib

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from .. import languages as L  # noqa: E402
from ..errors import NeurospecError  # noqa: E402
from ..atomic import save_png, with_formats  # noqa: E402
from ..tables import read_metadata, read_table  # noqa: E402

logger = logging.getLogger("neurospec")

ARROW = "\u2192"
NOISE = "random-init demo model: these numbers are noise"
# the ablation table's columns (ablation.ABLATION_SCHEMA; not imported: the figures run without torch)
COLUMNS = ("group", "eval_lang", "condition", "seed", "n_neurons", "n_tokens", "nll", "base_nll", "delta_nll")


def read(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    df = read_table(path, required=COLUMNS)
    meta = read_metadata(path)
    for key in ("method", "eval_languages", "group_lang"):
        if key not in meta:
            raise NeurospecError(f"ablation table {path} lacks the {key!r} metadata key")
    return df, meta


def group_order(groups: Sequence[str]) -> list[str]:
    """Languages by family and tier (English first); pairs en->xx first, then xx->en."""
    groups = [str(g) for g in groups]
    if all("-" in g for g in groups):
        return L.sort_pairs(groups)
    return sorted(groups, key=L.sort_key)


def _save(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    save_png(fig, path, dpi=dpi)


# --------------------------------------------------------------------------------------------
# Heatmap per method
# --------------------------------------------------------------------------------------------


def own_selection(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of the methods' own selections and their controls (``budget`` null), not the budgets'."""
    return df[df["budget"].isna()] if "budget" in df.columns else df


def delta_matrix(df: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """groups x evaluated languages: selected delta NLL minus the mean of the random controls' (if any;
    with ``controls_scope: own`` the controls cover the own-language cells only, so the selected delta
    is shown as it is)."""
    df = own_selection(df)
    selected = df[df["condition"] == "selected"].pivot(index="group", columns="eval_lang", values="delta_nll")
    random = df[df["condition"] == "random"]
    if len(random) and meta.get("controls_scope", "all") == "all":
        selected = selected - random.groupby(["group", "eval_lang"])["delta_nll"].mean().unstack()
    langs = sorted(meta["eval_languages"], key=L.sort_key)
    return selected.reindex(index=group_order(selected.index), columns=langs)


def plot_heatmap(df: pd.DataFrame, meta: Mapping[str, Any], path: str | os.PathLike) -> pd.DataFrame:
    """The heatmap of ``delta_matrix``, own-language cells outlined; returns the matrix."""
    matrix = delta_matrix(df, meta)
    groups, langs = list(matrix.index), list(matrix.columns)
    values = matrix.to_numpy(float)
    limit = max(float(np.nanmax(np.abs(values))) if values.size else 0.0, 1e-3)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * len(langs), 1.4 + 0.32 * len(groups)))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(langs)), langs, fontsize=8)
    labels = [g.replace("-", ARROW) for g in groups]
    ax.set_yticks(range(len(groups)), labels, fontsize=8)
    ax.set_xlabel("evaluated language (held-out sentences)")
    ax.set_ylabel("ablated neurons of group")
    for i, group in enumerate(groups):
        own = meta["group_lang"].get(group)
        if own in langs:
            ax.add_patch(Rectangle((langs.index(own) - 0.5, i - 0.5), 1, 1, fill=False, lw=1.6, color="black"))
    if values.size <= 600:
        for i in range(len(groups)):
            for j in range(len(langs)):
                if np.isfinite(values[i, j]):
                    ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if abs(values[i, j]) > 0.6 * limit else "black")
    controls = f"minus the mean of {meta.get('random_sets', 0)} random sets" if meta.get("random_sets") else \
        "(no random controls)"
    if meta.get("random_sets") and meta.get("controls_scope", "all") != "all":
        controls = "(controls on the own language only: see the specificity figure)"
    title = f"{meta['method']}: delta NLL (nats/token), mode {meta.get('mode', '?')}, selected {controls}"
    if meta.get("demo_model"):
        title += f"\n{NOISE}"
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8, label="delta NLL (nats/token)")
    _save(fig, path)
    return matrix


# --------------------------------------------------------------------------------------------
# Specificity of the methods
# --------------------------------------------------------------------------------------------


def relative(df: pd.DataFrame) -> pd.DataFrame:
    """The table with ``rel_delta_nll`` (delta_nll / base_nll), computed where an older table lacks it."""
    return df if "rel_delta_nll" in df.columns else df.assign(rel_delta_nll=df["delta_nll"] / df["base_nll"])


def specificity(df: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """Per group whose own language was evaluated, on the relative scale ``rel_delta_nll`` (delta
    NLL / base NLL, so languages of different base NLL compare): its value on that language
    (``own``), the mean and largest on the other languages (``others``, ``others_max``), the random
    controls' mean and largest on its own language (``random``, ``random_max``), ``specific``:
    own > others_max and own > random_max, and ``p_controls`` on its own language (null if absent)."""
    df = relative(own_selection(df))
    rows = []
    for group, own in meta["group_lang"].items():
        d = df[df["group"] == group]
        sel = d[d["condition"] == "selected"].set_index("eval_lang")["rel_delta_nll"]
        if own not in sel.index:
            continue
        others = sel.drop(own)
        rand = d[(d["condition"] == "random") & (d["eval_lang"] == own)]["rel_delta_nll"]
        row = {
            "method": meta["method"], "group": group, "lang": own,
            "n_neurons": int(d["n_neurons"][d["condition"] == "selected"].iloc[0]),
            "own": float(sel[own]),
            "others": float(others.mean()) if len(others) else np.nan,
            "others_max": float(others.max()) if len(others) else -np.inf,
            "random": float(rand.mean()) if len(rand) else np.nan,
            "random_max": float(rand.max()) if len(rand) else -np.inf,
        }
        row["specific"] = bool(row["own"] > row["others_max"] and row["own"] > row["random_max"])
        p = d[(d["condition"] == "selected") & (d["eval_lang"] == own)].get("p_controls")
        row["p_controls"] = float(p.iloc[0]) if p is not None and len(p) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", "group", "lang", "n_neurons", "own", "others", "others_max",
                                       "random", "random_max", "specific", "p_controls"])


def plot_specificity(tables: Sequence[tuple[pd.DataFrame, Mapping[str, Any]]],
                     path: str | os.PathLike) -> pd.DataFrame:
    """One panel per method: each group's own-language delta, the other languages' mean delta and
    the random controls' mean delta on its own language, joined by a line; returns ``specificity``."""
    if not tables:
        raise NeurospecError("no ablation tables to compare")
    data = pd.concat([specificity(df, meta) for df, meta in tables], ignore_index=True)
    methods = [meta["method"] for _, meta in tables]
    fig, axes = plt.subplots(1, len(methods), figsize=(2.6 * len(methods) + 0.6, 3.6), sharey=True, squeeze=False)
    kinds = [("own", "own\nselected", "#d62728"), ("others", "others\nselected", "#7f7f7f"),
             ("random", "own\nrandom", "#1f77b4")]
    for ax, method in zip(axes[0], methods):
        d = data[data["method"] == method]
        for _, row in d.iterrows():
            ax.plot(range(3), [row[k] for k, _, _ in kinds], color="#bbbbbb", lw=0.7, zorder=1)
        for x, (key, _, color) in enumerate(kinds):
            ax.scatter(np.full(len(d), x), d[key], s=14, color=color, zorder=2)
            if len(d):
                ax.hlines(np.nanmedian(d[key]), x - 0.25, x + 0.25, color="black", lw=1.5, zorder=3)
        ax.axhline(0.0, color="black", lw=0.5, ls=":")
        ax.set_xticks(range(3), [label for _, label, _ in kinds], fontsize=7)
        ax.set_title(f"{method}: {int(d['specific'].sum())}/{len(d)} specific", fontsize=9)
    axes[0][0].set_ylabel("delta NLL / base NLL")
    title = ("Specificity: relative delta NLL (delta / base NLL) on the group's own language and on the others "
             "(mean) with its neurons,\nand on its own language with matched random neurons (mean); bars: medians "
             "over groups")
    if any(meta.get("demo_model") for _, meta in tables):
        title += f"\n{NOISE}"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return data


# --------------------------------------------------------------------------------------------
# Dose-response: matched budgets
# --------------------------------------------------------------------------------------------


def budget_curve(df: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """Per group and budget N: the delta NLL on the group's own language of its top N neurons
    (``selected``, with ``low``/``high`` of its CI) and of the N-neuron matched controls (``random``:
    mean, ``random_max``); empty without budget rows."""
    columns = ["method", "group", "lang", "budget", "selected", "low", "high", "random", "random_max"]
    if "budget" not in df.columns:
        return pd.DataFrame(columns=columns)
    rows = []
    d = df[df["budget"].notna()]
    for (group, budget), g in d.groupby(["group", "budget"], sort=True):
        own = meta["group_lang"].get(group)
        g = g[g["eval_lang"] == own]
        sel, rand = g[g["condition"] == "selected"], g[g["condition"] == "random"]["delta_nll"]
        if not len(sel):
            continue
        rows.append({"method": meta["method"], "group": group, "lang": own, "budget": int(budget),
                     "selected": float(sel["delta_nll"].iloc[0]),
                     "low": float(sel["delta_nll_low"].iloc[0]) if "delta_nll_low" in sel else np.nan,
                     "high": float(sel["delta_nll_high"].iloc[0]) if "delta_nll_high" in sel else np.nan,
                     "random": float(rand.mean()) if len(rand) else np.nan,
                     "random_max": float(rand.max()) if len(rand) else np.nan})
    return pd.DataFrame(rows, columns=columns)


def plot_budget(df: pd.DataFrame, meta: Mapping[str, Any], path: str | os.PathLike) -> pd.DataFrame:
    """Delta NLL on the own language against the budget N (log axis): one thin line per group for its
    top N neurons (red) and for its matched controls' mean (blue), medians over groups bold;
    returns ``budget_curve``."""
    data = budget_curve(df, meta)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for key, color, label in (("selected", "#d62728", "top N by score"), ("random", "#1f77b4", "matched random N")):
        for _, g in data.groupby("group"):
            ax.plot(g["budget"], g[key], color=color, lw=0.6, alpha=0.35)
        if len(data):
            median = data.groupby("budget")[key].median()
            ax.plot(median.index, median.to_numpy(), color=color, lw=2.2, marker="o", label=f"{label} (median)")
    if len(data):
        ax.set_xscale("log")
        budgets = sorted(int(n) for n in data["budget"].unique())
        ax.set_xticks(budgets, [str(n) for n in budgets])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no budget within any group's selection", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0.0, color="black", lw=0.5, ls=":")
    ax.set_xlabel("neurons ablated (N)")
    ax.set_ylabel("delta NLL on the group's own language (nats/token)")
    title = f"{meta['method']}: dose-response, top N neurons vs matched random N"
    if meta.get("demo_model"):
        title += f"\n{NOISE}"
    ax.set_title(title, fontsize=9)
    _save(fig, path)
    return data


FIGURES = ("heatmap", "specificity", "budget")


@with_formats
def draw(figure: str, output: str | os.PathLike, paths: Sequence[str]) -> Any:
    """Read the ablation tables a figure needs and draw it into ``output``."""
    if figure not in FIGURES:
        raise NeurospecError(f"unknown ablation figure {figure!r}; known: {', '.join(FIGURES)}")
    tables = [read(p) for p in paths]
    if figure == "heatmap":
        if len(tables) != 1:
            raise NeurospecError(f"the ablation heatmap draws one method's table, got {len(tables)}")
        return plot_heatmap(*tables[0], output)
    if figure == "budget":
        if len(tables) != 1:
            raise NeurospecError(f"the ablation budget figure draws one method's table, got {len(tables)}")
        return plot_budget(*tables[0], output)
    data = plot_specificity(tables, output)
    for method, d in data.groupby("method", sort=False):
        logger.info("%s: %d of %d groups specific (own-language delta NLL above every other language's and "
                    "every random control's)", method, int(d["specific"].sum()), len(d))
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m neurospec.plots.ablation_figures TABLE...``: the specificity of each ablation table."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m neurospec.plots.ablation_figures",
                                     description="Print per group the own-language delta NLL, the other "
                                                 "languages' and the random controls', and per method how "
                                                 "many groups are specific.")
    parser.add_argument("tables", nargs="+", help="ablation tables (results/.../ablation/{method}.parquet)")
    args = parser.parse_args(argv)
    try:  # a missing, truncated or foreign table: one line naming it
        tables = [read(p) for p in args.tables]
    except NeurospecError as exc:
        sys.exit(f"neurospec: error: {exc}")
    data = pd.concat([specificity(df, meta).merge(own_delta(df, meta), on="group", how="left")
                      for df, meta in tables], ignore_index=True)
    with pd.option_context("display.width", 250, "display.max_rows", 1000, "display.max_columns", 50):
        print(data.round(3).to_string(index=False))
        for method, d in data.groupby("method", sort=False):
            print(f"{method}: {int(d['specific'].sum())} of {len(d)} groups specific "
                  f"({', '.join(d.loc[d['specific'], 'lang'])})")
        curves = [budget_curve(df, meta) for df, meta in tables]
        curves = [c for c in curves if len(c)]
        if curves:
            print("dose-response: own-language delta NLL of the top N neurons and of N matched random ones, "
                  "medians over groups (n: groups with N scored neurons)")
            curve = pd.concat(curves, ignore_index=True)
            print(curve.groupby(["method", "budget"], sort=False).agg(
                n=("group", "size"), selected=("selected", "median"), random=("random", "median"),
                random_max=("random_max", "median")).round(3).to_string())
    return 0


def own_delta(df: pd.DataFrame, meta: Mapping[str, Any]) -> pd.DataFrame:
    """Per group: the delta NLL (nats/token) of its own selection on its own language, with the
    sentence-bootstrap CI (``delta``, ``delta_low``, ``delta_high``)."""
    df = own_selection(df)
    rows = []
    for group, own in meta["group_lang"].items():
        r = df[(df["group"] == group) & (df["condition"] == "selected") & (df["eval_lang"] == own)]
        if len(r):
            r = r.iloc[0]
            rows.append({"group": group, "delta": float(r["delta_nll"]),
                         "delta_low": float(r.get("delta_nll_low", np.nan)),
                         "delta_high": float(r.get("delta_nll_high", np.nan))})
    return pd.DataFrame(rows, columns=["group", "delta", "delta_low", "delta_high"])


if __name__ == "__main__":
    raise SystemExit(main())
