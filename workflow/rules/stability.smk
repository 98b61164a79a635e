"""Split-half stability of every method's selection, and its figure.

Each method selects again on the sentences with an even id and on those with an odd id (the count
tables hold both halves); the IoU of the two selections per group and layer, against the IoU
expected by chance, says whether a selection (and any overlap drawn from it) is signal.
"""


rule stability:
    """One method on each half of the sentences: split-half IoU per group and layer against chance."""
    input:
        activation_tables(),
    output:
        stability_table("{method}"),
    log:
        f"{LOGS}/scores/{{method}}_stability.log",
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
    conda:
        "../../envs/analysis.yaml"
    params:
        method="{method}",
        column=SCORING["column"],
        options=lambda wildcards: SCORING_METHODS[wildcards.method],
    script:
        "../scripts/score_stability.py"


rule figure_stability:
    """Split-half IoU per layer and group against chance."""
    input:
        stability=stability_table("{method}"),
    output:
        report(
            figure_path("{method}", "stability"),
            caption="../report/stability.rst",
            category="Stability",
            subcategory="{method}",
        ),
    log:
        f"{LOGS}/figures/{{method}}/stability.log",
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
    conda:
        "../../envs/analysis.yaml"
    script:
        "../scripts/plot_stability.py"
