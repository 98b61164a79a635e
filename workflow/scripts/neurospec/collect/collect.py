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

This module holds the pair-level task and its files (``collect_pair``, ``collect_to_file``: shards,
sentence hashes, metadata); the encoding and batch tensors are in ``encoding``, the hooks and the
counting loop in ``counting``.
"""

from __future__ import annotations

import hashlib
import logging
import unicodedata
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..errors import NeurospecError
from ..languages import counted_language, language, TOKEN_SCOPES
from ..models import LoadedModel
from ..prompts import check_template, model_context
from ..steering.residual import encode_array, RESIDUAL_KEY
from ..tables import HALF, package_versions, write_counts
from .encoding import encode, Encoded
from .counting import count_table, run_counts


log = logging.getLogger("neurospec")

# What each collect.token_scope counts (the count table's metadata says it, key "counted_tokens")
COUNTED_TOKENS = {
    "source": "the source sentence's tokens inside the prompt",
    "all": "every token of the prompt (special tokens included)",
    "target": "the reference translation's tokens, fed in after the prompt (teacher forcing); "
              "prompt, source and padding excluded, no end-of-sequence token appended",
}


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
