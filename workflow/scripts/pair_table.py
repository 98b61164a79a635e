"""Rule pair_table: build one direction's pair table from the configured dataset."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.data.pairs import write_pair_table
else:
    write_pair_table = task_ref("neurospec.data.pairs:write_pair_table")

run_task(write_pair_table, log=snakemake.log[0], pair=snakemake.wildcards.pair,
         dataset=snakemake.params.dataset, out_path=snakemake.output[0],
         holdout=snakemake.params.holdout)
