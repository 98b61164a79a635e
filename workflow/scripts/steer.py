"""Rule steering: steer one method's groups, generate from held-out prompts, measure the outputs."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_model_task  # noqa: E402

run_model_task("neurospec.steering.io:steer_to_file", model=snakemake.params.model, log=snakemake.log[0],
               scores_path=snakemake.input.scores, pair_tables=list(snakemake.input.pairs),
               count_tables=list(snakemake.input.counts), out_path=snakemake.output.table,
               outputs_path=snakemake.output.outputs, token_scope=snakemake.params.token_scope,
               rest=snakemake.params.rest, **snakemake.params.prompt, **snakemake.params.steering)
