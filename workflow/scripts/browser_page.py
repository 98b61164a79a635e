"""Rule browser_page: the neuron browser's static index.html."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it
    from neurospec.browser.page import write_page
else:
    write_page = task_ref("neurospec.browser.page:write_page")

run_task(write_page, log=snakemake.log[0], contexts_path=snakemake.input.contexts,
         scores_paths=list(snakemake.input.scores), count_paths=list(snakemake.input.counts),
         out_path=snakemake.output[0], column=snakemake.params.column, run=dict(snakemake.params.run))
