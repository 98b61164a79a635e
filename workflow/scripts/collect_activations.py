"""Rule collect_activations: count activations of one pair (or one shard of it) with the model."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_model_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.collect.collect import collect_to_file
else:
    collect_to_file = task_ref("neurospec.collect.collect:collect_to_file")

run_model_task(collect_to_file, model=snakemake.params.model, log=snakemake.log[0],
               pairs_path=snakemake.input.pairs, out_path=snakemake.output[0], shard=snakemake.params.shard,
               **{k: v for k, v in snakemake.params.collect.items() if k != "languages"})  # languages: names, via the environment
