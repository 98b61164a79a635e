"""How the frequency method's selection behaves across k, on the count tables of a run.

    python -m neurospec.tools.ksweep results/<model>/<dataset>/<split>/activations/*.parquet [--k 10 25 50 70 95]

``frequency`` (Tan et al.) keeps, per pair and layer, the fewest neurons whose counts, sorted
descending, reach k percent of the layer's count mass.  Tan et al.'s code uses k = 95 for its masks
and 70 in its figures, on a ReLU model, where counts are sparse and skewed.  Under a SiLU (or GELU)
gate the counts are flat: every neuron is active (gate > 0) for a sizeable share of tokens, and with
``nonzero`` for nearly all of them; the fewest neurons holding k percent of a flat mass are about k
percent of the neurons, chosen by small differences.  The table printed here shows that, per count
column and k: the share of a layer's neurons selected (mean over pairs and layers, and its range),
and the mean IoU of the selected sets among the xx->en pairs (each counts another language's
tokens; 1 means every language gets the same neurons) and among the en->xx pairs (all count
English tokens).  A tool, like neurospec.tools.bench: no rule runs it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..languages import direction
from ..score.scoring import frequency, iou, read_count_tables, stack_counts
from ..tables import COUNT_COLUMNS

DEFAULT_KS = (10, 25, 50, 70, 95)


def _mean_iou(overlap: pd.DataFrame, groups: Sequence[str]) -> float:
    """Mean IoU over the distinct pairs of ``groups`` (all layers)."""
    wanted = set(groups)
    rows = overlap[overlap["group_a"].isin(wanted) & overlap["group_b"].isin(wanted)
                   & (overlap["group_a"] != overlap["group_b"])]
    values = rows["iou"].to_numpy(dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def sweep(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], ks: Sequence[float] = DEFAULT_KS,
          columns: Sequence[str] = COUNT_COLUMNS) -> pd.DataFrame:
    """One row per (column, k): share of neurons selected (mean, min, max over pairs x layers) and the
    mean IoU among xx->en pairs and among en->xx pairs."""
    groups = sorted(tables)
    into_en = [g for g in groups if direction(g) == "xx-en"]
    out_of_en = [g for g in groups if direction(g) == "en-xx"]
    rows = []
    for column in columns:
        stacked = stack_counts(tables, column)
        per_layer = stacked.groupby("layer")["neuron"].nunique()
        for k in ks:
            selected = frequency(stacked, k)
            overlap = iou(selected, groups=groups, layers=sorted(per_layer.index))
            sizes = selected.groupby(["group", "layer"]).size()
            sizes = sizes.reindex(pd.MultiIndex.from_product([groups, per_layer.index], names=["group", "layer"]),
                                  fill_value=0)
            share = sizes.to_numpy() / per_layer.reindex(sizes.index.get_level_values("layer")).to_numpy()
            rows.append({"column": column, "k": k, "share_mean": float(share.mean()),
                         "share_min": float(share.min()), "share_max": float(share.max()),
                         "iou_xx_en": _mean_iou(overlap, into_en), "iou_en_xx": _mean_iou(overlap, out_of_en)})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| column | k | neurons selected per layer (mean, range) | mean IoU among xx→en | mean IoU among en→xx |",
             "| --- | ---: | --- | ---: | ---: |"]
    for r in table.itertuples():
        lines.append(f"| `{r.column}` | {r.k:g} | {r.share_mean:.1%} ({r.share_min:.1%}–{r.share_max:.1%}) | "
                     f"{r.iou_xx_en:.2f} | {r.iou_en_xx:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m neurospec.tools.ksweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", help="count tables of one run (activations/*.parquet)")
    parser.add_argument("--k", nargs="+", type=float, default=list(DEFAULT_KS), help="percent values of k")
    parser.add_argument("--column", nargs="+", default=list(COUNT_COLUMNS), choices=COUNT_COLUMNS)
    args = parser.parse_args(argv)
    tables = read_count_tables([os.fspath(p) for p in args.tables])
    print(markdown(sweep(tables, args.k, args.column)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
