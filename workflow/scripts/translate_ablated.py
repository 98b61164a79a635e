"""Rule translate_ablated: every direction again, with one method's neurons of the target ablated."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_model_task  # noqa: E402

run_model_task("neurospec.translation:translate_ablated_to_file", model=snakemake.params.model,
               log=snakemake.log[0], pairs_paths=list(snakemake.input.pairs), scores_path=snakemake.input.scores,
               activation_paths=list(snakemake.input.activations), out_path=snakemake.output[0],
               method=snakemake.wildcards.method, mode=snakemake.params.mode,
               token_scope=snakemake.params.token_scope, rest=snakemake.params.rest or "pooled",
               **{k: v for k, v in snakemake.params.translate.items() if k != "languages"})
