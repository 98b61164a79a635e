"""Rules figure_steering*: draw a steering figure from the steering tables."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_task  # noqa: E402

paths = snakemake.input.steering
paths = [paths] if isinstance(paths, str) else list(paths)  # one method's table, or every method's
run_task("neurospec.steering.figures:draw", log=snakemake.log[0],
         figure=snakemake.params.get("figure") or snakemake.wildcards.figure,
         output=snakemake.output[0], paths=paths)
