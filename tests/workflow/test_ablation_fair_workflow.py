"""Fair ablation through snakemake: matched controls, the CI, the p-value and the relative scale in
the ablation table of a small run (4 pairs, 2 random sets), ablation targets only."""

from __future__ import annotations

import numpy as np
import pytest

from neurospec.tables import read_metadata, read_table
from workflow_utils import copy_run, snakemake, write_config

RESULTS = "results/demo-small/demo/validation"
METHODS = ("frequency", "lape", "contrast", "diffmeans")
PAIRS = ["en-de", "de-en", "en-ru", "ru-en"]
BUDGETS = [5, 20, 100000]  # the last one is beyond every selection: left out


@pytest.fixture(scope="module")
def fair_run(tmp_path_factory, shared_run):
    """4 of the shared run's pairs: its model, pair tables and count tables copied (the same config
    there); scoring (other groups) and ablation (budgets) run here."""
    workdir = tmp_path_factory.mktemp("fair-ablation")
    copy_run(shared_run[0], workdir, "results/models", "results/data", f"{RESULTS}/activations")
    cfg = write_config(workdir, {"pairs": PAIRS, "evaluate": {
        "split": None, "ablation": {"mode": "zero", "random_sets": 2, "max_sentences": 8, "seed": 3,
                                    "budgets": BUDGETS, "budget_random_sets": 1}}})
    snakemake(workdir, *[f"{RESULTS}/ablation/{m}.parquet" for m in METHODS],
              *[f"{RESULTS}/figures/{m}/ablation_budget.png" for m in METHODS], configfile=cfg)
    return workdir


def test_the_ablation_table_has_ci_p_value_and_relative_delta_in_range(fair_run):
    for method in METHODS:
        path = fair_run / RESULTS / "ablation" / f"{method}.parquet"
        df, meta = read_table(path), read_metadata(path)
        df = df[df["budget"].isna()]  # the method's own selection (budgets: the next test)
        for column in ("rel_delta_nll", "delta_nll_low", "delta_nll_high", "p_controls"):
            assert column in df.columns, (method, column)
        np.testing.assert_allclose(df["rel_delta_nll"], df["delta_nll"] / df["base_nll"], rtol=1e-12)
        sel, rand = df[df.condition == "selected"], df[df.condition == "random"]
        assert rand[["delta_nll_low", "delta_nll_high", "p_controls"]].isna().all().all()
        ablated = sel[sel.n_neurons > 0]
        assert len(ablated), method
        # the CI brackets the point estimate (the bootstrap's resamples straddle it) and is a real interval
        assert (ablated["delta_nll_low"] <= ablated["delta_nll"] + 1e-12).all()
        assert (ablated["delta_nll_high"] >= ablated["delta_nll"] - 1e-12).all()
        assert (ablated["delta_nll_high"] > ablated["delta_nll_low"]).any()
        empty = sel[sel.n_neurons == 0]
        assert (empty["delta_nll_low"] == 0).all() and (empty["delta_nll_high"] == 0).all()
        # with 2 controls the p-value is 1/3, 2/3 or 1, and it is what the table's control rows give
        assert set(np.round(sel["p_controls"] * 3, 9)) <= {1.0, 2.0, 3.0}
        for (group, lang), row in sel.set_index(["group", "eval_lang"]).iterrows():
            controls = rand[(rand.group == group) & (rand.eval_lang == lang)]["delta_nll"]
            assert len(controls) == 2
            assert row["p_controls"] == pytest.approx((1 + (controls >= row["delta_nll"]).sum()) / 3)
        assert meta["controls"] == "layer and firing-rate decile" and meta["rate_column"] == "gate_active"
        assert meta["ci"]["unit"] == "sentences" and meta["ci"]["n"] == {"en": 8, "de": 8, "ru": 8}
        assert meta["p_controls"]["n_controls"] == 2


def test_budget_rows_ablate_the_top_n_of_every_group_with_matched_controls(fair_run):
    measured = set()  # (method, budget) pairs with rows
    for method in METHODS:
        path = fair_run / RESULTS / "ablation" / f"{method}.parquet"
        df, meta = read_table(path), read_metadata(path)
        scores = read_table(fair_run / RESULTS / "scores" / f"{method}.parquet")
        sizes = scores.groupby("group", observed=True).size()
        assert meta["budgets"] == BUDGETS and meta["budget_random_sets"] == 1
        assert meta["budget_rank"] == ("|score|" if method == "diffmeans" else "score")
        budgeted = df[df["budget"].notna()]
        for group, size in sizes.items():
            kept = [n for n in BUDGETS if n <= size]
            d = budgeted[budgeted.group == group]
            assert sorted(d["budget"].unique().tolist()) == kept, (method, group)
            assert meta["budgets_skipped"].get(group, []) == [n for n in BUDGETS if n > size]
            for n in kept:
                measured.add((method, n))
                rows = d[d.budget == n]
                assert (rows.n_neurons == n).all()
                assert sorted(rows.condition) == ["random"] * 3 + ["selected"] * 3  # 3 languages
                sel = rows[rows.condition == "selected"]
                assert sel["p_controls"].isin([0.5, 1.0]).all() and sel["delta_nll_low"].notna().all()
        # groups that scored no neuron have no budget rows
        assert set(budgeted.group) <= set(sizes.index)
    assert {n for _, n in measured} == {5, 20}, measured  # both feasible budgets were measured somewhere


def test_the_budget_figures_are_drawn_and_planned_only_with_budgets(fair_run, tmp_path):
    import matplotlib.image as mpimg

    from workflow_utils import job_counts

    for method in METHODS:
        png = fair_run / RESULTS / "figures" / method / "ablation_budget.png"
        assert (mpimg.imread(png)[..., :3] < 0.9).mean() > 0.01  # drawn, not blank
    # the default target plans them with budgets, not without
    with_budgets = write_config(tmp_path, {"pairs": PAIRS, "evaluate": {"ablation": {"budgets": [5]}}}, name="a.yaml")
    without = write_config(tmp_path, {"pairs": PAIRS}, name="b.yaml")
    assert job_counts(snakemake(tmp_path, "--dry-run", configfile=with_budgets).stdout).get(
        "figure_ablation_budget") == 5  # one per scoring method
    assert "figure_ablation_budget" not in job_counts(snakemake(tmp_path, "--dry-run", configfile=without).stdout)
