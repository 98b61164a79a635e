"""Rule collect_activations: count activations of one pair (or one shard of it) on the GPU."""

from neurospec.collect import collect_to_file
from neurospec.errors import one_line_errors

with one_line_errors(snakemake.log[0]):
    collect_to_file(snakemake.input.pairs, snakemake.output[0], shard=snakemake.params.shard,
                    **snakemake.params.collect)
