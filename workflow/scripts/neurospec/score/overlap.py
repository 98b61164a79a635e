"""Overlap of the selected neuron sets: ``iou`` of every two groups per layer, ``iou_matrix``."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NeurospecError
from .stacking import IOU_COLUMNS

logger = logging.getLogger("neurospec")


def iou(selected: pd.DataFrame, groups: Sequence[str] | None = None,
        layers: Sequence[int] | None = None) -> pd.DataFrame:
    """Pairwise intersection over union of the groups' selected neuron sets, per layer.

    ``selected`` is a score table (group, layer, neuron, ...).  Rows for every layer and every
    unordered pair (a, b) with a before or equal to b in ``groups`` order (default: the groups
    present, sorted), so a square matrix can be built.  Pass ``groups`` and ``layers`` to include
    those with no selected neuron.  iou = 1 for a == b, NaN when both sets are empty.
    """
    missing = [c for c in ("group", "layer", "neuron") if c not in selected.columns]
    if missing:
        raise NeurospecError(f"selection table lacks column(s) {', '.join(missing)}")
    sel_groups = selected["group"].astype(str).to_numpy()
    groups = sorted(set(sel_groups)) if groups is None else [str(g) for g in groups]
    if len(set(groups)) != len(groups):
        raise NeurospecError("duplicate group names given to iou")
    unknown = sorted(set(sel_groups) - set(groups))
    if unknown:
        raise NeurospecError(f"selection holds group(s) {', '.join(unknown)} not among the groups compared")
    layer_col = selected["layer"].to_numpy(np.int64)
    layers = sorted(set(layer_col.tolist())) if layers is None else [int(x) for x in layers]
    unknown_layers = sorted(set(layer_col.tolist()) - set(layers))
    if unknown_layers:
        raise NeurospecError(f"selection holds layer(s) {unknown_layers} not among the layers compared")
    gidx = pd.Index(groups).get_indexer(sel_groups)
    neuron = selected["neuron"].to_numpy(np.int64)
    n_groups = len(groups)
    ia, ib = np.triu_indices(n_groups)
    frames = []
    for layer in layers:
        m = layer_col == layer
        uniq, col = np.unique(neuron[m], return_inverse=True)
        member = np.zeros((n_groups, len(uniq)), dtype=np.float32)
        member[gidx[m], col] = 1.0
        inter = np.rint(member @ member.T).astype(np.int64)
        n = member.sum(axis=1).astype(np.int64)
        union = n[ia] + n[ib] - inter[ia, ib]
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(union > 0, inter[ia, ib] / np.maximum(union, 1), np.nan)
        frames.append(pd.DataFrame({
            "layer": np.full(len(ia), layer, dtype=np.int32),
            "group_a": np.asarray(groups, dtype=object)[ia],
            "group_b": np.asarray(groups, dtype=object)[ib],
            "n_a": n[ia], "n_b": n[ib], "intersection": inter[ia, ib], "iou": value,
        }))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            IOU_COLUMNS, ("int32", object, object, "int64", "int64", "int64", "float64"))})
    out = pd.concat(frames, ignore_index=True)
    out["group_a"] = out["group_a"].astype(str)
    out["group_b"] = out["group_b"].astype(str)
    return out


def iou_matrix(iou_table: pd.DataFrame, groups: Sequence[str], layer: int | None = None) -> np.ndarray:
    """The square IoU matrix of ``groups`` (in that order) for one layer, or pooled over layers.

    Pooled (``layer=None``): the IoU of the (layer, neuron) sets, i.e. the sum of intersections
    over the sum of unions across layers.  NaN where both sets are empty.
    """
    t = iou_table if layer is None else iou_table[iou_table["layer"] == layer]
    t = t.groupby(["group_a", "group_b"], sort=False)[["n_a", "n_b", "intersection"]].sum().reset_index()
    index = pd.Index([str(g) for g in groups])
    ia, ib = index.get_indexer(t["group_a"]), index.get_indexer(t["group_b"])
    keep = (ia >= 0) & (ib >= 0)
    inter = t["intersection"].to_numpy(np.float64)[keep]
    union = (t["n_a"] + t["n_b"]).to_numpy(np.float64)[keep] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    out = np.full((len(index), len(index)), np.nan)
    out[ia[keep], ib[keep]] = value
    out[ib[keep], ia[keep]] = value
    return out
