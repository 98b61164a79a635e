"""Rule compare: one scoring method across the compared models; tables and figures."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it
    from neurospec.compare.compare import run_compare
else:
    run_compare = task_ref("neurospec.compare.compare:run_compare")

run_task(run_compare, log=snakemake.log[0], models=list(snakemake.params.models),
         scores=list(snakemake.input.scores), stability=list(snakemake.input.stability),
         ablation=list(snakemake.input.ablation), out_prefix=snakemake.params.prefix,
         depth_figure=snakemake.output.depth_figure, summary_figure=snakemake.output.summary_figure,
         method=snakemake.wildcards.method, options=dict(snakemake.params.options),
         formats=snakemake.params.formats)
