"""Rule figure_method: draw the four figures of one method's selection."""

from neurospec.workers import run_task

run_task("neurospec.figures:draw_many", log=snakemake.log[0], outputs=dict(snakemake.output.items()),
         scores=snakemake.input.scores, iou=snakemake.input.iou, token_scope=snakemake.params.token_scope)
