"""Translation quality: greedy, batched generation of held-out sentences, plain or with neurons ablated.

For every direction the model translates the first ``max_sentences`` sentences of the held-out split
(``evaluate.split``), greedily, in batches of similar prompt length.  The prompt:

- with a chat template (``chat_template: auto`` and the tokenizer has one, or ``true``): one user
  turn holding the collection prompt (``collect.prompt_template`` rendered with ``prompts.render``,
  e.g. ``Translate from German to English: {src}``), then the template's generation prompt;
- without (``false``, or ``auto`` and no template): the collection prompt followed by
  ``continuation`` (default ``"\\n{tgt_name}:"``, so the prompt ends ``...: {src}\\nEnglish:``), which
  makes a base model continue with the translation on the same line.

Generation stops at the end of the first line of text (leading whitespace and blank lines are
skipped), at an end-of-sequence token (the tokenizer's and the model's), or at the row's cap on new
tokens: ``min(max_new_tokens, ceil(max_new_tokens_ratio x source tokens) + max_new_tokens_extra)``.
The hypothesis is that first line, stripped.

Every prompt is bounded: at most ``max_length`` tokens (``evaluate.translate.max_length``), and never
more than the model's context less ``max_new_tokens`` (``prompt_limit``), so a prompt and its
generation always fit the model.  A longer prompt loses the end of its *source sentence*, never its
template: the instruction and the target-language cue survive (``prompts.fit_prompt``); its cap on
new tokens is computed from the source it kept.  Each table's metadata counts the truncated
prompts per direction (``n_truncated``, ``truncated_ids``, ``max_prompt_tokens``) and each job logs
the count; the ``src`` column keeps the whole sentence.

Batches are left-padded with an attention mask and position ids that start at 0 on every row's first
real token, and decoded with the KV cache; a finished row leaves the batch.  In float32 a padded batch
gives the same tokens as one sentence at a time (tested); in half precision padding and batch shape
change the rounding, as everywhere.

``translate_to_file`` is the baseline task of one direction; ``translate_ablated_to_file`` repeats the
same generation for every direction with the *target* language's neurons of one scoring method
ablated (``interventions.intervene``): the generation-side causal check.  Scores (chrF++, BLEU) are
computed on the CPU by ``translation_quality``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import NeurospecError
from ..interventions import MODES, MeanPatchValues, intervene, selection_size, selections_from_scores
from ..languages import group_language, parse_pair
from ..models import LoadedModel
from ..progress import Progress
from ..prompts import check_continuation, check_template, fit_prompt, model_context, render
from ..tables import PAIR_SCHEMA, package_versions, read_metadata, read_table, write_table

log = logging.getLogger("neurospec")

CHAT_TEMPLATE_CHOICES = ("auto", True, False)
STOPS = ("eos", "newline", "cap")
# One row per translated sentence of a direction (ablated tables add pair, group, n_neurons in front).
HYPOTHESIS_COLUMNS = ("id", "src", "ref", "hyp", "n_new_tokens", "stop")
ABLATED_COLUMNS = ("pair", "group", "n_neurons", *HYPOTHESIS_COLUMNS)


# --------------------------------------------------------------------------------------------
# Prompts
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Greedy generation
# --------------------------------------------------------------------------------------------


class StopTokens:
    """What each token means for stopping: end of sequence, line break, text (decoded on first use).

    A token ends its row when it is an end-of-sequence token, or when it holds a line break and the
    row already has text (earlier, or in the token before its line break).  Tokens are decoded one at
    a time without special tokens, as the hypothesis is decoded, and cached.
    """

    def __init__(self, tokenizer, eos_ids: Sequence[int]):
        self.tokenizer = tokenizer
        self.eos = {int(i) for i in eos_ids}
        self._cache: dict[int, tuple[bool, bool, bool]] = {}

    def flags(self, token: int) -> tuple[bool, bool, bool]:
        """(has a line break, has text before its first line break, has text)."""
        got = self._cache.get(token)
        if got is None:
            text = self.tokenizer.decode([token], skip_special_tokens=True) if token < len(self.tokenizer) else ""
            got = ("\n" in text, bool(text.split("\n", 1)[0].strip()), bool(text.strip()))
            self._cache[token] = got
        return got


def eos_token_ids(lm, tokenizer) -> list[int]:
    """End-of-sequence ids: the tokenizer's and those of the model's config and generation config."""
    ids: set[int] = set()
    sources = [getattr(tokenizer, "eos_token_id", None)]
    for cfg in (getattr(lm, "config", None), getattr(lm, "generation_config", None)):
        sources.append(getattr(cfg, "eos_token_id", None) if cfg is not None else None)
    for value in sources:
        if value is None:
            continue
        ids.update(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    return sorted(ids)


def extract_hypothesis(text: str) -> str:
    """The first line of text of a generation (leading whitespace and blank lines skipped), stripped."""
    return text.lstrip().split("\n", 1)[0].strip()


@dataclass
class Generated:
    tokens: list[int] = field(default_factory=list)  # new tokens, an end-of-sequence token excluded
    stop: str = "cap"  # "eos" | "newline" | "cap"


def _generate_batch(lm, prompts: Sequence[Sequence[int]], caps: Sequence[int], stops: StopTokens,
                    pad_id: int, device: torch.device) -> list[Generated]:
    """Greedy decoding of one left-padded batch with the KV cache; finished rows leave the batch."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    position = (mask.cumsum(-1) - 1).clamp(min=0)  # 0 at each row's first real token
    out = lm(input_ids=ids, attention_mask=mask, position_ids=position, use_cache=True, logits_to_keep=1)
    past = out.past_key_values
    next_position = position[:, -1:] + 1  # [rows, 1]
    results = [Generated() for _ in prompts]
    rows = list(range(len(prompts)))  # the prompts still in the batch, in batch order
    started = [False] * len(prompts)
    while True:
        chosen = out.logits[:, -1].argmax(-1)  # [rows]: greedy, ties to the lowest id
        keep = []
        for j, token in enumerate(chosen.tolist()):
            r = rows[j]
            if token in stops.eos:
                results[r].stop = "eos"
                continue
            results[r].tokens.append(token)
            newline, text_before, text = stops.flags(token)
            if newline and (started[r] or text_before):
                results[r].stop = "newline"
                continue
            started[r] = started[r] or text
            if len(results[r].tokens) >= caps[r]:
                results[r].stop = "cap"
                continue
            keep.append(j)
        if not keep:
            return results
        if len(keep) < len(rows):
            index = torch.as_tensor(keep, device=device)
            past.batch_select_indices(index)
            mask, chosen, next_position = mask[index], chosen[index], next_position[index]
            rows = [rows[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
        out = lm(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position,
                 past_key_values=past, use_cache=True)
        next_position = next_position + 1


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length (longest first, ties by index), cut into batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def greedy_generate(lm, tokenizer, prompts: Sequence[Sequence[int]], caps: Sequence[int], *,
                    batch_size: int = 32, eos_ids: Sequence[int] | None = None,
                    device: torch.device | str | None = None, progress: Progress | None = None) -> list[Generated]:
    """Greedy generation of every prompt (token ids), batched by length; results in input order.
    ``progress`` (neurospec.progress) is told of every finished batch (its sentences).

    A batch that runs out of device memory is split in two and retried.
    """
    if batch_size < 1:
        raise NeurospecError(f"evaluate.translate.batch_size must be at least 1, got {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise NeurospecError("an empty prompt cannot be continued")
    device = torch.device(device) if device is not None else next(lm.parameters()).device
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    stops = StopTokens(tokenizer, eos_token_ids(lm, tokenizer) if eos_ids is None else eos_ids)
    results: list[Generated | None] = [None] * len(prompts)
    queue = length_batches([len(p) for p in prompts], batch_size)
    with torch.inference_mode():
        while queue:
            rows = queue.pop(0)
            try:
                batch = _generate_batch(lm, [prompts[i] for i in rows], [caps[i] for i in rows], stops,
                                        pad_id, device)
            except torch.OutOfMemoryError:
                if len(rows) == 1:
                    raise NeurospecError(f"out of device memory generating for a single prompt of "
                                         f"{len(prompts[rows[0]])} tokens") from None
                log.warning("out of device memory on a batch of %d prompts: splitting it", len(rows))
                torch.cuda.empty_cache()
                half = len(rows) // 2
                queue[:0] = [rows[:half], rows[half:]]
                continue
            for i, g in zip(rows, batch):
                results[i] = g
            if progress is not None:
                progress.update(len(rows))
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# One direction
# --------------------------------------------------------------------------------------------


def held_out_pairs(pairs: pd.DataFrame, max_sentences: int | None) -> pd.DataFrame:
    """The first ``max_sentences`` sentence pairs by id (the same sentences in en->xx and xx->en)."""
    pairs = pairs.sort_values("id", kind="stable")
    pairs = pairs[pairs["src"].astype(str).str.strip() != ""]
    return pairs if max_sentences is None else pairs.head(int(max_sentences))


def generation_settings(*, max_sentences: int | None, chat_template: bool | str, continuation: str,
                        max_new_tokens: int, max_new_tokens_ratio: float, max_new_tokens_extra: int,
                        batch_size: int, max_length: int = 512) -> dict[str, Any]:
    """The generation parameters (``evaluate.translate`` minus the ablation keys), checked."""
    for key, value, low in (("max_new_tokens", max_new_tokens, 1), ("max_new_tokens_extra", max_new_tokens_extra, 0),
                            ("batch_size", batch_size, 1), ("max_length", max_length, 8)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NeurospecError(f"evaluate.translate.{key} must be an integer >= {low}, got {value!r}")
    if isinstance(max_new_tokens_ratio, bool) or not isinstance(max_new_tokens_ratio, (int, float)) \
            or not max_new_tokens_ratio >= 0:
        raise NeurospecError(f"evaluate.translate.max_new_tokens_ratio must be a number >= 0, got "
                             f"{max_new_tokens_ratio!r}")
    if max_sentences is not None and (isinstance(max_sentences, bool) or not isinstance(max_sentences, int)
                                      or max_sentences < 1):
        raise NeurospecError(f"evaluate.translate.max_sentences must be a positive integer or null, got "
                             f"{max_sentences!r}")
    check_continuation(continuation)
    if chat_template not in CHAT_TEMPLATE_CHOICES:
        raise NeurospecError(f"evaluate.translate.chat_template {chat_template!r}: choose auto, true or false")
    return {"max_sentences": max_sentences, "chat_template": chat_template, "continuation": continuation,
            "max_new_tokens": max_new_tokens, "max_new_tokens_ratio": float(max_new_tokens_ratio),
            "max_new_tokens_extra": max_new_tokens_extra, "batch_size": batch_size, "max_length": max_length}


def prompt_limit(loaded: LoadedModel, settings: Mapping[str, Any]) -> tuple[int, str]:
    """The most tokens a prompt may hold, and what set it: ``evaluate.translate.max_length``, or the
    model's context (``prompts.model_context``) less ``max_new_tokens`` when that is smaller, so that
    a prompt and its generation always fit the model."""
    limit, what = int(settings["max_length"]), "evaluate.translate.max_length"
    context = model_context(loaded.lm if loaded.lm is not None else loaded.model, loaded.tokenizer)
    if context is not None:
        new = int(settings["max_new_tokens"])
        if context - new < 1:
            raise NeurospecError(f"evaluate.translate.max_new_tokens ({new}) leaves no room for a prompt in "
                                 f"the model's context of {context} tokens")
        if context - new < limit:
            limit, what = context - new, (f"the model's context ({context} tokens) less "
                                          f"evaluate.translate.max_new_tokens ({new})")
    return limit, what


@dataclass
class Direction:
    """One direction's held-out sentences, encoded prompts and caps."""

    pair: str
    src_lang: str
    tgt_lang: str
    sentences: pd.DataFrame  # id, src, tgt
    prompts: list[list[int]]
    caps: list[int]
    example_prompt: str
    meta: dict[str, Any]  # the pair table's metadata
    max_prompt_tokens: int = 0  # the limit every prompt was fitted into (prompt_limit)
    truncated_ids: list[int] = field(default_factory=list)  # ids of the sentences whose source was cut

    @property
    def truncation(self) -> dict[str, Any]:
        """What the metadata records about truncation."""
        return {"n_truncated": len(self.truncated_ids), "truncated_ids": list(self.truncated_ids),
                "max_prompt_tokens": self.max_prompt_tokens}


def prepare_direction(loaded: LoadedModel, pairs_path: str, *, prompt_template: str, chat: bool,
                      settings: Mapping[str, Any]) -> Direction:
    pairs = read_table(pairs_path, required=tuple(PAIR_SCHEMA.names))
    meta = read_metadata(pairs_path)
    if pairs.empty:
        raise NeurospecError(f"pair table {pairs_path} holds no sentence pair to translate")
    src_lang, tgt_lang = str(pairs["src_lang"].iloc[0]), str(pairs["tgt_lang"].iloc[0])
    pair = f"{src_lang}-{tgt_lang}"
    parse_pair(pair)
    sentences = held_out_pairs(pairs, settings["max_sentences"])
    src = sentences["src"].astype(str).tolist()
    tok = loaded.tokenizer

    def texts_of(sources: Sequence[str]) -> list[str]:
        return prompt_texts(tok, sources, src_lang, tgt_lang, template=prompt_template,
                            continuation=settings["continuation"], chat=chat)

    texts = texts_of(src)
    prompts = encode_prompts(tok, texts, chat)
    # a prompt longer than the limit keeps its template and loses the end of its source sentence
    limit, what = prompt_limit(loaded, settings)
    truncated = []
    for i, ids in enumerate(prompts):
        if len(ids) > limit:
            fitted = fit_prompt(tok, src[i], lambda s: encode_prompts(tok, texts_of([s]), chat)[0], limit,
                                ids=ids, what=what)
            prompts[i], src[i] = fitted.ids, fitted.src
            texts[i] = texts_of([fitted.src])[0]
            truncated.append(int(sentences["id"].iloc[i]))
    return Direction(pair, src_lang, tgt_lang, sentences, prompts,
                     token_caps(tok, src, max_new_tokens=settings["max_new_tokens"],
                                ratio=settings["max_new_tokens_ratio"], extra=settings["max_new_tokens_extra"]),
                     texts[0] if texts else "", meta, limit, truncated)


def translate_direction(loaded: LoadedModel, direction: Direction, batch_size: int) -> tuple[pd.DataFrame, dict]:
    """Hypotheses (id, src, ref, hyp, n_new_tokens, stop) of one direction, and generation statistics."""
    return translate_directions(loaded, [direction], batch_size)[0]


def translate_directions(loaded: LoadedModel, directions: Sequence[Direction],
                         batch_size: int) -> list[tuple[pd.DataFrame, dict]]:
    """``translate_direction`` of several directions generated together (batched by length across them:
    fewer, fuller batches when they share an intervention); per direction its hypotheses and statistics,
    whose ``seconds`` is the time of the whole generation (``generated_with`` names the directions)."""
    lm = loaded.require_lm("translation")
    prompts = [p for d in directions for p in d.prompts]
    caps = [c for d in directions for c in d.caps]
    t0 = time.perf_counter()
    # a line per batch at most (throttled): sentences done / total, sentences/s, ETA
    progress = Progress(len(prompts), "sentences", log, "translate " + ", ".join(d.pair for d in directions))
    generated = greedy_generate(lm, loaded.tokenizer, prompts, caps, batch_size=batch_size, device=loaded.device,
                                progress=progress)
    progress.close()
    seconds = time.perf_counter() - t0
    together = len(directions) > 1
    rate = sum(len(g.tokens) for g in generated) / max(seconds, 1e-9)  # of the whole generation
    out, start = [], 0
    for direction in directions:
        mine = generated[start:start + len(direction.prompts)]
        start += len(direction.prompts)
        hyps = [extract_hypothesis(loaded.tokenizer.decode(g.tokens, skip_special_tokens=True)) for g in mine]
        s = direction.sentences
        df = pd.DataFrame({
            "id": s["id"].to_numpy(np.int64),
            "src": s["src"].astype(str).to_numpy(),
            "ref": s["tgt"].astype(str).to_numpy(),
            "hyp": hyps,
            "n_new_tokens": np.asarray([len(g.tokens) for g in mine], dtype=np.int64),
            "stop": [g.stop for g in mine],
        })
        n_new = int(df["n_new_tokens"].sum())
        stats = {"n_new_tokens": n_new, "n_prompt_tokens": int(sum(len(p) for p in direction.prompts)),
                 **direction.truncation, "seconds": seconds, "new_tokens_per_s": rate,
                 **{f"n_stop_{s_}": int((df["stop"] == s_).sum()) for s_ in STOPS}}
        if together:
            stats["generated_with"] = [d.pair for d in directions]
        log.info("%s: %d sentences, %d truncated to %d prompt tokens, %d new tokens; stops: %s", direction.pair,
                 len(df), stats["n_truncated"], direction.max_prompt_tokens, n_new,
                 ", ".join(f"{s_} {stats['n_stop_' + s_]}" for s_ in STOPS))
        out.append((df, stats))
    log.info("%s: %.1f s of generation (%.1f new tokens/s)", ", ".join(d.pair for d in directions), seconds, rate)
    return out


def _common_meta(loaded: LoadedModel, *, prompt_template: str, chat: bool, settings: Mapping[str, Any]) -> dict:
    return {
        **loaded.info,
        "prompt_mode": "chat_template" if chat else "plain",
        "prompt_template": prompt_template,
        "continuation": None if chat else settings["continuation"],
        "chat_template": loaded.tokenizer.chat_template if chat else None,
        "generation": {**dict(settings), "decoding": "greedy"},
        "versions": package_versions(),
    }


def _split_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in meta.items() if k.startswith("dataset") or k in ("split", "detokenize", "source")}


def translate_to_file(loaded: LoadedModel, pairs_path: str, out_path: str, *, prompt_template: str,
                      **settings: Any) -> None:
    """The baseline task: translate one direction's held-out sentences, write its hypotheses atomically."""
    settings = generation_settings(**settings)
    chat = use_chat_template(loaded.tokenizer, settings["chat_template"], loaded.info.get("model", "the model"))
    check_template(prompt_template)
    direction = prepare_direction(loaded, pairs_path, prompt_template=prompt_template, chat=chat, settings=settings)
    df, stats = translate_direction(loaded, direction, settings["batch_size"])
    meta = {
        "pair": direction.pair, "src_lang": direction.src_lang, "tgt_lang": direction.tgt_lang,
        "n_sentences": len(df), **_split_meta(direction.meta),
        "example_prompt": direction.example_prompt,
        **_common_meta(loaded, prompt_template=prompt_template, chat=chat, settings=settings), **stats,
    }
    write_table(df, out_path, metadata=meta)


# --------------------------------------------------------------------------------------------
# With neurons ablated
# --------------------------------------------------------------------------------------------


def ablation_group(pair: str, group_kind: str) -> str:
    """The group whose neurons are ablated for a direction: the pair itself, or its target language."""
    src, tgt = parse_pair(pair)
    if group_kind == "pair":
        return pair
    if group_kind == "language":
        return tgt
    raise NeurospecError(f"score table has group kind {group_kind!r}; expected 'pair' or 'language'")


def excluded_languages(group: str, group_kind: str, counted: Mapping[str, str]) -> list[str]:
    """The languages whose tokens a group's neurons were selected on: left out of the mean patch values."""
    if group_kind == "language":
        return [group]
    if group not in counted:
        raise NeurospecError(f"no count table for pair {group!r}: mean patching needs its counted language")
    return [counted[group]]


def translate_ablated_to_file(loaded: LoadedModel, pairs_paths: Sequence[str], scores_path: str, out_path: str, *,
                              method: str, mode: str, prompt_template: str,
                              activation_paths: Sequence[str] = (), token_scope: str = "source",
                              rest: str = "pooled", **settings: Any) -> None:
    """Every direction again, with its target language's (pair methods: its own) neurons of ``method`` ablated.

    Which tokens those neurons were selected on is collection's ``token_scope``: with ``target`` a
    direction's own group (its pair, or its target language) was counted on the target language as
    it was produced, so the ablated neurons are the target side's; with ``source`` a pair group's were
    counted on its source.  The metadata records it (``token_scope``, and per direction ``selected_on``).

    ``mode`` "zero" sets the neurons to 0; "mean" to their mean activation over the count tables of the
    other languages (``activation_paths``: needed for "mean").  A direction whose group selected no
    neuron is not generated again (it would equal the baseline); its rows are absent and the metadata
    lists it under ``unablated``.
    """
    settings = generation_settings(**settings)
    if mode not in MODES:
        raise NeurospecError(f"evaluate.translate.ablation_mode {mode!r}: choose one of {', '.join(MODES)}")
    chat = use_chat_template(loaded.tokenizer, settings["chat_template"], loaded.info.get("model", "the model"))
    check_template(prompt_template)
    scores = read_table(scores_path, required=("group", "layer", "neuron"))
    score_meta = read_metadata(scores_path)
    group_kind = str(score_meta.get("group_kind", ""))
    selections = selections_from_scores(scores)
    # mode mean: each neuron's mean over the other languages, weighted as scoring.rest says
    patch = MeanPatchValues(activation_paths, "evaluate.translate", rest=rest) if mode == "mean" else None
    lm = loaded.require_lm("translation with ablated neurons")
    frames, per_pair, unablated = [], {}, {}
    by_group: dict[str, list[Direction]] = {}  # directions that share an intervention are generated together
    order: list[str] = []
    done: dict[str, tuple[pd.DataFrame, dict]] = {}
    for path in pairs_paths:
        direction = prepare_direction(loaded, path, prompt_template=prompt_template, chat=chat, settings=settings)
        group = ablation_group(direction.pair, group_kind)
        if selection_size(selections.get(group, {})) == 0:
            log.info("%s: %s selected no neuron for group %s: nothing to ablate", direction.pair, method, group)
            unablated[direction.pair] = group
            continue
        by_group.setdefault(group, []).append(direction)
        order.append(direction.pair)
    prepared = [d for ds in by_group.values() for d in ds]
    if prepared:
        log.info("%d of %d prompts truncated to %d tokens%s", sum(len(d.truncated_ids) for d in prepared),
                 sum(len(d.prompts) for d in prepared), prepared[0].max_prompt_tokens,
                 "".join(f"; {d.pair} {len(d.truncated_ids)}" for d in prepared if d.truncated_ids))
    for group, directions in by_group.items():
        selection = selections[group]
        n_neurons = selection_size(selection)
        values = None
        if patch is not None:
            values = patch.excluding(excluded_languages(group, group_kind, patch.counted))
        log.info("%s: ablating %d neurons of %s group %s (%s)", ", ".join(d.pair for d in directions), n_neurons,
                 method, group, mode)
        with intervene(lm, selection, mode, values):
            results = translate_directions(loaded, directions, settings["batch_size"])
        for direction, (df, stats) in zip(directions, results):
            df.insert(0, "n_neurons", np.int64(n_neurons))
            df.insert(0, "group", group)
            df.insert(0, "pair", direction.pair)
            done[direction.pair] = df, {"group": group, "n_neurons": n_neurons, "n_sentences": len(df),
                                        "selected_on": group_language(group, token_scope),
                                        "example_prompt": direction.example_prompt,
                                        **_split_meta(direction.meta), **stats}
    for pair in order:  # the order of pairs_paths
        frames.append(done[pair][0])
        per_pair[pair] = done[pair][1]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {c: pd.Series(dtype=t) for c, t in zip(ABLATED_COLUMNS, (object, object, "int64", "int64", object, object,
                                                                  object, "int64", object))})
    meta = {
        "method": method, "group_kind": group_kind, "mode": mode, "scoring_params": score_meta.get("params"),
        "token_scope": token_scope,
        "pairs": per_pair, "unablated": unablated,
        "n_truncated": {pair: stats["n_truncated"] for pair, stats in per_pair.items()},
        **_common_meta(loaded, prompt_template=prompt_template, chat=chat, settings=settings),
    }
    write_table(out, out_path, metadata=meta)
