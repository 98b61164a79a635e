"""Rule browser_page: the neuron browser's static index.html."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_task  # noqa: E402

run_task("neurospec.browser.page:write_page", log=snakemake.log[0], contexts_path=snakemake.input.contexts,
         scores_paths=list(snakemake.input.scores), count_paths=list(snakemake.input.counts),
         out_path=snakemake.output[0], column=snakemake.params.column, run=dict(snakemake.params.run))
