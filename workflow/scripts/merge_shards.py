"""Rule merge_shards: sum a pair's shard tables into its count table."""

from neurospec.workers import run_task

run_task("neurospec.tables:merge_shard_files", log=snakemake.log[0], paths=list(snakemake.input),
         out_path=snakemake.output[0])
