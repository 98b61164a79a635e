"""Rule collect_activations: count activations of one pair (or one shard of it) with the model."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_model_task  # noqa: E402

run_model_task("neurospec.collect:collect_to_file", model=snakemake.params.model, log=snakemake.log[0],
               pairs_path=snakemake.input.pairs, out_path=snakemake.output[0], shard=snakemake.params.shard,
               **{k: v for k, v in snakemake.params.collect.items() if k != "languages"})  # languages: names, via the environment
