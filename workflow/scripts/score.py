"""Rules score_*: one specialization method on all activation tables."""

from neurospec.workers import run_task

run_task("neurospec.scoring:run_scoring", log=snakemake.log[0], paths=list(snakemake.input),
         scores_path=snakemake.output.scores, iou_path=snakemake.output.iou, method=snakemake.params.method,
         column=snakemake.params.column, params=dict(snakemake.params.options))
