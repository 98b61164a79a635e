"""Activation collection: batching under a token budget and on-device counting in one pass.

For every block's MLP the collector hooks the input of ``down_proj`` (h = act_fn(gate(x)) * up(x),
one value per neuron) and the gate activation ``act_fn(gate_proj(x))``.  Per layer and neuron it
accumulates, over the counted tokens of a pair:

- ``active``: h > 0
- ``nonzero``: h != 0 (the seed scripts' criterion; degenerate for SiLU models)
- ``gate_active``: act_fn(gate(x)) > 0 (LAPE's criterion)
- ``act_sum``, ``act_sumsq``: the sums of h and of h**2 (float64)
- per criterion, over sentences, the sum of each sentence's firing rate (the share of its counted
  tokens on which the criterion held) and of its square: ``{criterion}_rate_sum``, ``_rate_sumsq``
- every one of these sums also over the sentences with an even id alone (``*_even``): split halves.

Which tokens are counted is ``collect.token_scope``: the source sentence's inside the prompt
(``source``), the whole prompt (``all``), or the reference translation fed in after the prompt
(``target``, teacher forcing: ``encode_target``), so that en-de counts German as it is produced;
the table's metadata names the counted language (``counted_lang``, ``languages.counted_language``).

How it stays close to the bare forward pass:

- sentences are sorted by length and packed into batches under a token budget (padding included),
  so padding is rare; rows are right-padded, and since attention is causal the real tokens of a
  row never see its padding: no attention mask is needed, which keeps SDPA on its causal fast path;
- the base model runs without its LM head, ``use_cache=False``, under ``torch.inference_mode``;
- the hooks reduce each layer's activations on the device to per-row statistics (one pass over the
  activations on CUDA, see ``CountHooks``) and those, with three small matrix products, to the
  batch's sums; they are committed to the totals only when the whole batch succeeded (running out of
  device memory halves the budget and retries), and the totals reach the host once per pair.
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..architectures import n_neurons, resolve_mlp_taps
from ..batching import CPU_TOKEN_BUDGET, MAX_TOKEN_BUDGET, auto_token_budget, make_batches  # noqa: F401 (re-exported)
from ..errors import NeurospecError
from ..languages import TOKEN_SCOPES, counted_language, language
from ..models import LoadedModel
from ..progress import Progress
from ..prompts import check_template, model_context, render
from ..steering.residual import RESIDUAL_KEY, encode_array
from ..tables import COUNT_COLUMNS, HALF, TOTAL_COLUMNS, package_versions, write_counts

log = logging.getLogger("neurospec")

# What each collect.token_scope counts (the count table's metadata says it, key "counted_tokens")
COUNTED_TOKENS = {
    "source": "the source sentence's tokens inside the prompt",
    "all": "every token of the prompt (special tokens included)",
    "target": "the reference translation's tokens, fed in after the prompt (teacher forcing); "
              "prompt, source and padding excluded, no end-of-sequence token appended",
}


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


def fused_row_stats(h: torch.Tensor, g: torch.Tensor | None, counted: torch.Tensor) -> torch.Tensor:
    """Per-row statistics of one layer as masked reductions over the sequence: the fused formulation.

    h, g: [batch, seq, neurons] (g None for plain MLPs: the activation is the gate); counted:
    [batch, seq, 1] bool.  Returns [batch, len(ROW_STATS), neurons]: per row the counts of h > 0,
    h != 0, g > 0 (exact integers) and the sums of h and h**2, in float32 (float64 for float64
    models).  Positions that are not counted are masked out before any arithmetic (torch.where),
    so padding that holds inf or NaN never reaches a sum.  Written for torch.compile, which can fuse
    it into one pass over h and g (its CPU backend makes one kernel); eagerly it is the same
    arithmetic, slowly.
    """
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    active = ((h > 0) & counted).sum(1, dtype=torch.int32)
    nonzero = ((h != 0) & counted).sum(1, dtype=torch.int32)
    gate = active if g is None else ((g > 0) & counted).sum(1, dtype=torch.int32)
    x = torch.where(counted, h.to(acc), 0.0)
    return torch.stack([active.to(acc), nonzero.to(acc), gate.to(acc), x.sum(1), (x * x).sum(1)], dim=1)


def batch_stats(rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """A batch's share of every additive column, from its per-row statistics: [2, len(TOTAL_COLUMNS), neurons].

    rows: [batch, len(ROW_STATS), neurons] in the accumulation dtype (float32; float64 for float64
    models); weights: [3, 2, batch] in the same dtype: per half (all sentences, the even half) each
    row's weight, that over its counted tokens n, and over n**2 (0 for rows without counted
    tokens: they have no firing rate).  Three small matrix products over the rows: counts and sums
    with the first weights, the firing-rate sums sum(c / n) with the second, the sums of their
    squares sum(c**2 / n**2) with the third, so no rate is materialized.  Counts stay exact in
    float32 (integers below 2**24 per batch).
    """
    n_rows, n_stats, n_neurons = rows.shape
    flat = rows.reshape(n_rows, n_stats * n_neurons)
    counts = flat[:, : 3 * n_neurons]  # the three criteria's counts, side by side
    sums = (weights[0] @ flat).reshape(2, n_stats, n_neurons)  # counts, act_sum, act_sumsq
    rate = (weights[1] @ counts).reshape(2, 3, 1, n_neurons)
    rate_sq = (weights[2] @ (counts * counts)).reshape(2, 3, 1, n_neurons)
    rates = torch.cat([rate, rate_sq], dim=2).reshape(2, 6, n_neurons)  # per criterion: sum, sumsq
    return torch.cat([sums, rates], dim=1)


def fused_layer_stats(h: torch.Tensor, g: torch.Tensor | None, counted: torch.Tensor,
                      weights: torch.Tensor) -> torch.Tensor:
    """fused_row_stats then batch_stats: the whole per-layer reduction, for torch.compile."""
    return batch_stats(fused_row_stats(h, g, counted), weights)


COUNTING = ("auto", "matmul", "fused", "fused-uncompiled")
ROW_STATS = ("active", "nonzero", "gate_active", "act_sum", "act_sumsq")  # per row, in this order


class CountHooks:
    """Forward hooks that reduce each layer's MLP activations to per-neuron statistics on the device.

    Per layer and batch, the activations h (and the gate g) are first reduced over each row's
    counted tokens to per-row statistics [batch, neurons] (ROW_STATS), by one of two exact
    implementations of the same arithmetic (``counting``):

    - ``matmul`` (eager; CPU, and CUDA's fallback): each 0/1 indicator (h > 0, h != 0, g > 0) is
      written by ``torch.gt``/``torch.ne`` into one reused float scratch buffer and summed per row
      by one batched matrix-vector product with the rows' counted-token masks
      ([batch, 1, seq] @ [batch, seq, neurons]); float sums of 0/1 values are exact integers
      (below 2**24 per row).  act_sum and act_sumsq are the masks times h and times h**2; when a
      result is not finite (inf or NaN somewhere, maybe on padding, where 0 * inf = NaN), they are
      recomputed with ``torch.where`` selecting the counted positions' values (others set to 0),
      so non-finite values on uncounted positions never reach the sums.
    - ``fused`` (CUDA by default): ``fused_layer_stats`` (``fused_row_stats``, then
      ``batch_stats``) through ``torch.compile``, meant as one pass over h and g (inductor's CPU
      backend makes the per-row part one kernel; on CUDA not yet measured); if compiling fails it
      falls back to ``matmul`` (logged).  ``fused-uncompiled`` runs the same function eagerly
      (tests: the fused arithmetic on any device).

    The per-row statistics [batch, neurons] are small; ``batch_stats`` turns them, with three
    small matrix products with the rows' weights, into the batch's contribution to every additive
    column of the count table (``tables.TOTAL_COLUMNS`` order).  Contributions are committed to the float64 totals only when the whole batch
    succeeded; totals stay on the device.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, counting: str = "auto"):
        if counting not in COUNTING:
            raise NeurospecError(f"unknown counting implementation {counting!r}; choose one of {', '.join(COUNTING)}")
        self.taps = resolve_mlp_taps(model)
        self.n_layers = len(self.taps)
        self.n_neurons: int | None = None
        self.device = device
        self.counting = ("fused" if device.type == "cuda" else "matmul") if counting == "auto" else counting
        self._fused = None  # the compiled fused_layer_stats, built on first use
        self._handles: list = []
        self._scratch: torch.Tensor | None = None
        self._gates: dict[int, torch.Tensor] = {}  # fused: the gate activation until its layer's down_proj
        self._rows: torch.Tensor | None = None  # matmul: [batch, ROW_STATS, neurons], per row
        self.pending: torch.Tensor | None = None  # [2 (all, even), stats, layers, neurons] float64, this batch
        self.totals: torch.Tensor | None = None  # the same, committed batches

    def set_batch(self, counted: torch.Tensor, even: torch.Tensor) -> None:
        """The batch's counted positions [batch, seq] (bool) and which rows are in the even half [batch]."""
        self.shape = tuple(counted.shape)
        self.counted = counted[..., None]  # [batch, seq, 1] bool
        self._masks: dict[torch.dtype, torch.Tensor] = {}
        n_row = counted.sum(1).to(torch.float64)  # counted tokens per row
        inv_n = torch.where(n_row > 0, 1.0 / n_row.clamp(min=1.0), 0.0)
        w = torch.stack([torch.ones_like(n_row), even.to(torch.float64)])  # [2 (all, even), batch]
        self._weights64 = torch.stack([w, w * inv_n, w * inv_n * inv_n])  # [3, 2, batch]
        self._weights: dict[torch.dtype, torch.Tensor] = {}

    def weights(self, dtype: torch.dtype) -> torch.Tensor:
        """batch_stats' row weights [3, 2, batch] in ``dtype`` (converted once per batch)."""
        if dtype not in self._weights:
            self._weights[dtype] = self._weights64.to(dtype)
        return self._weights[dtype]

    def _mask(self, dtype: torch.dtype) -> torch.Tensor:
        """The rows' counted-token masks [batch, 1, seq] in ``dtype`` (converted once per batch)."""
        if dtype not in self._masks:
            self._masks[dtype] = self.counted.squeeze(-1).to(dtype)[:, None, :]
        return self._masks[dtype]

    def _ensure(self, n_neurons: int) -> None:
        if self.totals is None:
            self.n_neurons = n_neurons
            shape = (2, len(TOTAL_COLUMNS), self.n_layers, n_neurons)
            self.pending = torch.zeros(shape, dtype=torch.float64, device=self.device)
            self.totals = torch.zeros_like(self.pending)

    def _buffer(self, t: torch.Tensor) -> torch.Tensor:
        """A float32 (float64 for float64 models) scratch view of ``t``'s shape, reused across calls."""
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        if self._scratch is None or self._scratch.numel() < t.numel() or self._scratch.dtype != dtype:
            self._scratch = None
            self._scratch = torch.empty(t.numel(), dtype=dtype, device=t.device)
        return self._scratch[: t.numel()].view(t.shape)

    def _indicator_rows(self, fn, t: torch.Tensor, stat: int) -> None:
        """Row statistic ``stat`` = per row, the counted tokens on which fn(t, 0) holds (matmul path)."""
        buf = self._buffer(t)
        fn(t, 0, out=buf)
        self._row_buffer(t.shape[-1], buf.dtype)[:, stat] = torch.bmm(self._mask(buf.dtype), buf).squeeze(1)

    def _row_buffer(self, n_neurons: int, dtype: torch.dtype) -> torch.Tensor:
        """The matmul path's per-row statistics [batch, ROW_STATS, neurons] (reused while shapes last)."""
        shape = (self.shape[0], len(ROW_STATS), n_neurons)
        if self._rows is None or self._rows.shape != shape or self._rows.dtype != dtype:
            self._rows = torch.empty(shape, dtype=dtype, device=self.device)
        return self._rows

    def _matmul_rows(self, h: torch.Tensor, gated: bool) -> torch.Tensor:
        buf = self._buffer(h)
        rows = self._row_buffer(h.shape[-1], buf.dtype)
        self._indicator_rows(torch.gt, h, 0)
        self._indicator_rows(torch.ne, h, 1)
        if not gated:
            rows[:, 2] = rows[:, 0]
        mask = self._mask(buf.dtype)
        if h.dtype == buf.dtype:  # the mask times h, and times h**2 (written into the buffer)
            rows[:, 3] = torch.bmm(mask, h).squeeze(1)
            rows[:, 4] = torch.bmm(mask, torch.mul(h, h, out=buf)).squeeze(1)
        else:  # half precision: widened into the float32 buffer first
            rows[:, 3] = torch.bmm(mask, buf.copy_(h)).squeeze(1)
            rows[:, 4] = torch.bmm(mask, buf.mul_(buf)).squeeze(1)
        if not bool(torch.isfinite(rows[:, 3:].sum())):  # one reduction: any inf or NaN makes the sum so
            # inf or NaN somewhere, maybe on padding, where 0 * inf = NaN: select instead of multiply,
            # so that only the counted positions' values reach the sums (the fused path always does)
            if h.dtype == buf.dtype:
                torch.where(self.counted, h, torch.zeros((), dtype=h.dtype, device=h.device), out=buf)
            else:
                buf.copy_(h).masked_fill_(~self.counted, 0.0)
            rows[:, 3] = torch.bmm(mask, buf).squeeze(1)
            rows[:, 4] = torch.bmm(mask, buf.mul_(buf)).squeeze(1)
        return rows

    def _fused_stats(self, h: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor | None:
        """fused_layer_stats, compiled on first use (and recompiled for new shapes when it must);
        None when compiling failed: then the matmul path counts, from this layer on."""
        weights = self.weights(torch.float64 if h.dtype == torch.float64 else torch.float32)
        if self.counting == "fused-uncompiled":
            return fused_layer_stats(h, g, self.counted, weights)
        if self._fused is None:
            self._fused = torch.compile(fused_layer_stats, dynamic=True)
        try:
            return self._fused(h, g, self.counted, weights)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: keep counting, exactly
            if is_out_of_memory(exc):
                raise
            log.warning("fused counting is unavailable (%s: %s); counting with the matmul path",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.counting = "matmul"
            return None

    def _down_hook(self, layer: int, gated: bool):
        def hook(module, args):
            h = args[0].reshape(*self.shape, -1)  # [batch, seq, neurons]
            self._ensure(h.shape[-1])
            stats = None
            if self.counting != "matmul":
                g = self._gates.pop(layer, None) if gated else None
                stats = self._fused_stats(h, g)
                if stats is None and g is not None:  # compiling failed: the gate's indicator, as the gate hook would
                    self._indicator_rows(torch.gt, g, 2)
            if stats is None:
                rows = self._matmul_rows(h, gated)
                stats = batch_stats(rows, self.weights(rows.dtype))
            self.pending[:, :, layer] = stats

        return hook

    def _gate_hook(self, layer: int):
        def hook(module, args, output):
            g = output.reshape(*self.shape, -1)
            self._ensure(g.shape[-1])
            if self.counting == "matmul":
                self._indicator_rows(torch.gt, g, 2)
            else:  # read with h by the fused reduction at this layer's down_proj
                self._gates[layer] = g

        return hook

    def __enter__(self) -> "CountHooks":
        for tap in self.taps:
            gated = tap.gate is not None
            self._handles.append(tap.down_input.register_forward_pre_hook(self._down_hook(tap.layer, gated)))
            if gated:
                self._handles.append(tap.gate.register_forward_hook(self._gate_hook(tap.layer)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.release()

    def release(self) -> None:
        """Drop the scratch buffers and held activations (before an out-of-memory retry, and at exit)."""
        self._scratch = None
        self._rows = None
        self._gates.clear()

    def commit(self) -> None:
        if self.totals is not None:
            self.totals += self.pending


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


def run_counts(loaded: LoadedModel, enc: Encoded, token_budget: int | None = None,
               progress_every_s: float = 10.0, counting: str = "auto",
               residual: bool = True, what: str = "collect") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Push every encoded prompt through the model once.

    Returns (totals, even, stats): totals and even are [len(TOTAL_COLUMNS), layers, neurons]
    float64, the additive columns over all prompts and over the prompts of the even half
    (``enc.even``); stats holds n_tokens, n_tokens_even, n_rate_sentences(_even) and timings, and
    (``residual``) ``residual_sum``: every block's output hidden state summed over the counted
    tokens, [layers, hidden] float64 (``steering.residual.ResidualSums``).
    """
    from contextlib import nullcontext

    from ..steering.residual import ResidualSums

    model, device = loaded.model, loaded.device
    budget = token_budget or auto_token_budget(loaded, max(enc.lengths, default=1))
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = loaded.tokenizer.eos_token_id or 0
    even = np.zeros(len(enc.input_ids), dtype=bool) if enc.even is None else np.asarray(enc.even, dtype=bool)
    hooks = CountHooks(model, device, counting)
    sums = ResidualSums(model) if residual else None
    queue = make_batches(enc.lengths, budget)
    stats = {"n_tokens": 0, "n_tokens_even": 0, "n_processed": 0, "n_real": 0, "n_batches": 0, "oom_retries": 0,
             "n_rate_sentences": sum(bool(c.any()) for c in enc.counted),
             "n_rate_sentences_even": sum(bool(c.any()) for c, e in zip(enc.counted, even) if e)}
    t0 = time.perf_counter()
    # prompt tokens done / total, tokens/s, ETA: to the log, and to the run's terminal (neurospec.progress)
    progress = (Progress(sum(enc.lengths), "prompt tokens", log, what, every_s=progress_every_s)
                if progress_every_s < 1e9 else None)
    with hooks, sums if sums is not None else nullcontext(), torch.inference_mode():
        while queue:
            rows = queue.pop(0)
            ids, counted, n_counted, n_processed = batch_tensors(enc, rows, pad_id, device)
            hooks.set_batch(counted, torch.from_numpy(even[rows]).to(device))
            if sums is not None:
                sums.set_batch(counted)
            oom = False
            try:
                model(input_ids=ids, use_cache=False)
            except RuntimeError as exc:  # torch.OutOfMemoryError is one
                if not is_out_of_memory(exc):
                    raise
                oom = True
            if oom:  # outside the except block: its traceback no longer holds the batch's tensors
                if len(rows) == 1:
                    raise NeurospecError(
                        f"out of device memory on a single prompt of {ids.shape[1]} tokens: "
                        f"lower collect.max_length")
                budget = max(1, budget // 2)
                log.warning("out of device memory on a batch of %d x %d tokens: token budget halved to %d, "
                            "retrying", len(rows), ids.shape[1], budget)
                stats["oom_retries"] += 1
                del ids, counted
                hooks.release()
                torch.cuda.empty_cache()  # a no-op unless CUDA was initialized
                remaining = rows + [i for b in queue for i in b]
                queue = make_batches([enc.lengths[i] for i in remaining], budget)
                queue = [[remaining[j] for j in b] for b in queue]
                continue
            hooks.commit()
            if sums is not None:
                sums.commit()
            stats["n_tokens"] += n_counted
            stats["n_tokens_even"] += sum(int(enc.counted[i].sum()) for i in rows if even[i])
            stats["n_processed"] += n_processed
            stats["n_real"] += sum(enc.lengths[i] for i in rows)
            stats["n_batches"] += 1
            if progress is not None:
                progress.update(sum(enc.lengths[i] for i in rows))
    if progress is not None:
        progress.close()
    if hooks.totals is None:  # nothing was run (no sentences, e.g. an empty shard)
        totals = np.zeros((2, len(TOTAL_COLUMNS), hooks.n_layers, n_neurons(model)), dtype=np.float64)
    else:
        totals = hooks.totals.cpu().numpy()  # the one host sync
    if sums is not None:
        stats["residual_sum"] = sums.result(hooks.n_layers, model.get_input_embeddings().embedding_dim)
    stats["seconds"] = time.perf_counter() - t0
    stats["token_budget"] = budget
    stats["counting"] = hooks.counting
    stats["padding_efficiency"] = stats["n_real"] / stats["n_processed"] if stats["n_processed"] else 1.0
    return totals[0], totals[1], stats


def count_table(totals: np.ndarray, even: np.ndarray) -> pd.DataFrame:
    """Long table, one row per (layer, neuron), in COUNT_SCHEMA's columns (counts as int64)."""
    _, n_layers, n_neurons = totals.shape
    columns: dict[str, np.ndarray] = {
        "layer": np.repeat(np.arange(n_layers, dtype=np.int32), n_neurons),
        "neuron": np.tile(np.arange(n_neurons, dtype=np.int32), n_layers),
    }
    for suffix, values in (("", totals), (f"_{HALF}", even)):
        for k, name in enumerate(TOTAL_COLUMNS):
            v = values[k].reshape(-1)
            columns[name + suffix] = np.rint(v).astype(np.int64) if name in COUNT_COLUMNS else v
    return pd.DataFrame(columns)


def sentence_hash(text: Any) -> str:
    """Content hash of a counted sentence: blake2b (8 bytes, hex) of its NFC form with runs of
    whitespace made one space and the ends stripped, so the same sentence in two pair tables (EC40's
    multi-parallel English) has the same hash."""
    normal = " ".join(unicodedata.normalize("NFC", str(text)).split())
    return hashlib.blake2b(normal.encode("utf-8"), digest_size=8).hexdigest()


def counted_hashes(texts: Sequence[Any], enc: Encoded) -> dict[str, list[str]]:
    """The count table's ``counted_hashes_even`` / ``_odd`` metadata: the sorted distinct content
    hashes of the sentences of each half that have a rate (a counted token).  ``texts``: the counted
    side (source, or the reference translation for token_scope target) of encode()'s input rows."""
    halves: dict[str, set[str]] = {"even": set(), "odd": set()}
    for row, counted, even in zip(enc.kept, enc.counted, enc.even):
        if bool(counted.any()):
            halves["even" if even else "odd"].add(sentence_hash(texts[row]))
    return {f"counted_hashes_{h}": sorted(v) for h, v in halves.items()}


def shard_rows(n_rows: int, shard: int, n_shards: int) -> slice:
    """Contiguous rows of shard ``shard`` (0-based) of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise NeurospecError(f"shard {shard} is out of range for collect.shards={n_shards}")
    return slice(shard * n_rows // n_shards, (shard + 1) * n_rows // n_shards)


def collect_pair(loaded: LoadedModel, pairs: pd.DataFrame, *, template: str, token_scope: str = "source",
                 max_length: int = 512, token_budget: int | None = None, shard: int = 0, n_shards: int = 1,
                 pair_meta: dict[str, Any] | None = None, counting: str = "auto") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Count table and metadata of one pair table (or one shard of it).

    The even half holds the sentences whose pair-table ``id`` (line index in the source file) is
    even: the same sentences in every direction that shares a source file, in any shard.
    """
    pairs = pairs.sort_values("id").iloc[shard_rows(len(pairs), shard, n_shards)]
    context = model_context(loaded.model, loaded.tokenizer)  # never more tokens than the model takes
    configured, max_length = max_length, max_length if context is None else min(max_length, context)
    enc = encode(loaded.tokenizer, pairs["src"].tolist(), pairs["src_lang"].tolist(), pairs["tgt_lang"].tolist(),
                 template=template, token_scope=token_scope, max_length=max_length,
                 tgt=pairs["tgt"].tolist() if token_scope == "target" and "tgt" in pairs else None)
    enc.even = pairs["id"].to_numpy(np.int64)[enc.kept] % 2 == 0
    log.info("%d prompts (%d skipped as empty), %d truncated to %d tokens, %d prompt tokens; counted: %s",
             len(enc.input_ids), enc.n_skipped, enc.n_truncated, max_length, sum(enc.lengths),
             COUNTED_TOKENS[token_scope])
    what = " ".join(["collect", str((pair_meta or {}).get("pair", "")),
                     f"shard {shard + 1}/{n_shards}" if n_shards > 1 else ""]).strip()
    totals, even, stats = run_counts(loaded, enc, token_budget, counting=counting, what=what)
    log.info("done: %d counted tokens in %.1f s (%.0f prompt tokens/s), padding efficiency %.3f, %s counting",
             stats["n_tokens"], stats["seconds"], stats["n_real"] / max(stats["seconds"], 1e-9),
             stats["padding_efficiency"], stats["counting"])
    if len(pairs):
        src_lang, tgt_lang = pairs["src_lang"].iloc[0], pairs["tgt_lang"].iloc[0]
    else:  # an empty shard: the pair comes from the pair table's metadata
        src_lang, _, tgt_lang = str((pair_meta or {}).get("pair", "-")).partition("-")
    meta = {
        "n_tokens": stats["n_tokens"],
        "n_sentences": len(enc.input_ids),
        "n_truncated": enc.n_truncated,
        "n_skipped": enc.n_skipped,
        "n_prompt_tokens": stats["n_real"],
        "n_tokens_even": stats["n_tokens_even"],
        "n_rate_sentences": stats["n_rate_sentences"],  # sentences with a counted token: they have a rate
        "n_rate_sentences_even": stats["n_rate_sentences_even"],
        # one unit per distinct sentence when a language is pooled over pairs (scoring.distinct_sentences)
        **counted_hashes(pairs["tgt" if token_scope == "target" else "src"].tolist(), enc),
        "halves": f"{HALF}: sentences with an even id; odd: the rest (total - {HALF})",
        # every block's output hidden state summed over the n_tokens counted tokens (steering's residual baseline)
        RESIDUAL_KEY: encode_array(stats["residual_sum"]),
        "pair": f"{src_lang}-{tgt_lang}",
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        # source and all: the prompt's sentence is the source; target: the reference translation
        "counted_lang": counted_language(src_lang, tgt_lang, token_scope),
        # the names the prompt gave the two languages (neurospec.lang_codes; the config's `languages:` first)
        "src_name": language(src_lang).name,
        "tgt_name": language(tgt_lang).name,
        "counted_tokens": COUNTED_TOKENS[token_scope],
        **loaded.info,
        "prompt_template": template,
        "token_scope": token_scope,
        "max_length": configured,
        "max_tokens": max_length,  # max_length, or the model's context when smaller
        "shard": f"{shard}/{n_shards}",
        "versions": package_versions(),
        **{k: v for k, v in (pair_meta or {}).items() if k.startswith("dataset") or k in ("detokenize", "split", "source")},
    }
    return count_table(totals, even), meta


def collect_to_file(loaded: LoadedModel, pairs_path: str, out_path: str, *, prompt_template: str,
                    token_scope: str = "source", max_length: int = 512, token_budget: int | None = None,
                    shard: int = 0, shards: int = 1) -> None:
    """The collection task: count one pair table (or one shard of it) with a loaded model, write atomically."""
    from ..tables import PAIR_SCHEMA, read_metadata, read_table

    check_template(prompt_template)
    if token_scope not in TOKEN_SCOPES:
        raise NeurospecError(f"collect.token_scope {token_scope!r}: choose one of {', '.join(TOKEN_SCOPES)}")
    pairs = read_table(pairs_path, required=tuple(PAIR_SCHEMA.names))
    pair_meta = read_metadata(pairs_path)
    log.info("model %s (%s) on %s in %s", loaded.info.get("model"), loaded.info.get("model_revision"),
             loaded.device, loaded.info.get("dtype"))
    df, meta = collect_pair(loaded, pairs, template=prompt_template, token_scope=token_scope,
                            max_length=max_length, token_budget=token_budget, shard=shard, n_shards=shards,
                            pair_meta=pair_meta)
    write_counts(df, out_path, meta)
