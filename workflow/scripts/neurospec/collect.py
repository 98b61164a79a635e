"""Activation collection: batching under a token budget and on-device counting in one pass.

For every block's MLP the collector hooks the input of ``down_proj`` (h = act_fn(gate(x)) * up(x),
one value per neuron) and the gate activation ``act_fn(gate_proj(x))``.  Per layer and neuron it
accumulates, over the counted tokens of a pair:

- ``active``: h > 0
- ``nonzero``: h != 0 (the seed scripts' criterion; degenerate for SiLU models)
- ``gate_active``: act_fn(gate(x)) > 0 (LAPE's criterion)
- ``act_sum``: the sum of h (float64)

How it stays close to the bare forward pass:

- sentences are sorted by length and packed into batches under a token budget (padding included),
  so padding is rare; rows are right-padded, and since attention is causal the real tokens of a
  row never see its padding: no attention mask is needed, which keeps SDPA on its causal fast path;
- the base model runs without its LM head, ``use_cache=False``, under ``torch.inference_mode``;
- the hooks reduce each layer's activations on the device to four vectors of length n_neurons;
  they are committed to the totals only when the whole batch succeeded (a CUDA out-of-memory
  halves the budget and retries), and the totals reach the host once per pair.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .architectures import n_neurons, resolve_mlp_taps
from .errors import NeurospecError
from .models import LoadedModel
from .prompts import check_template, render
from .tables import package_versions

log = logging.getLogger("neurospec")

TOKEN_SCOPES = ("source", "all")
CPU_TOKEN_BUDGET = 4096
MAX_TOKEN_BUDGET = 65536


@dataclass
class Encoded:
    """Token ids of each prompt and which of its positions are counted."""

    input_ids: list[list[int]]
    counted: list[np.ndarray]  # bool per position
    n_truncated: int
    n_skipped: int  # empty or whitespace-only sources (not encoded)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def encode(tokenizer, src: Sequence[str], src_lang: Sequence[str], tgt_lang: Sequence[str], *,
           template: str, token_scope: str = "source", max_length: int = 512) -> Encoded:
    """Render prompts, tokenize them (special tokens included), truncate, and mark counted tokens."""
    check_template(template)
    if token_scope not in TOKEN_SCOPES:
        raise NeurospecError(f"collect.token_scope {token_scope!r}: choose one of {', '.join(TOKEN_SCOPES)}")
    keep = [i for i, s in enumerate(src) if isinstance(s, str) and s.strip()]
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
    return Encoded(input_ids, counted, n_truncated, len(src) - len(keep))


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


def auto_token_budget(loaded: LoadedModel, max_length: int) -> int:
    """Tokens per batch: from free CUDA memory (about half of it for activations), else a CPU default."""
    if loaded.device.type != "cuda":
        return max(CPU_TOKEN_BUDGET, max_length)
    free, _ = torch.cuda.mem_get_info(loaded.device)
    cfg = loaded.model.config
    hidden = getattr(cfg, "hidden_size", 4096)
    inter = getattr(cfg, "intermediate_size", None) or 4 * hidden
    bytes_per = torch.finfo(loaded.dtype).bits // 8
    # live per token at the MLP: x, gate, up, h, the output, plus attention's q/k/v/out; x2 headroom
    per_token = (6 * hidden + 4 * inter) * bytes_per * 2
    budget = int(0.5 * free / per_token)
    return int(min(MAX_TOKEN_BUDGET, max(budget, max_length)))


class CountHooks:
    """Forward hooks that reduce each layer's MLP activations to per-neuron statistics on the device.

    Each statistic is one matrix-vector product of the batch's counted-token mask with a 0/1
    indicator matrix (or with h itself for ``act_sum``): [batch*seq] @ [batch*seq, neurons]. The
    indicators are written by ``torch.gt``/``torch.ne`` straight into a reused float scratch buffer,
    and the float sums of 0/1 values are exact integers (below 2**24 tokens per batch).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device):
        self.taps = resolve_mlp_taps(model)
        self.n_layers = len(self.taps)
        self.n_neurons: int | None = None
        self.device = device
        self._handles: list = []
        self.mask: torch.Tensor | None = None  # [batch*seq] 1.0 for counted tokens, else 0.0
        self._scratch: torch.Tensor | None = None
        self.pending_counts: torch.Tensor | None = None  # [3, layers, neurons] int64, this batch
        self.pending_sum: torch.Tensor | None = None  # [layers, neurons] float64, this batch
        self.counts: torch.Tensor | None = None  # totals
        self.sums: torch.Tensor | None = None

    def set_batch(self, mask: torch.Tensor) -> None:
        self.mask = mask  # float32
        self._mask64: torch.Tensor | None = None

    def _mask_as(self, dtype: torch.dtype) -> torch.Tensor:
        """The batch's mask in float32 or float64 (converted once per batch, not once per layer)."""
        if dtype == torch.float32:
            return self.mask
        if self._mask64 is None:
            self._mask64 = self.mask.to(torch.float64)
        return self._mask64

    def _ensure(self, n_neurons: int) -> None:
        if self.counts is None:
            self.n_neurons = n_neurons
            shape = (self.n_layers, n_neurons)
            self.pending_counts = torch.zeros((3, *shape), dtype=torch.int64, device=self.device)
            self.pending_sum = torch.zeros(shape, dtype=torch.float64, device=self.device)
            self.counts = torch.zeros_like(self.pending_counts)
            self.sums = torch.zeros_like(self.pending_sum)

    def _buffer(self, t: torch.Tensor) -> torch.Tensor:
        """A float32 (float64 for float64 models) scratch view of ``t``'s shape, reused across calls."""
        dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        if self._scratch is None or self._scratch.numel() < t.numel() or self._scratch.dtype != dtype:
            self._scratch = torch.empty(t.numel(), dtype=dtype, device=t.device)
        return self._scratch[: t.numel()].view(t.shape)

    def _indicator_sum(self, fn, t: torch.Tensor) -> torch.Tensor:
        """mask @ fn(t, 0) with fn in (torch.gt, torch.ne): counted tokens per neuron, as int64."""
        buf = self._buffer(t)
        fn(t, 0, out=buf)
        return (self._mask_as(buf.dtype) @ buf).to(torch.int64)

    def _down_hook(self, layer: int, gated: bool):
        def hook(module, args):
            h = args[0]
            h = h.reshape(-1, h.shape[-1])  # [batch*seq, neurons]
            self._ensure(h.shape[-1])
            active = self._indicator_sum(torch.gt, h)
            self.pending_counts[0, layer] = active
            self.pending_counts[1, layer] = self._indicator_sum(torch.ne, h)
            if not gated:  # plain MLP: the activation is the gate
                self.pending_counts[2, layer] = active
            if h.dtype in (torch.float32, torch.float64):
                self.pending_sum[layer] = self._mask_as(h.dtype) @ h
            else:  # half precision: sum in float32, through the scratch buffer (no new allocation)
                buf = self._buffer(h)
                buf.copy_(h)
                self.pending_sum[layer] = self.mask @ buf

        return hook

    def _gate_hook(self, layer: int):
        def hook(module, args, output):
            g = output.reshape(-1, output.shape[-1])
            self._ensure(g.shape[-1])
            self.pending_counts[2, layer] = self._indicator_sum(torch.gt, g)

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
        self._scratch = None

    def commit(self) -> None:
        if self.counts is not None:
            self.counts += self.pending_counts
            self.sums += self.pending_sum


