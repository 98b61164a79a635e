"""Collect's counting: hooks at the input of every layer's ``down_proj`` (``CountHooks``) that add each
neuron's statistics over the counted tokens (active, nonzero, gate-active counts, activation sums and
sums of squares; ``ROW_STATS``), summed per row and split by row parity (``fused_row_stats``,
``batch_stats``); ``run_counts`` drives them over length-sorted batches under a token budget and
``count_table`` turns the sums into the count table's rows."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..architectures import n_neurons, resolve_mlp_taps
from ..batching import auto_token_budget, make_batches
from ..errors import NeurospecError
from ..models import LoadedModel
from ..progress import Progress
from ..tables import COUNT_COLUMNS, HALF, TOTAL_COLUMNS
from .encoding import batch_tensors, Encoded, is_out_of_memory

log = logging.getLogger("neurospec")


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
