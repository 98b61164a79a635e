"""neurospec: which MLP neurons of a multilingual LLM specialize in which language or direction.

dataset -> pair tables -> per-pair activation counts (GPU) -> specialization scores -> figures.
Run the demo with `snakemake --cores 1 --resources gpu=1`; see README.md.
"""

from snakemake.utils import min_version

min_version("9.0")


# The demo config only when no --configfile is given: a --configfile is complete on its own (its
# missing keys take the schema's defaults), never merged over the demo's values.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/scoring.smk"
include: "workflow/rules/stability.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/translation.smk"
include: "workflow/rules/steering.smk"


onstart:
    check_writable()
    start_early()


onsuccess:
    end_run()


onerror:
    end_run()


rule all:
    default_target: True
    # every pair's activation table, every method's scores and figures, the ablation and the
    # translation quality of the evaluation stage, and steering (when enabled)
    input:
        activation_tables(),
        scoring_targets(),
        figure_targets(),
        translation_targets(),
        ablation_targets(),
        steering_targets(),
