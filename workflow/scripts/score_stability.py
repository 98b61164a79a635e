"""Rule stability: one method's selection on each half of the sentences, compared."""

from neurospec.workers import run_task

run_task("neurospec.stability:run_stability", log=snakemake.log[0], paths=list(snakemake.input),
         out_path=snakemake.output[0], method=snakemake.params.method, column=snakemake.params.column,
         params=dict(snakemake.params.options))
