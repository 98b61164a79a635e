"""Rule figure_method: draw the four figures of one method's selection."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.plots.figures:draw_many", log=snakemake.log[0], outputs=dict(snakemake.output.items()),
         scores=snakemake.input.scores, iou=snakemake.input.iou, token_scope=snakemake.params.token_scope)
