"""The workflow end to end on a small demo, and what reruns when (dry runs)."""

from __future__ import annotations

import numpy as np
import pytest

from neurospec.tables import read_counts, read_metadata, read_table
from workflow_utils import job_counts, snakemake, write_config

RESULTS = "results/demo-small/demo/validation"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The small demo run to its figures and report, once for this module."""
    workdir = tmp_path_factory.mktemp("demo-run")
    cfg = write_config(workdir)
    proc = snakemake(workdir, configfile=cfg)
    snakemake(workdir, "--report", "report.html", configfile=cfg)
    return workdir, cfg, proc


def test_demo_run_produces_consistent_tables(finished_run):
    workdir, _, _ = finished_run
    for pair in ("en-de", "de-en", "en-ru", "ru-en", "en-hi", "hi-en"):
        df, meta = read_counts(workdir / RESULTS / "activations" / f"{pair}.parquet")
        pairs = read_table(workdir / "results/data/demo/validation" / f"{pair}.parquet")
        assert len(pairs) == 40 and meta["n_sentences"] == 40
        assert (pairs["src_lang"] == pair.split("-")[0]).all()
        assert len(df) == 3 * 96 and sorted(df["layer"].unique()) == [0, 1, 2]
        n = meta["n_tokens"]
        assert n > 40  # at least one counted token per sentence
        for col in ("active", "nonzero", "gate_active"):
            assert df[col].between(0, n).all()
        assert (df["nonzero"] >= df["active"]).all()
        assert meta["counted_lang"] == pair.split("-")[0] and meta["token_scope"] == "source"
        assert meta["dtype"] == "float32" and meta["device"] == "cpu"
        assert meta["model_revision"].startswith("local-sha256:")
        assert "torch" in meta["versions"]


def test_scores_cover_every_pair_and_figures_are_in_the_report(finished_run):
    workdir, _, _ = finished_run
    freq = read_table(workdir / RESULTS / "scores" / "frequency.parquet")
    assert set(freq["group"]) >= {"en-de", "de-en", "en-ru", "ru-en", "en-hi", "hi-en"}
    report = (workdir / "report.html").read_text(errors="replace")
    pngs = sorted((workdir / RESULTS / "figures").rglob("*.png"))
    assert pngs, "no figures were drawn"
    for png in pngs:
        assert png.stat().st_size > 5000
        assert png.name in report


def test_changing_k_reruns_scoring_and_figures_only(finished_run):
    workdir, _, _ = finished_run
    cfg = write_config(workdir, {"scoring": {"k": 25}}, name="config-k25.yaml")
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    assert counts.get("score_frequency") == 1
    assert not {"collect_activations", "pair_table", "build_demo_model"} & set(counts), counts
    assert any(rule.startswith("plot") or "figure" in rule for rule in counts), counts


def test_nothing_to_do_after_a_finished_run(finished_run):
    workdir, cfg, _ = finished_run
    out = snakemake(workdir, "--dry-run", configfile=cfg).stdout
    assert "Nothing to be done" in out


def test_changing_the_prompt_reruns_collection(finished_run):
    workdir, _, _ = finished_run
    cfg = write_config(workdir, {"collect": {"prompt_template": "{src_name}: {src} = {tgt_name}:"}},
                       name="config-prompt.yaml")
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    assert counts.get("collect_activations") == 6
    assert "pair_table" not in counts and "build_demo_model" not in counts


def test_one_pair_target_runs_one_collection(tmp_path):
    cfg = write_config(tmp_path)
    out = snakemake(tmp_path, f"{RESULTS}/activations/de-en.parquet", "--dry-run", configfile=cfg).stdout
    assert job_counts(out) == {"build_demo_model": 1, "pair_table": 1, "collect_activations": 1}


def test_shards_are_summed_into_the_same_table(finished_run, tmp_path):
    workdir, _, _ = finished_run
    cfg = write_config(tmp_path, {"collect": {"token_budget": 1024, "shards": 3}})
    target = f"{RESULTS}/activations/hi-en.parquet"
    out = snakemake(tmp_path, target, configfile=cfg).stdout
    sharded, meta = read_counts(tmp_path / target)
    whole, meta_whole = read_counts(workdir / target)
    for col in ("active", "nonzero", "gate_active"):
        np.testing.assert_array_equal(sharded[col].to_numpy(), whole[col].to_numpy())
    # float32 sums over other batch groupings: equal up to rounding, relative to the sums' scale
    scale = np.abs(whole["act_sum"]).max()
    np.testing.assert_allclose(sharded["act_sum"], whole["act_sum"], rtol=1e-5, atol=1e-5 * scale)
    assert meta["n_tokens"] == meta_whole["n_tokens"]
    assert not list((tmp_path / RESULTS / "activations" / "shards").glob("*.parquet"))  # temp() removed them


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pairs": ["en-xx"]}, "unknown language code 'xx' in pair 'en-xx'"),
        ({"pairs": ["de-fr"]}, "must have English on exactly one side"),
        ({"scoring": {"k": 150}}, "key 'scoring.k': 150 is greater than the maximum of 100"),
        ({"collect": {"token_scope": "everything"}}, "key 'collect.token_scope': 'everything' is not one of"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, override, message):
    cfg = write_config(tmp_path, override)
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_a_killed_run_loses_nothing(finished_run, tmp_path):
    """SIGKILL the whole run mid-collection, `snakemake --unlock`, rerun: tables equal an uninterrupted run."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from workflow_utils import ROOT, SNAKEFILE

    workdir, _, _ = finished_run
    cfg = write_config(tmp_path)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
           f"{RESULTS}/activations/en-de.parquet", f"{RESULTS}/activations/de-en.parquet",
           f"{RESULTS}/activations/en-ru.parquet", "--cores", "2", "--resources", "gpu=1", "--configfile", str(cfg)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    logs = tmp_path / "results/logs/demo-small/demo/validation/activations"
    deadline = time.time() + 300
    try:
        # kill once a collection job has loaded the model and is counting
        while time.time() < deadline and proc.poll() is None:
            if any("prompts" in p.read_text(errors="replace") for p in logs.glob("*.log")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    tables = [tmp_path / RESULTS / "activations" / f"{p}.parquet" for p in ("en-de", "de-en", "en-ru")]
    assert not all(t.exists() for t in tables)
    snakemake(tmp_path, "--unlock", configfile=cfg)
    snakemake(tmp_path, *[str(t.relative_to(tmp_path)) for t in tables], configfile=cfg)
    for table in tables:
        df, meta = read_counts(table)
        ref, ref_meta = read_counts(workdir / table.relative_to(tmp_path))
        assert df.equals(ref), table.name  # fp32 on CPU: bit-identical to the uninterrupted run
        assert meta["n_tokens"] == ref_meta["n_tokens"]
    # the killed job's temporary file is gone too: only finished tables remain
    assert not list((tmp_path / RESULTS / "activations").glob(".*.part"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"collect": {"prompt_template": "Translate to {language}: {src}"}}, "unknown placeholder {language}"),
        ({"dataset": {"name": "demo", "split": "train", "max_samples": 40}}, "dataset.split 'train'"),
    ],
)
def test_bad_input_at_run_time_is_one_line_and_no_output(finished_run, tmp_path, override, message):
    import shutil

    workdir, _, _ = finished_run
    for sub in ("results/models", "results/data"):  # the inputs, without rerunning what made them
        shutil.copytree(workdir / sub, tmp_path / sub)
    cfg = write_config(tmp_path, override)
    split = override.get("dataset", {}).get("split", "validation")
    target = f"results/demo-small/demo/{split}/activations/en-de.parquet"
    proc = snakemake(tmp_path, target, "--forcerun", "pair_table", configfile=cfg, check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "neurospec: error:" in line]
    assert lines and all(message in line for line in lines), (proc.stdout + proc.stderr)[-3000:]
    assert not (tmp_path / target).exists()
    assert not list((tmp_path / "results").rglob("*.part"))


def test_changing_one_methods_parameter_reruns_that_method_only(finished_run):
    workdir, _, _ = finished_run
    cfg = write_config(workdir, {"scoring": {"k": 10, "lape": {"top_rate": 0.05}}}, name="config-lape.yaml")
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    counts.pop("all", None)
    assert counts.pop("score_lape") == 1, counts
    assert counts.pop("ablation") == 1, counts  # lape's ablation only
    assert {"score_frequency", "score_contrast", "score_frequency_language", "collect_activations"}.isdisjoint(counts)
    assert counts and all(rule.startswith("figure_") for rule in counts), counts
    assert "figure_activation_probability" not in counts


def test_a_new_model_revision_reruns_collection(finished_run):
    workdir, _, _ = finished_run
    cfg = write_config(workdir, {"model": {**{"id": "demo", "name": "demo-small", "dtype": "float32",
                                              "device": "cpu"}, "revision": "v2"}}, name="config-rev.yaml")
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    assert counts.get("collect_activations") == 6 and "build_demo_model" not in counts
