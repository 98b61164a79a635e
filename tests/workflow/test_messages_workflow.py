"""What a user sees through `snakemake` with a config: the run's terminal (one line per finished job,
where the results are at the end), and the exact line of each mistake (a malformed pair, an unknown
language code, an unknown method as a target, a gated or unreachable model)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fake_hub import FakeHub
from workflow_utils import snakemake, write_config

RESULTS = "results/demo-small/demo/validation"
METHODS = "frequency, frequency_language, lape, contrast, diffmeans"


def _out(proc) -> str:
    return proc.stdout + proc.stderr


def _last_lines(proc, n: int) -> list[str]:
    return [line for line in proc.stderr.strip().splitlines() if line.strip()][-n:]


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory):
    """A run of one method's scores only (6 jobs): its terminal, and the report made after it."""
    tmp_path = tmp_path_factory.mktemp("partial")
    cfg = write_config(tmp_path, {"pairs": ["en-de", "de-en"], "dataset": {"name": "demo", "split": "validation",
                                                                         "max_samples": 12}})
    proc = snakemake(tmp_path, f"{RESULTS}/scores/frequency.parquet", configfile=cfg)
    return tmp_path, cfg, proc


def test_a_report_after_a_partial_run_holds_what_exists_and_lists_what_does_not(partial_run):
    tmp_path, cfg, _ = partial_run
    proc = snakemake(tmp_path, "--report", "report.html", configfile=cfg, check=False)
    assert proc.returncode == 0, _out(proc)[-3000:]
    assert "marked for report but does not exist" not in _out(proc)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "This report is partial:" in html
    # every figure is missing (only tables were made), and named on the landing page
    missing = html.split("This report is partial:", 1)[1].split("Run <tt", 1)[0]
    for name in ("figures/frequency/iou_layers.png", "figures/lape/stability.png", "figures/translation/quality.png"):
        assert f"{RESULTS}/{name}" in missing
    assert f"{RESULTS}/scores/frequency.parquet" not in missing  # it exists
    assert "What was run." in html and "This is the demo" in html


def test_a_run_prints_one_line_per_finished_rule_and_where_the_results_are(partial_run):
    tmp_path, cfg, proc = partial_run
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    # 6 jobs: the model, 2 pair tables, 2 collections, the score: a line per rule when its last job
    # finishes (a rule of one job: that job, with its wildcards)
    jobs = [re.sub(r" [\d.]+ s$", "", line.split("] ", 1)[1]) for line in lines
            if re.match(r"^\[\d\d:\d\d:\d\d\] \d+/6 \w+", line)]
    assert jobs[-1] == "6/6 score (method=frequency)", jobs
    assert sorted(re.sub(r"^\d+/6 ", "", j) for j in jobs) == [
        "build_demo_model", "collect_activations: 2 jobs ✓", "pair_table: 2 jobs ✓", "score (method=frequency)"]
    assert "6 jobs: 2 collect_activations, 2 pair_table, 1 build_demo_model, 1 score" in lines
    # none of Snakemake's job blocks, shell lines or step counters
    assert not any(line.lstrip().startswith(("input:", "output:", "reason:", "wildcards:", "localrule", "rule "))
                   for line in lines), proc.stderr
    assert "steps (" not in proc.stderr and "Finished jobid" not in proc.stderr and "SNAKEMAKE" not in proc.stderr
    assert re.sub(r"done in \d+ s", "done in N s", lines[-2]) == (
        f"neurospec: done in N s. Results in {RESULTS}/ (tables: scores/, ablation/, translation/; figures: "
        f"{RESULTS}/figures/)")
    assert lines[-1] == "neurospec: the report: snakemake --report report.html  (then open report.html in a browser)"
    assert len(lines) <= 12, proc.stderr
    # the log of the run (.snakemake/log) keeps Snakemake's blocks
    log = sorted((tmp_path / ".snakemake" / "log").glob("*.snakemake.log"))[0].read_text()  # the run's (first)
    assert "Finished jobid" in log and ("rule score:" in log or "localrule score:" in log)


