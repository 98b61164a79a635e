"""Steering figures: success by group x alpha against the controls and the residual baseline (per
method), success against quality (per method), and the methods compared at their best alpha.

CLaS-Bench's quality-aware score: the harmonic mean of success and chrF++/100 (``harmonic``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import neurospec.plots  # noqa: F401 (the one place that chooses matplotlib's backend: Agg)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from neurospec import languages as L  # noqa: E402
from neurospec.atomic import save_png, with_formats  # noqa: E402
from neurospec.errors import NeurospecError  # noqa: E402
from neurospec.tables import read_metadata, read_table  # noqa: E402

from .summary import best_alpha  # noqa: E402

FIGURES = ("steering_success", "steering_quality", "steering_methods")
COLUMNS = ("group", "mode", "alpha", "prompt_kind", "condition", "seed", "lang", "n_outputs", "success",
           "success_low", "success_high", "prompt_lang_share", "chrf", "nll")
NOISE = "random demo model: these numbers are noise"


def read(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    df = read_table(path, required=COLUMNS)
    return df, read_metadata(path)


def harmonic(success: pd.Series | np.ndarray, chrf: pd.Series | np.ndarray) -> np.ndarray:
    """CLaS-Bench's harmonic mean of the success rate and chrF++ / 100 (0 where either is 0)."""
    s, q = np.asarray(success, dtype=float), np.asarray(chrf, dtype=float) / 100.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((s + q) > 0, 2 * s * q / (s + q), 0.0)


def _title(meta: dict, text: str) -> str:
    return f"{text}\n({NOISE})" if meta.get("demo_model") else text


