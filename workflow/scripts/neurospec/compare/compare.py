"""Models side by side, one scoring method at a time (pure functions, then ``run_compare``).

Inputs per model: its score table (``scores/{method}.parquet``: group, layer, neuron, score; the
metadata's ``groups`` and ``layers``), its stability table (``scores/{method}_stability.parquet``)
and, when ablation ran, its ablation table. Outputs (docs/outputs.md, "Model comparison"):

- depth: selected (group, neuron) cells per layer and model, on relative depth = layer / n_layers;
- correlation: per pair of models, Spearman's rho over the upper triangle (i < j) of the two
  group x group IoU matrices (IoU of the groups' selected (layer, neuron) sets over all layers),
  n = group pairs, and a Mantel permutation p-value (one matrix's groups permuted jointly in rows
  and columns);
- null: for a null model (``{name}-null``) beside its real model, the number selected and the
  mean split-half stability IoU (over the cells with a selection; bootstrap CI over groups), real
  vs null, ``beats_null`` False when the real value's CI overlaps the null's;
- specificity: per model, groups whose ablation is specific (neurospec.plots.ablation_figures).
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..atomic import with_formats
from ..errors import NeurospecError
from ..tables import read_metadata, read_table, write_table

logger = logging.getLogger("neurospec")

NULL_SUFFIX = "-null"
DEPTH_COLUMNS = ["model", "layer", "n_layers", "relative_depth", "n_selected"]
CORRELATION_COLUMNS = ["model_a", "model_b", "n_groups", "n_pairs", "rho", "p_mantel", "n_perm"]
NULL_COLUMNS = ["model", "null_model", "measure", "real", "real_low", "real_high", "null", "null_low",
                "null_high", "n_real", "n_null", "unit", "beats_null"]
SPECIFICITY_COLUMNS = ["model", "n_groups", "n_specific", "share_specific", "median_own", "median_random"]


def depth_counts(scores: pd.DataFrame, layers: Sequence[int], model: str) -> pd.DataFrame:
    """Selected (group, neuron) cells per layer (every layer, 0 where none) on relative depth.

    scores: (rows, [group, layer, neuron, ...]); layers: the model's layer indices (n_layers =
    len(layers)); relative_depth = layer / n_layers, so 0 is the first layer of every model."""
    n_layers = len(layers)
    if n_layers == 0:
        raise NeurospecError(f"model {model!r}: its score table names no layer")
    counts = scores.groupby("layer").size().reindex(list(layers), fill_value=0)
    return pd.DataFrame({
        "model": model,
        "layer": np.asarray(layers, dtype=np.int64),
        "n_layers": n_layers,
        "relative_depth": np.asarray(layers, dtype=np.float64) / n_layers,
        "n_selected": counts.to_numpy(np.int64),
    }, columns=DEPTH_COLUMNS)


def iou_matrix(scores: pd.DataFrame, groups: Sequence[str]) -> np.ndarray:
    """(G, G) IoU of the groups' selected (layer, neuron) sets over all layers; NaN where both are empty."""
    sets = {g: set() for g in groups}
    for g, layer, neuron in zip(scores["group"].astype(str), scores["layer"], scores["neuron"]):
        if g in sets:
            sets[g].add((int(layer), int(neuron)))
    out = np.full((len(groups), len(groups)), np.nan)
    for i, a in enumerate(groups):
        for j, b in enumerate(groups):
            union = len(sets[a] | sets[b])
            if union:
                out[i, j] = len(sets[a] & sets[b]) / union
    return out


def upper(m: np.ndarray) -> np.ndarray:
    """The upper triangle (i < j) of a square matrix, row by row: (G (G - 1) / 2,)."""
    return m[np.triu_indices(len(m), k=1)]


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")
    return float(stats.spearmanr(x[ok], y[ok])[0])


def mantel(a: np.ndarray, b: np.ndarray, n_perm: int = 1000, seed: int = 0) -> tuple[float, int, float]:
    """Spearman's rho of the upper triangles of two (G, G) matrices, its n (group pairs with both
    values finite), and a two-sided Mantel p-value: b's groups permuted jointly in rows and columns
    n_perm times, p = (1 + #{|rho_perm| >= |rho|}) / (1 + n_perm). NaN rho (constant or < 3 pairs):
    p NaN."""
    if a.shape != b.shape or a.shape[0] != a.shape[1]:
        raise NeurospecError(f"IoU matrices of different shapes {a.shape} and {b.shape}")
    x, y = upper(a), upper(b)
    n = int((np.isfinite(x) & np.isfinite(y)).sum())
    rho = _rho(x, y)
    if not np.isfinite(rho) or n_perm <= 0:
        return rho, n, float("nan")
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        p = rng.permutation(len(b))
        r = _rho(x, upper(b[np.ix_(p, p)]))
        hits += bool(np.isfinite(r) and abs(r) >= abs(rho) - 1e-12)
    return rho, n, (1 + hits) / (1 + n_perm)


