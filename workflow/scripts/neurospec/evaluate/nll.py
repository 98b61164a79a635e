"""The ablation's measurement: held-out sentences per language and their mean next-token NLL.

``held_out_by_language`` picks a language's plain sentences from the evaluation split's pair tables
(the first ``max_sentences`` distinct ones); ``Scorer`` tokenizes them, packs them into batches under a
token budget and measures the NLL (nats per token) with the LM head on chunks of predicted positions
(``OutputHead``, ``chunked_nll``), so a [tokens x vocabulary] logit matrix of a batch never exists.
See ``neurospec.evaluate.ablation`` for the whole method."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..batching import auto_token_budget, make_batches
from ..errors import NeurospecError
from ..languages import PIVOT
from ..models import LoadedModel
from ..prompts import model_context

log = logging.getLogger("neurospec")


# Batches may hold up to 20% padding: padded positions cost the body's forward pass but never the
# LM head (only predicted positions reach it), and fewer, fuller batches save per-call overhead.
MIN_FILL = 0.8


# elements of one chunk's [tokens x vocabulary] logits (float32: 128 MiB on the CPU, 512 MiB on CUDA)
CHUNK_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 27}


@dataclass
class HeldOut:
    """The plain held-out sentences of each evaluated language, and where each came from."""

    texts: dict[str, list[str]]  # language -> sentences
    sources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # language -> [{pair, side, ids}]
    split: str | None = None

    @property
    def languages(self) -> list[str]:
        return list(self.texts)


def held_out_by_language(tables: Sequence[tuple[pd.DataFrame, Mapping[str, Any]]],
                       max_sentences: int | None = None) -> HeldOut:
    """Each language's side of the pair tables: the first ``max_sentences`` distinct non-empty ones.

    ``tables``: (pair table, its metadata) of the evaluation split, in order; a language's sentences
    are taken from the tables in this order (English's from every table's English side, so the
    English of the first table comes first), each table sorted by ``id`` (the line index).
    """
    if max_sentences is not None and max_sentences < 1:
        raise NeurospecError(f"evaluate.ablation.max_sentences must be at least 1, not {max_sentences}")
    texts: dict[str, list[str]] = {}
    seen: dict[str, set[str]] = {}
    sources: dict[str, list[dict[str, Any]]] = {}
    splits = set()
    for df, meta in tables:
        pair = str(meta.get("pair") or f"{df['src_lang'].iloc[0]}-{df['tgt_lang'].iloc[0]}")
        splits.add(meta.get("split"))
        d = df.sort_values("id", kind="stable")
        for side in ("src", "tgt"):
            langs = d[f"{side}_lang"].unique()
            if len(langs) != 1:
                raise NeurospecError(f"pair table {pair!r} mixes languages on its {side} side: {list(langs)}")
            lang = str(langs[0])
            bucket, known = texts.setdefault(lang, []), seen.setdefault(lang, set())
            ids = []
            for i, text in zip(d["id"].tolist(), d[side].tolist()):
                if max_sentences is not None and len(bucket) >= max_sentences:
                    break
                if not isinstance(text, str) or not text.strip() or text in known:
                    continue
                known.add(text)
                bucket.append(text)
                ids.append(int(i))
            if ids:
                sources.setdefault(lang, []).append({"pair": pair, "side": side, "ids": ids})
    empty = [lang for lang, t in texts.items() if not t]
    if empty:
        raise NeurospecError(f"the held-out pair tables hold no sentence in {', '.join(empty)}")
    splits.discard(None)
    if len(splits) > 1:
        raise NeurospecError(f"the held-out pair tables come from different splits: {sorted(splits)}")
    order = sorted(texts, key=lambda lang: (lang != PIVOT, lang))
    return HeldOut({k: texts[k] for k in order}, {k: sources.get(k, []) for k in order},
                   splits.pop() if splits else None)


class OutputHead:
    """The LM's logits from its last hidden states, computed on a chunk of positions at a time.

    ``lm(...).logits`` is the output embedding applied to the base model's last hidden state,
    followed by the class's own output scaling, where it has one: Cohere multiplies by
    ``logit_scale``, Granite divides by ``config.logits_scaling``, Gemma 2/3 soft-cap with
    ``config.final_logit_softcapping`` (``cap * tanh(logits / cap)``).  ``check`` verifies the
    result against ``lm(...).logits``, so an unknown scaling is an error, never a silent bias.
    """

    def __init__(self, lm: torch.nn.Module):
        self.proj = lm.get_output_embeddings()
        if self.proj is None:
            raise NeurospecError(f"{type(lm).__name__} has no output embeddings (LM head)")
        cfg = lm.config
        scale = getattr(lm, "logit_scale", None)
        self.multiply = float(scale) if isinstance(scale, (int, float)) and not isinstance(scale, bool) else None
        divide = getattr(cfg, "logits_scaling", None)
        self.divide = float(divide) if divide else None
        cap = getattr(cfg, "final_logit_softcapping", None)
        self.cap = float(cap) if cap else None
        self.model_class = type(lm).__name__

    @property
    def vocab_size(self) -> int:
        return int(self.proj.weight.shape[0])

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., hidden] -> [..., vocab] in the model's dtype, the same operations as the LM's forward."""
        logits = self.proj(hidden)
        if self.multiply is not None:
            logits = logits * self.multiply
        if self.divide is not None:
            logits = logits / self.divide
        if self.cap is not None:
            logits = logits / self.cap
            logits = torch.tanh(logits)
            logits = logits * self.cap
        return logits

    @torch.inference_mode()
    def check(self, lm: torch.nn.Module, base: torch.nn.Module, input_ids: torch.Tensor) -> float:
        """Largest |difference| from ``lm(input_ids).logits`` relative to its largest |logit|; raises
        when it exceeds the dtype's tolerance (1e-4 in float32/64, 2e-2 in half precision)."""
        reference = lm(input_ids=input_ids, use_cache=False).logits.float()
        ours = self(base(input_ids=input_ids, use_cache=False).last_hidden_state).float()
        if ours.shape != reference.shape:
            raise NeurospecError(f"{self.model_class}: the LM head gives logits of shape {tuple(ours.shape)}, "
                                 f"the LM {tuple(reference.shape)}")
        diff = float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-30))
        tolerance = 1e-4 if self.proj.weight.dtype in (torch.float32, torch.float64) else 2e-2
        if not diff <= tolerance:
            raise NeurospecError(
                f"{self.model_class}: cannot reproduce the LM's logits from its output embeddings "
                f"(largest difference {diff:.2e} of the largest logit): its output scaling is not one "
                "neurospec knows (logit_scale, logits_scaling, final_logit_softcapping)")
        return diff


