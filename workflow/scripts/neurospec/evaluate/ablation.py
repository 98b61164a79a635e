"""Ablation: do the neurons a method selected matter for their language?

For every group a scoring method selected neurons for (a language, or a translation direction),
those neurons are intervened on at the input of ``down_proj`` (``interventions.intervene``) and the
mean next-token negative log-likelihood (NLL, nats per token) of held-out plain sentences of every
evaluated language is measured:

- ``zero``: the neurons are set to 0 on every token (LAPE's deactivation, Tang et al. 2024);
- ``mean``: the neurons are set to their mean activation over the *other* languages' tokens (the
  count tables' ``act_sum`` / ``n_tokens`` of the selection split, the group's own language left
  out), which removes what is specific to the language rather than the neuron's average output.

Controls: per group, ``random_sets`` random neuron sets, each drawn from its own seed (the ``seed``
column), so a rerun draws the same sets.  Each control neuron is matched to a selected one on its
layer AND its firing-rate decile within that layer (``interventions.matched_like``; the rate is the
score table's count criterion over n_tokens, pooled over the selection split's count tables), so a
method that picks the most active neurons is compared with equally active random ones; without
count tables, on the layer only (``interventions.random_like``).  The baseline (no intervention) runs once per language, not once per
condition.  Output, one table per method::

    group, eval_lang, condition ("selected" | "random"), seed (-1 for "selected"), n_neurons,
    n_tokens, nll, base_nll, delta_nll (= nll - base_nll), rel_delta_nll (= delta_nll / base_nll),
    delta_nll_low, delta_nll_high, p_controls

Uncertainty, for the selected sets (null on the controls' rows): ``delta_nll_low``/``_high``, a
sentence bootstrap (``N_BOOT`` resamples of the language's held-out sentences, the ratio-of-sums
delta NLL of each, percentile interval at ``LEVEL``, seeded per group and language); ``p_controls``,
the empirical p-value (1 + #{controls with delta NLL >= the selected set's}) / (1 + random_sets) on the
same language.  ``rel_delta_nll`` puts languages of different base NLL on one scale (specificity).

Matched budgets (``budgets``, dose-response): per group and N, the top N neurons of the method's
score table ranked over all layers by ``score`` (|score| for diffmeans), ablated like a selection
with ``budget_random_sets`` matched controls of N neurons; their rows carry ``budget`` = N (null on
the method's own selection's rows).  A budget beyond a group's scored neurons is left out (metadata
``budgets_skipped``).

Held-out sentences: the evaluation split's pair tables (never the split neurons were selected on);
a language's plain sentences are its side of those tables (English's: the English sides), the
first ``max_sentences`` distinct ones in table order; the metadata lists which (pair, side, ids).

The NLL: every sentence is tokenized on its own (special tokens as the tokenizer adds them: BOS),
and each token after the first is predicted from the ones before it.  A sentence longer than
``max_length`` tokens (``evaluate.ablation.max_length``; the model's context when that is smaller)
keeps its first tokens; the metadata counts them per language (``n_truncated_by_language``).  Sentences are packed into
right-padded batches under a token budget (``batching``); the base model runs once per batch and
the LM head on chunks of ``chunk_tokens`` predicted positions, so a [tokens x vocabulary] logit
matrix of a whole batch never exists (Aya's vocabulary is 256k).  The head reproduces the LM's own
logits, output scaling included (``OutputHead``), and each job checks that on one sentence
against ``lm(...).logits`` before it measures anything.

Cost: (1 + groups x (1 + random_sets) + group budgets x (1 + budget_random_sets)) passes over every
evaluated sentence (LM head included).
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ..architectures import n_neurons as model_neurons
from ..batching import auto_token_budget, make_batches
from ..errors import NeurospecError
from ..interventions import (MODES, MeanPatchValues, Selection, firing_rates, intervene, matched_like, random_like,
                            rate_deciles, selection_size, selections_from_scores)
from ..languages import PIVOT, group_language
from ..models import LoadedModel, is_demo_model
from ..progress import Progress
from ..prompts import model_context
from ..tables import PAIR_SCHEMA, package_versions, read_counts, read_metadata, read_table, write_table
from neurospec.variants import label as variant_label

log = logging.getLogger("neurospec")

ABLATION_SCHEMA = pa.schema(
    [
        ("group", pa.string()),  # the scoring group whose neurons (or their random control) were ablated
        ("eval_lang", pa.string()),  # the language whose held-out sentences were scored
        ("condition", pa.string()),  # "selected" | "random"
        ("seed", pa.int64()),  # the random control's seed; -1 for "selected"
        ("n_neurons", pa.int64()),  # neurons ablated (all layers)
        ("n_tokens", pa.int64()),  # predicted tokens of eval_lang
        ("nll", pa.float64()),  # mean NLL per token under the intervention (nats)
        ("base_nll", pa.float64()),  # mean NLL per token without intervention
        ("delta_nll", pa.float64()),  # nll - base_nll
        ("rel_delta_nll", pa.float64()),  # delta_nll / base_nll: comparable across languages
        ("delta_nll_low", pa.float64()),  # "selected": sentence-bootstrap CI of delta_nll (LEVEL); null for "random"
        ("delta_nll_high", pa.float64()),
        ("p_controls", pa.float64()),  # "selected": (1 + #controls with delta >= its delta) / (1 + #controls)
        ("budget", pa.int64()),  # null: the method's own selection; N: its top N neurons by score (and controls)
    ]
)
ABLATION_COLUMNS = tuple(ABLATION_SCHEMA.names)
# Batches may hold up to 20% padding: padded positions cost the body's forward pass but never the
# LM head (only predicted positions reach it), and fewer, fuller batches save per-call overhead.
MIN_FILL = 0.8
# elements of one chunk's [tokens x vocabulary] logits (float32: 128 MiB on the CPU, 512 MiB on CUDA)
CHUNK_ELEMENTS = {"cpu": 1 << 25, "cuda": 1 << 27}
# the sentence bootstrap of the selected sets' delta NLL: resamples and two-sided level
N_BOOT = 1000
LEVEL = 0.95


# --------------------------------------------------------------------------------------------
# Held-out sentences
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# The LM head on chunks, and the NLL
# --------------------------------------------------------------------------------------------


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


def language_means(sums: np.ndarray, counts: np.ndarray, langs: np.ndarray, order: Sequence[str]) -> np.ndarray:
    """Mean NLL per token of each language in ``order``: its sentences' summed NLL over their tokens."""
    out = np.empty(len(order))
    for k, lang in enumerate(order):
        mask = langs == lang
        out[k] = sums[mask].sum() / max(int(counts[mask].sum()), 1)
    return out


