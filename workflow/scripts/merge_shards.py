"""Rule merge_shards: sum a pair's shard tables into its count table."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.tables:merge_shard_files", log=snakemake.log[0], paths=list(snakemake.input),
         out_path=snakemake.output[0])
