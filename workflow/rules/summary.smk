"""The run's main tables (neurospec/summary): the headline table of the report's landing page and the
tables of each stage, as CSV (summary/{table}.csv) and HTML (summary/{table}.html, in the report's
"Tables" category). Each reads the stages' own tables only; one job per table."""

SUMMARY = f"{RESULTS}/summary"
# the null model's run of this model (model.null_weights, its own results folder): its tables join
# the headline table when they exist (made by a run with model.null_weights set)
NULL_RESULTS = f"results/{config['model']['name']}-null/{DATASET}/{SPLIT}"
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


def null_tables(kind):
    """The null model's score or stability tables of this config's selections that exist."""
    if NULL_WEIGHTS != "none":
        return []
    name = {"null_scores": "{m}.parquet", "null_stability": "{m}_stability.parquet"}[
        kind
    ]
    paths = [f"{NULL_RESULTS}/scores/{name.format(m=m)}" for m in SCORING_METHODS]
    return [p for p in paths if Path(p).exists()]


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
        "null_scores": null_tables("null_scores"),
        "null_stability": null_tables("null_stability"),
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
    return {k: kinds[k] for k in wanted if kinds[k]}


def summary_targets():
    return [f"{SUMMARY}/{t}.{ext}" for t in summary_tables() for ext in ("csv", "html")]


rule summary_table:
    """One of the run's main tables as CSV and HTML (the HTML in the report)."""
    input:
        unpack(summary_inputs),
    output:
        csv=f"{SUMMARY}/{{table}}.csv",
        html=report(
            f"{SUMMARY}/{{table}}.html",
            caption="../report/tables.rst",
            category="Tables",
            labels=lambda wildcards: {"table": SUMMARY_TABLES[wildcards.table]},
        ),
    log:
        f"{LOGS}/summary/{{table}}.log",
    wildcard_constraints:
        table="|".join(SUMMARY_TABLES),
    conda:
        "../../envs/analysis.yaml"
    params:
        methods=list(SCORING_METHODS),
    script:
        "../scripts/summary_table.py"
