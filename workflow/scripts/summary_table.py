"""Rule summary_table: one of the run's main tables (neurospec.summary.tables) as CSV and HTML."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (pandas: seconds a job saves)
    from neurospec.summary.tables import write_table
else:
    write_table = task_ref("neurospec.summary.tables:write_table")

tables = {kind: [files] if isinstance(files, str) else list(files) for kind, files in snakemake.input.items()}
run_task(write_table, log=snakemake.log[0], name=snakemake.wildcards.table, csv=snakemake.output.csv,
         html_path=snakemake.output.html, inputs=tables, methods=snakemake.params.methods)
