"""Rule translate: greedy translation of one direction's held-out sentences with the model."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_model_task  # noqa: E402

run_model_task("neurospec.translation:translate_to_file", model=snakemake.params.model, log=snakemake.log[0],
               pairs_path=snakemake.input.pairs, out_path=snakemake.output[0], **{k: v for k, v in snakemake.params.translate.items() if k != "languages"})
