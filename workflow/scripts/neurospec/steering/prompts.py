"""Steering prompts from the held-out evaluation split (never used for selection), and each
language's reference of the same sentence.

Sentences are matched across languages by their English side (``collect.collect.sentence_hash`` of the
English text): EC40's NTREX and FLORES are multi-way parallel by line, so every language's pair
table holds the same English sentence i; the demo corpus is parallel by English entry.  The
English sentences are taken in the order of the first table's ids, the first ``n_prompts``.

- ``continuation``: the first half (by words, at least one) of English sentence i, plain text;
- ``translation``: the translation prompt (``collect.prompt_template`` and
  ``evaluate.translate``'s chat template / continuation, as translation renders it) of the
  direction Y->en, with Y the i-th language round-robin over the languages that have sentence i;
  for group X the prompts whose source is X are left out (the prompt never holds or asks for X).

A prompt longer than the model allows (its context less ``max_new_tokens``, at most 512 tokens)
loses the end of its sentence, never its template (``prompts.fit_prompt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from neurospec.collect.collect import sentence_hash
from neurospec.errors import NeurospecError
from neurospec.languages import PIVOT
from neurospec.prompts import fit_prompt, model_context

PROMPT_KINDS = ("continuation", "translation")


@dataclass
class Parallel:
    """Held-out sentences keyed by their English sentence: ``english[key]`` and ``by_lang[lang][key]``."""

    keys: list[str]  # English sentence hashes, in order
    ids: dict[str, int]  # key -> the id of the English sentence (the first table's)
    english: dict[str, str]
    by_lang: dict[str, dict[str, str]]

    @property
    def languages(self) -> list[str]:
        return sorted(self.by_lang)


def parallel_sentences(tables: Sequence[tuple[pd.DataFrame, Mapping[str, Any]]]) -> Parallel:
    """Every non-English language's held-out sentences, keyed by the English sentence they pair with."""
    keys: list[str] = []
    ids: dict[str, int] = {}
    english: dict[str, str] = {}
    by_lang: dict[str, dict[str, str]] = {}
    for df, _ in tables:
        for row in df.sort_values("id", kind="stable").itertuples(index=False):
            src_en = row.src_lang == PIVOT
            en, other = (row.src, row.tgt) if src_en else (row.tgt, row.src)
            lang = row.tgt_lang if src_en else row.src_lang
            if not (isinstance(en, str) and en.strip() and isinstance(other, str) and other.strip()):
                continue
            key = sentence_hash(en)
            if key not in english:
                keys.append(key)
                english[key] = en
                ids[key] = int(row.id)
            by_lang.setdefault(str(lang), {}).setdefault(key, other)
    if not keys:
        raise NeurospecError("the evaluation split's pair tables hold no sentence to steer with")
    return Parallel(keys, ids, english, by_lang)


def first_half(sentence: str) -> str:
    """The first half of a sentence by words (at least one word)."""
    words = sentence.split()
    return " ".join(words[: max(1, len(words) // 2)])


@dataclass
class Prompt:
    kind: str  # continuation | translation
    key: str  # the English sentence's hash (the reference's key in every language)
    id: int
    src_lang: str  # the prompt's sentence's language (en for continuation)
    text: str
    ids: list[int]
    truncated: bool = False


def build_prompts(tokenizer, parallel: Parallel, kinds: Sequence[str], n_prompts: int, *, template: str,
                  continuation: str, chat: bool, limit: int) -> list[Prompt]:
    """The prompts of every kind (see the module's docstring), token ids fitted into ``limit``."""
    from neurospec.evaluate.translation import encode_prompts, prompt_texts

    unknown = [k for k in kinds if k not in PROMPT_KINDS]
    if unknown:
        raise NeurospecError(f"evaluate.steering.prompt_kinds has {', '.join(map(repr, unknown))}: "
                             f"choose from {', '.join(PROMPT_KINDS)}")
    keys = parallel.keys[: int(n_prompts)]
    out: list[Prompt] = []
    if "continuation" in kinds:
        for key in keys:
            half = first_half(parallel.english[key])

            def enc(s: str) -> list[int]:
                return list(tokenizer(s, add_special_tokens=True, return_attention_mask=False)["input_ids"])

            fitted = fit_prompt(tokenizer, half, enc, limit, what="the steering prompt limit")
            out.append(Prompt("continuation", key, parallel.ids[key], PIVOT, fitted.src, fitted.ids, fitted.truncated))
    if "translation" in kinds:
        langs = parallel.languages
        for i, key in enumerate(keys):
            have = [lang for lang in langs if key in parallel.by_lang[lang]]
            if not have:
                continue
            lang = have[i % len(have)]
            src = parallel.by_lang[lang][key]

            def texts(s: str, lang: str = lang) -> list[str]:
                return prompt_texts(tokenizer, [s], lang, PIVOT, template=template, continuation=continuation,
                                    chat=chat)

            def enc(s: str) -> list[int]:
                return encode_prompts(tokenizer, texts(s), chat)[0]

            fitted = fit_prompt(tokenizer, src, enc, limit, what="the steering prompt limit")
            out.append(Prompt("translation", key, parallel.ids[key], lang, texts(fitted.src)[0], fitted.ids,
                              fitted.truncated))
    return out


def prompt_limit(model, tokenizer, max_new_tokens: int, max_length: int = 512) -> int:
    """The most tokens a steering prompt may hold: ``max_length``, or the model's context less
    ``max_new_tokens`` when smaller."""
    context = model_context(model, tokenizer)
    limit = int(max_length)
    if context is not None:
        if context - max_new_tokens < 1:
            raise NeurospecError(f"evaluate.steering.max_new_tokens ({max_new_tokens}) leaves no room for a prompt "
                                 f"in the model's context of {context} tokens")
        limit = min(limit, context - max_new_tokens)
    return limit


def prompts_for(prompts: Sequence[Prompt], lang: str) -> list[int]:
    """Indices of the prompts that steering towards ``lang`` uses: none whose sentence is in ``lang``."""
    return [i for i, p in enumerate(prompts) if p.src_lang != lang]
