"""Rule translate_ablated: every direction again, with one method's neurons of the target ablated."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_model_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.evaluate.translation import translate_ablated_to_file
else:
    translate_ablated_to_file = task_ref("neurospec.evaluate.translation:translate_ablated_to_file")

run_model_task(translate_ablated_to_file, model=snakemake.params.model,
               log=snakemake.log[0], pairs_paths=list(snakemake.input.pairs), scores_path=snakemake.input.scores,
               activation_paths=list(snakemake.input.activations), out_path=snakemake.output[0],
               method=snakemake.wildcards.method, mode=snakemake.params.mode,
               token_scope=snakemake.params.token_scope, rest=snakemake.params.rest or "pooled",
               **{k: v for k, v in snakemake.params.translate.items() if k != "languages"})
