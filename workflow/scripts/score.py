"""Rules score_*: one specialization method on all activation tables."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.score.scoring import run_scoring
else:
    run_scoring = task_ref("neurospec.score.scoring:run_scoring")

run_task(run_scoring, log=snakemake.log[0], paths=list(snakemake.input),
         scores_path=snakemake.output.scores, iou_path=snakemake.output.iou, method=snakemake.params.method,
         column=snakemake.params.column, params=dict(snakemake.params.options),
         variant=snakemake.params.variant)
