"""Translation quality on held-out sentences, with and without the selected neurons, and its
correlation with specialization.

Generation settings reach the rules through params (translate_params), so a change of
evaluate.translate reruns translation and what depends on it, never collection; the ablated
translations of a method depend on that method's score table only.
"""


rule translate:
    """Greedy translation of one direction's held-out sentences (the GPU rule)."""
    input:
        pairs=eval_pair_table("{pair}"),
        model=model_inputs,
    output:
        translation_table("{pair}"),
    log:
        f"{LOGS}/translation/{{pair}}.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=model_params,
        translate=translate_params(),
    script:
        "../scripts/translate.py"


rule translate_ablated:
    """Every direction again with the target language's neurons of one method ablated (GPU)."""
    input:
        pairs=[eval_pair_table(p) for p in PAIRS],
        scores=scores_table("{method}"),
        activations=ablation_activation_tables,
        model=model_inputs,
    output:
        ablated_translation_table("{method}"),
    log:
        f"{LOGS}/translation/ablated/{{method}}.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=model_params,
        translate=translate_params(),
        mode=TRANSLATE["ablation_mode"],
        # the tokens the ablated neurons were selected on (target: the target language as produced)
        token_scope=config["collect"]["token_scope"],
        # mode mean: the other languages' mean, as scoring.rest says (mode zero does not read it)
        rest=selection_rest if TRANSLATE["ablation_mode"] == "mean" else None,
    script:
        "../scripts/translate_ablated.py"


rule translation_scores:
    """chrF++ and BLEU (sacrebleu) per direction, their change under ablation with a paired bootstrap
    interval, and every output's language (heliport) with the off-target rate per direction.
    """
    input:
        base=[translation_table(p) for p in PAIRS],
        ablated=ablated_translation_tables(),
    output:
        scores=TRANSLATION_SCORES,
        lid=f"{TRANSLATION}/lid.parquet",
    log:
        f"{LOGS}/translation/scores.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        options=dict(sorted(config["evaluate"]["translation_scores"].items())),
    script:
        "../scripts/translation_scores.py"


rule correlation:
    """chrF++ per direction against specialization measures: Spearman with a bootstrap interval."""
    input:
        translation=TRANSLATION_SCORES,
        scores=[scores_table(m) for m in SCORING_METHODS],
        iou=[iou_table(m) for m in SCORING_METHODS],
    output:
        table=CORRELATION_TABLE,
        measures=MEASURES_TABLE,
    log:
        f"{LOGS}/translation/correlation.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        correlation=correlation_params(),
    script:
        "../scripts/correlate.py"


rule figure_translation_quality:
    """chrF++ per direction, and its change with each method's neurons ablated."""
    input:
        scores=TRANSLATION_SCORES,
    output:
        report(
            translation_figure("quality"),
            caption="../report/translation_quality.rst",
            category="Translation quality",
            labels={"figure": "Translation quality (chrF++) per direction"},
        ),
        vectors=vector_files(translation_figure("quality")),
    log:
        f"{LOGS}/figures/translation/quality.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="quality",
        demo=is_demo_model,
    script:
        "../scripts/plot_translation.py"


rule figure_correlation:
    """A labelled scatter of chrF++ against each specialization measure."""
    input:
        measures=MEASURES_TABLE,
        correlation=CORRELATION_TABLE,
    output:
        report(
            translation_figure("correlation"),
            caption="../report/correlation.rst",
            category="Translation quality",
            labels={"figure": "chrF++ against specialization"},
        ),
        vectors=vector_files(translation_figure("correlation")),
    log:
        f"{LOGS}/figures/translation/correlation.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="correlation",
        demo=is_demo_model,
    script:
        "../scripts/plot_translation.py"
