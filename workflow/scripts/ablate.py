"""Rule ablation: ablate one method's selected neurons, NLL on every language's held-out sentences."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_model_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.evaluate.ablation import ablate_to_file
else:
    ablate_to_file = task_ref("neurospec.evaluate.ablation:ablate_to_file")

run_model_task(ablate_to_file, model=snakemake.params.model, log=snakemake.log[0],
               scores_path=snakemake.input.scores, pair_tables=list(snakemake.input.pairs),
               count_tables=list(snakemake.input.counts), out_path=snakemake.output[0],
               token_scope=snakemake.params.token_scope, rest=snakemake.params.rest, **snakemake.params.ablation)
