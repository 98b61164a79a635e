"""Rule pair_table: build one direction's pair table from the configured dataset."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_task  # noqa: E402

run_task("neurospec.pairs:write_pair_table", log=snakemake.log[0], pair=snakemake.wildcards.pair,
         dataset=snakemake.params.dataset, out_path=snakemake.output[0],
         holdout=snakemake.params.holdout)