def batch_tensors(enc: Encoded, rows: list[int], pad_id: int, device: torch.device):
    width = max(enc.lengths[i] for i in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=bool)
    for r, i in enumerate(rows):
        n = enc.lengths[i]
        ids[r, :n] = enc.input_ids[i]
        mask[r, :n] = enc.counted[i]
    counted = torch.from_numpy(mask.reshape(-1).astype(np.float32))
    return (torch.from_numpy(ids).to(device, non_blocking=True),
            counted.to(device, non_blocking=True), int(mask.sum()), ids.size)


def run_counts(loaded: LoadedModel, enc: Encoded, token_budget: int | None = None,
               progress_every_s: float = 10.0) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Push every encoded prompt through the model once; counts [3, L, N] int64, sums [L, N] float64."""
    model, device = loaded.model, loaded.device
    budget = token_budget or auto_token_budget(loaded, max(enc.lengths, default=1))
    pad_id = loaded.tokenizer.pad_token_id
    if pad_id is None:
        pad_id = loaded.tokenizer.eos_token_id or 0
    hooks = CountHooks(model, device)
    queue = make_batches(enc.lengths, budget)
    stats = {"n_tokens": 0, "n_processed": 0, "n_real": 0, "n_batches": 0, "oom_retries": 0}
    t0 = last = time.perf_counter()
    with hooks, torch.inference_mode():
        while queue:
            rows = queue.pop(0)
            ids, counted, n_counted, n_processed = batch_tensors(enc, rows, pad_id, device)
            hooks.set_batch(counted)
            try:
                model(input_ids=ids, use_cache=False)
            except torch.OutOfMemoryError:
                if len(rows) == 1:
                    raise NeurospecError(
                        f"out of device memory on a single prompt of {len(ids[0])} tokens: "
                        f"lower collect.max_length") from None
                budget = max(1, budget // 2)
                log.warning("CUDA out of memory on a batch of %d x %d tokens: token budget halved to %d, "
                            "retrying", len(rows), ids.shape[1], budget)
                stats["oom_retries"] += 1
                del ids, counted
                torch.cuda.empty_cache()
                remaining = rows + [i for b in queue for i in b]
                queue = make_batches([enc.lengths[i] for i in remaining], budget)
                queue = [[remaining[j] for j in b] for b in queue]
                continue
            hooks.commit()
            stats["n_tokens"] += n_counted
            stats["n_processed"] += n_processed
            stats["n_real"] += sum(enc.lengths[i] for i in rows)
            stats["n_batches"] += 1
            now = time.perf_counter()
            if now - last >= progress_every_s or not queue:
                last = now
                log.info("%d batches, %d prompt tokens, %.0f tokens/s, %d left",
                         stats["n_batches"], stats["n_real"], stats["n_real"] / max(now - t0, 1e-9), len(queue))
    if hooks.counts is None:  # nothing was run (no sentences, e.g. an empty shard)
        n = n_neurons(model)
        counts = np.zeros((3, hooks.n_layers, n), dtype=np.int64)
        sums = np.zeros((hooks.n_layers, n), dtype=np.float64)
    else:
        counts, sums = hooks.counts.cpu().numpy(), hooks.sums.cpu().numpy()  # the one host sync
    stats["seconds"] = time.perf_counter() - t0
    stats["token_budget"] = budget
    stats["padding_efficiency"] = stats["n_real"] / stats["n_processed"] if stats["n_processed"] else 1.0
    return counts, sums, stats


def count_table(counts: np.ndarray, sums: np.ndarray) -> pd.DataFrame:
    """Long table, one row per (layer, neuron), in COUNT_SCHEMA's columns."""
    n_layers, n_neurons = sums.shape
    return pd.DataFrame({
        "layer": np.repeat(np.arange(n_layers, dtype=np.int32), n_neurons),
        "neuron": np.tile(np.arange(n_neurons, dtype=np.int32), n_layers),
        "active": counts[0].reshape(-1),
        "nonzero": counts[1].reshape(-1),
        "gate_active": counts[2].reshape(-1),
        "act_sum": sums.reshape(-1),
    })


