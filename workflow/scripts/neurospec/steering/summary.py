"""A method's steering in one row per prompt kind x mode x alpha, with intervals over its groups.

A method's success rate is a mean over its groups (languages): the groups are the unit that varies
between languages, so the interval of that mean resamples groups (percentile bootstrap, ``n_boot``
resamples of the n groups with a rate), not outputs; each group's own 95% interval over its prompts
stays in the steering table (``success_low``, ``success_high``). The matched random sets and the
residual baseline are averaged over the same groups with the same resamples, so
``selected_minus_random`` is a paired difference per group (a group's random rate: the mean over its
seeds). Groups without a rate (heliport does not cover their language) are left out and counted in
``n_uncovered``.

``best_alpha`` picks per prompt kind the (mode, alpha) whose selected sets have the highest mean
success; it is chosen on the same outputs it reports, so it flatters the method by the choice (the
other alphas are in ``by_alpha``). Beside it, the residual baseline at its own best strength
(``residual_best*``, from ``residual_by_alpha``: ``evaluate.steering.residual_alphas`` may sweep
strengths the neurons do not use), so each is compared at its best.

``python -m neurospec.steering.summary TABLE...`` prints both for each steering table and, per
language, the selected and random rates at every (mode, alpha).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
import pandas as pd

from neurospec.errors import NeurospecError
from neurospec.tables import read_metadata, read_table

N_BOOT = 1000
LEVEL = 0.95
REQUIRED = ("group", "mode", "alpha", "prompt_kind", "condition", "success", "success_low", "success_high")
HALF = 0.5  # "steered": at least half of a group's outputs in its language
COLUMNS = ("prompt_kind", "mode", "alpha", "n_groups", "n_uncovered",
           "selected", "selected_low", "selected_high", "random", "random_low", "random_high",
           "selected_minus_random", "selected_minus_random_low", "selected_minus_random_high",
           "residual", "residual_low", "residual_high", "none",
           "groups_at_half", "random_groups_at_half", "residual_groups_at_half",
           "chrf", "chrf_none", "nll", "nll_none")


def group_means(means: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[float, float, float]:
    """Mean of ``means`` (one per group, NaN dropped) and its percentile bootstrap interval over groups."""
    values = np.asarray(means, dtype=np.float64)
    lows, highs = _interval(values[None, :], n_boot, seed, level)
    return _mean(values), lows[0], highs[0]


def _interval(values: np.ndarray, n_boot: int, seed: int, level: float) -> tuple[list[float], list[float]]:
    """values [k, n groups]: per row, the percentile interval of the mean over resampled groups; the
    same resamples (``seed``) for every row, so rows of one table are paired. Columns holding a NaN
    in any row are dropped first."""
    keep = np.isfinite(values).all(axis=0)
    v = values[:, keep]
    n = v.shape[1]
    if n == 0 or n_boot < 1:
        return [float("nan")] * len(values), [float("nan")] * len(values)
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))  # [n_boot, n]
    means = v[:, idx].mean(axis=2)  # [k, n_boot]
    tail = (1.0 - level) / 2.0
    return (np.quantile(means, tail, axis=1).tolist(), np.quantile(means, 1.0 - tail, axis=1).tolist())


def by_alpha(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """One row per prompt kind x mode x alpha of the selected condition (``COLUMNS``); a table without
    ``chrf``/``nll`` leaves their columns NaN."""
    df = df.assign(**{c: np.nan for c in ("chrf", "nll") if c not in df.columns})  # quality: optional
    rows = []
    none_all = df[df["condition"] == "none"]
    for (kind, mode, alpha), sel in df[df["condition"] == "selected"].groupby(
            ["prompt_kind", "mode", "alpha"], sort=True):
        d = df[(df["prompt_kind"] == kind) & (df["alpha"] == alpha)]
        sel = sel.groupby("group").agg(success=("success", "mean"), chrf=("chrf", "mean"), nll=("nll", "mean"))
        covered = sel.index[sel["success"].notna()]
        groups = list(covered)
        rnd = d[(d["condition"] == "random") & (d["mode"] == mode)].groupby("group")["success"].mean()
        res = d[d["condition"] == "residual"].groupby("group")["success"].mean()
        none = none_all[none_all["prompt_kind"] == kind].groupby("group").agg(
            success=("success", "mean"), chrf=("chrf", "mean"), nll=("nll", "mean"))
        s = sel.loc[groups, "success"].to_numpy(float)
        r = rnd.reindex(groups).to_numpy(float)
        q = res.reindex(groups).to_numpy(float)
        _, s_lo, s_hi = group_means(s, n_boot, seed, level)
        (r_lo, d_lo), (r_hi, d_hi) = _interval(np.vstack([r, s - r]), n_boot, seed, level)  # paired
        _, q_lo, q_hi = group_means(q, n_boot, seed, level)
        n_none = none.reindex(groups)
        rows.append({
            "prompt_kind": kind, "mode": mode, "alpha": float(alpha), "n_groups": len(groups),
            "n_uncovered": int(len(sel) - len(groups)),
            "selected": _mean(s), "selected_low": s_lo, "selected_high": s_hi,
            "random": _mean(r), "random_low": r_lo, "random_high": r_hi,
            "selected_minus_random": _mean(s - r), "selected_minus_random_low": d_lo,
            "selected_minus_random_high": d_hi,
            "residual": _mean(q), "residual_low": q_lo, "residual_high": q_hi,
            "none": _mean(n_none["success"].to_numpy(float)),
            "groups_at_half": int((s >= HALF).sum()), "random_groups_at_half": int((r >= HALF).sum()),
            "residual_groups_at_half": int((q >= HALF).sum()),
            "chrf": _mean(sel.loc[groups, "chrf"].to_numpy(float)), "chrf_none": _mean(n_none["chrf"].to_numpy(float)),
            "nll": _median(sel.loc[groups, "nll"].to_numpy(float)), "nll_none": _median(n_none["nll"].to_numpy(float)),
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


RESIDUAL_COLUMNS = ("prompt_kind", "alpha", "n_groups", "residual", "residual_low", "residual_high",
                    "residual_groups_at_half", "residual_chrf", "residual_nll")


def residual_by_alpha(df: pd.DataFrame, *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """The residual baseline per prompt kind x alpha: mean success over the groups with a rate, its
    bootstrap interval over groups, groups at >= 0.5, mean chrF++ and median NLL."""
    df = df.assign(**{c: np.nan for c in ("chrf", "nll") if c not in df.columns})
    rows = []
    for (kind, alpha), d in df[df["condition"] == "residual"].groupby(["prompt_kind", "alpha"], sort=True):
        g = d.groupby("group").agg(success=("success", "mean"), chrf=("chrf", "mean"), nll=("nll", "mean"))
        g = g[g["success"].notna()]
        mean, low, high = group_means(g["success"].to_numpy(float), n_boot, seed, level)
        rows.append({"prompt_kind": kind, "alpha": float(alpha), "n_groups": len(g), "residual": mean,
                     "residual_low": low, "residual_high": high,
                     "residual_groups_at_half": int((g["success"] >= HALF).sum()),
                     "residual_chrf": _mean(g["chrf"].to_numpy(float)), "residual_nll": _median(g["nll"].to_numpy(float))})
    return pd.DataFrame(rows, columns=list(RESIDUAL_COLUMNS))


def best_alpha(df: pd.DataFrame, **kwargs) -> pd.DataFrame:
    """Per prompt kind, the ``by_alpha`` row whose selected sets have the highest mean success (the
    first in (mode, alpha) order on a tie), with the residual baseline at its own best alpha
    (``residual_best``, ``_low``, ``_high``, ``residual_best_alpha``; NaN without residual rows)."""
    table = by_alpha(df, **kwargs)
    table = table[table["selected"].notna()]
    if table.empty:
        return table.reset_index(drop=True)
    best = table.loc[table.groupby("prompt_kind", sort=False)["selected"].idxmax()].reset_index(drop=True)
    res = residual_by_alpha(df, **kwargs)
    res = res[res["residual"].notna()]
    res = res.loc[res.groupby("prompt_kind", sort=False)["residual"].idxmax()] if len(res) else res
    res = res.rename(columns={"alpha": "residual_best_alpha", "residual": "residual_best",
                              "residual_low": "residual_best_low", "residual_high": "residual_best_high"})
    keep = ["prompt_kind", "residual_best_alpha", "residual_best", "residual_best_low", "residual_best_high"]
    return best.merge(res[keep], on="prompt_kind", how="left")


def per_language(df: pd.DataFrame) -> pd.DataFrame:
    """Per group x prompt kind: the selected rate [its CI over prompts] / the random sets' mean rate
    (their max), one column per (mode, alpha); the residual baseline's rate per alpha."""
    sel = df[df["condition"] == "selected"]
    rnd = df[df["condition"] == "random"].groupby(["group", "prompt_kind", "mode", "alpha"])["success"]
    rnd_mean, rnd_max = rnd.mean(), rnd.max()
    cells = {}
    for _, r in sel.iterrows():
        key = (r["group"], r["prompt_kind"])
        at = (r["group"], r["prompt_kind"], r["mode"], r["alpha"])
        cells.setdefault(key, {})[f"{r['mode']} a={r['alpha']:g}"] = (
            f"{r['success']:.2f} [{r['success_low']:.2f}, {r['success_high']:.2f}] / "
            f"{rnd_mean.get(at, np.nan):.2f} (max {rnd_max.get(at, np.nan):.2f})")
    for _, r in df[df["condition"] == "residual"].iterrows():
        cells.setdefault((r["group"], r["prompt_kind"]), {})[f"residual a={r['alpha']:g}"] = f"{r['success']:.2f}"
    out = pd.DataFrame.from_dict(cells, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["group", "prompt_kind"])
    return out.sort_index()


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def _median(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else float("nan")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neurospec.steering.summary",
        description="Per steering table: every (mode, alpha) with the mean success over groups and its "
                    "bootstrap interval over groups, beside the matched random sets, the residual baseline "
                    "and no intervention; the best alpha; and each language's rates.")
    parser.add_argument("tables", nargs="+", help="steering tables (results/.../steering/{method}.parquet)")
    parser.add_argument("--n-boot", type=int, default=N_BOOT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = [p for p in args.tables if not str(p).endswith("_outputs.parquet")]  # the glob's companions
    try:  # a missing, truncated or foreign table: one line naming it
        tables = [(p, read_table(p, required=REQUIRED), read_metadata(p)) for p in paths]
    except NeurospecError as exc:
        sys.exit(f"neurospec: error: {exc}")
    with pd.option_context("display.width", 250, "display.max_rows", 1000, "display.max_columns", 60):
        for path, df, meta in tables:
            method = meta.get("method", path)
            table = by_alpha(df, n_boot=args.n_boot, seed=args.seed)
            print(f"== {method}: mean over groups [{LEVEL:.0%} bootstrap interval over groups, "
                  f"{args.n_boot} resamples]; at_half: groups with success >= {HALF}")
            print(table.round(3).to_string(index=False))
            residual = residual_by_alpha(df, n_boot=args.n_boot, seed=args.seed)
            if len(residual):
                print("the residual baseline per alpha (the same vector for every method):")
                print(residual.round(3).to_string(index=False))
            for _, b in best_alpha(df, n_boot=args.n_boot, seed=args.seed).iterrows():
                print(f"{method} best ({b['prompt_kind']}): {b['mode']} alpha {b['alpha']:g}: success "
                      f"{b['selected']:.2f} [{b['selected_low']:.2f}, {b['selected_high']:.2f}], random "
                      f"{b['random']:.2f} [{b['random_low']:.2f}, {b['random_high']:.2f}], selected - random "
                      f"{b['selected_minus_random']:+.2f} [{b['selected_minus_random_low']:+.2f}, "
                      f"{b['selected_minus_random_high']:+.2f}], residual {b['residual']:.2f} (at its best alpha "
                      f"{b['residual_best_alpha']:g}: {b['residual_best']:.2f} [{b['residual_best_low']:.2f}, "
                      f"{b['residual_best_high']:.2f}]), none {b['none']:.2f}; "
                      f"groups at >= {HALF}: {b['groups_at_half']} of {b['n_groups']} (random "
                      f"{b['random_groups_at_half']}, residual {b['residual_groups_at_half']}); chrF++ "
                      f"{b['chrf']:.1f} (none {b['chrf_none']:.1f}), NLL median {b['nll']:.2f} (none {b['nll_none']:.2f})")
            print(per_language(df).to_string())
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