def chunk_tokens_for(vocab_size: int, device: torch.device) -> int:
    """Predicted positions per LM-head chunk: CHUNK_ELEMENTS of the device over the vocabulary."""
    return max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS["cpu"]) // max(vocab_size, 1))


def chunked_nll(head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, targets: torch.Tensor,
                chunk_tokens: int) -> torch.Tensor:
    """-log softmax(head(hidden))[target] per position, [N], at most ``chunk_tokens`` positions at once.

    hidden: [N, H]; targets: [N].  The log-softmax runs in float32 (float64 for float64 models):
    logsumexp(logits) - logits[target], exactly the cross-entropy of the LM's own logits.
    """
    out = torch.empty(len(targets), dtype=torch.promote_types(hidden.dtype, torch.float32), device=hidden.device)
    for start in range(0, len(targets), max(1, chunk_tokens)):
        end = min(start + chunk_tokens, len(targets))
        logits = head(hidden[start:end]).to(out.dtype)  # [chunk, vocab]
        picked = logits.gather(1, targets[start:end, None])[:, 0]
        out[start:end] = torch.logsumexp(logits, dim=-1) - picked
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor  # [rows, width], right-padded
    positions: torch.Tensor  # [N] flat indices (row * width + t) of the positions that predict a token
    targets: torch.Tensor  # [N] the token each of them predicts (input_ids[row, t + 1])
    owner: torch.Tensor  # [N] the sentence each belongs to


