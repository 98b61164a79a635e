"""Rule merge_shards: sum a pair's shard tables into its count table."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.tables import merge_shard_files
else:
    merge_shard_files = task_ref("neurospec.tables:merge_shard_files")

run_task(merge_shard_files, log=snakemake.log[0], paths=list(snakemake.input),
         out_path=snakemake.output[0])
