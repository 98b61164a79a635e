"""Models side by side through snakemake, two ways: (1) two runs, the demo model's null first, then the
demo model with ``compare.models: [its null]`` in the same working directory; (2) one run with
``models: [the demo model, its null]``. Either way: the comparison tables' values against the per-model
score and stability tables (recomputed by hand here), the null beside the real model, one model load
per model (the workers' logs); in the one run, each model's counts equal an independent recount with
that model's weights (the second model is never the first one reused). And the config's one-line
errors: a model folder not run, a name given twice, ``model`` and ``models`` both."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from neurospec.tables import read_metadata, read_table
from workflow_utils import snakemake, write_config

PAIRS = ["en-de", "en-ru", "en-hi", "hi-en"]
METHODS = ["frequency", "lape"]
BASE = {"pairs": PAIRS, "dataset": {"name": "demo", "split": "validation", "max_samples": 24},
        "scoring": {"k": 10, "diffmeans": {"k": 10}, "methods": METHODS},
        "evaluate": {"enabled": False}, "browser": {"enabled": False}}
MODEL = {"id": "demo", "name": "demo-small", "dtype": "float32", "device": "cpu"}
COMPARE = {"models": ["demo-small-null"], "n_perm": 200, "n_boot": 200, "seed": 0, "level": 0.95}
REAL, NULL = "results/demo-small/demo/validation", "results/demo-small-null/demo/validation"
OUT = "results/compare/demo/validation"


NULL_MODEL = {**MODEL, "null_weights": "reinit"}
MODELS = {"demo-small": MODEL, "demo-small-null": NULL_MODEL}


def write_models(w, cfg):
    """write_config's test-size config with ``cfg``; a ``models:`` list replaces its ``model:``."""
    path = write_config(w, cfg)
    if "models" in cfg and "model" not in cfg:
        data = yaml.safe_load(path.read_text())
        del data["model"]
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def model_logs(w):
    return set((w / "results/logs/workers").glob("*model*.log"))


@pytest.fixture(scope="module", params=["two runs", "one run"])
def workdir(tmp_path_factory, request):
    """(workdir, the model workers' logs of each run)."""
    w = tmp_path_factory.mktemp("compare")
    if request.param == "one run":
        both = write_models(w, {**BASE, "models": [MODEL, NULL_MODEL], "compare": {**COMPARE, "models": []}})
        snakemake(w, configfile=both)
        return w, [model_logs(w)]
    null = write_config(w, {**BASE, "model": NULL_MODEL}, name="null.yaml")
    snakemake(w, configfile=null)
    worker_logs = model_logs(w)
    real = write_config(w, {**BASE, "model": MODEL, "compare": COMPARE}, name="real.yaml")
    snakemake(w, configfile=real)
    return w, [worker_logs, model_logs(w) - worker_logs]


def per_model(w, folder, method):
    scores = read_table(w / folder / "scores" / f"{method}.parquet")
    meta = read_metadata(w / folder / "scores" / f"{method}.parquet")
    return scores, meta, read_table(w / folder / "scores" / f"{method}_stability.parquet")


@pytest.mark.parametrize("method", METHODS)
def test_comparison_values_match_the_per_model_tables(workdir, method):
    w, _ = workdir
    depth = read_table(w / OUT / f"{method}_depth.parquet")
    (rs, rm, rstab), (ns, nm, nstab) = per_model(w, REAL, method), per_model(w, NULL, method)
    # relative depth by hand: selected rows per layer over n_layers
    for name, s, m in (("demo-small", rs, rm), ("demo-small-null", ns, nm)):
        d = depth[depth["model"] == name].set_index("layer")
        n_layers = len(m["layers"])
        for layer in m["layers"]:
            assert d.loc[layer, "n_selected"] == int((s["layer"] == layer).sum())
            assert d.loc[layer, "relative_depth"] == layer / n_layers
    # the IoU matrices' correlation by hand: sets of (layer, neuron) per group, Spearman over i < j
    groups = rm["groups"]

    def matrix(s):
        sets = {g: set(zip(s.loc[s["group"] == g, "layer"], s.loc[s["group"] == g, "neuron"])) for g in groups}
        return np.array([[len(sets[a] & sets[b]) / len(sets[a] | sets[b]) if sets[a] | sets[b] else np.nan
                          for b in groups] for a in groups])

    a, b = matrix(rs), matrix(ns)
    x = np.array([a[i, j] for i, j in itertools.combinations(range(len(groups)), 2)])
    y = np.array([b[i, j] for i, j in itertools.combinations(range(len(groups)), 2)])
    ok = np.isfinite(x) & np.isfinite(y)
    corr = read_table(w / OUT / f"{method}_correlation.parquet").iloc[0]
    assert (corr["model_a"], corr["model_b"]) == ("demo-small", "demo-small-null")
    assert corr["n_pairs"] == ok.sum() == len(groups) * (len(groups) - 1) // 2
    expected = stats.spearmanr(x[ok], y[ok])[0] if np.ptp(x[ok]) and np.ptp(y[ok]) else np.nan
    np.testing.assert_allclose(corr["rho"], expected, equal_nan=True)
    assert np.isnan(corr["rho"]) or 0 < corr["p_mantel"] <= 1


