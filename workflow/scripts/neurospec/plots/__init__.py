"""Figures drawn from the stages' tables: scores, IoU and activations (``figures``), ablation
(``ablation_figures``)."""

import matplotlib

matplotlib.use("Agg")  # the one place: every figure is drawn without a display (jobs, workers)
