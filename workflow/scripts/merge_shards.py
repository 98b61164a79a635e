"""Rule merge_shards: sum a pair's shard tables into its count table."""

from neurospec.tables import merge_shard_files
from neurospec.errors import one_line_errors

with one_line_errors(snakemake.log[0]):
    merge_shard_files(list(snakemake.input), snakemake.output[0])
