"""Rule build_demo_model: the tiny seeded Cohere model and its tokenizer."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.data.demo import build_model
else:
    build_model = task_ref("neurospec.data.demo:build_model")

run_task(build_model, log=snakemake.log[0], uses_torch=True, out_dir=snakemake.output[0],
         **snakemake.params.shapes)
