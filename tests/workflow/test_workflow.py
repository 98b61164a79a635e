"""The workflow end to end on a small demo, and what reruns when (dry runs)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from neurospec.tables import read_counts, read_table
from workflow_utils import (clean_env, copy_run, job_counts, planned_scores, report_entries, snakemake,
                            write_config, write_shared_config)

RESULTS = "results/demo-small/demo/validation"


@pytest.fixture(scope="module")
def finished_run(shared_run):
    """The shared run (.test/config/config.yaml, tests/workflow/conftest.py) to its figures and report."""
    workdir, cfg = shared_run
    return workdir, cfg, None


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
    diffmeans = read_table(workdir / RESULTS / "scores" / "diffmeans.parquet")
    assert (diffmeans.groupby(["group", "layer"]).size() == 10).all() and len(diffmeans) == 4 * 3 * 10
    for method, n_groups in (("frequency", 6), ("frequency_language", 4), ("lape", 4), ("contrast", 4),
                             ("diffmeans", 4)):
        stab = read_table(workdir / RESULTS / "scores" / f"{method}_stability.parquet")
        assert len(stab) == n_groups * 3 and (stab["n_neurons"] == 96).all(), method
        assert stab["iou_chance"].dropna().between(0, 1).all()
    results, categories = report_entries((workdir / "report.html").read_text(errors="replace"))
    pngs = {png.relative_to(workdir).as_posix(): png for png in (workdir / RESULTS / "figures").rglob("*.png")}
    methods = ("frequency", "frequency_language", "lape", "contrast", "diffmeans")
    expected = {f"{RESULTS}/figures/{m}/{f}.png" for m in methods
                for f in ("iou_layers", "specialized_counts", "family_iou", "clustering", "stability")}
    expected |= {f"{RESULTS}/figures/frequency/direction_iou.png", f"{RESULTS}/figures/activation_probability.png"}
    expected |= {f"{RESULTS}/figures/translation/{f}.png" for f in ("quality", "correlation")}
    expected |= {f"{RESULTS}/figures/{m}/ablation.png" for m in methods}
    expected |= {f"{RESULTS}/figures/ablation_specificity.png"}
    figures = {path: entry for path, entry in results.items() if path.endswith(".png")}
    assert set(pngs) == set(figures) == expected  # every method's own figures, each one its own entry
    assert set(results) - set(figures) == {f"{RESULTS}/summary/{t}.html" for t in  # and the tables
                                           ("headline", "scores", "stability", "ablation", "translation_quality")}
    for path, entry in figures.items():
        # the report embeds this very file, under the job that drew it, with its method's caption
        assert base64.b64decode(entry["data_uri"].split("base64,", 1)[1]) == pngs[path].read_bytes()
        method = Path(path).parent.name
        if method in methods:
            assert entry["job_properties"]["wildcards"] == f"model=demo-small, method={method}"
            assert f"<strong>{method}</strong>" in entry["caption"]
            category = next(c for c, subs in categories.items() if path in subs.get(method, []))
            assert category != "Other", path


def test_changing_k_reruns_scoring_and_figures_only(finished_run):
    workdir, _, _ = finished_run
    cfg = write_shared_config(workdir, {"scoring": {"k": 25}}, name="config-k25.yaml")
    out = snakemake(workdir, "--dry-run", configfile=cfg).stdout
    counts = job_counts(out)
    # scoring.k is the parameter of both frequency selections, and of nothing else
    assert counts.get("score") == 2 and planned_scores(out) == {"frequency", "frequency_language"}, counts
    assert not {"collect_activations", "pair_table", "build_demo_model"} & set(counts), counts
    assert any(rule.startswith("plot") or "figure" in rule for rule in counts), counts
    # their two ablations and two ablated translations rerun, not lape's or contrast's
    assert counts.get("ablation") == 2 and counts.get("translate_ablated") == 2, counts


def test_nothing_to_do_after_a_finished_run(finished_run):
    workdir, cfg, _ = finished_run
    out = snakemake(workdir, "--dry-run", configfile=cfg).stdout
    assert "Nothing to be done" in out


def test_changing_the_prompt_reruns_collection(finished_run):
    workdir, _, _ = finished_run
    cfg = write_shared_config(workdir, {"collect": {"prompt_template": "{src_name}: {src} = {tgt_name}:"}},
                       name="config-prompt.yaml")
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    assert counts.get("collect_activations") == 6
    assert "pair_table" not in counts and "build_demo_model" not in counts


def test_one_pair_target_runs_one_collection(tmp_path):
    cfg = write_config(tmp_path)
    out = snakemake(tmp_path, f"{RESULTS}/activations/de-en.parquet", "--dry-run", configfile=cfg).stdout
    assert job_counts(out) == {"build_demo_model": 1, "pair_table": 1, "collect_activations": 1}


def test_bad_config_is_one_clear_line(tmp_path):
    """The command line itself, on one mistake (the others: test_config_errors.MISTAKES, one process)."""
    cfg = write_config(tmp_path, {"pairs": ["en-xx"]})
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg, check=False)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert len(lines) == 1 and "unknown language code 'xx' in pair 'en-xx'" in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "results").exists()


def _kill_point_reached(point: str, workdir) -> bool:
    logs = workdir / "results/logs"
    worker_logs = " ".join(p.read_text(errors="replace") for p in (logs / "workers").glob("*model*.log"))
    if point == "loading the model":
        return "loading model" in worker_logs and "model loaded" not in worker_logs
    if point == "counting":
        return any("prompts" in p.read_text(errors="replace")
                   for p in (logs / "demo-small/demo/validation/activations").glob("*.log"))
    if point == "right after a table appears":
        return any((workdir / RESULTS / "activations").glob("*.parquet"))
    if point == "scoring":
        return (logs / "demo-small/demo/validation/scores/frequency.log").exists()
    raise ValueError(point)


@pytest.mark.parametrize("point", ["loading the model", "counting", "right after a table appears", "scoring"])
def test_a_killed_run_loses_nothing(finished_run, tmp_path, point):
    """SIGKILL the whole run at a moment, `snakemake --unlock`, rerun the same command: the tables equal an
    uninterrupted run's, and the killed run left no worker (no process holding a GPU) behind."""
    import os
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import time

    from neurospec.run import workers
    from workflow_utils import ROOT, SNAKEFILE

    workdir, _, _ = finished_run
    copy_run(workdir, tmp_path, "results/models", "results/data")  # the inputs, without rerunning what made them
    cfg = write_config(tmp_path)
    targets = [f"{RESULTS}/activations/{p}.parquet" for p in ("en-de", "de-en", "en-ru")] + \
        [f"{RESULTS}/scores/frequency.parquet"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path), *targets,
           "--cores", "2", "--resources", "gpu=1", "--configfile", str(cfg)]
    env = {**clean_env(), "PYTHONPATH": str(ROOT / "workflow" / "scripts")}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None and not _kill_point_reached(point, tmp_path):
            time.sleep(0.01)
        assert proc.poll() is None, f"the run finished before it could be killed ({point})"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # the workers of the killed run notice within a moment that their run is gone, and exit
    run_dir = workers.run_dir(f"{socket.gethostname()}:{proc.pid}")
    pids = [int(p.read_text()) for p in run_dir.glob("*.pid")]
    assert pids, "the run had started no worker"
    assert _wait_until(lambda: not any(workers.pid_alive(pid) for pid in pids), timeout=5), pids
    shutil.rmtree(run_dir, ignore_errors=True)
    outputs = [tmp_path / t for t in targets]
    assert not all(t.exists() for t in outputs)
    snakemake(tmp_path, "--unlock", configfile=cfg)
    snakemake(tmp_path, *targets, configfile=cfg)  # the same command: no --rerun-incomplete needed
    for table in outputs:
        df = read_table(table)
        ref = read_table(workdir / table.relative_to(tmp_path))
        assert df.equals(ref), table.name  # fp32 on CPU: bit-identical to the uninterrupted run
    # the killed job's temporary files are gone too: only finished tables remain
    assert not list((tmp_path / "results").rglob(".*.part"))


