"""neurospec.compare: relative-depth counts, the whole-model IoU matrix, the Mantel test against a
hand computation, the stability CI over groups and the null beside the real model."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from neurospec.compare.compare import (compare, depth_counts, iou_matrix, mantel, null_beside_real,
                                       stability_mean)
from neurospec.errors import NeurospecError


def scores(rows):
    return pd.DataFrame(rows, columns=["group", "layer", "neuron"]).assign(score=1.0)


def test_depth_counts_every_layer_on_relative_depth():
    s = scores([("de", 0, 1), ("ru", 0, 1), ("de", 2, 5)])
    d = depth_counts(s, [0, 1, 2, 3], "m")
    assert d["n_selected"].tolist() == [2, 0, 1, 0]
    assert d["relative_depth"].tolist() == [0.0, 0.25, 0.5, 0.75] and (d["n_layers"] == 4).all()


def test_iou_matrix_pools_layers_and_keeps_layer_identity():
    s = scores([("a", 0, 1), ("a", 1, 1), ("b", 0, 1), ("b", 0, 2), ("c", 3, 3)])
    m = iou_matrix(s, ["a", "b", "c", "d"])
    # a = {(0,1), (1,1)}, b = {(0,1), (0,2)}: one shared of three
    assert m[0, 1] == m[1, 0] == pytest.approx(1 / 3)
    assert m[0, 2] == 0 and m[0, 0] == 1 and np.isnan(m[3, 3])


def test_mantel_rho_and_p_against_an_exhaustive_hand_computation():
    rng = np.random.default_rng(3)
    g = 5
    a = rng.random((g, g)); a = (a + a.T) / 2
    b = a + 0.3 * rng.random((g, g)); b = (b + b.T) / 2
    iu = np.triu_indices(g, k=1)
    rho_hand = stats.spearmanr(a[iu], b[iu])[0]
    # exact permutation distribution over all 120 joint permutations of b's groups
    perm = [stats.spearmanr(a[iu], b[np.ix_(p, p)][iu])[0] for p in map(list, itertools.permutations(range(g)))]
    exact = np.mean(np.abs(perm) >= abs(rho_hand) - 1e-12)
    rho, n, p = mantel(a, b, n_perm=4000, seed=0)
    assert rho == pytest.approx(rho_hand) and n == g * (g - 1) // 2
    assert abs(p - exact) < 0.03  # Monte Carlo p against the exact one
    # a matrix with itself: rho 1; an unrelated one: p far from 0
    assert mantel(a, a, n_perm=200)[0] == pytest.approx(1.0)


def test_stability_mean_resamples_groups():
    t = pd.DataFrame({"group": ["a", "a", "b", "b", "c"], "layer": [0, 1, 0, 1, 0],
                      "iou": [1.0, 1.0, 0.0, 0.0, np.nan]})
    v, lo, hi, n = stability_mean(t, n_boot=2000, seed=0, level=0.95)
    assert v == 0.5 and n == 2  # c has no selection
    # resampling two groups of two cells each: only 0, 0.5, 1 are possible
    assert lo == 0.0 and hi == 1.0


def model(groups, sel, iou_values):
    rows = [(g, 0, i) for g, k in zip(groups, sel) for i in range(k)]
    stab = pd.DataFrame({"group": np.repeat(groups, 2), "layer": [0, 1] * len(groups),
                         "iou": np.repeat(iou_values, 2)})
    return {"scores": scores(rows), "stability": stab, "groups": list(groups), "layers": [0, 1]}


def test_null_beside_real_says_when_the_real_value_does_not_beat_its_null():
    groups = ["de", "hi", "ru", "zh"]
    real = model(groups, [3, 3, 3, 3], [0.9, 0.8, 0.85, 0.95])
    null = model(groups, [1, 1, 1, 1], [0.1, 0.2, 0.15, 0.05])
    same = model(groups, [3, 3, 3, 3], [0.9, 0.8, 0.85, 0.95])
    t = null_beside_real("m", "m-null", {"m": real, "m-null": null}, 500, 0, 0.95).set_index("measure")
    assert t.loc["n_selected", ["real", "null"]].tolist() == [12, 4] and pd.isna(t.loc["n_selected", "beats_null"])
    assert t.loc["stability_iou", "real"] == pytest.approx(0.875)
    assert t.loc["stability_iou", "null"] == pytest.approx(0.125) and t.loc["stability_iou", "beats_null"]
    t = null_beside_real("m", "m-null", {"m": real, "m-null": same}, 500, 0, 0.95).set_index("measure")
    assert not t.loc["stability_iou", "beats_null"]  # identical: the CIs overlap


def test_compare_finds_the_null_pair_and_refuses_other_groups():
    groups = ["de", "hi", "ru"]
    data = {"m": model(groups, [1, 2, 3], [0.5] * 3), "m-null": model(groups, [1, 1, 1], [0.5] * 3)}
    out = compare(data, n_perm=10, n_boot=10)
    assert out["null"]["model"].unique().tolist() == ["m"] and len(out["correlation"]) == 1
    data["m-null"] = model(["de", "hi"], [1, 1], [0.5] * 2)
    with pytest.raises(NeurospecError, match="different groups"):
        compare(data)
    with pytest.raises(NeurospecError, match="at least two models"):
        compare({"m": data["m"]})
