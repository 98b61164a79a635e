"""Greedy, batched generation with the KV cache: left-padded batches of similar prompt length, position ids
from 0 on every row's first real token, a finished row leaving the batch; a row stops at the end of its
first line of text, at an end-of-sequence token (``StopTokens``, ``eos_token_ids``) or at its cap on new
tokens (``STOPS`` names the three). In float32 a padded batch gives the same tokens as one sentence at a
time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import torch

from ..errors import NeurospecError
from ..progress import Progress

log = logging.getLogger("neurospec")


STOPS = ("eos", "newline", "cap")


class StopTokens:
    """What each token means for stopping: end of sequence, line break, text (decoded on first use).

    A token ends its row when it is an end-of-sequence token, or when it holds a line break and the
    row already has text (earlier, or in the token before its line break).  Tokens are decoded one at
    a time without special tokens, as the hypothesis is decoded, and cached.
    """

    def __init__(self, tokenizer, eos_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.eos = {int(i) for i in eos_ids}
        self._cache: dict[int, tuple[bool, bool, bool]] = {}

    def flags(self, token: int) -> tuple[bool, bool, bool]:
        """(has a line break, has text before its first line break, has text)."""
        got = self._cache.get(token)
        if got is None:
            text = self.tokenizer.decode([token], skip_special_tokens=True) if token < len(self.tokenizer) else ""
            got = ("\n" in text, bool(text.split("\n", 1)[0].strip()), bool(text.strip()))
            self._cache[token] = got
        return got


def eos_token_ids(lm, tokenizer) -> list[int]:
    """End-of-sequence ids: the tokenizer's and those of the model's config and generation config."""
    ids: set[int] = set()
    sources = [getattr(tokenizer, "eos_token_id", None)]
    for cfg in (getattr(lm, "config", None), getattr(lm, "generation_config", None)):
        sources.append(getattr(cfg, "eos_token_id", None) if cfg is not None else None)
    for value in sources:
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return sorted(ids)


def extract_hypothesis(text: str) -> str:
    """The first line of text of a generation (leading whitespace and blank lines skipped), stripped."""
    return text.lstrip().split("\n", 1)[0].strip()


@dataclass
class Generated:
    tokens: list[int] = field(default_factory=list)  # new tokens, an end-of-sequence token excluded
    stop: str = "cap"  # "eos" | "newline" | "cap"


def _generate_batch(lm, prompts: Sequence[Sequence[int]], caps: Sequence[int], stops: StopTokens,
                    pad_id: int, device: torch.device) -> list[Generated]:
    """Greedy decoding of one left-padded batch with the KV cache; finished rows leave the batch."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)  # 0 at each row's first real token
    out = lm(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
    past = out.past_key_values
    next_position = position[:, -1:] + 1  # [rows, 1]
    results = [Generated() for _ in prompts]
    rows = list(range(len(prompts)))  # the prompts still in the batch, in batch order
    started = [False] * len(prompts)
    while True:
        chosen = out.logits[:, -1].argmax(-1)  # [rows]: greedy, ties to the lowest id
        keep = []
        for j, token in enumerate(chosen.tolist()):
            r = rows[j]
            if token in stops.eos:
                results[r].stop = "eos"
                continue
            results[r].tokens.append(token)
            newline, text_before, text = stops.flags(token)
            if newline and (started[r] or text_before):
                results[r].stop = "newline"
                continue
            started[r] = started[r] or text
            if len(results[r].tokens) >= caps[r]:
                results[r].stop = "cap"
                continue
            keep.append(j)
        if not keep:
            return results
        if len(keep) < len(rows):
            index = torch.as_tensor(keep, device=device)
            past.batch_select_indices(index)
            mask, chosen, next_position = mask[index], chosen[index], next_position[index]
            rows = [rows[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        out = lm(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position,
                 past_key_values=past, use_cache=True)
        next_position = next_position + 1


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first, ties by index), cut into batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def greedy_generate(lm, tokenizer, prompts: Sequence[Sequence[int]], caps: Sequence[int], *,
                    batch_size: int = 32, eos_ids: Sequence[int] | None = None,
                    device: torch.device | str | None = None, progress: Progress | None = None) -> list[Generated]:
    """Greedy generation of every prompt (token ids), batched by length; results in input order.
    ``progress`` (neurospec.progress) is told of every finished batch (its sentences).

    A batch that runs out of device memory is split in two and retried.
    """
    if batch_size < 1:
        raise NeurospecError(f"evaluate.translate.batch_size must be at least 1, got {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise NeurospecError("an empty prompt cannot be continued")
    device = torch.device(device) if device is not None else next(lm.parameters()).device
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    stops = StopTokens(tokenizer, eos_token_ids(lm, tokenizer) if eos_ids is None else eos_ids)
    results: list[Generated | None] = [None] * len(prompts)
    queue = length_batches([len(p) for p in prompts], batch_size)
    with torch.inference_mode():
        while queue:
            rows = queue.pop(0)
            try:
                batch = _generate_batch(lm, [prompts[i] for i in rows], [caps[i] for i in rows], stops,
                                        pad_id, device)
            except torch.OutOfMemoryError:
                if len(rows) == 1:
                    raise NeurospecError(f"out of device memory generating for a single prompt of "
                                         f"{len(prompts[rows[0]])} tokens") from None
                log.warning("out of device memory on a batch of %d prompts: splitting it", len(rows))
                torch.cuda.empty_cache()
                half = len(rows) // 2
                queue[:0] = [rows[:half], rows[half:]]
                continue
            for i, g in zip(rows, batch):
                results[i] = g
            if progress is not None:
                progress.update(len(rows))
    return results  # type: ignore[return-value]
