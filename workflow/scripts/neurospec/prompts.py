"""Prompt templates: validation and rendering with the source sentence's character span."""

from __future__ import annotations

from string import Formatter

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
