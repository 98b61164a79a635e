"""Rule stability: one method's selection on each half of the sentences, compared; table and figure."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.workers import run_task  # noqa: E402

run_task("neurospec.stability:run_stability", log=snakemake.log[0], paths=list(snakemake.input),
         out_path=snakemake.output.table, figure_path=snakemake.output.figure, method=snakemake.params.method,
         column=snakemake.params.column, params=dict(snakemake.params.options),
         variant=snakemake.params.variant)