def _wait_until(condition, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_twenty_pairs_load_the_model_once(tmp_path):
    """A 20-pair local run: one model load serves every collection job (read off the logs)."""
    import re

    from neurospec.data.demo import available_languages

    langs = [x for x in available_languages() if x not in ("de", "ru", "hi")][:10]
    pairs = [p for x in langs for p in (f"en-{x}", f"{x}-en")]
    assert len(pairs) == 20
    cfg = write_config(tmp_path, {"pairs": pairs, "dataset": {"name": "demo", "split": "validation",
                                                              "max_samples": 8}})
    targets = [f"{RESULTS}/activations/{p}.parquet" for p in pairs]
    snakemake(tmp_path, *targets, configfile=cfg)
    worker_logs = list((tmp_path / "results/logs/workers").glob("*model*.log"))
    assert len(worker_logs) == 1
    text = worker_logs[0].read_text()
    assert text.count("loading model") == 1 and text.count("model loaded in") == 1
    assert text.count("neurospec.collect.collect:collect_to_file") == 20
    # started with the run (its imports overlap the pair tables), it also built the demo model: the
    # task that needs torch went to it, not to a CPU worker that would have imported torch again
    assert "started with the run: torch and transformers imported" in text
    assert text.index("started with the run") < text.index("task 1 of")
    assert text.count("neurospec.data.demo:build_model") == 1 and text.count("task done") == 21
    cpu_logs = " ".join(p.read_text() for p in (tmp_path / "results/logs/workers").glob("*-cpu-*.log"))
    assert "neurospec.data.pairs:write_pair_table" in cpu_logs and "build_model" not in cpu_logs
    served_by = set()
    for pair in pairs:
        job_log = (tmp_path / f"results/logs/demo-small/demo/validation/activations/{pair}.log").read_text()
        served_by |= set(re.findall(r"of model worker \S+ \(pid (\d+)\)", job_log))
        assert "done:" in job_log
    assert len(served_by) == 1


def test_changing_one_methods_parameter_reruns_that_method_only(finished_run):
    workdir, _, _ = finished_run
    cfg = write_shared_config(workdir, {"scoring": {"k": 10, "lape": {"top_rate": 0.05}}}, name="config-lape.yaml")
    out = snakemake(workdir, "--dry-run", configfile=cfg).stdout
    counts = job_counts(out)
    counts.pop("all", None)
    assert counts.pop("score") == 1 and planned_scores(out) == {"lape"}, counts
    assert counts.pop("stability") == 1, counts  # lape's
    assert counts.pop("ablation") == 1, counts  # lape's ablation only ...
    assert f"{RESULTS}/ablation/lape.parquet" in out
    assert counts.get("figure_ablation") == 1 and counts.get("figure_ablation_specificity") == 1, counts
    assert counts.pop("translate_ablated") == 1, counts  # ... and lape's ablated translation only
    # the translation stage's scores and correlation read every method's selection or ablated translation
    assert counts.pop("translation_scores") == 1 and counts.pop("correlation") == 1, counts
    assert "figure_correlation" in counts and "figure_translation_quality" in counts, counts
    assert not {"collect_activations", "pair_table", "build_demo_model", "translate"} & set(counts), counts
    # the browser's page lists every method's selected neurons
    assert counts.pop("browser_contexts") == 1 and counts.pop("browser_page") == 1, counts
    # the summary tables: headline, scores, stability, ablation, translation quality (one job each)
    assert counts.pop("summary_table") == 5, counts
    assert counts and all(rule.startswith("figure_") for rule in counts), counts
    assert "figure_activation_probability" not in counts


def test_a_diffmeans_parameter_reruns_diffmeans_only(finished_run):
    """diffmeans, its stability (table and figure), its four figures (one job), its ablation, the ablation
    figures (one job for all methods), its ablated translation, and the translation scores, correlation and
    browser page that read every method's selections; nothing of another method, never collection."""
    workdir, _, _ = finished_run
    cfg = write_shared_config(workdir, {"scoring": {"k": 10, "diffmeans": {"k": 7}}}, name="config-diffmeans.yaml")
    proc = snakemake(workdir, "--dry-run", configfile=cfg)
    counts = job_counts(proc.stdout)
    counts.pop("all", None)
    evaluation = {"correlation": 1, "figure_correlation": 1, "ablation": 1, "figure_ablation": 1,
                  "figure_ablation_specificity": 1, "translate_ablated": 1, "translation_scores": 1,
                  "figure_translation_quality": 1, "browser_contexts": 1, "browser_page": 1,
                  "summary_table": 5}  # headline, scores, stability, ablation, translation quality
    assert counts == {"score": 1, "stability": 1, "figure_method": 1, **evaluation}, counts
    assert planned_scores(proc.stdout) == {"diffmeans"}
    outputs = [line.split(":", 1)[1].strip() for line in proc.stdout.splitlines()
               if line.strip().startswith("output:")]
    # the translation stage's outputs, the figure comparing every method's ablation, the browser (every method's)
    outputs = [out for out in outputs if "/translation/" not in out and "figures/translation" not in out
               and "figures/ablation_specificity" not in out and "/browser/" not in out and "/summary/" not in out]
    assert outputs and all("diffmeans" in out for out in outputs), outputs


def test_a_new_model_revision_reruns_collection(finished_run):
    workdir, _, _ = finished_run
    cfg = write_shared_config(workdir, {"model": {**{"id": "demo", "name": "demo-small", "dtype": "float32",
                                              "device": "cpu"}, "revision": "v2"}}, name="config-rev.yaml")
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    assert counts.get("collect_activations") == 6 and "build_demo_model" not in counts


def test_tables_are_the_same_with_and_without_workers(finished_run, tmp_path):
    """Workers change where a task runs, not what it computes: fp32 tables bit for bit."""
    workdir, _, _ = finished_run
    copy_run(workdir, tmp_path, "results/models", "results/data")
    cfg = write_config(tmp_path)
    targets = [f"{RESULTS}/activations/{p}.parquet" for p in ("en-de", "hi-en")]
    snakemake(tmp_path, *targets, configfile=cfg, env={"NEUROSPEC_WORKERS": "0"})
    assert not (tmp_path / "results/logs/workers").exists()  # every job ran its task itself
    for target in targets:
        df, meta = read_counts(tmp_path / target)
        ref, ref_meta = read_counts(workdir / target)
        assert df.equals(ref) and meta["n_tokens"] == ref_meta["n_tokens"]
