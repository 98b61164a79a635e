"""Steering through the user's entry point: snakemake with a config. One small run of lape's
steering (tables with their columns, values consistent with the outputs table, figures), what a
change reruns (a steering parameter: steering only; a scoring parameter: that method's steering;
never collection), and steering in `all` only when enabled."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from neurospec import lid
from neurospec.steering import measures
from workflow_utils import copy_run, job_counts, planned_scores, snakemake, write_config

RESULTS = "results/demo-small/demo/validation"
STEERING = {"enabled": True, "alphas": [2], "modes": ["set", "add"], "prompt_kinds": ["continuation", "translation"],
            "max_new_tokens": 4, "n_prompts": 3, "random_sets": 1, "residual_layers": [-1], "residual_alphas": [2, 5],
            "batch_size": 8}
TARGETS = [f"{RESULTS}/steering/lape.parquet", f"{RESULTS}/figures/lape/steering_success.png",
           f"{RESULTS}/figures/lape/steering_quality.png"]


def _config(workdir, steering=None, **overrides):
    cfg = {"evaluate": {"steering": {**STEERING, **(steering or {})}}, **overrides}
    return write_config(workdir, copy.deepcopy(cfg), name="steering.yaml")


@pytest.fixture(scope="module")
def steering_run(tmp_path_factory, shared_run):
    """A copy of the shared run (the same model, pair, count and score tables, Snakemake's metadata
    included: what a change reruns is still known), steering's targets run there."""
    workdir = copy_run(shared_run[0], tmp_path_factory.mktemp("steering"))
    snakemake(workdir, *TARGETS, configfile=_config(workdir))
    return workdir


def test_steering_tables_have_their_columns_and_agree_with_the_outputs(steering_run):
    res = pd.read_parquet(steering_run / TARGETS[0])
    outs = pd.read_parquet(steering_run / f"{RESULTS}/steering/lape_outputs.parquet")
    for col in ("group", "mode", "alpha", "prompt_kind", "condition", "seed", "n_outputs", "success",
                "success_low", "success_high", "prompt_lang_share", "chrf", "nll", "lid_covered"):
        assert col in res.columns, col
    for col in ("id", "prompt", "output", "lid_label", "group", "mode", "alpha", "condition"):
        assert col in outs.columns, col
    assert "en" not in set(res["group"])  # English is the prompts' language: not steered
    assert set(res["condition"]) <= {"selected", "random", "none", "residual"}
    assert {"none", "residual"} <= set(res["condition"])
    # the residual baseline at its own strengths (residual_alphas), the neurons at alphas
    assert set(res.loc[res.condition == "residual", "alpha"]) == {2.0, 5.0}
    assert set(res.loc[res.condition.isin(["selected", "random"]), "alpha"]) == {2.0}
    # every row's success is the share of its outputs labelled as its language, recomputed here
    for row in res.itertuples(index=False):
        o = outs[(outs.group == row.group) & (outs["mode"] == row.mode) & (outs.alpha == row.alpha)
                 & (outs.prompt_kind == row.prompt_kind) & (outs.condition == row.condition)
                 & (outs.seed.isna() if pd.isna(row.seed) else outs.seed == row.seed)]
        assert len(o) == row.n_outputs > 0
        share = np.mean([lab in lid.target_labels(row.lang) for lab in o["lid_label"]])
        assert row.success == pytest.approx(share)
        assert row.success_low <= row.success <= row.success_high
        # translation prompts never hold the steered language's sentence
        if row.prompt_kind == "translation":
            assert row.lang not in set(o["prompt_lang"])
    # the unsteered outputs are the same prompts' outputs in every group (generated once)
    none = outs[(outs.condition == "none") & (outs.prompt_kind == "continuation")]
    assert none.groupby("id")["output"].nunique().max() == 1
    assert (steering_run / TARGETS[1]).stat().st_size > 0 and (steering_run / TARGETS[2]).stat().st_size > 0


def test_a_steering_parameter_reruns_steering_only(steering_run):
    for change in ({"alphas": [1, 2]}, {"n_prompts": 2}, {"seed": 1}, {"residual_layers": "all"},
                   {"residual_alphas": None}):
        counts = job_counts(snakemake(steering_run, *TARGETS, "--dry-run",
                                      configfile=_config(steering_run, change)).stdout)
        assert counts == {"steering": 1, "figure_steering": 2}, (change, counts)
    # the same from the command line: nested --config values arrive as strings, typed by the schema
    # (residual_alphas is null or a list of numbers)
    out = snakemake(steering_run, *TARGETS, "--dry-run", "--config", "evaluate={steering: {residual_alphas: [1, 3]}}",
                    configfile=_config(steering_run)).stdout
    assert job_counts(out) == {"steering": 1, "figure_steering": 2}


def test_a_scoring_parameter_reruns_that_methods_steering_never_collection(steering_run):
    cfg = _config(steering_run, scoring={"k": 10, "diffmeans": {"k": 10}, "lape": {"top_rate": 0.05}})
    out = snakemake(steering_run, *TARGETS, "--dry-run", configfile=cfg).stdout
    counts = job_counts(out)
    assert counts == {"score": 1, "steering": 1, "figure_steering": 2}, counts
    assert planned_scores(out) == {"lape"}


def test_steering_joins_all_only_when_enabled(tmp_path):
    on = job_counts(snakemake(tmp_path, "--dry-run", configfile=_config(tmp_path)).stdout)
    assert on.get("steering") == 5 and on.get("figure_steering") == 10 and on.get("figure_steering_methods") == 1
    off = job_counts(snakemake(tmp_path, "--dry-run", configfile=_config(tmp_path, {"enabled": False})).stdout)
    assert not {"steering", "figure_steering", "figure_steering_methods"} & set(off)


def test_a_bad_steering_key_is_one_line(tmp_path):
    proc = snakemake(tmp_path, "--dry-run", configfile=_config(tmp_path, {"modes": ["scale"]}), check=False)
    assert proc.returncode != 0
    assert "evaluate.steering.modes" in proc.stderr and "Traceback" not in proc.stderr
