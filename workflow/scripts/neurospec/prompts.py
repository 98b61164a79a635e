"""Prompt templates: validation and rendering with the source sentence's character span; bounded
prompts: the model's context (``model_context``) and a prompt fitted into a token limit by cutting
its source sentence, never its template (``fit_prompt``)."""

from __future__ import annotations

from dataclasses import dataclass
from string import Formatter
from typing import Any, Callable, Sequence

from .errors import NeurospecError
from .languages import language

PLACEHOLDERS = ("src", "src_name", "tgt_name", "src_lang", "tgt_lang")


def check_template(template: str) -> None:
    """Reject unknown placeholders, format specs, and templates without exactly one ``{src}``."""
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise NeurospecError(f"collect.prompt_template {template!r} is malformed: {exc}") from None
    for field, spec, conv in fields:
        if field not in PLACEHOLDERS:
            raise NeurospecError(
                f"collect.prompt_template has unknown placeholder {{{field}}}; "
                f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if spec or conv:
            raise NeurospecError(f"collect.prompt_template: placeholder {{{field}}} takes no format spec")
    if [f for f, _, _ in fields].count("src") != 1:
        raise NeurospecError("collect.prompt_template must contain {src} exactly once")


def check_continuation(continuation: str) -> None:
    """The continuation may use every prompt placeholder except ``{src}``."""
    allowed = [p for p in PLACEHOLDERS if p != "src"]
    try:
        fields = [(f, spec, conv) for _, f, spec, conv in Formatter().parse(continuation) if f is not None]
    except ValueError as exc:
        raise NeurospecError(f"evaluate.translate.continuation {continuation!r} is malformed: {exc}") from None
    for name, spec, conv in fields:
        if name not in allowed or spec or conv:
            raise NeurospecError(f"evaluate.translate.continuation has placeholder {{{name}}}; "
                                 f"allowed: {', '.join('{' + p + '}' for p in allowed)}")


def render(template: str, src: str, src_lang: str, tgt_lang: str) -> tuple[str, tuple[int, int]]:
    """The prompt text and the character span ``[start, end)`` of ``src`` inside it."""
    values = {
        "src": src,
        "src_name": language(src_lang).name,
        "tgt_name": language(tgt_lang).name,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
    }
    pieces: list[str] = []
    span = (0, 0)
    length = 0
    for literal, field, _, _ in Formatter().parse(template):
        pieces.append(literal)
        length += len(literal)
        if field is not None:
            value = values[field]
            if field == "src":
                span = (length, length + len(value))
            pieces.append(value)
            length += len(value)
    return "".join(pieces), span


# --------------------------------------------------------------------------------------------
# Bounded prompts: the model's context, and fitting a prompt into a token limit
# --------------------------------------------------------------------------------------------

# transformers' "no limit" for tokenizer.model_max_length is int(1e30); anything this large says nothing
_NO_LIMIT = 10**9


def model_context(model: Any = None, tokenizer: Any = None) -> int | None:
    """The most tokens the model takes at once: the smallest of its config's
    ``max_position_embeddings`` (the text config's, for configs that nest one) and the tokenizer's
    ``model_max_length`` (when it is set: transformers' "unset" is 1e30); None when neither says."""
    limits = []
    config = getattr(model, "config", None)
    if config is not None:
        get_text = getattr(config, "get_text_config", None)
        for cfg in ((get_text() if callable(get_text) else None), config):
            value = getattr(cfg, "max_position_embeddings", None) if cfg is not None else None
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                limits.append(value)
                break
    value = getattr(tokenizer, "model_max_length", None)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
        limits.append(value)
    return min(limits) if limits else None


def source_prefix(tokenizer, src: str) -> tuple[int, Callable[[int], str]]:
    """The source's token count (alone, no special tokens) and a function giving the text of its
    first k tokens: cut at the k-th token's end offset (fast tokenizers), else decoded."""
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(src, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False)
        ends = [int(end) for _, end in enc["offset_mapping"]]
        return len(ends), lambda k: src[: ends[k - 1]] if k > 0 else ""
    ids = list(tokenizer(src, add_special_tokens=False, return_attention_mask=False)["input_ids"])
    return len(ids), lambda k: tokenizer.decode(ids[:k], skip_special_tokens=True) if k > 0 else ""


@dataclass
class Fitted:
    """A prompt fitted into a token limit: its ids, the source text it holds, and whether it was cut."""

    ids: list[int]
    src: str
    truncated: bool
    n_src_tokens: int  # the source's tokens (alone) kept in the prompt


def fit_prompt(tokenizer, src: str, encode: Callable[[str], list[int]], limit: int, *,
               ids: Sequence[int] | None = None, what: str = "the prompt limit") -> Fitted:
    """``encode(src)`` (the whole prompt's ids for a source text) cut to at most ``limit`` tokens by
    dropping the *source's* last tokens, never the template's: the instruction before the source and
    the target-language cue after it survive.

    ``ids``: ``encode(src)``, when already known.  The source is cut at a token boundary of its own
    tokenization and the prompt encoded again (the tokens where source and template meet may merge
    differently), dropping more until it fits.  A template that leaves no room for one source token
    is an error naming ``what`` (the config key or context that set the limit).
    """
    ids = list(encode(src) if ids is None else ids)
    n_src, prefix = source_prefix(tokenizer, src)
    if len(ids) <= limit:
        return Fitted(ids, src, False, n_src)
    k = n_src - (len(ids) - limit)
    while k > 0:
        cut = prefix(k)
        ids = list(encode(cut))
        if len(ids) <= limit:
            return Fitted(ids, cut, True, k)
        k -= len(ids) - limit
    raise NeurospecError(f"{what} ({limit} tokens) leaves no room for the source sentence: the prompt's "
                         f"template alone takes {len(encode(''))} tokens")
