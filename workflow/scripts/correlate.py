"""Rule correlation: chrF++ per direction against specialization measures (Spearman, bootstrap)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.evaluate.correlation:correlate_to_file", log=snakemake.log[0], translation=snakemake.input.translation,
         scores=list(snakemake.input.scores), iou=list(snakemake.input.iou), out_path=snakemake.output.table,
         measures_path=snakemake.output.measures, **snakemake.params.correlation)