# --------------------------------------------------------------------------------------------
# Uncertainty: sentence bootstrap, empirical p-value against the controls
# --------------------------------------------------------------------------------------------


def ci_rng(seed: int, group: str, lang: str) -> np.random.Generator:
    """The bootstrap's generator of one (group, evaluated language): the same on every rerun."""
    return np.random.default_rng([int(seed), zlib.crc32(group.encode()), zlib.crc32(lang.encode())])


def bootstrap_delta_ci(base_sums: np.ndarray, sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
                       n_boot: int = N_BOOT, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of delta NLL = (sum(sums) - sum(base_sums)) / sum(counts) over sentences
    resampled with replacement (``n_boot`` resamples of all sentences at once, one
    ``rng.integers(0, n, size=(n_boot, n))`` draw): per sentence its summed NLL with the intervention
    (``sums``) and without (``base_sums``) and its predicted tokens (``counts``)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = len(counts)
    if n == 0 or n_boot < 1:
        return float("nan"), float("nan")
    idx = rng.integers(0, n, size=(n_boot, n))
    diff = np.asarray(sums, dtype=np.float64) - np.asarray(base_sums, dtype=np.float64)
    deltas = diff[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1.0)
    alpha = (1.0 - level) / 2
    return float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1.0 - alpha))


def p_controls(delta: float, control_deltas: Sequence[float]) -> float:
    """Empirical p-value of a selected set's delta NLL against its controls':
    (1 + #{controls with delta >= the selected one's}) / (1 + #controls)."""
    controls = np.asarray(control_deltas, dtype=np.float64)
    return float((1 + int((controls >= delta).sum())) / (1 + len(controls)))


# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------


def random_controls(selection: Selection, n_neurons: int, group: str, seeds: Sequence[int],
                    salt: Sequence[int] = ()) -> list[Selection]:
    """One random selection per seed with ``selection``'s neurons per layer; the draw depends on the
    seed and the group only (and ``salt``: a budget's N), so a rerun (or another method's run) gives
    the same sets."""
    return [random_like(selection, n_neurons,
                        np.random.default_rng([int(s), zlib.crc32(group.encode()), *map(int, salt)]))
            for s in seeds]


