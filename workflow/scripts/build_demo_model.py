"""Rule build_demo_model: the tiny seeded Cohere model and its tokenizer."""

from neurospec import demo, models
from neurospec.errors import one_line_errors

with one_line_errors(snakemake.log[0]):
    models.build_demo_model(snakemake.output[0], demo.corpus_texts(), **snakemake.params.shapes)
