"""Rule figure_ablation: every method's ablation heatmap and the specificity figure, in one job."""

from neurospec.workers import run_task

run_task("neurospec.ablation_figures:draw_all", log=snakemake.log[0], tables=list(snakemake.input.tables),
         heatmaps=list(snakemake.output.heatmaps), specificity_figure=snakemake.output.specificity)
