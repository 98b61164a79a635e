"""Every input bounded: prompts fitted into a token limit by cutting the source, never the template;
the model's context; translation, ablation and collection count what they truncate."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from neurospec.evaluate import ablation as A
from neurospec.evaluate import nll as held_out
from neurospec.collect import collect
from neurospec import models
from neurospec.evaluate import greedy as G
from neurospec.evaluate import translation as T
from neurospec.evaluate import translation_prompts as P
from neurospec.errors import NeurospecError
from neurospec.prompts import fit_prompt, model_context
from neurospec.tables import PAIR_SCHEMA, read_metadata, read_table, write_table

TEMPLATE = "Translate from {src_name} to {tgt_name}: {src}"
SETTINGS = dict(max_sentences=None, chat_template="auto", continuation="\n{tgt_name}:", max_new_tokens=16,
                max_new_tokens_ratio=1.5, max_new_tokens_extra=2, batch_size=4)
SHORT = ["Germany", "Federal Republic of Germany", "Bosnia and Herzegovina", "Euro", "Latin", "Chad"]


def word_tokenizer(words):
    """A word-level fast tokenizer (whitespace and punctuation split, no special tokens): every word and
    every punctuation mark is one token, so token counts can be computed by hand."""
    from tokenizers import Tokenizer, models as tm, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(tm.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _encoder(tok, chat=False):
    def encode(src):
        texts = P.prompt_texts(tok, [src], "en", "de", template=TEMPLATE, continuation="\n{tgt_name}:", chat=chat)
        return P.encode_prompts(tok, texts, chat)[0]
    return encode


def test_fit_prompt_cuts_the_source_to_a_hand_computed_count():
    """Template 'Translate from English to German: {src}' + '\\nGerman:' is 6 + 2 = 8 word tokens; a
    100-word source in a 20-token limit keeps exactly its first 20 - 8 = 12 words, and the
    instruction and the target-language cue survive whole."""
    words = [f"w{i}" for i in range(100)]
    tok = word_tokenizer(["Translate", "from", "English", "to", "German", ":", *words])
    encode = _encoder(tok)
    src = " ".join(words)
    assert len(encode(src)) == 108 and len(encode("")) == 8
    fitted = fit_prompt(tok, src, encode, 20)
    assert fitted.truncated and fitted.n_src_tokens == 12 and len(fitted.ids) == 20
    assert fitted.src == " ".join(words[:12])
    assert tok.convert_ids_to_tokens(fitted.ids) == ["Translate", "from", "English", "to", "German", ":",
                                                    *words[:12], "German", ":"]
    # a prompt that fits is left alone
    short = fit_prompt(tok, "w1 w2", encode, 20)
    assert not short.truncated and short.src == "w1 w2" and len(short.ids) == 10
    # exactly at the limit: not truncated
    assert not fit_prompt(tok, " ".join(words[:12]), encode, 20).truncated
    # a limit the template alone fills: one line naming what set the limit
    with pytest.raises(NeurospecError, match=r"^evaluate.translate.max_length \(8 tokens\) leaves no room for the "
                                             r"source sentence: the prompt's template alone takes 8 tokens$"):
        fit_prompt(tok, src, encode, 8, what="evaluate.translate.max_length")


def test_model_context_is_the_smallest_limit_that_is_set():
    cfg = SimpleNamespace(max_position_embeddings=1024)
    unset = SimpleNamespace(model_max_length=int(1e30))  # transformers' "no limit"
    assert model_context(SimpleNamespace(config=cfg), unset) == 1024
    assert model_context(SimpleNamespace(config=cfg), SimpleNamespace(model_max_length=512)) == 512
    nested = SimpleNamespace(max_position_embeddings=None,
                             get_text_config=lambda: SimpleNamespace(max_position_embeddings=32768))
    assert model_context(SimpleNamespace(config=nested), unset) == 32768
    assert model_context(SimpleNamespace(config=SimpleNamespace()), unset) is None
    assert model_context(None, None) is None


def test_prompt_limit_leaves_room_for_the_new_tokens():
    lm = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=1024))
    loaded = SimpleNamespace(lm=lm, model=lm, tokenizer=SimpleNamespace(model_max_length=int(1e30)))
    settings = T.generation_settings(**{**SETTINGS, "max_length": 4096})
    limit, what = T.prompt_limit(loaded, settings)
    assert limit == 1024 - 16 and what == "the model's context (1024 tokens) less evaluate.translate.max_new_tokens (16)"
    assert T.prompt_limit(loaded, {**settings, "max_length": 100}) == (100, "evaluate.translate.max_length")
    with pytest.raises(NeurospecError, match=r"max_new_tokens \(1024\) leaves no room for a prompt in the "
                                             r"model's context of 1024 tokens"):
        T.prompt_limit(loaded, {**settings, "max_new_tokens": 1024})
    with pytest.raises(NeurospecError, match=r"evaluate.translate.max_length must be an integer >= 8, got 4"):
        T.generation_settings(**{**SETTINGS, "max_length": 4})


def test_demo_tokenizer_prompt_keeps_its_template(small_model_dir):
    """A BPE tokenizer (the demo's): the cut prompt fits, holds a prefix of the source, and keeps the
    instruction before it and the cue after it."""
    loaded = models.load_model(str(small_model_dir), dtype="float32", device="cpu")
    tok = loaded.tokenizer
    src = " ".join(["Saint Helena, Ascension and Tristan da Cunha"] * 60)
    encode = _encoder(tok)
    assert len(encode(src)) > 300
    fitted = fit_prompt(tok, src, encode, 64)
    assert fitted.truncated and 60 <= len(fitted.ids) <= 64 and src.startswith(fitted.src) and fitted.src
    text = tok.decode(fitted.ids, skip_special_tokens=True)
    assert text.startswith("Translate from English to German: Saint Helena") and text.endswith("\nGerman:")
    assert fitted.ids == encode(fitted.src)


def _pair_table(path, sources):
    df = pd.DataFrame({"id": np.arange(len(sources), dtype=np.int64), "src_lang": "en", "tgt_lang": "de",
                       "src": sources, "tgt": [s.upper() for s in sources]})
    write_table(df, path, PAIR_SCHEMA, metadata={"pair": "en-de", "split": "test", "source": "made by the test"})
    return path


def test_translation_truncates_counts_and_leaves_the_other_sentences_alone(small_model_dir, tmp_path):
    """One 20,000-character sentence among short ones: its prompt is cut to max_length, counted in
    the metadata by id, and every other hypothesis equals that of the run without it."""
    loaded = models.load_model(str(small_model_dir), dtype="float32", device="cpu")
    long = ("Saint Helena, Ascension and Tristan da Cunha " * 500)[:20000]
    with_long = [*SHORT[:2], long, *SHORT[2:]]
    without = [*SHORT[:2], "Peru", *SHORT[2:]]
    out = {}
    for name, sources in (("long", with_long), ("short", without)):
        path = _pair_table(tmp_path / f"{name}.parquet", sources)
        T.translate_to_file(loaded, str(path), str(tmp_path / f"{name}-out.parquet"), prompt_template=TEMPLATE,
                            **{**SETTINGS, "max_length": 48})
        out[name] = (read_table(tmp_path / f"{name}-out.parquet"), read_metadata(tmp_path / f"{name}-out.parquet"))
    (df, meta), (ref, ref_meta) = out["long"], out["short"]
    assert meta["n_truncated"] == 1 and meta["truncated_ids"] == [2] and meta["max_prompt_tokens"] == 48
    assert ref_meta["n_truncated"] == 0 and ref_meta["truncated_ids"] == []
    assert df.loc[2, "src"] == long  # the table keeps the whole sentence
    # the prompt tokens: the five short prompts of both runs, plus at most 48 for the long one
    short_tokens = ref_meta["n_prompt_tokens"] - len(P.encode_prompts(
        loaded.tokenizer, P.prompt_texts(loaded.tokenizer, ["Peru"], "en", "de", template=TEMPLATE,
                                         continuation="\n{tgt_name}:", chat=False), False)[0])
    assert 44 <= meta["n_prompt_tokens"] - short_tokens <= 48
    others = [i for i in range(len(with_long)) if i != 2]
    pd.testing.assert_frame_equal(df.iloc[others].reset_index(drop=True), ref.iloc[others].reset_index(drop=True))
    # the long row's cap is computed from the source it kept (at most max_new_tokens)
    assert df.loc[2, "n_new_tokens"] <= 16


def test_ablation_truncates_to_the_models_context_and_counts_per_language(small_model_dir):
    loaded = models.load_model(str(small_model_dir), dtype="float32", device="cpu")
    context = model_context(loaded.lm, loaded.tokenizer)
    assert context == loaded.lm.config.max_position_embeddings == 1024
    long = "Saint Helena, Ascension and Tristan da Cunha " * 400
    assert len(loaded.tokenizer(long)["input_ids"]) > context
    held = held_out.HeldOut({"en": ["Germany", long, "Chad"], "de": ["Deutschland", "Tschad"]})
    df, meta = A.ablation_table(loaded, {}, held, random_sets=0, max_length=100000)
    assert meta["max_tokens"] == 1024 and meta["max_length"] == 100000
    assert meta["n_truncated"] == 1 and meta["n_truncated_by_language"] == {"en": 1, "de": 0}
    expected = sum(min(len(loaded.tokenizer(t)["input_ids"]), 1024) - 1 for t in held.texts["en"])
    assert meta["tokens_per_pass"] == expected + sum(len(loaded.tokenizer(t)["input_ids"]) - 1
                                                     for t in held.texts["de"])
    # a max_length under the context: it bounds, and the counts follow each sentence's own length
    lengths = {lang: [len(loaded.tokenizer(t)["input_ids"]) for t in texts] for lang, texts in held.texts.items()}
    _, meta = A.ablation_table(loaded, {}, held, random_sets=0, max_length=6)
    assert meta["max_tokens"] == 6
    assert meta["n_truncated_by_language"] == {lang: sum(n > 6 for n in ns) for lang, ns in lengths.items()}
    assert meta["n_truncated_by_language"]["de"] == 1  # 'Deutschland' (7 tokens) is cut, 'Tschad' (5) is not


def test_collection_never_exceeds_the_models_context(small_model_dir):
    loaded = models.load_model(str(small_model_dir), dtype="float32", device="cpu")
    long = "Saint Helena, Ascension and Tristan da Cunha " * 400
    pairs = pd.DataFrame({"id": [0, 1], "src_lang": "en", "tgt_lang": "de", "src": [long, "Peru"],
                          "tgt": ["x", "Peru"]})
    _, meta = collect.collect_pair(loaded, pairs, template="{src}", token_scope="all", max_length=100000)
    assert meta["max_length"] == 100000 and meta["max_tokens"] == 1024 and meta["n_truncated"] == 1
    assert meta["n_tokens"] == 1024 + len(loaded.tokenizer("Peru")["input_ids"])


def test_ablated_translation_counts_truncations_per_direction(small_model_dir, tmp_path, caplog):
    """The ablated translation fits its prompts as the baseline does: the long sentence's hypothesis
    equals generation from the fitted prompt with the neurons zeroed, and each direction's count is
    in the metadata and in one log line of the job."""
    from neurospec.interventions import intervene
    from neurospec.tables import SCORE_SCHEMA

    loaded = models.load_model(str(small_model_dir), dtype="float32", device="cpu")
    lm = loaded.require_lm("test")
    long = ("Saint Helena, Ascension and Tristan da Cunha " * 500)[:20000]
    en_de = _pair_table(tmp_path / "en-de.parquet", [SHORT[0], long, SHORT[1]])
    de_en = tmp_path / "de-en.parquet"
    write_table(pd.DataFrame({"id": np.arange(2, dtype=np.int64), "src_lang": "de", "tgt_lang": "en",
                              "src": ["Deutschland", "Tschad"], "tgt": ["Germany", "Chad"]}), de_en, PAIR_SCHEMA,
                metadata={"pair": "de-en", "split": "test"})
    selection = {0: np.arange(0, 96, 2), 1: np.arange(10)}
    scores = pd.DataFrame([(g, layer, n) for g in ("de", "en") for layer, idx in selection.items() for n in idx],
                          columns=["group", "layer", "neuron"]).assign(score=1.0)
    write_table(scores, tmp_path / "s.parquet", SCORE_SCHEMA, metadata={"method": "m", "group_kind": "language"})
    caplog.set_level("INFO", logger="neurospec")
    T.translate_ablated_to_file(loaded, [str(en_de), str(de_en)], str(tmp_path / "s.parquet"),
                                str(tmp_path / "a.parquet"), method="m", mode="zero", prompt_template=TEMPLATE,
                                **{**SETTINGS, "max_length": 80})
    got = read_table(tmp_path / "a.parquet")
    meta = read_metadata(tmp_path / "a.parquet")
    assert meta["n_truncated"] == {"en-de": 1, "de-en": 0}
    assert meta["pairs"]["en-de"]["truncated_ids"] == [1] and meta["pairs"]["en-de"]["max_prompt_tokens"] == 80
    assert "1 of 5 prompts truncated to 80 tokens; en-de 1" in caplog.text
    # by hand: the fitted prompt of the long sentence, generated with German's neurons zeroed
    encode = _encoder(loaded.tokenizer)
    fitted = fit_prompt(loaded.tokenizer, long, encode, 80)
    cap = P.token_caps(loaded.tokenizer, [fitted.src], max_new_tokens=16, ratio=1.5, extra=2)
    with intervene(lm, selection, "zero"):
        g = G.greedy_generate(lm, loaded.tokenizer, [fitted.ids], cap, batch_size=1)[0]
    row = got[(got["pair"] == "en-de") & (got["id"] == 1)].iloc[0]
    assert row["hyp"] == G.extract_hypothesis(loaded.tokenizer.decode(g.tokens, skip_special_tokens=True))
    assert row["src"] == long and row["n_new_tokens"] == len(g.tokens)
