"""Figures of every scoring method, and of the activation probabilities, for the HTML report.

Per-method figures read that method's score and IoU tables only (one job draws the four of a method);
the activation-probability figure reads the activation tables only, so a scoring parameter change
never redraws it. The stability figure is drawn with the stability table (stability.smk).
"""


rule figure_method:
    """The four figures of one method's selection: overlap per layer, neurons per layer, families,
    clustering."""
    input:
        scores=scores_table("{method}"),
        iou=iou_table("{method}"),
    output:
        iou_layers=report(
            figure_path("{method}", "iou_layers"),
            caption="../report/iou_layers.rst",
            category="Overlap per layer",
            subcategory=selection_label,
            labels={
                "figure": "Overlap of the selected neurons per layer (IoU)",
                "method": "{method}",
            },
        ),
        specialized_counts=report(
            figure_path("{method}", "specialized_counts"),
            caption="../report/specialized_counts.rst",
            category="Specialized neurons",
            subcategory=selection_label,
            labels={
                "figure": "Selected neurons per layer and group",
                "method": "{method}",
            },
        ),
        family_iou=report(
            figure_path("{method}", "family_iou"),
            caption="../report/family_iou.rst",
            category="Language families",
            subcategory=selection_label,
            labels={
                "figure": "IoU within against across language families",
                "method": "{method}",
            },
        ),
        clustering=report(
            figure_path("{method}", "clustering"),
            caption="../report/clustering.rst",
            category="Clustering",
            subcategory=selection_label,
            labels={
                "figure": "Groups clustered by neuron overlap",
                "method": "{method}",
            },
        ),
        vectors=[
            f
            for name in (
                "iou_layers",
                "specialized_counts",
                "family_iou",
                "clustering",
            )
            for f in vector_files(figure_path("{method}", name))
        ],
    log:
        f"{LOGS}/figures/{{method}}/figures.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        # the clustering of pairs takes those that count the non-English language's tokens
        token_scope=config["collect"]["token_scope"],
    script:
        "../scripts/plot_method.py"


rule figure_direction_iou:
    """Mean IoU per layer among en->xx pairs against among xx->en pairs."""
    input:
        iou=iou_table("{method}"),
    output:
        report(
            figure_path("{method}", "direction_iou"),
            caption="../report/direction_iou.rst",
            category="Translation directions",
            subcategory=selection_label,
            labels={
                "figure": "IoU among en→xx against among xx→en directions",
                "method": "{method}",
            },
        ),
        vectors=vector_files(figure_path("{method}", "direction_iou")),
    log:
        f"{LOGS}/figures/{{method}}/direction_iou.log",
    wildcard_constraints:
        method=variant_pattern(PAIR_SELECTIONS),
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="direction_iou",
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
            labels={"figure": "Activation probability under each counting criterion"},
        ),
        vectors=vector_files(f"{RESULTS}/figures/activation_probability.png"),
    log:
        f"{LOGS}/figures/activation_probability.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="activation_probability",
    script:
        "../scripts/plot.py"