def matched_controls(selection: Selection, deciles: np.ndarray, group: str,
                     seeds: Sequence[int], salt: Sequence[int] = ()) -> list[tuple[Selection, int]]:
    """One control per seed matched on layer and firing-rate decile (``interventions.matched_like``),
    with the number of its neurons that had to come from the selection; seeded like ``random_controls``."""
    return [matched_like(selection, deciles,
                         np.random.default_rng([int(s), zlib.crc32(group.encode()), *map(int, salt)]))
            for s in seeds]


# methods whose selection keeps the largest |score| (diffmeans' score is a signed difference)
ABS_SCORE_METHODS = ("diffmeans",)


def budget_selections(scores: pd.DataFrame, budgets: Sequence[int],
                      method: str) -> tuple[dict[str, dict[int, Selection]], dict[str, list[int]]]:
    """Per group and budget N, the group's top N neurons of the score table, ranked over all layers by
    ``score`` (by |score| for ``ABS_SCORE_METHODS``), ties by layer, then neuron.

    Returns {group: {N: selection}} and {group: [the budgets larger than its scored neurons]} (the
    score table holds the selected neurons only, so a budget beyond them is left out, not padded).
    """
    if any(isinstance(n, bool) or int(n) < 1 for n in budgets):
        raise NeurospecError(f"evaluate.ablation.budgets must be positive integers, not {list(budgets)}")
    out: dict[str, dict[int, Selection]] = {}
    skipped: dict[str, list[int]] = {}
    for group, d in scores.groupby("group", sort=True, observed=True):
        key = d["score"].to_numpy(np.float64)
        key = np.abs(key) if method in ABS_SCORE_METHODS else key
        order = np.lexsort((d["neuron"].to_numpy(), d["layer"].to_numpy(), -key))
        for n in sorted({int(b) for b in budgets}):
            if n > len(d):
                skipped.setdefault(str(group), []).append(n)
                continue
            top = d.iloc[order[:n]]
            out.setdefault(str(group), {})[n] = selections_from_scores(top).get(str(group), {})
    return out, skipped


