"""Rules figure_steering*: draw a steering figure from the steering tables."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.steering.figures import draw
else:
    draw = task_ref("neurospec.steering.figures:draw")

paths = snakemake.input.steering
paths = [paths] if isinstance(paths, str) else list(paths)  # one method's table, or every method's
run_task(draw, log=snakemake.log[0], figure=snakemake.params.get("figure") or snakemake.wildcards.figure,
         output=snakemake.output[0], paths=paths, formats=snakemake.params.formats)
