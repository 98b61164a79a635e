"""What a run shows in the terminal (neurospec/run/console.py, neurospec/progress.py): one line per
finished job, the jobs' progress lines when the terminal is interactive, and at its end where the
results are (onsuccess) or each failed job's one `neurospec: error:` line and its log (onerror).
`snakemake --verbose`, NEUROSPEC_CONSOLE=full, or a dry run (-n) keeps Snakemake's own job blocks.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from snakemake.logging import logger as snakemake_logger  # noqa: E402

from neurospec import messages  # noqa: E402
from neurospec.run import console  # noqa: E402
from neurospec.progress import remember_terminal  # noqa: E402


def explain_missing_target(path):
    """The line for a target that nothing makes: the methods, the closest result of this config."""
    try:
        targets = per_model(
            [
                *activation_tables(),
                *scoring_targets(),
                *figure_targets(),
                *translation_targets(),
                *ablation_targets(),
            ]
        )
        return messages.unknown_target_line(
            path,
            results=results_folder(path),
            methods=list(SCORING_METHODS),
            targets=targets,
        )
    except Exception:  # the config did not get that far: Snakemake's own message
        return None


# `snakemake --report` after a partial run (only collection, or a stage that failed): the report
# holds what exists and its landing page lists what does not (instead of Snakemake's "marked for
# report but does not exist"). Snakemake knows it makes a report only after reading the Snakefile, so
# the command line says it.
REPORT_MODE = workflow.is_main_process and any(
    arg == "--report" or arg.startswith("--report=") for arg in sys.argv[1:]
)


def for_report(targets):
    """``targets`` as they are, or, when making a report, those that exist (the others are listed on
    the report's landing page: config["_report_missing"], set here, read by workflow.rst).
    """
    if not REPORT_MODE:
        return targets
    present = [t for t in targets if os.path.exists(t)]
    config["_report_missing"] = [t for t in targets if not os.path.exists(t)]
    return present


CONSOLE = None
if workflow.is_main_process:
    # a dry run (-n) keeps Snakemake's own listing of the jobs it would run (asked per line: Snakemake
    # knows it is a dry run only after reading the Snakefile)
    CONSOLE = console.install(
        snakemake_logger,
        verbose=bool(workflow.output_settings.verbose),
        dry_run=lambda: bool(workflow.dryrun),
        explain_missing=explain_missing_target,
        # a run of one model: its job lines as before models: (no "model=...")
        hidden_wildcards=lambda: ("model",) if len(MODELS) == 1 else (),
    )
    remember_terminal()


def print_success():
    """The end of a finished run: where its results are and the report's command."""
    if workflow.dryrun:
        return
    elapsed = CONSOLE.elapsed() if CONSOLE is not None else None
    for line in console.success_lines(results_folder(), elapsed):
        print(line, file=sys.stderr, flush=True)


def print_failure():
    """The end of a failed run: each failed job's one line and its log, last (nothing after it)."""
    if CONSOLE is None:
        return
    for line in console.failure_lines(CONSOLE.failed_logs):
        print(line, file=sys.stderr, flush=True)
