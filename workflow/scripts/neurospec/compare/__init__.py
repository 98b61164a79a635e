"""The comparison stage: several models' selections side by side (``compare``): selected neurons
per layer on relative depth, the cross-model correlation of the language-similarity (IoU) matrices
with a Mantel permutation test, a null model's numbers beside its real model's, and the ablation
specificity per model."""
