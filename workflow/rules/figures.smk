"""Figures of every scoring method, and of the activation probabilities, for the HTML report.

Per-method figures read that method's score or IoU table only; the activation-probability figure
reads the activation tables only, so a scoring parameter change never redraws it.
"""


rule figure_iou_layers:
    """Per-layer IoU heatmaps of every two groups, ordered by family then resource tier."""
    input:
        iou=iou_table("{method}"),
    output:
        report(
            figure_path("{method}", "iou_layers"),
            caption="../report/iou_layers.rst",
            category="Overlap per layer",
            subcategory="{method}",
        ),
    log:
        f"{LOGS}/figures/{{method}}/iou_layers.log",
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="iou_layers",
    script:
        "../scripts/plot.py"


rule figure_direction_iou:
    """Mean IoU per layer among en->xx pairs against among xx->en pairs."""
    input:
        iou=iou_table("{method}"),
    output:
        report(
            figure_path("{method}", "direction_iou"),
            caption="../report/direction_iou.rst",
            category="Translation directions",
            subcategory="{method}",
        ),
    log:
        f"{LOGS}/figures/{{method}}/direction_iou.log",
    wildcard_constraints:
        method="|".join(PAIR_METHODS),
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="direction_iou",
    script:
        "../scripts/plot.py"


rule figure_specialized_counts:
    """Number of selected neurons per group and layer."""
    input:
        scores=scores_table("{method}"),
    output:
        report(
            figure_path("{method}", "specialized_counts"),
            caption="../report/specialized_counts.rst",
            category="Specialized neurons",
            subcategory="{method}",
        ),
    log:
        f"{LOGS}/figures/{{method}}/specialized_counts.log",
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="specialized_counts",
    script:
        "../scripts/plot.py"


rule figure_family_iou:
    """Mean IoU within a language family against across families, per layer."""
    input:
        iou=iou_table("{method}"),
    output:
        report(
            figure_path("{method}", "family_iou"),
            caption="../report/family_iou.rst",
            category="Language families",
            subcategory="{method}",
        ),
    log:
        f"{LOGS}/figures/{{method}}/family_iou.log",
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="family_iou",
    script:
        "../scripts/plot.py"


rule figure_clustering:
    """Hierarchical clustering of languages by neuron overlap, against their families."""
    input:
        iou=iou_table("{method}"),
    output:
        report(
            figure_path("{method}", "clustering"),
            caption="../report/clustering.rst",
            category="Clustering",
            subcategory="{method}",
        ),
    log:
        f"{LOGS}/figures/{{method}}/clustering.log",
    wildcard_constraints:
        method="|".join(SCORING_METHODS),
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="clustering",
    script:
        "../scripts/plot.py"


rule figure_activation_probability:
    """Distribution of activation probabilities under each counting criterion."""
    input:
        activations=activation_tables(),
    output:
        report(
            f"{RESULTS}/figures/activation_probability.png",
            caption="../report/activation_probability.rst",
            category="Activation probability",
        ),
    log:
        f"{LOGS}/figures/activation_probability.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        figure="activation_probability",
    script:
        "../scripts/plot.py"
