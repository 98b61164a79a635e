"""Rules score_*: one specialization method on all activation tables."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_task  # noqa: E402

run_task("neurospec.scoring:run_scoring", log=snakemake.log[0], paths=list(snakemake.input),
         scores_path=snakemake.output.scores, iou_path=snakemake.output.iou, method=snakemake.params.method,
         column=snakemake.params.column, params=dict(snakemake.params.options),
         variant=snakemake.params.variant)
