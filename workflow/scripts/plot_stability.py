"""Rule figure_stability: draw a method's split-half stability figure from its stability table."""

from neurospec.workers import run_task

run_task("neurospec.stability:draw_stability", log=snakemake.log[0], stability=snakemake.input.stability,
         output=snakemake.output[0])
