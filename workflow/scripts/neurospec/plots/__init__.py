"""Figures drawn from the stages' tables: scores, IoU and activations (``figures``), ablation
(``ablation_figures``)."""
