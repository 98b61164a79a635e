"""Steering: switch a language's neurons on (or add a residual-stream vector) and measure whether
the model starts producing that language.  See docs/steering.md.

Modules: ``residual`` (residual-stream sums collected beside the counts, the residual vector),
``vectors`` (the interventions of each condition: neuron values, matched random controls),
``prompts`` (held-out continuation and translation prompts, references by sentence),
``generate`` (steered greedy generation, NLL under the unsteered model), ``measures`` (language
identification, bootstrap CIs, chrF++, the result table), ``io`` (the rule's task), ``figures``.
"""
