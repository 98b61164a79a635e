"""Split-half stability of every method's selection, and its figure.

Each method selects again on the sentences with an even id and on those with an odd id (the count
tables hold both halves); the IoU of the two selections per group and layer, against the IoU
expected by chance, says whether a selection (and any overlap drawn from it) is signal.
"""


rule stability:
    """One method on each half of the sentences: split-half IoU per group and layer against chance,
    as a table and a figure."""
    input:
        activation_tables(),
    output:
        table=stability_table("{method}"),
        figure=report(
            figure_path("{method}", "stability"),
            caption="../report/stability.rst",
            category="Stability",
            subcategory=selection_label,
            labels={
                "figure": "Split-half stability against chance",
                "method": "{method}",
            },
        ),
        vectors=vector_files(figure_path("{method}", "stability")),
    log:
        f"{LOGS}/scores/{{method}}_stability.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        # {method} is "lape" or a variant's "lape@strict": the method, its variant, its parameters
        method=selection_method,
        variant=selection_variant,
        column=SCORING["column"],
        options=selection_options,
    script:
        "../scripts/score_stability.py"
