"""A null-weights run through snakemake (``model.null_weights``): its outputs land in
results/{model.name}-null, never in the real model's folder; its count tables differ from the real
model's, record the null, and are equal across two runs with the same seed; the evaluation stage
(ablation, translation) runs the same null, from the run's one model load; a bad value is one line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from neurospec.tables import read_counts, read_metadata
from workflow_utils import copy_run, job_counts, snakemake, write_config

PAIRS = ["en-de", "hi-en"]
SMALL = {"pairs": PAIRS, "dataset": {"name": "demo", "split": "validation", "max_samples": 12}}
NULL = {"model": {"id": "demo", "name": "demo-small", "dtype": "float32", "device": "cpu",
                  "null_weights": "shuffle"}}
REAL_DIR, NULL_DIR = "results/demo-small/demo/validation", "results/demo-small-null/demo/validation"


def tables(workdir, folder):
    return {pair: read_counts(workdir / folder / "activations" / f"{pair}.parquet") for pair in PAIRS}


EVALUATION = ["ablation/frequency.parquet", f"translation/{PAIRS[0]}.parquet"]


def run(workdir, folder, overrides, name, *more):
    cfg = write_config(workdir, {**SMALL, **overrides}, name=name)
    snakemake(workdir, *(f"{folder}/activations/{p}.parquet" for p in PAIRS), *(f"{folder}/{m}" for m in more),
              configfile=cfg)
    return cfg


@pytest.fixture(scope="module")
def null_runs(tmp_path_factory, shared_run):
    """Workdir a: the null (shuffle, seed 0), then the real model; workdir b: the null again, with
    an ablation table and a translation table. Both start from the shared run's demo model (the same
    demo_model config), copied."""
    a, b = tmp_path_factory.mktemp("null-a"), tmp_path_factory.mktemp("null-b")
    for workdir in (a, b):
        copy_run(shared_run[0], workdir, "results/models")
    null_cfg = run(a, NULL_DIR, NULL, "null.yaml")
    assert not (a / "results/demo-small").exists()  # the null wrote nothing into the real model's folder
    run(a, REAL_DIR, {}, "real.yaml")
    run(b, NULL_DIR, NULL, "null.yaml", *EVALUATION)
    return a, b, null_cfg


def test_a_null_run_lands_in_its_own_folder_and_records_the_null(null_runs):
    a, b, _ = null_runs
    for pair, (df, meta) in tables(a, NULL_DIR).items():
        assert meta["null_weights"] == "shuffle" and meta["null_seed"] == 0 and meta["null_unchanged"] == []
        assert meta["pair"] == pair and meta["n_tokens"] > 0 and len(df) == 3 * 96
    for _, meta in tables(a, REAL_DIR).values():
        assert meta["null_weights"] == "none" and meta["null_seed"] is None
    # the evaluation stage ran the same null
    for name in EVALUATION:
        meta = read_metadata(b / NULL_DIR / name)
        assert (meta["null_weights"], meta["null_seed"], meta["model"]) == ("shuffle", 0, "results/models/demo")
    # its logs too; and one model load served the run's collection, ablation and translation jobs
    assert (a / f"results/logs/demo-small-null/demo/validation/activations/{PAIRS[0]}.log").is_file()
    worker_logs = list((b / "results/logs/workers").glob("*model*.log"))
    assert len(worker_logs) == 1
    text = worker_logs[0].read_text()
    assert text.count("loading model") == 1 and text.count("neurospec.collect.collect:collect_to_file") == len(PAIRS)
    assert text.count("neurospec.evaluate.ablation:ablate_to_file") == 1
    assert text.count("neurospec.evaluate.translation:translate_to_file") == 1


def test_the_null_counts_differ_from_the_real_model_and_repeat_with_the_seed(null_runs):
    a, b, _ = null_runs
    real, null, again = tables(a, REAL_DIR), tables(a, NULL_DIR), tables(b, NULL_DIR)
    for pair in PAIRS:
        (r, rm), (n, nm), (n2, _) = real[pair], null[pair], again[pair]
        assert rm["n_tokens"] == nm["n_tokens"]  # the same sentences and tokenizer ...
        assert list(r.columns) == list(n.columns) and (r[["layer", "neuron"]].to_numpy()
                                                       == n[["layer", "neuron"]].to_numpy()).all()
        # ... other weights: other firing counts, in every layer
        for layer in sorted(set(r["layer"])):
            sel = r["layer"] == layer
            assert not np.array_equal(r.loc[sel, "gate_active"].to_numpy(), n.loc[sel, "gate_active"].to_numpy())
        pd.testing.assert_frame_equal(n, n2)  # the same seed in another run: the same counts


def test_another_seed_reruns_the_null_collection_only(null_runs):
    a, _, _ = null_runs
    cfg = write_config(a, {**SMALL, "model": {**NULL["model"], "null_seed": 1}}, name="seed1.yaml")
    proc = snakemake(a, *(f"{NULL_DIR}/activations/{p}.parquet" for p in PAIRS), "-n", configfile=cfg)
    assert job_counts(proc.stdout).get("collect_activations") == len(PAIRS)
    real = write_config(a, SMALL, name="real-again.yaml")
    proc = snakemake(a, *(f"{REAL_DIR}/activations/{p}.parquet" for p in PAIRS), "-n", configfile=real)
    assert "collect_activations" not in job_counts(proc.stdout)  # the real model's tables stand
