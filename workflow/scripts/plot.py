"""Rules figure_*: draw one figure from score, IoU or activation tables."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.plots.figures import draw
else:
    draw = task_ref("neurospec.plots.figures:draw")

run_task(draw, log=snakemake.log[0], figure=snakemake.params.figure, formats=snakemake.params.formats,
         output=snakemake.output[0], **dict(snakemake.input.items()))
