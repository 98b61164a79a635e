"""Rules figure_*: draw one figure from score, IoU or activation tables."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.plots.figures:draw", log=snakemake.log[0], figure=snakemake.params.figure,
         output=snakemake.output[0], **dict(snakemake.input.items()))
