"""Packing tokenized sentences into batches under a token budget (shared by the model stages).

Sentences are sorted by length (longest first) and packed while rows x longest row stays under the
budget and the batch's share of real tokens stays >= ``min_fill``, so padding stays small.  Rows
are right-padded; with causal attention the real tokens of a row never see its padding, so no
attention mask is needed.

Collection and ablation both batch with it (``collect`` re-exports ``make_batches`` and
``auto_token_budget``); a base module, so that no stage imports another.
"""

from __future__ import annotations

from typing import Sequence

CPU_TOKEN_BUDGET = 4096
MAX_TOKEN_BUDGET = 65536


def make_batches(lengths: Sequence[int], token_budget: int, min_fill: float = 0.95) -> list[list[int]]:
    """Sort by length (longest first) and pack under ``token_budget`` (rows x longest row).

    A batch is also closed when adding the next (shorter) prompt would bring its share of real
    tokens under ``min_fill``, so that padding stays under 1 - min_fill in every batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current:
            width = lengths[current[0]]
            rows = len(current) + 1
            if width * rows > token_budget or real + lengths[i] < min_fill * width * rows:
                batches.append(current)
                current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


def auto_token_budget(loaded, max_length: int, reserve_bytes: int = 0) -> int:
    """Tokens per batch: from free CUDA memory (about half of it, less ``reserve_bytes``, for
    activations), else a CPU default.  ``loaded``: a ``models.LoadedModel``."""
    import torch

    if loaded.device.type != "cuda":
        return max(CPU_TOKEN_BUDGET, max_length)
    free, _ = torch.cuda.mem_get_info(loaded.device)
    cfg = loaded.model.config
    hidden = getattr(cfg, "hidden_size", 4096)
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    bytes_per = torch.finfo(loaded.dtype).bits // 8
    # live per token at the MLP: x, gate, up, h, the output, plus attention's q/k/v/out; x2 headroom
    per_token = (6 * hidden + 4 * inter) * bytes_per * 2
    budget = int(0.5 * max(free - reserve_bytes, 0) / per_token)
    return int(min(MAX_TOKEN_BUDGET, max(budget, max_length)))
