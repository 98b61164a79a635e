"""Rule pair_table: build one direction's pair table from EC40 or the demo corpus."""

from neurospec.errors import one_line_errors
from neurospec.pairs import write_pair_table

with one_line_errors(snakemake.log[0]):
    write_pair_table(snakemake.wildcards.pair, snakemake.params.dataset, snakemake.output[0])
