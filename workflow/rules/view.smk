"""What a run shows in the terminal (neurospec/run/console.py, neurospec/progress.py): one line per
rule when its last job finishes, the jobs' progress lines when the terminal is interactive, and at its
end where the results, the summary and the report are (onsuccess) or each failed job's one
`neurospec: error:` line and its log (onerror). `snakemake --verbose`, NEUROSPEC_CONSOLE=full, or a
dry run (-n) keeps Snakemake's own job blocks; NEUROSPEC_CONSOLE=jobs prints a line per job. What the
report shows: its landing page's headline table and the summary tables (summary.smk), figure formats.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from snakemake.logging import logger as snakemake_logger  # noqa: E402

from neurospec import messages  # noqa: E402
from neurospec.atomic import figure_paths  # noqa: E402
from neurospec.run import console  # noqa: E402
from neurospec.errors import NeurospecError  # noqa: E402
from neurospec.summary.display import landing as landing_table  # noqa: E402
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
                *summary_targets(),
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
    the report's landing page: config["_report_missing"], set here, read by workflow.rst), and the
    headline table of the landing page (config["_headline"], from summary/headline.csv).
    """
    if not REPORT_MODE:
        return targets
    present = [t for t in targets if os.path.exists(t)]
    config["_report_missing"] = [t for t in targets if not os.path.exists(t)]
    # the landing page's headline table (read by workflow.rst), when the run made it
    try:
        config["_headline"] = landing_table(
            first_model(summary_table_path("headline", "csv"))
        )
    except NeurospecError as exc:  # a headline.csv of an older layout: one line
        sys.exit(f"neurospec: error: {exc}")
    return present


def figure_formats():
    """figures.format: the formats every figure is saved in (a figure rule's ``formats`` param)."""
    return list(config["figures"]["format"])


def vector_files(png):
    """A figure's files in figures.format's other formats, beside its PNG (the figure rules' outputs)."""
    return figure_paths(png, figure_formats())


# --------------------------------------------------------------------------------------------
# The run's main tables (summary.smk): the headline table of the landing page and each stage's
# --------------------------------------------------------------------------------------------
SUMMARY_TABLES = {
    "headline": "Headline: every selection at a glance",
    "scores": "Selected neurons per group and layer",
    "stability": "Split-half stability",
    "ablation": "Ablation on each group's own language",
    "translation_quality": "Translation quality",
    "steering": "Steering at the best alpha",
}


def summary_tables():
    """The tables this config makes: a stage that is off has none."""
    off = {
        "ablation": not ABLATION_ON,
        "translation_quality": not TRANSLATION_ON,
        "steering": not STEERING["enabled"],
    }
    return [t for t in SUMMARY_TABLES if not off.get(t)]


def null_tables(kind, wildcards):
    """The null model's score or stability tables of this config's selections (none for a null
    model's own tables): inputs when the null model is in this run's models (the table waits for
    them), else those that an earlier run made."""
    model = MODELS[wildcards.model]
    if model["null_weights"] != "none":
        return []
    table = {"null_scores": scores_table, "null_stability": stability_table}[kind]
    null = f"{model['name']}-null"
    paths = [table(m).replace("{model}", null) for m in SCORING_METHODS]
    return paths if null in MODELS else [p for p in paths if Path(p).exists()]


def summary_inputs(wildcards):
    """The stages' tables that the table {table} reads (kind -> paths)."""
    methods = list(SCORING_METHODS)
    kinds = {
        "scores": [scores_table(m) for m in methods],
        "stability": [stability_table(m) for m in methods],
        "ablation": [ablation_table(m) for m in methods] if ABLATION_ON else [],
        "steering": (
            [steering_table(m) for m in methods] if STEERING["enabled"] else []
        ),
        "translation": [TRANSLATION_SCORES] if TRANSLATION_ON else [],
        "null_scores": null_tables("null_scores", wildcards),
        "null_stability": null_tables("null_stability", wildcards),
    }
    wanted = {
        "headline": [
            "scores",
            "stability",
            "ablation",
            "steering",
            "null_scores",
            "null_stability",
        ],
        "translation_quality": ["translation"],
    }.get(wildcards.table, [wildcards.table])
    # the {model}'s own tables: an input function's paths are taken as they are
    return {k: of_model(kinds[k], wildcards) for k in wanted if kinds[k]}


def summary_table_path(table, ext):
    """A summary table's file: results/{model}/{dataset}/{split}/summary/{table}.{csv,html}."""
    return f"{RESULTS}/summary/{table}.{ext}"


def summary_targets():
    return [
        summary_table_path(t, ext) for t in summary_tables() for ext in ("csv", "html")
    ]


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
    headline = first_model(summary_table_path("headline", "csv"))
    summary = headline if os.path.exists(headline) else None
    for line in console.success_lines(results_folder(), elapsed, summary=summary):
        print(line, file=sys.stderr, flush=True)


def print_failure():
    """The end of a failed run: each failed job's one line and its log, last (nothing after it)."""
    if CONSOLE is None:
        return
    for line in console.failure_lines(CONSOLE.failed_logs):
        print(line, file=sys.stderr, flush=True)
