"""Rules score_*: one specialization method on all activation tables."""

from neurospec.errors import one_line_errors
from neurospec.scoring import run_scoring

with one_line_errors(snakemake.log[0]):
    run_scoring(list(snakemake.input), snakemake.output.scores, snakemake.output.iou,
                snakemake.params.method, snakemake.params.column, dict(snakemake.params.options))