def ablation_table(loaded: LoadedModel, selections: Mapping[str, Selection], held_out: HeldOut, *,
                   mode: str = "zero", random_sets: int = 20, seed: int = 0,
                   mean_values: Callable[[str], np.ndarray] | None = None, max_length: int = 512,
                   token_budget: int | None = None, chunk_tokens: int | None = None,
                   deciles: np.ndarray | None = None,
                   budgets: Mapping[str, Mapping[int, Selection]] | None = None,
                   budget_random_sets: int = 3, token_scope: str = "source") -> tuple[pd.DataFrame, dict]:
    """Rows of ABLATION_SCHEMA for every group of ``selections`` and its random controls.

    ``token_scope``: the selection's collect.token_scope, which says a pair group's language
    (``group_language``).

    ``mean_values(lang)``: [layers, neurons] values to patch with in ``mode`` "mean" for a group
    whose language is ``lang`` (its mean activation over the other languages).  ``deciles``:
    [layers, neurons] firing-rate deciles (``interventions.rate_deciles``): the controls are then
    matched on layer and decile (``matched_controls``), else on layer only (``random_controls``).
    ``budgets``: {group: {N: its top N neurons}} (``budget_selections``), each ablated with
    ``budget_random_sets`` controls of its own; their rows carry ``budget`` N.
    """
    if mode not in MODES:
        raise NeurospecError(f"evaluate.ablation.mode {mode!r}: choose one of {', '.join(MODES)}")
    if random_sets < 0:
        raise NeurospecError(f"evaluate.ablation.random_sets must be at least 0, not {random_sets}")
    if mode == "mean" and mean_values is None:
        raise NeurospecError("ablation mode 'mean' needs the count tables' mean activations")
    order = held_out.languages
    texts = [t for lang in order for t in held_out.texts[lang]]
    langs = np.array([lang for lang in order for _ in held_out.texts[lang]])
    scorer = Scorer(loaded, texts, max_length=max_length, token_budget=token_budget, chunk_tokens=chunk_tokens)
    diff = scorer.check_head()
    n_tok = np.array([int(scorer.n_predicted[langs == lang].sum()) for lang in order])
    truncated = {lang: int(scorer.truncated[langs == lang].sum()) for lang in order}
    log.info("%d held-out sentences in %d languages, %d predicted tokens (%d truncated to %d%s), %d batches "
             "under %d tokens, LM head in chunks of %d positions (matches lm().logits to %.1e)",
             len(texts), len(order), scorer.n_tokens, scorer.n_truncated, scorer.max_length,
             "".join(f"; {lang} {n}" for lang, n in truncated.items() if n), len(scorer.batches),
             scorer.token_budget, scorer.chunk_tokens, diff)
    empty = [lang for lang, n in zip(order, n_tok) if n == 0]
    if empty:
        raise NeurospecError(f"no held-out sentence of {', '.join(empty)} has a token to predict")

    t0 = time.perf_counter()
    base_sums = scorer.nll()
    base = language_means(base_sums, scorer.n_predicted, langs, order)
    # the bootstrap's unit: each language's sentences with a token to predict
    units = {lang: np.flatnonzero((langs == lang) & (scorer.n_predicted > 0)) for lang in order}
    n_passes = 1
    log.info("baseline NLL: %s", ", ".join(f"{lang} {v:.3f}" for lang, v in zip(order, base)))
    n_neurons = model_neurons(loaded.model)
    seeds = [seed + j for j in range(random_sets)]
    rows = []
    own_lang = {g: group_language(g, token_scope) for g in selections}
    overlaps: dict[str, int] = {}
    budget_seeds = [seed + j for j in range(budget_random_sets)]
    sets = [(group, None, selection, seeds) for group, selection in selections.items()]
    sets += [(group, n, sel, budget_seeds) for group in selections for n, sel in (budgets or {}).get(group, {}).items()]
    # tokens scored (each pass: every held-out token), tokens/s, ETA (neurospec.progress)
    progress = Progress(sum(1 + len(ss) for *_, ss in sets) * scorer.n_tokens, "tokens", log,
                        f"ablation ({len(sets)} neuron sets)")
    for group, budget, selection, set_seeds in sets:
        values = mean_values(own_lang[group]) if mode == "mean" else None
        salt = () if budget is None else (budget,)
        if deciles is None:
            controls = random_controls(selection, n_neurons, group, set_seeds, salt)
        else:
            drawn = matched_controls(selection, deciles, group, set_seeds, salt)
            controls = [c for c, _ in drawn]
            if sum(o for _, o in drawn):
                name = group if budget is None else f"{group}@{budget}"
                overlaps[name] = sum(o for _, o in drawn)
                log.warning("%s: %d control neuron(s) over %d sets came from the selection: a (layer, decile) "
                            "cell had too few other neurons", name, overlaps[name], len(set_seeds))
        conditions = [("selected", -1, selection)] + [("random", s, sel) for s, sel in zip(set_seeds, controls)]
        own_deltas = []
        measured = []  # (condition, seed, size, per-sentence NLL sums, per-language mean NLL)
        for condition, s, sel in conditions:
            size = selection_size(sel)
            if size == 0:  # nothing to ablate: exactly the baseline
                sums = base_sums
            else:
                with intervene(loaded.model, sel, mode, values):
                    sums = scorer.nll()
                n_passes += 1
            progress.update(scorer.n_tokens)
            measured.append((condition, s, size, sums, language_means(sums, scorer.n_predicted, langs, order)))
        control_deltas = np.array([m[4] - base for m in measured[1:]]).reshape(len(measured) - 1, len(order))
        for condition, s, size, sums, nll in measured:
            for k, (lang, n, v, b) in enumerate(zip(order, n_tok, nll, base)):
                low = high = p = float("nan")
                if condition == "selected":
                    u = units[lang]
                    low, high = bootstrap_delta_ci(base_sums[u], sums[u], scorer.n_predicted[u],
                                                   ci_rng(seed, group, lang))
                    p = p_controls(v - b, control_deltas[:, k])
                rows.append((group, lang, condition, s, size, int(n), float(v), float(b), float(v - b),
                             float((v - b) / b), low, high, p, budget))
            if own_lang[group] in order:
                k = order.index(own_lang[group])
                own_deltas.append(f"{nll[k] - base[k]:+.3f}")
        if own_deltas:
            log.info("%s%s (%d neurons): delta NLL on %s %s (random: %s); %.0f tokens/s so far", group,
                     "" if budget is None else f" top {budget}", selection_size(selection), own_lang[group],
                     own_deltas[0],
                     ", ".join(own_deltas[1:]) or "none", n_passes * scorer.n_tokens / (time.perf_counter() - t0))
    progress.close()
    seconds = time.perf_counter() - t0
    df = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    df["budget"] = pd.array(df["budget"].tolist(), dtype="Int64")
    meta = {
        "mode": mode,
        "random_sets": random_sets,
        "seeds": seeds,
        "controls": "layer" if deciles is None else "layer and firing-rate decile",
        "ci": {"unit": "sentences", "n": {lang: len(units[lang]) for lang in order}, "n_boot": N_BOOT,
               "level": LEVEL, "interval": "percentile of the ratio-of-sums delta NLL", "seed": seed},
        "p_controls": {"n_controls": random_sets, "formula": "(1 + #{controls: delta >= selected}) / (1 + n)"},
        "control_overlap": overlaps,
        "budget_random_sets": budget_random_sets,
        "eval_split": held_out.split,
        "eval_languages": order,
        "sentences": held_out.sources,
        "n_sentences": {lang: len(held_out.texts[lang]) for lang in order},
        "n_truncated": scorer.n_truncated,
        "n_truncated_by_language": truncated,
        "max_length": max_length,
        "max_tokens": scorer.max_length,  # max_length, or the model's context when smaller
        "group_lang": own_lang,
        "token_scope": token_scope,
        "n_passes": n_passes,
        "tokens_per_pass": scorer.n_tokens,
        "seconds": seconds,
        "tokens_per_second": n_passes * scorer.n_tokens / max(seconds, 1e-9),
        "token_budget": scorer.token_budget,
        "chunk_tokens": scorer.chunk_tokens,
        "head_check_relative_difference": diff,
    }
    return df, meta