def correlations(matrices: Mapping[str, np.ndarray], n_groups: int, n_perm: int, seed: int) -> pd.DataFrame:
    """One row per pair of models (config order): rho, n of group pairs, Mantel p."""
    rows = []
    for ma, mb in itertools.combinations(matrices, 2):
        rho, n, p = mantel(matrices[ma], matrices[mb], n_perm, seed)
        rows.append({"model_a": ma, "model_b": mb, "n_groups": n_groups, "n_pairs": n, "rho": rho,
                     "p_mantel": p, "n_perm": n_perm})
    return pd.DataFrame(rows, columns=CORRELATION_COLUMNS)


def stability_mean(table: pd.DataFrame, n_boot: int, seed: int, level: float) -> tuple[float, float, float, int]:
    """Mean split-half IoU over the (group, layer) cells with a selection, a percentile bootstrap CI
    resampling groups (a group's cells together), and n = groups."""
    t = table[np.isfinite(table["iou"])]
    groups = sorted(set(t["group"].astype(str)))
    if not groups:
        return float("nan"), float("nan"), float("nan"), 0
    per = [t.loc[t["group"].astype(str) == g, "iou"].to_numpy(np.float64) for g in groups]
    value = float(np.concatenate(per).mean())
    if n_boot <= 0:
        return value, float("nan"), float("nan"), len(groups)
    rng = np.random.default_rng(seed)
    boots = np.array([np.concatenate([per[i] for i in rng.integers(0, len(per), len(per))]).mean()
                      for _ in range(n_boot)])
    alpha = (1 - level) / 2
    return value, float(np.quantile(boots, alpha)), float(np.quantile(boots, 1 - alpha)), len(groups)


def null_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(real, null) for every model whose null (``{name}-null``) is also compared."""
    return [(m, m + NULL_SUFFIX) for m in models if m + NULL_SUFFIX in models]


def null_beside_real(real: str, null: str, data: Mapping[str, Mapping[str, Any]], n_boot: int, seed: int,
                     level: float) -> pd.DataFrame:
    """The selection and stability numbers of ``real`` beside its null's.

    n_selected: selected (group, neuron) cells (a count of one run, no CI: beats_null is NA, more
    selected neurons is not better);
    stability_iou: mean split-half IoU with bootstrap CIs over groups; beats_null: real CI above the
    null's (False when they overlap)."""
    r, n = data[real], data[null]
    rows = [{"model": real, "null_model": null, "measure": "n_selected",
             "real": float(len(r["scores"])), "null": float(len(n["scores"])),
             "n_real": len(r["groups"]), "n_null": len(n["groups"]), "unit": "selected (group, neuron) cells",
             "beats_null": pd.NA}]
    rv, rl, rh, rn = stability_mean(r["stability"], n_boot, seed, level)
    nv, nl, nh, nn = stability_mean(n["stability"], n_boot, seed, level)
    rows.append({"model": real, "null_model": null, "measure": "stability_iou", "real": rv, "real_low": rl,
                 "real_high": rh, "null": nv, "null_low": nl, "null_high": nh, "n_real": rn, "n_null": nn,
                 "unit": "mean split-half IoU over (group, layer) cells; CI: bootstrap over groups",
                 "beats_null": bool(np.isfinite(rl) and np.isfinite(nh) and rl > nh)})
    out = pd.DataFrame(rows, columns=NULL_COLUMNS)
    out["beats_null"] = out["beats_null"].astype("boolean")
    return out


