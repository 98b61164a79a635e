"""Rules figure_translation_quality and figure_correlation: draw one figure from their tables."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task(snakemake.params.task, log=snakemake.log[0], output=snakemake.output[0], demo=snakemake.params.demo,
         **dict(snakemake.input.items()))
