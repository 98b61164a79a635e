"""Rules figure_*: draw one figure from score, IoU or activation tables."""

from neurospec.workers import run_task

run_task("neurospec.figures:draw", log=snakemake.log[0], figure=snakemake.params.figure,
         output=snakemake.output[0], **dict(snakemake.input.items()))
