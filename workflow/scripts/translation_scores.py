"""Rule translation_scores: chrF++ and BLEU (sacrebleu) of every direction's hypotheses, ΔchrF++'s paired
bootstrap interval, and every output's language (heliport)."""

import sys

sys.path.insert(0, snakemake.scriptdir)  # this checkout's neurospec, ahead of an installed one
from neurospec.run.workers import run_task  # noqa: E402

run_task("neurospec.evaluate.translation_quality:score_to_file", log=snakemake.log[0], base_paths=list(snakemake.input.base),
         ablated_paths=list(snakemake.input.ablated), out_path=snakemake.output.scores,
         lid_path=snakemake.output.lid, options=dict(snakemake.params.options))
