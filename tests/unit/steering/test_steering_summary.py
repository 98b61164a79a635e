"""A method's steering summary: means over groups with bootstrap intervals over groups (the unit that
varies between languages), the paired selected - random difference, the best alpha, the printout."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from neurospec.steering import summary

# Planted: 5 groups, two alphas of mode set; the selected rates differ per group, so the interval over
# groups is not a point. "ha" has no rate (heliport does not cover it) and must be left out.
SELECTED = {1.0: {"de": 0.25, "fr": 0.5, "ru": 0.0, "ar": 0.875}, 3.0: {"de": 0.75, "fr": 0.875, "ru": 0.25, "ar": 1.0}}
RANDOM = {1.0: {"de": (0.0, 0.0), "fr": (0.0, 0.125), "ru": (0.0, 0.0), "ar": (0.0, 0.0)},
          3.0: {"de": (0.0, 0.25), "fr": (0.5, 0.5), "ru": (0.0, 0.0), "ar": (0.125, 0.125)}}
RESIDUAL = {1.0: {"de": 0.0, "fr": 0.0, "ru": 0.0, "ar": 0.125}, 3.0: {"de": 0.0, "fr": 0.25, "ru": 0.0, "ar": 0.375}}
GROUPS = ["ar", "de", "fr", "ru"]


def _row(group, condition, alpha, success, seed=None, mode="set", chrf=5.0, nll=3.0):
    return {"group": group, "lang": group, "mode": mode, "alpha": alpha, "prompt_kind": "continuation",
            "condition": condition, "seed": seed, "n_outputs": 8, "success": success,
            "success_low": max(success - 0.25, 0.0), "success_high": min(success + 0.25, 1.0),
            "prompt_lang_share": 1 - success, "chrf": chrf, "nll": nll}


def _table() -> pd.DataFrame:
    rows = []
    for alpha in (1.0, 3.0):
        for g in GROUPS:
            rows.append(_row(g, "selected", alpha, SELECTED[alpha][g], chrf=10 * alpha, nll=alpha + 1))
            for seed, s in enumerate(RANDOM[alpha][g]):
                rows.append(_row(g, "random", alpha, s, seed=seed))
            rows.append(_row(g, "residual", alpha, RESIDUAL[alpha][g], mode="add"))
        rows.append(_row("ha", "selected", alpha, math.nan))
        rows.append(_row("ha", "random", alpha, math.nan, seed=0))
    for g in GROUPS:
        rows.append(_row(g, "none", 0.0, 0.0, mode="none", chrf=2.0, nll=1.2))
    return pd.DataFrame(rows)


def _hand_interval(values, n_boot, seed, level=0.95):
    """The percentile bootstrap of a mean over groups, written out: resample groups with replacement."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for _ in range(n_boot):
        pick = rng.integers(0, n, size=n)
        means.append(np.mean([values[i] for i in pick]))
    return np.quantile(means, 0.025), np.quantile(means, 0.975)


def test_means_over_groups_and_their_intervals_against_a_hand_bootstrap():
    table = summary.by_alpha(_table(), n_boot=400, seed=3)
    assert table[["mode", "alpha"]].values.tolist() == [["set", 1.0], ["set", 3.0]]
    r = table.set_index("alpha").loc[3.0]
    sel = [SELECTED[3.0][g] for g in GROUPS]
    rnd = [np.mean(RANDOM[3.0][g]) for g in GROUPS]  # a group's random rate: the mean over its seeds
    res = [RESIDUAL[3.0][g] for g in GROUPS]
    assert r["n_groups"] == 4 and r["n_uncovered"] == 1  # ha: no rate, left out and counted
    assert r["selected"] == pytest.approx(np.mean(sel)) and r["random"] == pytest.approx(np.mean(rnd))
    assert r["residual"] == pytest.approx(np.mean(res)) and r["none"] == 0.0
    assert r["selected_minus_random"] == pytest.approx(np.mean(sel) - np.mean(rnd))
    assert (r["selected_low"], r["selected_high"]) == pytest.approx(_hand_interval(sel, 400, 3))
    assert (r["random_low"], r["random_high"]) == pytest.approx(_hand_interval(rnd, 400, 3))
    diff = [s - q for s, q in zip(sel, rnd)]  # paired per group, not two independent intervals
    assert (r["selected_minus_random_low"], r["selected_minus_random_high"]) == pytest.approx(_hand_interval(diff, 400, 3))
    assert (r["residual_low"], r["residual_high"]) == pytest.approx(_hand_interval(res, 400, 3))
    assert r["selected_low"] < r["selected"] < r["selected_high"]
    assert (r["groups_at_half"], r["random_groups_at_half"], r["residual_groups_at_half"]) == (3, 1, 0)
    assert r["chrf"] == pytest.approx(30.0) and r["chrf_none"] == pytest.approx(2.0)
    assert r["nll"] == pytest.approx(4.0) and r["nll_none"] == pytest.approx(1.2)


