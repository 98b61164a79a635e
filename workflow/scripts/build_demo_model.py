"""Rule build_demo_model: the tiny seeded Cohere model and its tokenizer."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.data.demo:build_model", log=snakemake.log[0], uses_torch=True, out_dir=snakemake.output[0],
         **snakemake.params.shapes)