def specificity_summary(model: str, table: pd.DataFrame, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Per model: groups evaluated, how many are specific (own relative delta NLL above every other
    language's and every control's), median own and control relative delta NLL."""
    from ..plots.ablation_figures import specificity
    s = specificity(table, meta)
    return {"model": model, "n_groups": int(len(s)), "n_specific": int(s["specific"].sum()),
            "share_specific": float(s["specific"].mean()) if len(s) else float("nan"),
            "median_own": float(s["own"].median()) if len(s) else float("nan"),
            "median_random": float(s["random"].median()) if len(s) else float("nan")}


def read_model(model: str, scores: str | os.PathLike, stability: str | os.PathLike) -> dict[str, Any]:
    """One model's score and stability tables, with the groups and layers of the score metadata."""
    for path in (scores, stability):
        if not os.path.exists(path):
            raise NeurospecError(f"model {model!r}: {path} does not exist (run that model first)")
    meta = read_metadata(scores)
    return {"scores": read_table(scores), "stability": read_table(stability),
            "groups": [str(g) for g in meta["groups"]], "layers": [int(x) for x in meta["layers"]],
            "method": meta.get("method")}


def compare(data: Mapping[str, Mapping[str, Any]], *, n_perm: int = 1000, n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Every comparison table of one method over ``data`` (model -> read_model's dict, config order)."""
    models = list(data)
    if len(models) < 2:
        raise NeurospecError("key 'compare.models': the comparison needs at least two models")
    groups = data[models[0]]["groups"]
    for m in models[1:]:
        if data[m]["groups"] != groups:
            raise NeurospecError(f"models {models[0]!r} and {m!r} have different groups "
                                 f"({groups} vs {data[m]['groups']}): compare runs of the same pairs")
    depth = pd.concat([depth_counts(data[m]["scores"], data[m]["layers"], m) for m in models], ignore_index=True)
    matrices = {m: iou_matrix(data[m]["scores"], groups) for m in models}
    corr = correlations(matrices, len(groups), n_perm, seed)
    nulls = [null_beside_real(r, n, data, n_boot, seed, level) for r, n in null_pairs(models)]
    null = pd.concat(nulls, ignore_index=True) if nulls else pd.DataFrame(columns=NULL_COLUMNS)
    return {"depth": depth, "correlation": corr, "null": null}


def plot_depth(depth: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Selected cells per layer against relative depth, one line per model."""
    from .. import plots  # noqa: F401  (matplotlib's Agg backend, chosen in neurospec/plots/__init__.py)
    import matplotlib.pyplot as plt

    from ..atomic import save_png
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for model, d in depth.groupby("model", sort=False):
        ax.plot(d["relative_depth"], d["n_selected"], marker="o", label=f"{model} ({d['n_layers'].iloc[0]} layers)")
    ax.set_xlabel("relative depth (layer / n_layers)")
    ax.set_ylabel("selected (group, neuron) cells")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


def plot_summary(tables: Mapping[str, pd.DataFrame], path: str | os.PathLike, title: str) -> None:
    """Left: rho of the IoU matrices per pair of models (Mantel p in the label); right: stability IoU
    real vs null with CIs (or, with no null, a note)."""
    from .. import plots  # noqa: F401  (matplotlib's Agg backend, chosen in neurospec/plots/__init__.py)
    import matplotlib.pyplot as plt

    from ..atomic import save_png
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    c = tables["correlation"]
    labels = [f"{x} vs {y}\nn={n}, p={p:.3g}" for x, y, n, p in zip(c["model_a"], c["model_b"], c["n_pairs"],
                                                                      c["p_mantel"])]
    a.barh(range(len(c)), c["rho"].fillna(0), color="#0072B2")
    a.set_yticks(range(len(c)), labels, fontsize=7)
    a.set_xlim(-1, 1)
    a.axvline(0, color="grey", lw=0.5)
    a.set_xlabel("Spearman rho of IoU matrices (group pairs)")
    s = tables["null"]
    s = s[s["measure"] == "stability_iou"] if len(s) else s
    if len(s):
        for i, row in enumerate(s.itertuples()):
            for dx, v, lo, hi, col, lab in ((-0.1, row.real, row.real_low, row.real_high, "#D55E00", "real"),
                                            (0.1, row.null, row.null_low, row.null_high, "#999999", "null")):
                b.errorbar(i + dx, v, yerr=[[v - lo], [hi - v]], fmt="o", color=col, label=lab if i == 0 else None)
        b.set_xticks(range(len(s)), [f"{m}\nbeats null: {bn}" for m, bn in zip(s["model"], s["beats_null"])],
                     fontsize=7)
        b.set_ylabel("mean split-half IoU (CI over groups)")
        b.legend(fontsize=7)
    else:
        b.text(0.5, 0.5, "no null model compared", ha="center", va="center")
        b.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_png(fig, path)


@with_formats
def run_compare(models: Sequence[str], scores: Sequence[str], stability: Sequence[str], out_prefix: str,
                depth_figure: str, summary_figure: str, method: str, options: Mapping[str, Any],
                ablation: Sequence[str] = ()) -> None:
    """Rule entry point: every table (``{out_prefix}_{depth,correlation,null,specificity}.parquet``)
    and both figures of one method over ``models`` (their score and stability tables in that order;
    ablation tables too when ablation ran)."""
    data = {m: read_model(m, sc, st) for m, sc, st in zip(models, scores, stability)}
    tables = compare(data, n_perm=options["n_perm"], n_boot=options["n_boot"], seed=options["seed"],
                     level=options["level"])
    # empty when ablation did not run for every compared model
    tables["specificity"] = pd.DataFrame(
        [specificity_summary(m, read_table(p), read_metadata(p)) for m, p in zip(models, ablation)],
        columns=SPECIFICITY_COLUMNS)
    meta = {"method": method, "models": list(models), "options": dict(options),
            "groups": data[models[0]]["groups"]}
    for name, table in tables.items():
        write_table(table, f"{out_prefix}_{name}.parquet", None, metadata=meta)
    for row in tables["correlation"].itertuples():
        logger.info("%s: IoU matrices of %s and %s: Spearman rho %.3f over %d group pairs, Mantel p %.3g",
                    method, row.model_a, row.model_b, row.rho, row.n_pairs, row.p_mantel)
    for row in tables["null"].itertuples():
        logger.info("%s: %s %s real %.3f vs null %.3f: beats its null: %s", method, row.model, row.measure,
                    row.real, row.null, row.beats_null)
    plot_depth(tables["depth"], depth_figure, f"{method}: selected neurons per layer on relative depth")
    plot_summary(tables, summary_figure, f"{method}: IoU-matrix correlation and stability vs null")