def test_best_alpha_is_the_highest_mean_success_per_prompt_kind():
    df = _table()
    best = summary.best_alpha(df, n_boot=200)
    assert best[["prompt_kind", "mode", "alpha"]].values.tolist() == [["continuation", "set", 3.0]]
    assert best["selected"].iloc[0] == pytest.approx(np.mean(list(SELECTED[3.0].values())))
    # alpha 1 wins once its rates are the higher ones
    df.loc[(df["condition"] == "selected") & (df["alpha"] == 1.0), "success"] = 1.0
    assert summary.best_alpha(df, n_boot=200)["alpha"].tolist() == [1.0]
    # no rate at all (no language covered): no best alpha rather than an error
    df["success"] = math.nan
    assert summary.best_alpha(df, n_boot=200).empty


def test_the_printout_names_each_alpha_the_best_and_each_language(tmp_path, capsys):
    from neurospec.tables import write_table

    path = tmp_path / "lape.parquet"
    write_table(_table(), path, metadata={"method": "lape"})
    write_table(pd.DataFrame({"output": ["x"]}), tmp_path / "lape_outputs.parquet")  # a glob's companion: skipped
    assert summary.main([str(path), str(tmp_path / "lape_outputs.parquet"), "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "lape best (continuation): set alpha 3: success 0.72 [" in out
    assert "groups at >= 0.5: 3 of 4 (random 1, residual 0)" in out
    assert "0.88 [0.62, 1.00] / 0.50 (max 0.50)" in out  # fr at alpha 3: its CI over prompts / the random sets
    assert "0.75 [0.50, 1.00] / 0.12 (max 0.25)" in out  # de at alpha 3: random seeds 0.00 and 0.25
    # a table that is not a steering table: one line naming it and the missing column, no traceback
    write_table(pd.DataFrame({"group": ["de"]}), tmp_path / "scores.parquet")
    with pytest.raises(SystemExit) as exc:
        summary.main([str(tmp_path / "scores.parquet")])
    assert str(exc.value).startswith("neurospec: error: ") and "scores.parquet" in str(exc.value)
    assert "mode" in str(exc.value)


def test_the_residual_baseline_is_summarized_at_each_strength_and_at_its_best():
    df = _table()
    extra = [_row(g, "residual", 10.0, s, mode="add") for g, s in zip(GROUPS, (1.0, 0.5, 0.75, 0.25))]
    df = pd.concat([df, pd.DataFrame(extra)], ignore_index=True)
    res = summary.residual_by_alpha(df, n_boot=300, seed=1)
    assert res["alpha"].tolist() == [1.0, 3.0, 10.0]
    r10 = res.set_index("alpha").loc[10.0]
    assert r10["residual"] == pytest.approx(0.625) and r10["residual_groups_at_half"] == 3
    assert (r10["residual_low"], r10["residual_high"]) == pytest.approx(_hand_interval([1.0, 0.5, 0.75, 0.25], 300, 1))
    best = summary.best_alpha(df, n_boot=300, seed=1).iloc[0]
    # the neurons at their best alpha (3), the residual at its own (10), and at the neurons' alpha too
    assert best["alpha"] == 3.0 and best["residual_best_alpha"] == 10.0
    assert best["residual_best"] == pytest.approx(0.625) and best["residual"] == pytest.approx(np.mean(list(RESIDUAL[3.0].values())))