def shard_rows(n_rows: int, shard: int, n_shards: int) -> slice:
    """Contiguous rows of shard ``shard`` (0-based) of ``n_shards``."""
    if not 0 <= shard < n_shards:
        raise NeurospecError(f"shard {shard} is out of range for collect.shards={n_shards}")
    return slice(shard * n_rows // n_shards, (shard + 1) * n_rows // n_shards)


def collect_pair(loaded: LoadedModel, pairs: pd.DataFrame, *, template: str, token_scope: str = "source",
                 max_length: int = 512, token_budget: int | None = None, shard: int = 0, n_shards: int = 1,
                 pair_meta: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Count table and metadata of one pair table (or one shard of it)."""
    pairs = pairs.sort_values("id").iloc[shard_rows(len(pairs), shard, n_shards)]
    enc = encode(loaded.tokenizer, pairs["src"].tolist(), pairs["src_lang"].tolist(), pairs["tgt_lang"].tolist(),
                 template=template, token_scope=token_scope, max_length=max_length)
    log.info("%d prompts (%d skipped as empty), %d truncated to %d tokens, %d prompt tokens",
             len(enc.input_ids), enc.n_skipped, enc.n_truncated, max_length, sum(enc.lengths))
    counts, sums, stats = run_counts(loaded, enc, token_budget)
    log.info("done: %d counted tokens in %.1f s (%.0f prompt tokens/s), padding efficiency %.3f",
             stats["n_tokens"], stats["seconds"], stats["n_real"] / max(stats["seconds"], 1e-9),
             stats["padding_efficiency"])
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
        "pair": f"{src_lang}-{tgt_lang}",
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        # the prompt holds only the source sentence, so the counted tokens are in the source language
        "counted_lang": src_lang,
        **loaded.info,
        "prompt_template": template,
        "token_scope": token_scope,
        "max_length": max_length,
        "shard": f"{shard}/{n_shards}",
        "versions": package_versions(),
        **{k: v for k, v in (pair_meta or {}).items() if k.startswith("dataset") or k in ("detokenize", "split", "source")},
    }
    return count_table(counts, sums), meta


def collect_to_file(loaded: LoadedModel, pairs_path: str, out_path: str, *, prompt_template: str,
                    token_scope: str = "source", max_length: int = 512, token_budget: int | None = None,
                    shard: int = 0, shards: int = 1) -> None:
    """The collection task: count one pair table (or one shard of it) with a loaded model, write atomically."""
    from .tables import COUNT_SCHEMA, PAIR_SCHEMA, read_metadata, read_table, write_table

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
    write_table(df, out_path, COUNT_SCHEMA, metadata=meta)
