"""Rules figure_translation_quality and figure_correlation: draw one figure from their tables."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports them (pandas, matplotlib: seconds a job saves)
    from neurospec.plots.correlation_figure import draw_correlation
    from neurospec.evaluate.translation_quality import draw_quality
else:
    draw_correlation = task_ref("neurospec.plots.correlation_figure:draw_correlation")
    draw_quality = task_ref("neurospec.evaluate.translation_quality:draw_quality")

FIGURES = {"correlation": draw_correlation, "quality": draw_quality}

run_task(FIGURES[snakemake.params.figure], log=snakemake.log[0], output=snakemake.output[0],
         formats=snakemake.params.formats, demo=snakemake.params.demo, **dict(snakemake.input.items()))