def plot_success(df: pd.DataFrame, meta: dict, path: str | os.PathLike) -> pd.DataFrame:
    kinds = list(dict.fromkeys(df["prompt_kind"]))
    modes = [m for m in ("set", "add") if m in set(df.loc[df["condition"] == "selected", "mode"])] or ["add"]
    groups = sorted(df["group"].unique(), key=lambda g: L.sort_key(g) if "-" not in g else (9, g))
    alphas = sorted(df.loc[df["condition"] != "none", "alpha"].unique())
    fig, axes = plt.subplots(len(kinds), len(modes), figsize=(max(5, 0.6 * len(groups) * len(modes) + 3),
                                                              3.2 * len(kinds)), squeeze=False)
    x = np.arange(len(groups))
    colors = plt.cm.viridis(np.linspace(0.1, 0.8, max(len(alphas), 1)))
    for r, kind in enumerate(kinds):
        for c, mode in enumerate(modes):
            ax = axes[r][c]
            d = df[df["prompt_kind"] == kind]
            for k, alpha in enumerate(alphas):
                off = (k - (len(alphas) - 1) / 2) * 0.18
                s = d[(d["condition"] == "selected") & (d["mode"] == mode) & (d["alpha"] == alpha)].set_index("group")
                s = s.reindex(groups)
                ax.errorbar(x + off, s["success"], yerr=[s["success"] - s["success_low"], s["success_high"] - s["success"]],
                            fmt="o", color=colors[k], label=f"selected, alpha {alpha:g}", capsize=2)
                rnd = d[(d["condition"] == "random") & (d["mode"] == mode) & (d["alpha"] == alpha)]
                rnd = rnd.groupby("group")["success"].mean().reindex(groups)
                ax.plot(x + off, rnd, "x", color=colors[k], alpha=0.6, label=f"random (mean), alpha {alpha:g}")
                res = d[(d["condition"] == "residual") & (d["alpha"] == alpha)].set_index("group").reindex(groups)
                ax.plot(x + off, res["success"], "^", color=colors[k], mfc="none", label=f"residual, alpha {alpha:g}")
            none = d[d["condition"] == "none"].set_index("group").reindex(groups)
            ax.plot(x, none["success"], "_", color="black", ms=14, label="no intervention")
            ax.set_xticks(x, groups, rotation=90 if len(groups) > 12 else 0)
            ax.set_ylim(-0.03, 1.03)
            ax.set_ylabel("share of outputs in the language")
            ax.set_title(f"{kind}, mode {mode}", fontsize=9)
            if r == 0 and c == len(modes) - 1:
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(_title(meta, f"Steering, {meta.get('method', '?')}: success by group and alpha "
                              f"(n = outputs per cell, bars: 95% bootstrap CI over prompts)"), fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    plt.close(fig)
    return df


def plot_quality(df: pd.DataFrame, meta: dict, path: str | os.PathLike) -> pd.DataFrame:
    d = df.copy()
    d["harmonic"] = harmonic(d["success"], d["chrf"])
    kinds = list(dict.fromkeys(d["prompt_kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds) + 1.5, 4), squeeze=False)
    markers = {"selected": "o", "random": "x", "residual": "^", "none": "s"}
    for ax, kind in zip(axes[0], kinds):
        k = d[d["prompt_kind"] == kind]
        for cond, m in markers.items():
            e = k[k["condition"] == cond]
            if len(e):
                sc = ax.scatter(e["success"], e["chrf"], marker=m, c=e["nll"], cmap="magma_r", s=25,
                                label=cond, vmin=d["nll"].min(), vmax=d["nll"].max())
        # isolines of the harmonic mean
        s = np.linspace(0.01, 1, 100)
        for h in (0.2, 0.4, 0.6):
            q = h * s / np.maximum(2 * s - h, 1e-9)
            ok = (2 * s - h > 0) & (q <= 1)
            ax.plot(s[ok], 100 * q[ok], ":", color="grey", lw=0.7)
        best = k.loc[k["harmonic"].idxmax()] if k["harmonic"].notna().any() else None
        title = kind if best is None else (f"{kind}: best harmonic mean {best['harmonic']:.2f} "
                                           f"({best['group']}, {best['condition']}, alpha {best['alpha']:g})")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("success (share of outputs in the language)")
        ax.set_ylabel("chrF++ against the language's reference")
        ax.set_xlim(-0.03, 1.03)
        ax.legend(fontsize=7)
    fig.subplots_adjust(top=0.8, wspace=0.25)
    if len(d):
        fig.colorbar(sc, ax=axes[0].tolist(), label="NLL under the unsteered model (nats/token)")
    fig.suptitle(_title(meta, f"Steering, {meta.get('method', '?')}: success against quality "
                              "(dotted: harmonic mean 0.2, 0.4, 0.6)"), fontsize=9)
    save_png(fig, path, dpi=110)
    plt.close(fig)
    return d


def plot_methods(tables: Sequence[tuple[pd.DataFrame, dict]], path: str | os.PathLike) -> pd.DataFrame:
    rows = []
    for df, meta in tables:
        b = best_alpha(df)
        b.insert(0, "method", meta.get("method", "?"))
        rows.append(b)
    data = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    kinds = list(dict.fromkeys(data["prompt_kind"])) if len(data) else []
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.5 * max(len(kinds), 1) + 1.5, 3.6), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        d = data[data["prompt_kind"] == kind].reset_index(drop=True)
        x = np.arange(len(d))
        ax.bar(x - 0.3, d["selected"], 0.2, yerr=[d["selected"] - d["selected_low"], d["selected_high"] - d["selected"]],
               label="selected", color="tab:blue", capsize=2)
        ax.bar(x - 0.1, d["random"], 0.2, yerr=[d["random"] - d["random_low"], d["random_high"] - d["random"]],
               label="random (matched)", color="tab:grey", capsize=2)
        ax.bar(x + 0.1, d["residual_best"], 0.2,
               yerr=[d["residual_best"] - d["residual_best_low"], d["residual_best_high"] - d["residual_best"]],
               label="residual (its best alpha)", color="tab:orange", capsize=2)
        ax.bar(x + 0.3, d["none"], 0.2, label="no intervention", color="black")
        ax.set_xticks(x, [f"{m}\n{mo} a={a:g}" for m, mo, a in zip(d["method"], d["mode"], d["alpha"])], fontsize=7)
        ax.set_ylim(0, 1.03)
        ax.set_ylabel("mean success over groups")
        ax.set_title(kind, fontsize=9)
    if kinds:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    demo = any(m.get("demo_model") for _, m in tables)
    fig.suptitle(_title({"demo_model": demo}, "Steering: methods at their best alpha (mean over groups; "
                                               "bars: 95% bootstrap interval over groups)"), fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi=110)
    plt.close(fig)
    return data


@with_formats
def draw(figure: str, output: str | os.PathLike, paths: Sequence[str]) -> Any:
    """Read the steering tables a figure needs and draw it into ``output``."""
    if figure not in FIGURES:
        raise NeurospecError(f"unknown steering figure {figure!r}; known: {', '.join(FIGURES)}")
    tables = [read(p) for p in paths]
    if figure == "steering_methods":
        return plot_methods(tables, output)
    if len(tables) != 1:
        raise NeurospecError(f"the {figure} figure draws one method's table, got {len(tables)}")
    return (plot_success if figure == "steering_success" else plot_quality)(*tables[0], output)
