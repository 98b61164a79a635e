"""Rule build_gemma3_model: Gemma 3 270M from its PyPI GGUF package, as a local safetensors directory."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.model.gemma3 import build_gemma3_model
else:
    build_gemma3_model = task_ref("neurospec.model.gemma3:build_gemma3_model")

run_task(build_gemma3_model, log=snakemake.log[0], out_dir=snakemake.output[0])
