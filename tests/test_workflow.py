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
    np.testing.assert_allclose(sharded["act_sum"], whole["act_sum"], rtol=1e-5)
    assert meta["n_tokens"] == meta_whole["n_tokens"]
    assert not list((tmp_path / RESULTS / "activations" / "shards").glob("*.parquet"))  # temp() removed them


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pairs": ["en-xx"]}, "unknown language code 'xx' in pair 'en-xx'"),
        ({"pairs": ["de-fr"]}, "must have English on exactly one side"),
        ({"scoring": {"k": 150}}, "scoring/k"),
        ({"collect": {"token_scope": "everything"}}, "collect/token_scope"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, override, message):
    cfg = write_config(tmp_path, override)
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()