@pytest.mark.parametrize("pairs, line", [
    (["en_de"], "neurospec: config error: malformed pair 'en_de' in 'pairs': did you mean 'en-de'? a pair is "
                "two language codes joined by '-', e.g. en-de"),
    (["en-jp"], "neurospec: config error: unknown language code 'jp' in pair 'en-jp' (key 'pairs'); did you "
                "mean 'jpn' (Japanese)"),
])
def test_pair_mistakes_are_one_line_with_a_hint(tmp_path, pairs, line):
    proc = snakemake(tmp_path, "-n", configfile=write_config(tmp_path, {"pairs": pairs}), check=False)
    found = [ln for ln in _out(proc).splitlines() if "neurospec: config error" in ln]
    assert proc.returncode != 0 and len(found) == 1 and found[0].startswith(line), _out(proc)[-2000:]
    assert "Traceback" not in _out(proc)


@pytest.mark.parametrize("flag", ["-n", None])
def test_an_unknown_method_as_target_lists_the_methods(tmp_path, flag):
    cfg = write_config(tmp_path)
    proc = snakemake(tmp_path, *([flag] if flag else []), f"{RESULTS}/scores/lapee.parquet", configfile=cfg,
                     check=False)
    expected = (f"neurospec: error: no rule makes {RESULTS}/scores/lapee.parquet: 'lapee' is not a method; "
                f"did you mean 'lape'? methods: {METHODS}")
    assert proc.returncode != 0
    shown = proc.stdout if flag else proc.stderr  # a dry run writes to stdout
    assert [ln for ln in shown.splitlines() if ln.strip()][-1] == expected, _out(proc)[-2000:]
    assert "MissingRuleException" not in _out(proc) and "No rule to produce" not in _out(proc)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from test_fake_hub import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.mark.parametrize("case", ["no token", "wrong token", "offline"])
def test_a_model_the_hub_refuses_says_what_to_do(tmp_path, tiny_dir, case):
    cfg = write_config(tmp_path, {"pairs": ["en-de"], "dataset": {"name": "demo", "split": "validation",
                                                                  "max_samples": 4},
                                  "model": {"id": "acme/gated", "name": "gated", "device": "cpu",
                                            "dtype": "float32"}})
    target = "results/gated/demo/validation/activations/en-de.parquet"
    with FakeHub(gated={"acme/gated"}) as hub:
        hub.add_repo("acme/gated", tiny_dir)
        env = hub.env(tmp_path / "hf-cache", token="hf_wrong" if case == "wrong token" else None)
        if case == "offline":
            env = {**env, "HF_HUB_OFFLINE": "1"}
        proc = snakemake(tmp_path, target, configfile=cfg, check=False, env=env)
    log = "results/logs/gated/demo/validation/activations/en-de.log"
    download = ("download it first where the hub is reachable (`hf download acme/gated --local-dir DIR`) and set "
                "model.id to that directory")
    expected = {
        "no token": "neurospec: error: model 'acme/gated' is gated on the hub: accept its licence on its hub page "
                    f"and set HF_TOKEN to a token of an account with access (HF_TOKEN is not set); or {download}",
        "wrong token": "neurospec: error: model 'acme/gated' is gated on the hub: accept its licence on its hub "
                       "page and set HF_TOKEN to a token of an account with access (HF_TOKEN has no access); or "
                       f"{download}",
        "offline": "neurospec: error: model 'acme/gated': HF_HUB_OFFLINE is set and it is not in the local Hugging "
                   f"Face cache; {download}",
    }[case]
    assert proc.returncode != 0
    # the run ends on the job's one line and its log: nothing after it hides it
    assert _last_lines(proc, 2) == [expected, f"  (log: {log})"], proc.stderr[-3000:]
    assert "Traceback" not in _out(proc)
    if case != "offline":
        assert any(r.status == (401 if case == "no token" else 403) for r in hub.requests)


def test_a_target_after_configfile_fails_before_the_workflow_and_targets_first_works(tmp_path):
    """The README's row "target after --configfile": Snakemake's argument parser gives --configfile every
    word after it, so the target is read as a config file before the Snakefile is (no workflow code can
    catch it; the row says what the user sees); the documented order, targets first, plans the target."""
    cfg = write_config(tmp_path)
    target = f"{RESULTS}/scores/lape.parquet"
    wrong = snakemake(tmp_path, "-n", "--configfile", str(cfg), target, check=False)
    assert wrong.returncode != 0
    assert f"FileNotFoundError: [Errno 2] No such file or directory: '{target}'" in _out(wrong)
    assert "Building DAG of jobs" not in _out(wrong)  # the workflow was never read
    right = snakemake(tmp_path, "-n", target, configfile=cfg, check=False)
    assert right.returncode == 0, _out(right)[-3000:]
    assert "lape" in _out(right) and "collect_activations" in _out(right)