# --------------------------------------------------------------------------------------------
# The rule's task
# --------------------------------------------------------------------------------------------


def ablate_to_file(loaded: LoadedModel, *, scores_path: str, pair_tables: Sequence[str], out_path: str,
                   count_tables: Sequence[str] = (), mode: str = "zero", random_sets: int = 20,
                   max_sentences: int | None = 200, seed: int = 0, max_length: int = 512,
                   token_budget: int | None = None, budgets: Sequence[int] = (),
                   budget_random_sets: int = 3, token_scope: str = "source", rest: str = "pooled") -> None:
    """The ablation task of one scoring method: its score table, the held-out pair tables, (for mode
    "mean") the selection split's count tables; writes ``out_path`` atomically."""
    scores = read_table(scores_path, required=("group", "layer", "neuron"))
    score_meta = read_metadata(scores_path)
    selected = selections_from_scores(scores)
    groups = [str(g) for g in score_meta.get("groups", sorted(selected))]
    selections = {g: selected.get(g, {}) for g in groups}
    held_out = held_out_by_language([(read_table(p, required=tuple(PAIR_SCHEMA.names)), read_metadata(p))
                                   for p in pair_tables], max_sentences)
    patch = MeanPatchValues(count_tables, "evaluate.ablation", rest=rest) if mode == "mean" else None
    mean_values = (lambda lang: patch.excluding([lang])) if patch is not None else None
    rate_column = score_meta.get("column") or "gate_active"
    deciles = None
    if count_tables:  # controls matched on firing-rate decile: the rate of the scores' own criterion
        deciles = rate_deciles(firing_rates(
            {str(p): read_counts(p, [rate_column]) for p in count_tables}, rate_column))
    method = score_meta.get("method", "?")
    tops, skipped = budget_selections(scores, budgets, method) if budgets else ({}, {})
    if skipped:
        log.warning("budgets beyond a group's scored neurons are left out: %s",
                    "; ".join(f"{g}: {', '.join(map(str, n))}" for g, n in skipped.items()))
    log.info("%s: %d groups (%d with neurons), mode %s, %d random sets each", method, len(groups),
             sum(selection_size(s) > 0 for s in selections.values()), mode, random_sets)
    df, meta = ablation_table(loaded, selections, held_out, mode=mode, random_sets=random_sets, seed=seed,
                              mean_values=mean_values, max_length=max_length, token_budget=token_budget,
                              deciles=deciles, budgets=tops, budget_random_sets=budget_random_sets,
                              token_scope=token_scope)
    meta.update({
        "budgets": sorted({int(b) for b in budgets}),
        "budgets_skipped": skipped,
        "budget_rank": "|score|" if method in ABS_SCORE_METHODS else "score",
        "rate_column": rate_column if deciles is not None else None,
        "method": variant_label(score_meta),  # lape@strict for a scoring.variants entry
        "group_kind": score_meta.get("group_kind"),
        "scoring_params": score_meta.get("params"),
        "scoring_column": score_meta.get("column"),
        "mean_rest": rest if mode == "mean" else None,
        "max_sentences": max_sentences,
        "seed": seed,
        **loaded.info,
        "demo_model": is_demo_model(loaded.info.get("model", "")),
        "versions": package_versions(),
    })
    write_table(df, out_path, ABLATION_SCHEMA, metadata=meta)
