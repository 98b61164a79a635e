"""Rule figure_method: draw the four figures of one method's selection."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.plots.figures import draw_many
else:
    draw_many = task_ref("neurospec.plots.figures:draw_many")

# (outputs: the four PNGs by figure name; "vectors": their other formats, which draw_many saves beside them)
figures = {name: path for name, path in snakemake.output.items() if name != "vectors"}
run_task(draw_many, log=snakemake.log[0], outputs=figures, formats=snakemake.params.formats,
         scores=snakemake.input.scores, iou=snakemake.input.iou, token_scope=snakemake.params.token_scope)
