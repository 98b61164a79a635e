"""Rule steering: steer one method's groups, generate from held-out prompts, measure the outputs."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_model_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.steering.io import steer_to_file
else:
    steer_to_file = task_ref("neurospec.steering.io:steer_to_file")

inputs, outputs, params = snakemake.input, snakemake.output, snakemake.params
files = {"scores_path": inputs.scores, "pair_tables": list(inputs.pairs), "count_tables": list(inputs.counts),
         "out_path": outputs.table, "outputs_path": outputs.outputs}
settings = {**params.prompt, **params.steering, "token_scope": params.token_scope, "rest": params.rest}
run_model_task(steer_to_file, model=params.model, log=snakemake.log[0], **files, **settings)
