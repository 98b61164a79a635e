"""Rule browser_contexts: the selected neurons' top activating contexts (GPU, through the model worker)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_model_task  # noqa: E402

run_model_task("neurospec.browser.contexts:contexts_to_file", model=snakemake.params.model, log=snakemake.log[0],
               scores_paths=list(snakemake.input.scores), pair_paths=list(snakemake.input.pairs),
               out_path=snakemake.output[0], **snakemake.params.browser, **snakemake.params.collect)
