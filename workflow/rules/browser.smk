"""The neuron browser: each selected neuron's top activating contexts, and a static HTML page.

A second pass after scoring (a GPU job through the run's model worker) over the first
browser.max_sentences sentences of each pair table of the selection split keeps, for every neuron
that any method selected, its browser.top_k largest activations on the tokens collection counts
(neurospec/browser/contexts.py); the page inlines them with the count tables' per-language
activation probabilities and the selections (neurospec/browser/page.py).
"""


rule browser_contexts:
    """Top activating contexts of every selected neuron (of every method) on the selection split."""
    input:
        scores=[scores_table(m) for m in SCORING_METHODS],
        pairs=[pair_table(p) for p in PAIRS],
        model=model_inputs,
    output:
        BROWSER_CONTEXTS,
    log:
        f"{LOGS}/browser/contexts.log",
    conda:
        "../../envs/torch.yaml"
    resources:
        gpu=1,
    params:
        model=model_params,
        browser=browser_params(),
        # the tokens collection counts: the same prompt, scope and length
        collect={
            k: config["collect"][k]
            for k in ("max_length", "prompt_template", "token_scope")
        },
    script:
        "../scripts/browser_contexts.py"


rule browser_page:
    """The static page (index.html, the data inlined): per neuron its layer, methods, per-language
    activation probability and top contexts, searchable by layer, language and method.
    """
    input:
        contexts=BROWSER_CONTEXTS,
        scores=[scores_table(m) for m in SCORING_METHODS],
        counts=activation_tables(),
    output:
        BROWSER_PAGE,
    log:
        f"{LOGS}/browser/page.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        column=SCORING["column"],
        run=lambda wildcards: {
            "dataset": DATASET,
            "model": wildcards.model,
            "split": SPLIT,
        },
    script:
        "../scripts/browser_page.py"
