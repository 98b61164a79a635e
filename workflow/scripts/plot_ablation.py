"""Rules figure_ablation*: draw an ablation figure from the ablation tables."""

from neurospec.workers import run_task

run_task("neurospec.ablation_figures:draw", log=snakemake.log[0], figure=snakemake.params.figure,
         output=snakemake.output[0], paths=list(snakemake.input))
