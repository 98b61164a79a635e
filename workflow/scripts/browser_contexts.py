"""Rule browser_contexts: the selected neurons' top activating contexts (GPU, through the model worker)."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_model_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it
    from neurospec.browser.contexts import contexts_to_file
else:
    contexts_to_file = task_ref("neurospec.browser.contexts:contexts_to_file")

run_model_task(contexts_to_file, model=snakemake.params.model, log=snakemake.log[0],
               scores_paths=list(snakemake.input.scores), pair_paths=list(snakemake.input.pairs),
               out_path=snakemake.output[0], **snakemake.params.browser, **snakemake.params.collect)
