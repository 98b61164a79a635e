"""The headline table as the report's landing page shows it (``landing``): read from
``summary/headline.csv`` with the standard library only (the Snakefile's process reads it when it
makes the report, and imports no pandas for it). Empty cells (a stage that did not run) show "—"."""

from __future__ import annotations

import csv
import math
import os

from ..errors import NeurospecError

DASH = "—"
HEADER = ("method", "neurons selected", "null model", "split-half IoU (chance)", "null model IoU",
          "ablation: specific groups", "CI above 0", "p < 0.05 (median p)", "steering success at best alpha")
# the headline.csv columns the landing page reads (summary.headline.COLUMNS, without pandas)
COLUMNS = ("method", "selected_neurons", "null_selected_neurons", "stability_iou", "stability_chance",
           "null_stability_iou", "ablation_groups", "ablation_specific", "ablation_ci_above_zero",
           "ablation_p_below_05", "ablation_p_median", "steering_alpha", "steering_success",
           "steering_success_low", "steering_success_high", "steering_random")


def _num(text: str) -> float | None:
    try:
        x = float(text)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _f(x: float | None, fmt: str = ".3g") -> str:
    return DASH if x is None else format(x, fmt)


def _count(x: float | None) -> str:
    return DASH if x is None else str(int(x))


def _of(k: float | None, n: float | None) -> str:
    return DASH if k is None or n is None else f"{int(k)}/{int(n)}"


def landing_row(r: dict[str, str]) -> list[str]:
    """One headline.csv row as the landing page's cells."""
    v = {k: _num(x) for k, x in r.items()}
    iou = DASH if v["stability_iou"] is None else f"{_f(v['stability_iou'])} ({_f(v['stability_chance'])})"
    p = DASH if v["ablation_p_below_05"] is None else \
        f"{_of(v['ablation_p_below_05'], v['ablation_groups'])} ({_f(v['ablation_p_median'])})"
    steer = DASH
    if v["steering_success"] is not None:
        steer = (f"{_f(v['steering_success'])} [{_f(v['steering_success_low'])}, {_f(v['steering_success_high'])}]"
                 f" at alpha {_f(v['steering_alpha'], 'g')} (random {_f(v['steering_random'])})")
    return [r["method"], _count(v["selected_neurons"]), _count(v["null_selected_neurons"]), iou,
            _f(v["null_stability_iou"]), _of(v["ablation_specific"], v["ablation_groups"]),
            _of(v["ablation_ci_above_zero"], v["ablation_groups"]), p, steer]


def landing(path: str | os.PathLike) -> dict[str, list] | None:
    """{"header": [...], "rows": [[...], ...]} of a headline.csv; None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise NeurospecError(f"{path}: written by an older neurospec (no column {', '.join(missing)}); "
                             f"rebuild it with `snakemake {path} --force`, then make the report again")
    return {"header": list(HEADER), "rows": [landing_row(r) for r in rows]}
