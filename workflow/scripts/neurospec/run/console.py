"""What a run prints in the terminal: one line per finished step (rule) instead of Snakemake's job blocks.

Snakemake's stream handler (``DefaultStreamHandler``) prints, per job, a block of input/output/log
lists and a reason before it runs, then "Finished jobid", then "N of M steps done": about 15 lines a
job, ~1,800 for the demo. ``install`` adds a filter to that handler only (the log file in
.snakemake/log keeps everything) that

* swallows the job blocks (JOB_INFO, shell commands), the "N of M steps" lines and the scheduler's
  "Select jobs to execute..." / "Execute N jobs..." lines,
* prints one line per rule when its last job of the run finishes (the run's job stats say how many
  it has): ``[17:18:03] 32/121 collect_activations: 20 jobs ✓ 12.3 s`` (seconds from its first job's
  start), or, for a rule of one job, that job: ``[17:18:05] 33/121 score (method=lape) 2.1 s``; the
  demo's 126 jobs are 20 lines (the rule ``all`` has none: the end of the run says it);
  NEUROSPEC_CONSOLE=jobs prints one line per finished job instead,
* turns the job-stats table into one line (``119 jobs: 40 pair_table, 20 collect_activations, ...``),
* shortens a failed job's block to one line naming the rule and its log (the job's own
  ``neurospec: error:`` line, printed by the job itself, comes just before it).

Errors, warnings and anything else pass unchanged. ``snakemake --verbose`` (or NEUROSPEC_CONSOLE=full)
keeps Snakemake's own output.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

ENV = "NEUROSPEC_CONSOLE"  # "full": Snakemake's own job blocks; "jobs": one line per finished job
HANDLER_NAME = "DefaultStreamHandler"
# plain scheduler lines that say nothing a user acts on
SWALLOWED_PREFIXES = ("Select jobs to execute", "Execute ", "Using shell:", "Provided cores:",
                      "Rules claiming more threads", "Provided resources:", "Assuming unrestricted",
                      "Conda environments: ignored", "Complete log(s):", "Elapsed time:",
                      "Shutting down, this might take some time")


# Snakemake's echoes of a job's failure that come after the job's own `neurospec: error:` line (the
# script's exit status, the run's "did not complete"): they would hide it, and onerror repeats it
JOB_FAILURE_ECHOES = ("returned non-zero exit status", "At least one job did not complete successfully")
MISSING_RULE = re.compile(r"No rule to produce (\S+)")


def _event_name(record: logging.LogRecord) -> str | None:
    event = getattr(record, "event", None)
    return None if event is None else str(getattr(event, "value", event)).lower()


def _wildcards(wildcards: Any, hidden: Any = ()) -> str:
    if not wildcards:
        return ""
    items = wildcards.items() if hasattr(wildcards, "items") else []
    return ", ".join(f"{k}={v}" for k, v in items if k not in hidden)


def stats_line(stats: dict[str, Any]) -> str:
    """The job-stats table as one line: ``119 jobs: 40 pair_table, 20 collect_activations, ...``."""
    counts = {rule: int(n) for rule, n in stats.items() if rule not in ("total", "all")}
    total = int(stats.get("total", sum(counts.values()) + ("all" in stats)))
    parts = ", ".join(f"{n} {rule}" for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total} jobs: {parts}" if parts else f"{total} jobs"


class CompactConsole(logging.Filter):
    """The filter on Snakemake's terminal handler (see the module's docstring). It never changes a
    record (the log file's handler sees the same one): the line it prints instead is kept on the
    record as ``neurospec_line`` and written by ``CompactFormatter``."""

    def __init__(self, clock=time.monotonic, compact=lambda: True,
                 explain_missing=None, per_job: bool = False, hidden=lambda: ()) -> None:
        super().__init__()
        self.clock = clock
        self.hidden = hidden  # the wildcards a job's line leaves out (a run of one model: its name)
        self.compact = compact  # False: Snakemake's own lines (a dry run), only errors explained
        # path -> the line for a target no rule makes (Snakemake's MissingRuleException), or None
        self.explain_missing = explain_missing
        self.jobs: dict[int, tuple[str, str, float]] = {}  # jobid -> (rule, wildcards, start)
        self.done = 0
        self.total: int | None = None
        self.failed_logs: list[str] = []  # the logs of failed jobs, in order (for ``failure_lines``)
        self.start = clock()
        self.per_job = per_job  # True: a line per finished job, not per finished rule
        self.rule_jobs: dict[str, int] = {}  # rule -> its jobs in this run (the job stats)
        self.rule_done: dict[str, int] = {}  # rule -> its finished jobs
        self.rule_start: dict[str, float] = {}  # rule -> when its first job was announced

    def elapsed(self) -> float:
        return self.clock() - self.start

    def line(self, record: logging.LogRecord) -> str | None | bool:
        """The line for ``record``: a str replaces it, True keeps it as it is, False drops it."""
        event = _event_name(record)
        if event == "error" and getattr(record, "exception", None) == "MissingRuleException":
            found = MISSING_RULE.search(str(record.msg))
            line = self.explain_missing(found.group(1)) if found and self.explain_missing else None
            return line if line else True
        if not self.compact():
            return True
        if event == "job_info":
            self.jobs[record.jobid] = (record.rule_name, _wildcards(getattr(record, "wildcards", {}), self.hidden()),
                                       self.clock())
            self.rule_start.setdefault(record.rule_name, self.clock())
            return False
        if event in ("shellcmd", "workflow_started", "resources_info", "job_started"):
            return False  # (the header, cores and resources stay in .snakemake/log)
        if event == "progress":
            self.total = record.total
            return False
        if event == "job_finished":
            self.done += 1
            rule, wildcards, start = self.jobs.pop(record.job_id, (None, "", None))
            if rule is None:
                rule = str(record.msg).rpartition("Rule: ")[2].rstrip(")") or "job"
            return self.finished_line(rule, wildcards, start)
        if event == "run_info" and isinstance(getattr(record, "stats", None), dict) and record.stats:
            self.total = int(record.stats.get("total", 0)) or self.total
            self.rule_jobs = {r: int(n) for r, n in record.stats.items() if r != "total"}
            return stats_line(record.stats)
        if event == "job_error":
            self.failed_logs += [f for f in getattr(record, "log", []) or [] if f not in self.failed_logs]
            logs = ", ".join(getattr(record, "log", []) or []) or "none"
            wildcards = self.jobs.get(getattr(record, "jobid", None), (None, "", None))[1]
            where = f" ({wildcards})" if wildcards else ""
            return f"failed: rule {record.rule_name}{where}; its log: {logs}"
        if event == "error" and (self.failed_logs or "CalledProcessError" in str(record.msg)) and any(
                s in str(record.msg) for s in JOB_FAILURE_ECHOES):
            return False  # a failed job's exit status, or the run's "did not complete": the job's line says why
        if event is None and isinstance(record.msg, str) and record.levelno <= logging.INFO:
            if record.msg.startswith(SWALLOWED_PREFIXES) or not record.msg.strip():
                return False
        return True

    def finished_line(self, rule: str, wildcards: str, start: float | None) -> str | bool:
        """The line for a finished job of ``rule``: its rule's line when it is the rule's last job
        (False before that), the job's own line per job or when the rule's count is unknown."""
        now, total = self.clock(), f"/{self.total}" if self.total else ""
        head = f"[{time.strftime('%H:%M:%S')}] {self.done}{total} {rule}"
        n = self.rule_jobs.get(rule)
        self.rule_done[rule] = self.rule_done.get(rule, 0) + 1
        if rule == "all" and not self.per_job:
            return False  # the run's target rule: the end of the run says it
        if self.per_job or n is None or n == 1:
            seconds = f" {now - start:.1f} s" if start is not None else ""
            return f"{head}{f' ({wildcards})' if wildcards else ''}{seconds}"
        if self.rule_done[rule] < n:
            return False
        first = self.rule_start.get(rule, start)
        return f"{head}: {n} jobs ✓{f' {now - first:.1f} s' if first is not None else ''}"

    def filter(self, record: logging.LogRecord) -> bool:
        line = self.line(record)
        if isinstance(line, str):
            record.neurospec_line = line
        elif line:
            record.__dict__.pop("neurospec_line", None)
        return line is not False


class CompactFormatter(logging.Formatter):
    """Writes ``neurospec_line`` where the filter set one, else what Snakemake's formatter writes."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        line = getattr(record, "neurospec_line", None)
        return line if line is not None else self.inner.format(record)


def install(logger: logging.Logger, verbose: bool = False, dry_run=lambda: False,
            explain_missing=None, hidden_wildcards=lambda: ()) -> CompactConsole | None:
    """Add the compact filter to Snakemake's terminal handler of ``logger``; None when there is none
    or when already installed. With ``verbose`` (snakemake --verbose), NEUROSPEC_CONSOLE=full or in a
    dry run (``dry_run()``, asked when a line comes: Snakemake knows it only after reading the
    Snakefile) the job blocks stay; ``explain_missing`` still replaces a target no rule makes;
    ``hidden_wildcards()`` names wildcards the job lines leave out."""
    full = verbose or os.environ.get(ENV, "").lower() == "full"
    per_job = os.environ.get(ENV, "").lower() == "jobs"
    for handler in logger.handlers:
        if handler.name == HANDLER_NAME:
            if any(isinstance(f, CompactConsole) for f in handler.filters):
                return None
            compact = CompactConsole(compact=lambda: not full and not dry_run(), explain_missing=explain_missing,
                                     per_job=per_job, hidden=hidden_wildcards)
            handler.addFilter(compact)
            handler.setFormatter(CompactFormatter(handler.formatter))
            return compact
    return None


def error_line(log_path: str) -> str | None:
    """The last ``neurospec: ...error...`` line of a job's log, without its time and level; None when
    the log has none (a bug's traceback, or no log)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        at = line.find("neurospec: ")
        if at >= 0 and "error" in line[at:at + 40]:
            return line[at:].strip()
    return None


def failure_lines(log_paths: list[str]) -> list[str]:
    """What a failed run prints last (onerror): each failed job's ``neurospec: error:`` line and its
    log; a job whose log holds no such line (a bug) is named by its log alone."""
    lines = []
    for path in log_paths:
        line = error_line(path)
        lines.append(f"{line}\n  (log: {path})" if line else f"neurospec: a job failed; see its log: {path}")
    return lines


def success_lines(results: str, elapsed: float | None = None,
                  report_command: str = "snakemake --report report.html", summary: str | None = None) -> list[str]:
    """What a finished run prints last (onsuccess): where the results are, the headline table
    (``summary``, when the run made it) and how to see the report."""
    took = f" in {elapsed:.0f} s" if elapsed is not None else ""
    return [
        f"neurospec: done{took}. Results in {results}/ (tables: scores/, ablation/, translation/; "
        f"figures: {results}/figures/)",
        *([f"neurospec: the summary: {summary} (every table: {os.path.dirname(summary)}/)"] if summary else []),
        f"neurospec: the report: {report_command}  (then open report.html in a browser)",
    ]