class Scorer:
    """Held-out sentences tokenized and batched once; ``nll()`` scores all of them under whatever
    intervention is active, returning the summed NLL and the number of predicted tokens per sentence."""

    def __init__(self, loaded: LoadedModel, texts: Sequence[str], *, max_length: int = 512,
                 token_budget: int | None = None, chunk_tokens: int | None = None):
        self.lm = loaded.require_lm("ablation (next-token NLL)")
        self.base = loaded.model
        self.device = loaded.device
        self.head = OutputHead(self.lm)
        self.chunk_tokens = chunk_tokens or chunk_tokens_for(self.head.vocab_size, self.device)
        tok = loaded.tokenizer
        # never more tokens than the model's context: a longer sentence loses its end (it is the whole input)
        context = model_context(self.lm, tok)
        self.max_length = int(max_length) if context is None else min(int(max_length), context)
        if self.max_length < int(max_length):
            log.info("held-out sentences truncated to the model's context of %d tokens "
                     "(evaluate.ablation.max_length is %d)", context, max_length)
        enc = tok(list(texts), add_special_tokens=True, return_attention_mask=False)["input_ids"] if texts else []
        self.ids = [list(ids[: self.max_length]) for ids in enc]
        self.truncated = np.array([len(ids) > self.max_length for ids in enc], dtype=bool)
        self.n_truncated = int(self.truncated.sum())
        self.n_predicted = np.array([max(len(ids) - 1, 0) for ids in self.ids], dtype=np.int64)
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self.pad_id = int(pad)
        # on CUDA, memory for one float32 logit chunk and its temporaries is kept aside
        self.token_budget = token_budget or auto_token_budget(
            loaded, max((len(i) for i in self.ids), default=1),
            reserve_bytes=3 * 4 * self.chunk_tokens * self.head.vocab_size)
        self._batch()

    def _batch(self) -> None:
        usable = [i for i, n in enumerate(self.n_predicted) if n > 0]
        self.batches: list[Batch] = []
        for rows in make_batches([len(self.ids[i]) for i in usable], self.token_budget, min_fill=MIN_FILL):
            rows = [usable[r] for r in rows]
            width = max(len(self.ids[i]) for i in rows)
            ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
            positions, targets, owner = [], [], []
            for r, i in enumerate(rows):
                seq = self.ids[i]
                ids[r, : len(seq)] = seq
                positions.append(r * width + np.arange(len(seq) - 1))
                targets.append(seq[1:])
                owner.append(np.full(len(seq) - 1, i))
            as_tensor = lambda a: torch.as_tensor(np.concatenate(a).astype(np.int64), device=self.device)  # noqa: E731
            self.batches.append(Batch(torch.as_tensor(ids, device=self.device), as_tensor(positions),
                                      as_tensor(targets), as_tensor(owner)))

    @property
    def n_tokens(self) -> int:
        return int(self.n_predicted.sum())

    @torch.inference_mode()
    def check_head(self) -> float:
        """The chunked head against ``lm(...).logits`` on the shortest scored sentence (no intervention)."""
        usable = [i for i, n in enumerate(self.n_predicted) if n > 0]
        if not usable:
            return 0.0
        i = min(usable, key=lambda j: (len(self.ids[j]), j))
        return self.head.check(self.lm, self.base, torch.as_tensor([self.ids[i]], device=self.device))

    @torch.inference_mode()
    def nll(self) -> np.ndarray:
        """Summed NLL (nats) of every sentence's predicted tokens, float64 [sentences]; 0 for sentences
        with nothing to predict.  A CUDA out-of-memory halves the token budget and starts over."""
        while True:
            try:
                sums = torch.zeros(len(self.ids), dtype=torch.float64, device=self.device)
                for b in self.batches:
                    hidden = self.base(input_ids=b.input_ids, use_cache=False).last_hidden_state
                    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, b.positions)  # [N, H]
                    sums.index_add_(0, b.owner, chunked_nll(self.head, flat, b.targets, self.chunk_tokens).double())
                return sums.cpu().numpy()
            except torch.OutOfMemoryError:
                if self.token_budget <= max(len(i) for i in self.ids):
                    raise NeurospecError("out of device memory on a single held-out sentence: lower "
                                         "evaluate.ablation.max_length") from None
                self.token_budget //= 2
                log.warning("CUDA out of memory: token budget halved to %d, starting the condition over",
                            self.token_budget)
                torch.cuda.empty_cache()
                self._batch()
