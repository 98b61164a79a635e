"""Rules figure_*: draw one figure from score, IoU or activation tables."""

from neurospec.errors import one_line_errors
from neurospec.figures import draw

with one_line_errors(snakemake.log[0]):
    draw(snakemake.params.figure, snakemake.output[0], **{k: v for k, v in snakemake.input.items()})
