"""Rule build_gemma3_model: Gemma 3 270M from its PyPI GGUF package, as a local safetensors directory."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.model.gemma3:build_gemma3_model", log=snakemake.log[0], out_dir=snakemake.output[0])
