"""Collect's inputs: the prompts of a pair table encoded (the counted token span of each row, source or
target side, ``encode``, ``encode_target``), padded into batch tensors (``batch_tensors``), and the
recognition of CUDA allocation failures that a smaller batch may avoid (``is_out_of_memory``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import NeurospecError
from ..languages import TOKEN_SCOPES
from ..prompts import check_template, render


@dataclass
class Encoded:
    """Token ids of each prompt and which of its positions are counted."""

    input_ids: list[list[int]]
    counted: list[np.ndarray]  # bool per position
    n_truncated: int
    n_skipped: int  # empty or whitespace-only sources (not encoded)
    kept: list[int] | None = None  # index of each prompt's sentence in encode()'s input
    even: np.ndarray | None = None  # bool per prompt: in the even half (None: all in the odd half)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def _nonempty(text: Any) -> bool:
    return isinstance(text, str) and bool(text.strip())


def encode(tokenizer, src: Sequence[str], src_lang: Sequence[str], tgt_lang: Sequence[str], *,
           template: str, token_scope: str = "source", max_length: int = 512,
           tgt: Sequence[str] | None = None) -> Encoded:
    """Render prompts, tokenize them (special tokens included), truncate, and mark counted tokens.

    ``token_scope`` "target" needs ``tgt``, the reference translations: see ``encode_target``.
    """
    check_template(template)
    if token_scope not in TOKEN_SCOPES:
        raise NeurospecError(f"collect.token_scope {token_scope!r}: choose one of {', '.join(TOKEN_SCOPES)}")
    if token_scope == "target":
        return encode_target(tokenizer, src, src_lang, tgt_lang, tgt, template=template, max_length=max_length)
    keep = [i for i, s in enumerate(src) if _nonempty(s)]
    rendered = [render(template, src[i], src_lang[i], tgt_lang[i]) for i in keep]
    texts = [text for text, _ in rendered]
    need_offsets = token_scope == "source"
    if need_offsets and not getattr(tokenizer, "is_fast", False):
        raise NeurospecError("collect.token_scope 'source' needs a fast tokenizer (character offsets); "
                             "this model's tokenizer is slow: use token_scope 'all'")
    enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=need_offsets,
                    return_attention_mask=False) if texts else {"input_ids": []}
    input_ids, counted, n_truncated = [], [], 0
    for j, ids in enumerate(enc["input_ids"]):
        if len(ids) > max_length:
            n_truncated += 1
        ids = list(ids[:max_length])
        if need_offsets:
            start, end = rendered[j][1]
            offs = np.asarray(enc["offset_mapping"][j][: len(ids)], dtype=np.int64).reshape(-1, 2)
            mask = (offs[:, 0] < end) & (offs[:, 1] > start)
        else:
            mask = np.ones(len(ids), dtype=bool)
        input_ids.append(ids)
        counted.append(mask)
    return Encoded(input_ids, counted, n_truncated, len(src) - len(keep), kept=keep)


def encode_target(tokenizer, src: Sequence[str], src_lang: Sequence[str], tgt_lang: Sequence[str],
                  tgt: Sequence[str] | None, *, template: str, max_length: int = 512) -> Encoded:
    """token_scope "target": each prompt followed by its reference translation, counting the reference.

    The prompt is rendered and tokenized as for the other scopes (special tokens included: BOS); the
    reference is tokenized on its own (no special tokens) and its ids follow the prompt's, so that the
    counted positions are exactly the reference's tokens (no token straddles the boundary) and a
    model reads the prompt, then the translation as if it were producing it (teacher forcing, one
    forward pass).  Nothing follows the reference: no end-of-sequence token is appended (with causal
    attention it would not change the reference tokens' activations, and it is not the language's
    token).  An end-of-sequence token that the tokenizer itself appends to the prompt is dropped, so
    the reference follows the prompt's text.  Truncation is collection's rule: prompt + reference
    keep their first ``max_length`` tokens, so the prompt survives and the reference loses its end
    (such sentences are counted in ``n_truncated``); a prompt of ``max_length`` tokens or more leaves
    no reference token (and is cut itself), and that sentence has no firing rate.  Pairs whose source or reference is empty
    or whitespace-only are skipped (``n_skipped``).
    """
    if tgt is None:
        raise NeurospecError("collect.token_scope 'target' needs the pair table's reference translations "
                             "(column 'tgt')")
    keep = [i for i, (s, t) in enumerate(zip(src, tgt)) if _nonempty(s) and _nonempty(t)]
    texts = [render(template, src[i], src_lang[i], tgt_lang[i])[0] for i in keep]
    if not texts:
        return Encoded([], [], 0, len(src), kept=keep)
    prompts = tokenizer(texts, add_special_tokens=True, return_attention_mask=False)["input_ids"]
    refs = tokenizer([tgt[i] for i in keep], add_special_tokens=False, return_attention_mask=False)["input_ids"]
    eos = tokenizer.eos_token_id
    input_ids, counted, n_truncated = [], [], 0
    for prompt, ref in zip(prompts, refs):
        prompt = list(prompt)
        if eos is not None and len(prompt) > 1 and prompt[-1] == eos:
            prompt.pop()
        ids = prompt + list(ref)
        if len(ids) > max_length:
            n_truncated += 1
            ids = ids[:max_length]
        mask = np.zeros(len(ids), dtype=bool)
        mask[len(prompt):] = True
        input_ids.append(ids)
        counted.append(mask)
    return Encoded(input_ids, counted, n_truncated, len(src) - len(keep), kept=keep)


# Messages of CUDA allocation failures that arrive as a plain RuntimeError (cuBLAS/cuDNN handles and
# workspaces, kernels' own allocations) rather than as torch.OutOfMemoryError.
OOM_MESSAGES = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                "CUDNN_STATUS_ALLOC_FAILED", "HIP out of memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the device running out of memory, whichever way the allocation failure surfaced."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc) for m in OOM_MESSAGES)


def batch_tensors(enc: Encoded, rows: list[int], pad_id: int, device: torch.device):
    """Right-padded ids [batch, seq], counted positions [batch, seq] (bool), counted and processed tokens."""
    width = max(enc.lengths[i] for i in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for r, i in enumerate(rows):
        n = enc.lengths[i]
        ids[r, :n] = enc.input_ids[i]
        mask[r, :n] = enc.counted[i]
    return (torch.from_numpy(ids).to(device, non_blocking=True),
            torch.from_numpy(mask).to(device, non_blocking=True), int(mask.sum()), ids.size)
