"""The run's main tables (neurospec/summary): the headline table of the report's landing page and the
tables of each stage, as CSV (summary/{table}.csv) and HTML (summary/{table}.html, in the report's
"Tables" category). Each reads the stages' own tables only; one job per table."""


rule summary_table:
    """One of the run's main tables as CSV and HTML (the HTML in the report)."""
    input:
        unpack(summary_inputs),
    output:
        csv=summary_table_path("{table}", "csv"),
        html=report(
            summary_table_path("{table}", "html"),
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
