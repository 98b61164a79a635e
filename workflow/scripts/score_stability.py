"""Rule stability: one method's selection on each half of the sentences, compared; table and figure."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.score.stability import run_stability
else:
    run_stability = task_ref("neurospec.score.stability:run_stability")

run_task(run_stability, log=snakemake.log[0], paths=list(snakemake.input),
         out_path=snakemake.output.table, figure_path=snakemake.output.figure, method=snakemake.params.method,
         column=snakemake.params.column, params=dict(snakemake.params.options),
         variant=snakemake.params.variant, formats=snakemake.params.formats)
