"""Figures drawn from the stages' tables: scores and activations (``figures``, the rule's ``draw``),
IoU (``iou_figures``), clustering (``clustering_figure``), the axes they share (``group_axes``),
ablation (``ablation_figures``), correlation (``correlation_figure``); one style (``style``)."""

import matplotlib

matplotlib.use("Agg")  # the one place: every figure is drawn without a display (jobs, workers)
