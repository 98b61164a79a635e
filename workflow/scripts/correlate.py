"""Rule correlation: chrF++ per direction against specialization measures (Spearman, bootstrap)."""

from neurospec.workers import run_task

run_task("neurospec.correlation:correlate_to_file", log=snakemake.log[0], translation=snakemake.input.translation,
         scores=list(snakemake.input.scores), iou=list(snakemake.input.iou), out_path=snakemake.output.table,
         measures_path=snakemake.output.measures, **snakemake.params.correlation)