@pytest.mark.parametrize("method", METHODS)
def test_the_null_beside_the_real_model(workdir, method):
    w, _ = workdir
    (rs, _, rstab), (ns, _, nstab) = per_model(w, REAL, method), per_model(w, NULL, method)
    t = read_table(w / OUT / f"{method}_null.parquet").set_index("measure")
    assert t.loc["n_selected", "real"] == len(rs) and t.loc["n_selected", "null"] == len(ns)
    row = t.loc["stability_iou"]
    assert row["real"] == pytest.approx(rstab["iou"].dropna().mean())
    assert row["null"] == pytest.approx(nstab["iou"].dropna().mean())
    assert row["real_low"] <= row["real"] <= row["real_high"] and row["null_low"] <= row["null"] <= row["null_high"]
    assert row["beats_null"] == bool(row["real_low"] > row["null_high"])
    assert (w / OUT / f"{method}_depth.png").stat().st_size > 0 and (w / OUT / f"{method}_summary.png").is_file()


def test_one_model_load_per_model(workdir):
    """Two runs: one model worker each; one run: one per model. Each worker loads its model once."""
    w, runs = workdir
    assert [len(logs) for logs in runs] == ([1, 1] if len(runs) == 2 else [2])
    for log in set().union(*runs):
        assert log.read_text().count("loading model") == 1


def test_each_model_of_one_run_counts_with_its_own_weights(workdir):
    """In one run with two models, each model's counts equal an independent recount with its weights
    (the null's differ from the real model's: a worker serving the first never answers for the second)."""
    from neurospec.models import load_model
    from neurospec.tables import read_counts
    from reference import reference_counts, table_arrays

    w, runs = workdir
    if len(runs) == 2:
        pytest.skip("the two-runs layout: each run has one model (tests/workflow/test_null_workflow.py)")
    pairs = read_table(w / "results/data/demo/validation/en-ru.parquet")
    got = {}
    for name, block in MODELS.items():
        loaded = load_model(str(w / "results/models/demo"), dtype="float32", device="cpu",
                            null_weights=block.get("null_weights", "none"), null_seed=0)
        n_layers = loaded.model.config.num_hidden_layers
        df, meta = read_counts(w / f"results/{name}/demo/validation/activations/en-ru.parquet")
        got[name] = table_arrays(df, n_layers)
        ref, n_tokens = reference_counts(loaded, pairs, "Translate from {src_name} to {tgt_name}: {src}")
        assert meta["n_tokens"] == n_tokens
        for column in ("active", "gate_active"):
            np.testing.assert_array_equal(got[name][column], ref[column])
    assert not np.array_equal(got["demo-small"]["gate_active"], got["demo-small-null"]["gate_active"])


def config_lines(tmp_path, cfg):
    proc = snakemake(tmp_path, "-n", configfile=write_models(tmp_path, cfg), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    return [x for x in proc.stderr.splitlines() if x.startswith("neurospec:")]


@pytest.mark.parametrize("case", ["same name", "model and models", "reserved name"])
def test_a_bad_model_list_is_one_config_line(tmp_path, case):
    cfg = {**BASE, "models": [MODEL, {**MODEL, "dtype": "float64"}]}
    expected = ("neurospec: config error: key 'models[1].name': 'demo-small' is also the name of models[0] "
                "(both would write results/demo-small/); give each model its own name")
    if case == "model and models":
        cfg["model"] = MODEL
        expected = ("neurospec: config error: keys 'model' and 'models': give one model (model:) or a list of "
                    "models (models:), not both (an overlay with models: goes over a file without model:)")
    elif case == "reserved name":
        cfg["models"] = [MODEL, {**MODEL, "name": "compare"}]
        expected = ("neurospec: config error: key 'models[1].name': 'compare' names a folder the workflow "
                    "uses itself (results/compare/); choose another name")
    assert config_lines(tmp_path, cfg) == [expected]


def test_a_model_not_run_is_one_config_line(tmp_path):
    cfg = write_config(tmp_path, {**BASE, "model": MODEL, "compare": {"models": ["other"]}})
    proc = snakemake(tmp_path, "-n", configfile=cfg, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert [x for x in proc.stderr.splitlines() if x.startswith("neurospec:")] == [
        "neurospec: config error: key 'compare.models': results/other/demo/validation/scores does not exist: "
        "run model 'other' on the same pairs and dataset into this working directory first"]
