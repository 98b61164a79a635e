"""Rule pair_table: build one direction's pair table from the configured dataset."""

from neurospec.workers import run_task

run_task("neurospec.pairs:write_pair_table", log=snakemake.log[0], pair=snakemake.wildcards.pair,
         dataset=snakemake.params.dataset, out_path=snakemake.output[0])
