"""Evaluation, ablation: do the selected neurons matter for their language?

Per scoring method one GPU job zeroes (or mean-patches) every group's selected neurons and random
controls, and measures the NLL of every language's held-out sentences (the evaluation split).
It reads the method's score table, so a scoring parameter reruns that method's ablation only;
evaluate.ablation.* reach it through params, so they rerun ablation (and its figures) only.
"""


rule ablation:
    """Per group of one method: NLL of each language's held-out sentences with its neurons ablated."""
    input:
        scores=scores_table("{method}"),
        pairs=eval_language_tables(),
        counts=ablation_count_tables,
        model=model_inputs,
    output:
        ablation_table("{method}"),
    log:
        f"{LOGS}/ablation/{{method}}.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=model_params,
        ablation=ablation_params(),
        # mode mean: each neuron's value is its mean over the other languages, as scoring.rest says
        # (mode zero does not read it: a change of scoring.rest reruns only what it changes)
        rest=(
            selection_rest
            if config["evaluate"]["ablation"]["mode"] == "mean"
            else None
        ),
        # which language a pair group's neurons belong to (its source's, or its target's for "target")
        token_scope=config["collect"]["token_scope"],
    script:
        "../scripts/ablate.py"


rule figure_ablation:
    """Heatmap of delta NLL, group x evaluated language, selected minus the random controls' mean."""
    input:
        ablation=ablation_table("{method}"),
    output:
        report(
            figure_path("{method}", "ablation"),
            caption="../report/ablation.rst",
            category="Ablation",
            subcategory=selection_label,
            labels={
                "figure": "Ablation: delta NLL per group and language",
                "method": "{method}",
            },
        ),
        vectors=vector_files(figure_path("{method}", "ablation")),
    log:
        f"{LOGS}/figures/{{method}}/ablation.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="heatmap",
    script:
        "../scripts/plot_ablation.py"


rule figure_ablation_budget:
    """Dose-response: own-language delta NLL of the top N neurons and of N matched random ones, vs N."""
    input:
        ablation=ablation_table("{method}"),
    output:
        report(
            figure_path("{method}", "ablation_budget"),
            caption="../report/ablation_budget.rst",
            category="Ablation",
            subcategory=selection_label,
            labels={
                "figure": "Ablation: delta NLL by neuron budget",
                "method": "{method}",
            },
        ),
        vectors=vector_files(figure_path("{method}", "ablation_budget")),
    log:
        f"{LOGS}/figures/{{method}}/ablation_budget.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="budget",
    script:
        "../scripts/plot_ablation.py"


rule figure_ablation_specificity:
    """Own-language delta NLL against the other languages' and the random controls', per method."""
    input:
        ablation=[ablation_table(m) for m in SCORING_METHODS],
    output:
        report(
            f"{RESULTS}/figures/ablation_specificity.png",
            caption="../report/ablation_specificity.rst",
            category="Ablation",
            labels={"figure": "Ablation specificity: the methods compared"},
        ),
        vectors=vector_files(f"{RESULTS}/figures/ablation_specificity.png"),
    log:
        f"{LOGS}/figures/ablation_specificity.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="specificity",
    script:
        "../scripts/plot_ablation.py"
