"""Rules figure_translation_quality and figure_correlation: draw one figure from their tables."""

from neurospec.workers import run_task

run_task(snakemake.params.task, log=snakemake.log[0], output=snakemake.output[0], demo=snakemake.params.demo,
         **dict(snakemake.input.items()))
