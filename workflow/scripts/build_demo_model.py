"""Rule build_demo_model: the tiny seeded Cohere model and its tokenizer."""

from neurospec.workers import run_task

run_task("neurospec.demo:build_model", log=snakemake.log[0], uses_torch=True, out_dir=snakemake.output[0],
         **snakemake.params.shapes)
