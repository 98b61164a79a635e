"""Top activating contexts of the selected neurons: a second pass after scoring.

For every neuron that any method selected (the union over the score tables), the ``top_k``
counted tokens of the selection split on which its activation (the input of ``down_proj``:
``h = act_fn(gate(x)) * up(x)``, the value collection counts) is largest, with where they are:
the pair, the counted language, the pair table's sentence ``id``, the token's position in the
prompt, the token and a window of the counted tokens around it.

Which tokens: exactly collection's (``collect.encoding.encode``: the same prompt template, token scope and
max length), over the first ``max_sentences`` non-empty sentences of each pair table (by ``id``).

How: one forward pre-hook per layer on ``down_proj``'s input gathers the selected neurons' values
of a batch, ``v = h[..., idx]`` ([batch, seq, m]), sets positions that are not counted to -inf,
and keeps a running buffer per layer, values [top_k, m] and token keys [top_k, m]: the batch's
[batch*seq, m] values are stacked under the buffer and ``torch.topk(dim=0)`` keeps the top_k of
each column.  A token's key is ``sequence * KEY_STRIDE + position``.  Everything stays on the
device until the end of the pass; no Python loop per token or per neuron.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from neurospec.architectures import resolve_mlp_taps
from neurospec.batching import auto_token_budget, make_batches
from neurospec.collect.encoding import Encoded, batch_tensors, encode
from neurospec.errors import NeurospecError
from neurospec.interventions import selections_from_scores
from neurospec.languages import TOKEN_SCOPES, counted_language
from neurospec.models import LoadedModel
from neurospec.prompts import check_template, model_context
from neurospec.tables import PAIR_SCHEMA, package_versions, read_metadata, read_table, write_table

log = logging.getLogger("neurospec")

# key of a token: sequence * KEY_STRIDE + position (positions are below any model's context)
KEY_STRIDE = 1 << 24
# counted tokens shown on each side of the top token
WINDOW = 12
# the most float32 elements of one layer's gathered activations at a time (256 MiB): a batch's
# [batch*seq, m] is taken in row chunks, so that many selected neurons never cost a batch's memory
CHUNK_ELEMENTS = 1 << 26

CONTEXT_SCHEMA = pa.schema(
    [
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("rank", pa.int32()),  # 0: the largest activation of this neuron
        ("activation", pa.float32()),  # down_proj input on this token (the model's dtype, as float32)
        ("pair", pa.string()),  # the pair table the sentence comes from
        ("lang", pa.string()),  # the counted language (collection's counted_lang)
        ("sentence_id", pa.int64()),  # the pair table's id
        ("position", pa.int32()),  # the token's index in the prompt's token ids
        ("token_id", pa.int64()),
        ("token", pa.string()),  # the token as text (its leading space kept)
        ("left", pa.string()),  # up to WINDOW counted tokens before it, as text
        ("right", pa.string()),  # up to WINDOW counted tokens after it, as text
    ]
)
CONTEXT_COLUMNS = tuple(CONTEXT_SCHEMA.names)


def selected_neurons(score_tables: Mapping[str, pd.DataFrame]) -> dict[int, np.ndarray]:
    """{layer: sorted neuron indices} selected by any method (the union over every group)."""
    union: dict[int, set[int]] = {}
    for scores in score_tables.values():
        for selection in selections_from_scores(scores).values():
            for layer, idx in selection.items():
                union.setdefault(int(layer), set()).update(int(i) for i in idx)
    return {layer: np.array(sorted(s), dtype=np.int64) for layer, s in sorted(union.items()) if s}


class TopKHooks:
    """Per layer, the running top_k activations of the selected neurons and the keys of their tokens."""

    def __init__(self, model: torch.nn.Module, neurons: Mapping[int, np.ndarray], top_k: int,
                 device: torch.device):
        self.taps = {tap.layer: tap for tap in resolve_mlp_taps(model)}
        bad = [layer for layer in neurons if layer not in self.taps]
        if bad:
            raise NeurospecError(f"the score tables name layer(s) {bad}; the model has layers 0..{len(self.taps) - 1}")
        self.top_k = top_k
        self.index = {layer: torch.as_tensor(idx, device=device) for layer, idx in neurons.items() if len(idx)}
        self.values = {layer: torch.full((top_k, len(i)), -torch.inf, device=device) for layer, i in self.index.items()}
        self.keys = {layer: torch.full((top_k, len(i)), -1, dtype=torch.int64, device=device)
                     for layer, i in self.index.items()}
        self._handles: list = []

    def set_batch(self, counted: torch.Tensor, keys: torch.Tensor) -> None:
        """counted: [batch, seq] bool; keys: [batch, seq] int64, each token's key."""
        self.counted = counted.reshape(-1, 1)  # [batch*seq, 1]
        self.batch_keys = keys.reshape(-1, 1)

    def _hook(self, layer: int):
        index = self.index[layer]

        m = len(index)
        step = max(1, CHUNK_ELEMENTS // m)  # tokens per chunk: [step, m] float32 at most CHUNK_ELEMENTS

        def hook(module, args):
            h = args[0].reshape(-1, args[0].shape[-1])  # [batch*seq, neurons]
            for lo in range(0, h.shape[0], step):
                v = h[lo:lo + step].index_select(-1, index).float()  # [rows, m]
                v = torch.where(self.counted[lo:lo + step], v, -torch.inf)
                values = torch.cat([self.values[layer], v], dim=0)  # [top_k + rows, m]
                keys = torch.cat([self.keys[layer], self.batch_keys[lo:lo + step].expand(-1, m)], dim=0)
                top, where = torch.topk(values, self.top_k, dim=0)  # [top_k, m]
                self.values[layer] = top
                self.keys[layer] = torch.gather(keys, 0, where)

        return hook

    def __enter__(self) -> "TopKHooks":
        for layer in self.index:
            self._handles.append(self.taps[layer].down_input.register_forward_pre_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _texts(tokenizer, ids: Sequence[int], lo: int, pos: int, hi: int) -> tuple[str, str, str]:
    """(left, token, right) of ids[lo:hi] around ``pos``, decoded together so spaces survive."""
    left = tokenizer.decode(ids[lo:pos])
    upto = tokenizer.decode(ids[lo:pos + 1])
    whole = tokenizer.decode(ids[lo:hi])
    token = upto[len(left):] if upto.startswith(left) else tokenizer.decode(ids[pos:pos + 1])
    right = whole[len(upto):] if whole.startswith(upto) else tokenizer.decode(ids[pos + 1:hi])
    return left, token, right


def top_contexts(loaded: LoadedModel, pair_tables: Sequence[tuple[pd.DataFrame, Mapping[str, Any]]],
                 neurons: Mapping[int, np.ndarray], *, top_k: int = 20, max_sentences: int | None = 100,
                 template: str, token_scope: str = "source", max_length: int = 512,
                 token_budget: int | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The top_k activating counted tokens of every neuron in ``neurons`` ({layer: indices}).

    ``pair_tables``: (pair table, its metadata) of the selection split.  Returns the contexts table
    (CONTEXT_COLUMNS; per neuron at most top_k rows, rank 0 the largest; fewer where it saw fewer
    counted tokens) and metadata (sentences per pair, tokens, timings).
    """
    if top_k < 1:
        raise NeurospecError(f"browser.top_k must be at least 1, not {top_k}")
    if max_sentences is not None and max_sentences < 1:
        raise NeurospecError(f"browser.max_sentences must be at least 1 or null, not {max_sentences}")
    check_template(template)
    if token_scope not in TOKEN_SCOPES:
        raise NeurospecError(f"collect.token_scope {token_scope!r}: choose one of {', '.join(TOKEN_SCOPES)}")
    tokenizer = loaded.tokenizer
    context = model_context(loaded.model, tokenizer)
    max_length = max_length if context is None else min(max_length, context)
    ids_all: list[list[int]] = []
    counted_all: list[np.ndarray] = []
    origin: list[tuple[str, str, int]] = []  # per sequence: pair, counted language, sentence id
    per_pair: dict[str, int] = {}
    for df, meta in pair_tables:
        d = df.sort_values("id", kind="stable")
        d = d[d["src"].map(lambda s: isinstance(s, str) and bool(s.strip()))]
        if token_scope == "target":
            d = d[d["tgt"].map(lambda s: isinstance(s, str) and bool(s.strip()))]
        if max_sentences is not None:
            d = d.iloc[:max_sentences]
        if not len(d):
            continue
        src_lang, tgt_lang = str(d["src_lang"].iloc[0]), str(d["tgt_lang"].iloc[0])
        pair = str(meta.get("pair") or f"{src_lang}-{tgt_lang}")
        enc = encode(tokenizer, d["src"].tolist(), d["src_lang"].tolist(), d["tgt_lang"].tolist(),
                     template=template, token_scope=token_scope, max_length=max_length,
                     tgt=d["tgt"].tolist() if token_scope == "target" else None)
        lang = counted_language(src_lang, tgt_lang, token_scope)
        sentence_ids = d["id"].to_numpy(np.int64)
        for row, ids, counted in zip(enc.kept, enc.input_ids, enc.counted):
            ids_all.append(ids)
            counted_all.append(counted)
            origin.append((pair, lang, int(sentence_ids[row])))
        per_pair[pair] = len(enc.input_ids)
    enc = Encoded(ids_all, counted_all, 0, 0)
    device = loaded.device
    budget = token_budget or auto_token_budget(loaded, max(enc.lengths, default=1))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    hooks = TopKHooks(loaded.model, neurons, top_k, device)
    t0 = time.perf_counter()
    n_tokens = 0
    with hooks, torch.inference_mode():
        for rows in make_batches(enc.lengths, budget):
            ids, counted, n_counted, _ = batch_tensors(enc, rows, pad_id, device)
            keys = (torch.as_tensor(rows, dtype=torch.int64, device=device)[:, None] * KEY_STRIDE
                    + torch.arange(ids.shape[1], device=device)[None, :])  # [batch, seq]
            hooks.set_batch(counted, keys)
            loaded.model(input_ids=ids, use_cache=False)
            n_tokens += n_counted
    seconds = time.perf_counter() - t0
    log.info("browser: %d sentences, %d counted tokens, %d neurons in %d layers, %.1f s",
             len(ids_all), n_tokens, sum(len(v) for v in hooks.index.values()), len(hooks.index), seconds)
    records = []
    for layer, index in hooks.index.items():
        values = hooks.values[layer].cpu().numpy()  # [top_k, m]
        keys = hooks.keys[layer].cpu().numpy()
        for j, neuron in enumerate(index.cpu().tolist()):
            # largest first; equal values (a token's activation can repeat exactly) by their key
            order = [r for r in np.lexsort((keys[:, j], -values[:, j])) if np.isfinite(values[r, j])]
            for rank, r in enumerate(order):
                seq, pos = divmod(int(keys[r, j]), KEY_STRIDE)
                ids = ids_all[seq]
                where = np.flatnonzero(counted_all[seq])
                first, last = int(where[0]), int(where[-1]) + 1
                left, token, right = _texts(tokenizer, ids, max(first, pos - WINDOW), pos,
                                            min(last, pos + 1 + WINDOW))
                pair, lang, sentence_id = origin[seq]
                records.append((layer, neuron, rank, float(values[r, j]), pair, lang, sentence_id, pos,
                                int(ids[pos]), token, left, right))
    table = pd.DataFrame.from_records(records, columns=list(CONTEXT_COLUMNS))
    meta = {
        "top_k": top_k,
        "max_sentences": max_sentences,
        "window": WINDOW,
        "n_sentences": per_pair,
        "n_tokens": n_tokens,
        "n_neurons": int(sum(len(v) for v in hooks.index.values())),
        "activation": "input of down_proj (act_fn(gate(x)) * up(x)), largest first, counted tokens only",
        "prompt_template": template,
        "token_scope": token_scope,
        "max_tokens": max_length,
        "seconds": seconds,
        "tokens_per_second": n_tokens / max(seconds, 1e-9),
        **loaded.info,
        "versions": package_versions(),
    }
    return table, meta


def contexts_to_file(loaded: LoadedModel, scores_paths: Sequence[str], pair_paths: Sequence[str], out_path: str, *,
                     top_k: int = 20, max_sentences: int | None = 100, prompt_template: str,
                     token_scope: str = "source", max_length: int = 512, token_budget: int | None = None) -> None:
    """The browser's GPU task: read the score tables and pair tables, write the contexts table atomically."""
    scores = {str(p): read_table(p, required=("group", "layer", "neuron")) for p in scores_paths}
    neurons = selected_neurons(scores)
    tables = [(read_table(p, required=tuple(PAIR_SCHEMA.names)), read_metadata(p)) for p in pair_paths]
    table, meta = top_contexts(loaded, tables, neurons, top_k=top_k, max_sentences=max_sentences,
                               template=prompt_template, token_scope=token_scope, max_length=max_length,
                               token_budget=token_budget)
    write_table(table, out_path, CONTEXT_SCHEMA, meta)
