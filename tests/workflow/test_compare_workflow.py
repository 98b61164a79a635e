"""Models side by side through snakemake: the demo model's null run first, then the demo model with
``compare.models: [its null]`` in the same working directory; the comparison tables' values against
the per-model score and stability tables (recomputed by hand here), the null beside the real model,
one model load per run (the workers' logs), and a missing model folder as one config line."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
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


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    w = tmp_path_factory.mktemp("compare")
    null = write_config(w, {**BASE, "model": {**MODEL, "null_weights": "reinit"}}, name="null.yaml")
    snakemake(w, configfile=null)
    worker_logs = set((w / "results/logs/workers").glob("*model*.log"))
    real = write_config(w, {**BASE, "model": MODEL, "compare": COMPARE}, name="real.yaml")
    snakemake(w, configfile=real)
    return w, worker_logs


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
    w, null_logs = workdir
    assert len(null_logs) == 1
    real_logs = set((w / "results/logs/workers").glob("*model*.log")) - null_logs
    assert len(real_logs) == 1
    for log in [*null_logs, *real_logs]:
        assert log.read_text().count("loading model") == 1


def test_a_model_not_run_is_one_config_line(tmp_path):
    cfg = write_config(tmp_path, {**BASE, "model": MODEL, "compare": {"models": ["other"]}})
    proc = snakemake(tmp_path, "-n", configfile=cfg, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert [x for x in proc.stderr.splitlines() if x.startswith("neurospec:")] == [
        "neurospec: config error: key 'compare.models': results/other/demo/validation/scores does not exist: "
        "run model 'other' on the same pairs and dataset into this working directory first"]
