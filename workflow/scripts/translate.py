"""Rule translate: greedy translation of one direction's held-out sentences with the model."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_model_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.evaluate.translation import translate_to_file
else:
    translate_to_file = task_ref("neurospec.evaluate.translation:translate_to_file")

run_model_task(translate_to_file, model=snakemake.params.model, log=snakemake.log[0],
               pairs_path=snakemake.input.pairs, out_path=snakemake.output[0], **{k: v for k, v in snakemake.params.translate.items() if k != "languages"})
