"""Rule translation_scores: chrF++ and BLEU (sacrebleu) of every direction's hypotheses, ΔchrF++'s paired
bootstrap interval, and every output's language (heliport)."""

import sys
from typing import TYPE_CHECKING

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task, task_ref  # noqa: E402

if TYPE_CHECKING:  # go to definition; the worker imports it (torch, pandas: seconds a job saves)
    from neurospec.evaluate.translation_quality import score_to_file
else:
    score_to_file = task_ref("neurospec.evaluate.translation_quality:score_to_file")

run_task(score_to_file, log=snakemake.log[0], base_paths=list(snakemake.input.base),
         ablated_paths=list(snakemake.input.ablated), out_path=snakemake.output.scores,
         lid_path=snakemake.output.lid, options=dict(snakemake.params.options))
