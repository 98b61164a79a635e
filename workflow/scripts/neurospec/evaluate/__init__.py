"""The evaluation stage on held-out sentences: ablation (``ablation``), greedy translation with and
without the selected neurons (``translation``), its quality (``translation_quality``) and the correlation
of quality with specialization (``correlation``)."""
