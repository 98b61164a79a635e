"""Rule correlation: chrF++ per direction against specialization measures (Spearman, bootstrap)."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.evaluate.correlation import correlate_to_file
else:
    correlate_to_file = task_ref("neurospec.evaluate.correlation:correlate_to_file")

run_task(correlate_to_file, log=snakemake.log[0], translation=snakemake.input.translation,
         scores=list(snakemake.input.scores), iou=list(snakemake.input.iou), out_path=snakemake.output.table,
         measures_path=snakemake.output.measures, **snakemake.params.correlation)
