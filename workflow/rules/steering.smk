"""Evaluation, steering: do the selected neurons make the model speak their language?

Per scoring method one GPU job steers every group towards its language (its neurons set to, or
shifted by, alpha x the language's mean activation; matched random sets; no intervention; the
residual-stream difference of means) and generates greedily from held-out prompts; the outputs'
language (heliport), chrF++ against the language's reference and NLL under the unsteered model
make the result table. It reads the method's score table, so a scoring parameter reruns that
method's steering only; evaluate.steering.* reach it through params, so they rerun steering (and
its figures) only; never collection. Off unless evaluate.steering.enabled.
"""


rule steering:
    """Per group of one method: steered generations from held-out prompts, their language, chrF++, NLL."""
    input:
        scores=scores_table("{method}"),
        pairs=eval_language_tables(),
        counts=activation_tables(),
        model=model_inputs,
    output:
        table=steering_table("{method}"),
        outputs=steering_outputs_table("{method}"),
    log:
        f"{LOGS}/steering/{{method}}.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=model_params,
        steering=steering_params(),
        prompt=steering_prompt_params(),
        # "the rest" of a language for mode add and the residual vector, as scoring.rest says
        rest=SCORING["rest"],
        # which language a pair group's neurons belong to (its source's, or its target's for "target")
        token_scope=config["collect"]["token_scope"],
    script:
        "../scripts/steer.py"


rule figure_steering:
    """Per method: success by group x alpha against the controls and the residual baseline; success vs chrF++."""
    input:
        steering=steering_table("{method}"),
    output:
        report(
            figure_path("{method}", "{figure}"),
            caption="../report/{figure}.rst",
            category="Steering",
            subcategory="{method}",
        ),
        vectors=vector_files(figure_path("{method}", "{figure}")),
    log:
        f"{LOGS}/figures/{{method}}/{{figure}}.log",
    wildcard_constraints:
        figure="|".join(STEERING_FIGURES),
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
    script:
        "../scripts/plot_steering.py"


rule figure_steering_methods:
    """Every method at its best alpha: success with its CI, random controls, residual baseline."""
    input:
        steering=[steering_table(m) for m in SCORING_METHODS],
    output:
        report(
            f"{RESULTS}/figures/steering_methods.png",
            caption="../report/steering_methods.rst",
            category="Steering",
        ),
        vectors=vector_files(f"{RESULTS}/figures/steering_methods.png"),
    log:
        f"{LOGS}/figures/steering_methods.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        formats=figure_formats(),
        figure="steering_methods",
    script:
        "../scripts/plot_steering.py"
