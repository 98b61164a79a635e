"""Translation prompts: the chat template or the plain continuation, the prompts' tokens and each row's cap
on new tokens (see ``neurospec.evaluate.translation`` for the prompt's form)."""

from __future__ import annotations

import math
from typing import Sequence

from ..errors import NeurospecError
from ..prompts import check_continuation, check_template, render


CHAT_TEMPLATE_CHOICES = ("auto", True, False)


def use_chat_template(tokenizer, chat_template: bool | str, model: str = "the model") -> bool:
    """Whether prompts go through the tokenizer's chat template (``auto``: when it has one)."""
    if chat_template not in CHAT_TEMPLATE_CHOICES:
        raise NeurospecError(f"evaluate.translate.chat_template {chat_template!r}: choose auto, true or false")
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template is True and not has:
        raise NeurospecError(f"evaluate.translate.chat_template is true, but the tokenizer of {model!r} has no "
                             "chat template: set it to auto or false (plain prompt and continuation)")
    return has if chat_template == "auto" else bool(chat_template)


def prompt_texts(tokenizer, src: Sequence[str], src_lang: str, tgt_lang: str, *, template: str,
                 continuation: str, chat: bool) -> list[str]:
    """The text of every prompt (chat template applied when ``chat``)."""
    check_template(template)
    check_continuation(continuation)
    texts = []
    for s in src:
        text, _ = render(template, s, src_lang, tgt_lang)
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        else:
            text += render(continuation, "", src_lang, tgt_lang)[0]
        texts.append(text)
    return texts


def encode_prompts(tokenizer, texts: Sequence[str], chat: bool) -> list[list[int]]:
    """Token ids; a chat template writes its own special tokens (BOS), a plain prompt gets them added."""
    if not texts:
        return []
    enc = tokenizer(list(texts), add_special_tokens=not chat, return_attention_mask=False)
    return [list(ids) for ids in enc["input_ids"]]


def token_caps(tokenizer, src: Sequence[str], *, max_new_tokens: int, ratio: float, extra: int) -> list[int]:
    """Cap on new tokens per sentence: min(max_new_tokens, ceil(ratio x source tokens) + extra), at least 1."""
    if not src:
        return []
    lengths = [len(ids) for ids in tokenizer(list(src), add_special_tokens=False,
                                             return_attention_mask=False)["input_ids"]]
    return [max(1, min(int(max_new_tokens), math.ceil(ratio * n) + int(extra))) for n in lengths]
