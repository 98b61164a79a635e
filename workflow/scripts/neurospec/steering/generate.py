"""Steered greedy generation, and the NLL of an output under the unsteered model.

Generation is translation's greedy decoder (``translation.greedy_generate``: batched by prompt
length, left-padded with an attention mask and position ids, KV cache) run inside a condition's
intervention (``vectors.Condition.applied``): the hooks change every position of every forward
pass, the prompt's and each generated token's.  The output is the first line of text of the
generation, stripped (``translation.extract_hypothesis``), as for translation.

The NLL (fluency) of an output: -mean log p(output token | prompt, earlier output tokens) under the
model *without* any intervention, in nats per token, over the output's own tokens (the tokens the
steered model generated up to its stop; an output of no token has none).
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import torch

from neurospec.models import LoadedModel

from .vectors import Condition

log = logging.getLogger("neurospec")


def generate(loaded: LoadedModel, prompts: Sequence[Sequence[int]], condition: Condition, *, max_new_tokens: int,
             batch_size: int) -> tuple[list[list[int]], list[str], float]:
    """Each prompt's generated tokens and output text under ``condition``, and the seconds it took."""
    from neurospec.evaluate.translation import extract_hypothesis, greedy_generate

    lm = loaded.require_lm("steering (generation)")
    t0 = time.perf_counter()
    with condition.applied(lm):
        generated = greedy_generate(lm, loaded.tokenizer, prompts, [int(max_new_tokens)] * len(prompts),
                                    batch_size=batch_size, device=loaded.device)
    seconds = time.perf_counter() - t0
    tokens = [list(g.tokens) for g in generated]
    texts = [extract_hypothesis(loaded.tokenizer.decode(t, skip_special_tokens=True)) for t in tokens]
    return tokens, texts, seconds


@torch.inference_mode()
def output_nll(loaded: LoadedModel, prompts: Sequence[Sequence[int]], outputs: Sequence[Sequence[int]], *,
               batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Summed NLL (nats, float64) of each output's tokens given its prompt under the unsteered model,
    and each output's token count; rows are right-padded (causal attention: real tokens never see
    the padding), the LM head applied to the predicting positions only, in chunks."""
    from neurospec.evaluate.ablation import OutputHead, chunk_tokens_for, chunked_nll

    lm = loaded.require_lm("steering (NLL of the outputs)")
    head = OutputHead(lm)
    chunk = chunk_tokens_for(head.vocab_size, loaded.device)
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    sums = np.zeros(len(prompts), dtype=np.float64)
    counts = np.array([len(o) for o in outputs], dtype=np.int64)
    rows_all = sorted((i for i in range(len(prompts)) if counts[i] > 0),
                      key=lambda i: -(len(prompts[i]) + counts[i]))
    for start in range(0, len(rows_all), max(1, batch_size)):
        rows = rows_all[start:start + batch_size]
        seqs = [list(prompts[i]) + list(outputs[i]) for i in rows]
        width = max(len(s) for s in seqs)
        ids = np.full((len(rows), width), int(pad), dtype=np.int64)
        positions, targets, owner = [], [], []
        for r, (i, seq) in enumerate(zip(rows, seqs)):
            ids[r, : len(seq)] = seq
            p = len(prompts[i])
            positions.append(r * width + np.arange(p - 1, len(seq) - 1))
            targets.append(seq[p:])
            owner.append(np.full(len(seq) - p, r))
        device = loaded.device
        hidden = loaded.model(input_ids=torch.as_tensor(ids, device=device), use_cache=False).last_hidden_state
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(
            0, torch.as_tensor(np.concatenate(positions), device=device))
        nll = chunked_nll(head, flat, torch.as_tensor(np.concatenate(targets).astype(np.int64), device=device),
                          chunk).double().cpu().numpy()
        per_row = np.bincount(np.concatenate(owner), weights=nll, minlength=len(rows))
        sums[rows] = per_row
    return sums, counts
