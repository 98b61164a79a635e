"""Specialization scores: which neurons each pair (or language) uses: four methods, five selections.

One rule for every selection ({method}, constrained in common.smk to SCORING_METHODS). It reads all
activation tables and takes its parameters through params only, so a change of one method's
parameters reruns that method (and what is made from it) only.
"""


rule score:
    """One selection (frequency, frequency_language, lape, contrast, diffmeans: neurospec.score.scoring.METHODS)
    over every activation table: the selected neurons and the IoU of every two groups per layer.
    """
    input:
        activation_tables(),
    output:
        scores=f"{RESULTS}/scores/{{method}}.parquet",
        iou=f"{RESULTS}/scores/{{method}}_iou.parquet",
    log:
        f"{LOGS}/scores/{{method}}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        # {method} is "lape" or a variant's "lape@strict": the method, its variant, its parameters
        method=selection_method,
        variant=selection_variant,
        column=SCORING["column"],
        options=selection_options,
    script:
        "../scripts/score.py"
