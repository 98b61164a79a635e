"""Specialization scores: which neurons each pair (or language) uses: four methods, five selections.

Every rule reads all activation tables and takes its parameters through params only, so a
change of one method's parameters reruns that method (and its figures) only.
"""


rule score_frequency:
    """Tan et al.: per pair and layer, the fewest neurons holding k percent of the activation mass."""
    input:
        activation_tables(),
    output:
        scores=scores_table("frequency"),
        iou=iou_table("frequency"),
    log:
        f"{LOGS}/scores/frequency.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        method="frequency",
        column=SCORING["column"],
        options=SCORING_METHODS["frequency"],
    script:
        "../scripts/score.py"


rule score_frequency_language:
    """The frequency method on languages: pairs pooled by the language whose tokens were counted."""
    input:
        activation_tables(),
    output:
        scores=scores_table("frequency_language"),
        iou=iou_table("frequency_language"),
    log:
        f"{LOGS}/scores/frequency_language.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        method="frequency_language",
        column=SCORING["column"],
        options=SCORING_METHODS["frequency_language"],
    script:
        "../scripts/score.py"


rule score_lape:
    """Tang et al.: low entropy of activation probability across languages."""
    input:
        activation_tables(),
    output:
        scores=scores_table("lape"),
        iou=iou_table("lape"),
    log:
        f"{LOGS}/scores/lape.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        method="lape",
        column=SCORING["column"],
        options=SCORING_METHODS["lape"],
    script:
        "../scripts/score.py"


rule score_contrast:
    """Ours: each language against the rest, log-odds and a test under FDR control (Welch on sentences, or z on tokens)."""
    input:
        activation_tables(),
    output:
        scores=scores_table("contrast"),
        iou=iou_table("contrast"),
    log:
        f"{LOGS}/scores/contrast.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        method="contrast",
        column=SCORING["column"],
        options=SCORING_METHODS["contrast"],
    script:
        "../scripts/score.py"


rule score_diffmeans:
    """Baseline: per language and layer, the k neurons whose mean activation differs most from the rest."""
    input:
        activation_tables(),
    output:
        scores=scores_table("diffmeans"),
        iou=iou_table("diffmeans"),
    log:
        f"{LOGS}/scores/diffmeans.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        method="diffmeans",
        column=SCORING["column"],
        options=SCORING_METHODS["diffmeans"],
    script:
        "../scripts/score.py"
