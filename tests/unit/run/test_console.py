"""The terminal of a run (neurospec.run.console), progress lines (neurospec.progress) and the words of
messages (neurospec.messages): unit tests on records and clocks built by hand."""

from __future__ import annotations

import io
import logging

import pytest
from snakemake.logging import DefaultFilter, DefaultFormatter, LogEvent

from neurospec import messages
from neurospec.run import console
from neurospec.errors import NeurospecError
from neurospec.languages import parse_pair
from neurospec.progress import Progress, progress_line


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _handler(stream):
    """Snakemake's terminal handler as Snakemake builds it (its own filter and formatter)."""
    handler = logging.StreamHandler(stream)
    handler.name = console.HANDLER_NAME
    handler.addFilter(DefaultFilter(None, False, False, False, False))
    handler.setFormatter(DefaultFormatter(None, False))
    return handler


def _log(logger, msg, **extra):
    logger.info(msg, extra=extra)


@pytest.fixture
def terminal():
    stream = io.StringIO()
    logger = logging.getLogger(f"test-console-{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(_handler(stream))
    file_stream = io.StringIO()  # a second handler (the log file): it must see Snakemake's own lines
    file_handler = _handler(file_stream)
    file_handler.name = "DefaultLogFileHandler"
    logger.addHandler(file_handler)
    yield logger, stream, file_stream
    logger.handlers.clear()


def _job(logger, jobid, rule, wildcards):
    _log(logger, f" Rule: {rule}, Jobid: {jobid}", event=LogEvent.JOB_INFO, jobid=jobid, rule_msg=None,
         rule_name=rule, local=True, input=["a" * 300], output=["results/x.parquet"], log=["results/logs/x.log"],
         benchmark=None, wildcards=wildcards, reason="Missing output files", resources={}, priority=0, threads=1,
         indent=False, is_checkpoint=False, printshellcmd=False, is_handover=False, shellcmd=None)


def _finish(logger, clock, jobid, rule, wildcards, started, ended):
    clock.t = started
    _job(logger, jobid, rule, wildcards)
    clock.t = ended
    _log(logger, f"Finished jobid: {jobid} (Rule: {rule})", event=LogEvent.JOB_FINISHED, job_id=jobid)


def test_one_line_per_finished_rule_and_the_stats_in_one_line(terminal):
    logger, stream, file_stream = terminal
    compact = console.install(logger)
    clock = Clock()
    compact.clock = clock
    _log(logger, "Job stats: ...", event=LogEvent.RUN_INFO,
         stats={"pair_table": 3, "score": 1, "all": 1, "total": 5})
    _log(logger, "Select jobs to execute...")
    _log(logger, "Execute 1 jobs...")
    _finish(logger, clock, 1, "pair_table", {"pair": "en-de", "split": "validation"}, 1.0, 2.0)
    _log(logger, None, event=LogEvent.PROGRESS, done=1, total=5)
    _finish(logger, clock, 2, "pair_table", {"pair": "de-en", "split": "validation"}, 2.0, 3.0)
    assert stream.getvalue().splitlines() == ["5 jobs: 3 pair_table, 1 score"]  # pair_table is not done yet
    _finish(logger, clock, 3, "pair_table", {"pair": "en-ru", "split": "validation"}, 3.0, 4.5)
    _finish(logger, clock, 4, "score", {"method": "lape"}, 4.5, 7.0)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    # the rule's line when its last job finishes: its jobs and the seconds since its first one started
    assert lines[1].endswith("] 3/5 pair_table: 3 jobs ✓ 3.5 s"), lines
    assert lines[2].endswith("] 4/5 score (method=lape) 2.5 s"), lines  # a rule of one job: that job
    # the other handler (the log file) still gets Snakemake's blocks: the records were not changed
    full = file_stream.getvalue()
    assert "Finished jobid: 4 (Rule: score)" in full and "1 of 5 steps" in full and "Job stats" in full


def test_console_jobs_prints_one_line_per_finished_job(terminal, monkeypatch):
    logger, stream, _ = terminal
    monkeypatch.setenv(console.ENV, "jobs")
    compact = console.install(logger)
    clock = Clock()
    compact.clock = clock
    _log(logger, "Job stats: ...", event=LogEvent.RUN_INFO, stats={"pair_table": 2, "total": 2})
    _finish(logger, clock, 1, "pair_table", {"pair": "en-de"}, 0.0, 0.5)
    _finish(logger, clock, 2, "pair_table", {"pair": "de-en"}, 0.5, 2.0)
    lines = stream.getvalue().splitlines()
    assert [line.split("] ", 1)[1] for line in lines[1:]] == [
        "1/2 pair_table (pair=en-de) 0.5 s", "2/2 pair_table (pair=de-en) 1.5 s"]


def test_a_failed_job_is_one_line_and_the_end_repeats_its_error_with_its_log(terminal, tmp_path):
    logger, stream, _ = terminal
    compact = console.install(logger)
    log = tmp_path / "collect.log"
    log.write_text("12:00:00 INFO task 1\n12:00:01 ERROR neurospec: error: dataset file x.tsv: no such file\n")
    _job(logger, 5, "collect_activations", {"pair": "en-de"})
    logger.error("Error in rule collect_activations, jobid: 5", extra=dict(
        event=LogEvent.JOB_ERROR, rule_name="collect_activations", rule_msg=None, jobid=5, input=[],
        output=[], log=[str(log)], conda_env=None, container_img=None, aux={}, indent=False, shellcmd=None))
    assert stream.getvalue().splitlines() == [
        f"failed: rule collect_activations (pair=en-de); its log: {log}"]
    assert console.failure_lines(compact.failed_logs) == [
        f"neurospec: error: dataset file x.tsv: no such file\n  (log: {log})"]
    bug = tmp_path / "bug.log"
    bug.write_text("Traceback (most recent call last):\n  ...\nValueError: x\n")
    assert console.failure_lines([str(bug)]) == [f"neurospec: a job failed; see its log: {bug}"]


def test_a_dry_run_and_verbose_keep_snakemakes_blocks(terminal, monkeypatch):
    logger, stream, _ = terminal
    console.install(logger, dry_run=lambda: True)
    _job(logger, 3, "score", {"method": "lape"})
    assert "rule score:" in stream.getvalue() and "wildcards: method=lape" in stream.getvalue()


def test_missing_rule_is_replaced_in_a_dry_run_too(terminal):
    logger, stream, _ = terminal
    console.install(logger, dry_run=lambda: True,
                    explain_missing=lambda path: f"neurospec: error: no rule makes {path}")
    logger.error("MissingRuleException:\nNo rule to produce r/scores/x.parquet (if you use input functions ...)",
                 extra=dict(event=LogEvent.ERROR, exception="MissingRuleException"))
    assert stream.getvalue().splitlines() == ["neurospec: error: no rule makes r/scores/x.parquet"]


def test_install_twice_adds_one_filter(terminal):
    logger, _, _ = terminal
    assert console.install(logger) is not None
    assert console.install(logger) is None
    assert console.install(logging.getLogger("test-console-none")) is None  # no Snakemake handler


def test_progress_throttles_by_time_and_fraction_and_writes_log_and_terminal(caplog):
    clock, tty = Clock(), io.StringIO()
    log = logging.getLogger("test-progress")
    with caplog.at_level(logging.INFO, logger="test-progress"):
        p = Progress(1000, "tokens", log, "collect en-de", every_s=10, every_fraction=0.25, clock=clock,
                     terminal=tty)
        for _ in range(9):  # 9 x 20 tokens in 9 s: under 25% and under 10 s: nothing
            clock.t += 1
            p.update(20)
        assert p.lines == []
        clock.t += 1
        p.update(20)  # 10 s: a line
        assert p.lines == ["collect en-de: 200 / 1,000 tokens (20%), 20 tokens/s, ETA 40s"]
        clock.t += 1
        p.update(300)  # 300 more tokens (30% >= 25%): a line at once
        assert p.lines[-1] == "collect en-de: 500 / 1,000 tokens (50%), 45 tokens/s, ETA 11s"
        clock.t += 4
        p.update(500)
        p.close()
        p.close()
    assert p.lines[-1] == "collect en-de: 1,000 / 1,000 tokens (100%), 67 tokens/s, done in 15s"
    assert len(p.lines) == 3
    assert tty.getvalue().splitlines() == [f"  {line}" for line in p.lines]
    assert [r.getMessage() for r in caplog.records] == [f"progress: {line}" for line in p.lines]


def test_progress_line_without_a_total_and_long_etas():
    assert progress_line("", 50, None, "sentences", 10) == "50 sentences, 5 sentences/s"
    assert progress_line("x", 1, 7201, "tokens", 1).endswith("ETA 2h00m")
    assert progress_line("x", 1, 121, "tokens", 1).endswith("ETA 2m00s")


def test_progress_goes_to_the_recorded_terminal(tmp_path, monkeypatch):
    tty = tmp_path / "tty"
    tty.write_text("")
    monkeypatch.setenv("NEUROSPEC_TTY", str(tty))
    p = Progress(10, "sentences", logging.getLogger("test-progress"), "translate en-de")
    p.update(10)
    p.close()
    assert tty.read_text().strip().startswith("translate en-de: 10 / 10 sentences (100%)")
    monkeypatch.setenv("NEUROSPEC_TTY", str(tmp_path / "gone" / "tty"))
    assert Progress(1, log=logging.getLogger("test-progress")).terminal is None


@pytest.mark.parametrize("pair, line", [
    ("en_de", "malformed pair 'en_de' in 'pairs': did you mean 'en-de'? a pair is two language codes joined "
              "by '-', e.g. en-de"),
    # 'dee' is ISO 639-3 (Dewoin): any language is a language now, so the wrong codes are ones no table has
    ("en-jp", "unknown language code 'jp' in pair 'en-jp' (key 'pairs'); did you mean 'jpn' (Japanese)"),
    ("en-german", "unknown language code 'german' in pair 'en-german' (key 'pairs'); did you mean 'de' (German)"),
    ("en-xx", "unknown language code 'xx' in pair 'en-xx' (key 'pairs'); a language code is ISO 639-1 or 639-3"),
])
def test_pair_messages(pair, line):
    with pytest.raises(NeurospecError) as info:
        parse_pair(pair)
    assert str(info.value).startswith(line)


METHODS = ["frequency", "frequency_language", "lape", "contrast", "diffmeans"]
R = "results/m/demo/validation"


@pytest.mark.parametrize("path, line", [
    (f"{R}/scores/lapee.parquet", f"neurospec: error: no rule makes {R}/scores/lapee.parquet: 'lapee' is not a "
                                  "method; did you mean 'lape'? methods: " + ", ".join(METHODS)),
    (f"{R}/figures/nosuch/iou_layers.png", f"neurospec: error: no rule makes {R}/figures/nosuch/iou_layers.png: "
                                           "'nosuch' is not a method; methods: " + ", ".join(METHODS)),
    (f"{R}/ablation/contrst.parquet", f"neurospec: error: no rule makes {R}/ablation/contrst.parquet: 'contrst' "
                                      "is not a method; did you mean 'contrast'? methods: "),
    ("results/m/demo/validaton/scores/lape.parquet",
     "neurospec: error: no rule makes results/m/demo/validaton/scores/lape.parquet (this config's results are "
     f"under {R}/: model.name/dataset/split); did you mean {R}/scores/lape.parquet? methods: "),
])
def test_unknown_target_lines(path, line):
    targets = [f"{R}/scores/{m}.parquet" for m in METHODS]
    assert messages.unknown_target_line(path, results=R, methods=METHODS, targets=targets).startswith(line)
