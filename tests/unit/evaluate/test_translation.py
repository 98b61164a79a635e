"""Greedy batched generation: padding changes nothing, stops and caps do what they say, ablation is wired."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from neurospec import models
from neurospec.evaluate import greedy as G
from neurospec.evaluate import translation as T
from neurospec.evaluate import translation_prompts as P
from neurospec.errors import NeurospecError
from neurospec.interventions import intervene
from neurospec.tables import PAIR_SCHEMA, SCORE_SCHEMA, read_metadata, read_table, write_counts, write_table
from synthetic_counts import complete

TEMPLATE = "Translate from {src_name} to {tgt_name}: {src}"
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
SOURCES = ["Germany", "Federal Republic of Germany", "Bosnia and Herzegovina", "Euro", "Latin",
           "United States of America", "Saint Helena, Ascension and Tristan da Cunha", "Chad", "Cyrillic"]
SETTINGS = dict(max_sentences=None, chat_template="auto", continuation="\n{tgt_name}:", max_new_tokens=24,
                max_new_tokens_ratio=1.5, max_new_tokens_extra=2, batch_size=4)


def _load(model_dir, attn="sdpa", chat_template=None):
    loaded = models.load_model(str(model_dir), dtype="float32", device="cpu", attn_implementation=attn)
    if chat_template is not None:
        loaded.tokenizer.chat_template = chat_template
    return loaded


def _prompts(loaded, chat: bool, src=SOURCES, src_lang="en", tgt_lang="de"):
    texts = P.prompt_texts(loaded.tokenizer, src, src_lang, tgt_lang, template=TEMPLATE,
                           continuation="\n{tgt_name}:", chat=chat)
    caps = P.token_caps(loaded.tokenizer, src, max_new_tokens=24, ratio=1.5, extra=2)
    return texts, P.encode_prompts(loaded.tokenizer, texts, chat), caps


@pytest.mark.parametrize(("attn", "chat"), [("sdpa", False), ("sdpa", True), ("eager", False)],
                         ids=["sdpa-plain", "sdpa-chat-template", "eager-plain"])
def test_batched_generation_equals_one_sentence_at_a_time(small_model_dir, attn, chat):
    """fp32: left-padded batches (rows leaving as they finish) give the tokens of unpadded single runs,
    and those equal transformers' own generate() on each sentence alone."""
    loaded = _load(small_model_dir, attn, CHAT_TEMPLATE if chat else None)
    assert P.use_chat_template(loaded.tokenizer, "auto") is chat
    texts, prompts, caps = _prompts(loaded, chat)
    if chat:
        assert texts[0].startswith("<BOS_TOKEN><|user|>Translate from English to German: Germany\n<|assistant|>")
        assert prompts[0].count(loaded.tokenizer.bos_token_id) == 1  # the template's BOS only
    else:
        assert texts[0] == "Translate from English to German: Germany\nGerman:"
    assert len({len(p) for p in prompts}) > 3 and len(set(caps)) > 3  # padding and rows leaving early
    lm = loaded.require_lm("test")
    batched = G.greedy_generate(lm, loaded.tokenizer, prompts, caps, batch_size=len(prompts))
    in_fours = G.greedy_generate(lm, loaded.tokenizer, prompts, caps, batch_size=4)
    single = [G.greedy_generate(lm, loaded.tokenizer, [p], [c], batch_size=1)[0] for p, c in zip(prompts, caps)]
    for b, f, s in zip(batched, in_fours, single):
        assert b.tokens == s.tokens and b.stop == s.stop
        assert f.tokens == s.tokens and f.stop == s.stop
    eos = G.eos_token_ids(lm, loaded.tokenizer)
    for p, c, s in zip(prompts, caps, single):
        ids = torch.tensor([p])
        ref = lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=c, do_sample=False,
                          eos_token_id=eos, pad_token_id=loaded.tokenizer.pad_token_id)[0, len(p):].tolist()
        assert ref[:len(s.tokens)] == s.tokens
        if s.stop == "cap":
            assert len(s.tokens) == c
        if s.stop == "eos":
            assert ref[len(s.tokens)] in eos


def _gemma3(tokenizer):
    """Gemma 3's architecture: sliding-window and global layers (hybrid cache), a window of 8 tokens."""
    import transformers as tf

    return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))


def _gpt2(tokenizer):
    """Absolute learned positions: wrong position ids for padded rows would change the output."""
    import transformers as tf

    return tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_inner=64, n_layer=3, n_head=2,
                                            n_positions=256, eos_token_id=tokenizer.eos_token_id,
                                            bos_token_id=tokenizer.bos_token_id))


@pytest.mark.parametrize("make", [_gemma3, _gpt2], ids=["gemma3-sliding-window", "gpt2-absolute-positions"])
def test_batched_generation_equals_one_at_a_time_on_other_architectures(small_model_dir, make):
    """Padding and rows leaving the batch change nothing with a sliding window shorter than the prompts
    (Gemma 3) or with absolute position embeddings (GPT-2)."""
    tokenizer = _load(small_model_dir).tokenizer
    torch.manual_seed(0)
    lm = make(tokenizer)
    lm.config._attn_implementation = "sdpa"
    lm.eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0.0, 0.3)
    texts = P.prompt_texts(tokenizer, SOURCES, "en", "de", template=TEMPLATE, continuation="\n{tgt_name}:", chat=False)
    prompts = P.encode_prompts(tokenizer, texts, False)
    caps = P.token_caps(tokenizer, SOURCES, max_new_tokens=24, ratio=1.5, extra=2)
    assert min(len(p) for p in prompts) > 8  # longer than Gemma's window
    batched = G.greedy_generate(lm, tokenizer, prompts, caps, batch_size=len(prompts))
    single = [G.greedy_generate(lm, tokenizer, [p], [c], batch_size=1)[0] for p, c in zip(prompts, caps)]
    assert [b.tokens for b in batched] == [s.tokens for s in single]
    assert [b.stop for b in batched] == [s.stop for s in single]
    assert len({len(b.tokens) for b in batched}) > 1  # rows left the batch at different steps


# --------------------------------------------------------------------------------------------
# Stopping, on a scripted model whose next token is a function of the last one
# --------------------------------------------------------------------------------------------

VOCAB = ["<pad>", "<eos>", "\n", " ", "Hallo", " Welt", ".\n", "\n\n", "x", "y", "p1", "p2", "p3", "p4"]
ID = {t: i for i, t in enumerate(VOCAB)}


class FakeTokenizer:
    pad_token_id, eos_token_id = ID["<pad>"], ID["<eos>"]

    def __len__(self):
        return len(VOCAB)

    def decode(self, ids, skip_special_tokens=True):
        return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and VOCAB[i] in ("<pad>", "<eos>")))


class ScriptedLM(torch.nn.Module):
    """Logits that make ``NEXT[last input token]`` the greedy choice; a cache that only counts selections."""

    NEXT = {"p1": "\n\n", "\n\n": "Hallo", "Hallo": " Welt", " Welt": ".\n",  # blank line, text, "text\n"
            "p2": " ", " ": "\n", "\n": "x", "x": "<eos>",  # whitespace and a bare line break before text
            "p3": "y", "y": "y",  # never stops: the cap
            "p4": ".\n"}  # text and line break in the first token

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.selected = []

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True,
                logits_to_keep=0):
        nxt = [ID[self.NEXT[VOCAB[int(t)]]] for t in input_ids[:, -1]]
        logits = torch.full((len(nxt), 1, len(VOCAB)), -1e4)
        logits[torch.arange(len(nxt)), 0, nxt] = 0.0
        cache = past_key_values or SimpleNamespace(batch_select_indices=lambda idx: self.selected.append(idx.tolist()))
        return SimpleNamespace(logits=logits, past_key_values=cache)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_generation_stops_at_end_of_line_eos_and_cap(batch_size):
    lm, tok = ScriptedLM(), FakeTokenizer()
    prompts = [[ID["p1"]], [ID["x"], ID["p2"]], [ID["p3"]], [ID["p4"]]]
    out = G.greedy_generate(lm, tok, prompts, [10, 10, 4, 10], batch_size=batch_size, eos_ids=[ID["<eos>"]])
    words = [[VOCAB[i] for i in g.tokens] for g in out]
    assert words[0] == ["\n\n", "Hallo", " Welt", ".\n"] and out[0].stop == "newline"  # the blank line is skipped
    assert words[1] == [" ", "\n", "x"] and out[1].stop == "eos"  # a line break before any text does not stop
    assert words[2] == ["y"] * 4 and out[2].stop == "cap"
    assert words[3] == [".\n"] and out[3].stop == "newline"
    hyps = [G.extract_hypothesis(tok.decode(g.tokens)) for g in out]
    assert hyps == ["Hallo Welt.", "x", "yyyy", "."]
    if batch_size == 4:  # finished rows left the batch: p4 after step 1, p3 after step 4, p2 and p1 then
        assert lm.selected[0] == [0, 1, 2]


def test_token_caps_follow_the_source_length(small_model_dir):
    loaded = _load(small_model_dir)
    n = [len(loaded.tokenizer(s, add_special_tokens=False)["input_ids"]) for s in SOURCES]
    caps = P.token_caps(loaded.tokenizer, SOURCES, max_new_tokens=12, ratio=1.5, extra=2)
    assert caps == [min(12, math.ceil(1.5 * k) + 2) for k in n]
    assert 12 in caps and min(caps) < 12  # both the relative cap and the hard cap bind somewhere
    assert P.token_caps(loaded.tokenizer, ["a"], max_new_tokens=5, ratio=0.0, extra=0) == [1]


def test_extract_hypothesis():
    assert G.extract_hypothesis("  \n\n Guten Tag.  \nEnglish: x") == "Guten Tag."
    assert G.extract_hypothesis("\n \n") == ""
    assert G.extract_hypothesis("no newline at all ") == "no newline at all"


def test_chat_template_setting(small_model_dir):
    loaded = _load(small_model_dir)
    assert P.use_chat_template(loaded.tokenizer, "auto") is False
    assert P.use_chat_template(loaded.tokenizer, False) is False
    with pytest.raises(NeurospecError, match="chat_template is true, but the tokenizer of 'm' has no chat template"):
        P.use_chat_template(loaded.tokenizer, True, "m")
    loaded.tokenizer.chat_template = CHAT_TEMPLATE
    assert P.use_chat_template(loaded.tokenizer, True) is True
    assert P.use_chat_template(loaded.tokenizer, False) is False
    with pytest.raises(NeurospecError, match=r"continuation has placeholder \{src\}"):
        T.check_continuation("\n{src}")


# --------------------------------------------------------------------------------------------
# The tasks: files in, files out
# --------------------------------------------------------------------------------------------


def _pair_table(path, pair, sources, targets):
    src, tgt = pair.split("-")
    df = pd.DataFrame({"id": np.arange(len(sources), dtype=np.int64)[::-1], "src_lang": src, "tgt_lang": tgt,
                       "src": sources, "tgt": targets})
    write_table(df, path, PAIR_SCHEMA, metadata={"pair": pair, "split": "test", "source": "made by the test"})
    return path


def test_translate_to_file_writes_hypotheses_and_metadata(small_model_dir, tmp_path):
    loaded = _load(small_model_dir)
    targets = [s.upper() for s in SOURCES]
    path = _pair_table(tmp_path / "en-de.parquet", "en-de", SOURCES, targets)
    T.translate_to_file(loaded, str(path), str(tmp_path / "out.parquet"), prompt_template=TEMPLATE,
                        **{**SETTINGS, "max_sentences": 5})
    out = read_table(tmp_path / "out.parquet")
    meta = read_metadata(tmp_path / "out.parquet")
    assert list(out.columns) == list(T.HYPOTHESIS_COLUMNS)
    # the first five by id (ids run backwards in the file)
    assert out["id"].tolist() == [0, 1, 2, 3, 4]
    assert out["src"].tolist() == SOURCES[::-1][:5] and out["ref"].tolist() == targets[::-1][:5]
    # independently: the same prompts generated one at a time
    _, prompts, caps = _prompts(loaded, False, src=SOURCES[::-1][:5])
    lm = loaded.require_lm("test")
    for row, p, c in zip(out.itertuples(), prompts, caps):
        g = G.greedy_generate(lm, loaded.tokenizer, [p], [c], batch_size=1)[0]
        assert row.hyp == G.extract_hypothesis(loaded.tokenizer.decode(g.tokens, skip_special_tokens=True))
        assert row.n_new_tokens == len(g.tokens) <= c and row.stop == g.stop
        assert "\n" not in row.hyp
    assert meta["pair"] == "en-de" and meta["split"] == "test" and meta["n_sentences"] == 5
    assert meta["prompt_mode"] == "plain" and meta["chat_template"] is None
    assert meta["example_prompt"] == "Translate from English to German: Cyrillic\nGerman:"
    assert meta["generation"]["max_new_tokens"] == 24 and meta["generation"]["decoding"] == "greedy"
    assert meta["n_new_tokens"] == int(out["n_new_tokens"].sum())
    assert sum(meta[f"n_stop_{s}"] for s in T.STOPS) == 5


def test_chat_template_true_without_one_is_one_error_and_no_output(small_model_dir, tmp_path):
    loaded = _load(small_model_dir)
    path = _pair_table(tmp_path / "en-de.parquet", "en-de", SOURCES, SOURCES)
    with pytest.raises(NeurospecError, match="has no chat template"):
        T.translate_to_file(loaded, str(path), str(tmp_path / "out.parquet"), prompt_template=TEMPLATE,
                            **{**SETTINGS, "chat_template": True})
    assert not (tmp_path / "out.parquet").exists()


def _down_weights(lm):
    return [layer.mlp.down_proj.weight for layer in lm.model.layers]


def test_ablated_translation_equals_generation_with_zeroed_weight_columns(small_model_dir, tmp_path):
    """Language methods ablate the target language's neurons, pair methods the pair's; the hypotheses
    equal those of a copy of the model whose down_proj columns of those neurons are zero."""
    loaded = _load(small_model_dir)
    lm = loaded.require_lm("test")
    pairs = ("de-en", "en-de", "fr-en")  # de-en and fr-en share the group "en": generated together
    paths = [str(_pair_table(tmp_path / f"{p}.parquet", p, SOURCES[:4], SOURCES[:4])) for p in pairs]
    selection = {"de": {0: [1, 5, 7], 2: list(range(0, 96, 3))}, "en": {1: list(range(40))}}
    rows = [(g, layer, n) for g, sel in selection.items() for layer, idx in sel.items() for n in idx]
    scores = pd.DataFrame(rows, columns=["group", "layer", "neuron"]).assign(score=1.0)
    write_table(scores, tmp_path / "lang.parquet", SCORE_SCHEMA, metadata={"method": "m", "group_kind": "language"})
    T.translate_ablated_to_file(loaded, paths, str(tmp_path / "lang.parquet"), str(tmp_path / "ablated.parquet"),
                                method="m", mode="zero", prompt_template=TEMPLATE, **SETTINGS)
    out = read_table(tmp_path / "ablated.parquet")
    meta = read_metadata(tmp_path / "ablated.parquet")
    assert list(out.columns) == list(T.ABLATED_COLUMNS)
    assert meta["pairs"]["en-de"]["group"] == "de" and meta["pairs"]["de-en"]["group"] == "en"
    assert list(dict.fromkeys(out["pair"])) == list(pairs) == list(meta["pairs"])  # the order of the inputs
    assert meta["pairs"]["fr-en"]["generated_with"] == ["de-en", "fr-en"]
    assert "generated_with" not in meta["pairs"]["en-de"]
    base = {}
    for pair, (src, tgt), group in (("en-de", ("en", "de"), "de"), ("de-en", ("de", "en"), "en"),
                                    ("fr-en", ("fr", "en"), "en")):
        edited = copy.deepcopy(lm)
        with torch.no_grad():
            for layer, idx in selection[group].items():
                _down_weights(edited)[layer][:, idx] = 0.0
        part = out[out["pair"] == pair].sort_values("id")
        _, prompts, caps = _prompts(loaded, False, src=part["src"].tolist(), src_lang=src, tgt_lang=tgt)
        want = [G.extract_hypothesis(loaded.tokenizer.decode(g.tokens, skip_special_tokens=True))
                for g in G.greedy_generate(edited, loaded.tokenizer, prompts, caps, batch_size=1)]
        assert part["hyp"].tolist() == want
        assert (part["n_neurons"] == sum(len(v) for v in selection[group].values())).all()
        base[pair] = [G.extract_hypothesis(loaded.tokenizer.decode(g.tokens, skip_special_tokens=True))
                      for g in G.greedy_generate(lm, loaded.tokenizer, prompts, caps, batch_size=1)]
    # the ablation changed something, and the model itself is untouched afterwards
    assert any(out[out["pair"] == p].sort_values("id")["hyp"].tolist() != base[p] for p in base)

    # a pair method ablates the direction's own group; a group with no neuron is not generated again
    pair_scores = pd.DataFrame({"group": "de-en", "layer": 0, "neuron": [3, 4], "score": 1.0})
    write_table(pair_scores, tmp_path / "pair.parquet", SCORE_SCHEMA, metadata={"method": "p", "group_kind": "pair"})
    T.translate_ablated_to_file(loaded, paths, str(tmp_path / "pair.parquet"), str(tmp_path / "ablated2.parquet"),
                                method="p", mode="zero", prompt_template=TEMPLATE, **SETTINGS)
    out2 = read_table(tmp_path / "ablated2.parquet")
    meta2 = read_metadata(tmp_path / "ablated2.parquet")
    assert set(out2["pair"]) == {"de-en"} and (out2["group"] == "de-en").all() and (out2["n_neurons"] == 2).all()
    assert meta2["unablated"] == {"en-de": "en-de", "fr-en": "fr-en"}


def test_mean_patching_uses_the_other_languages_means(small_model_dir, tmp_path):
    loaded = _load(small_model_dir)
    lm = loaded.require_lm("test")
    rng = np.random.default_rng(0)
    counts = {}
    for pair, lang, n_tokens in (("en-de", "en", 50), ("de-en", "de", 30), ("ru-en", "ru", 20)):
        df = pd.DataFrame({"layer": np.repeat(np.arange(3, dtype=np.int32), 96),
                           "neuron": np.tile(np.arange(96, dtype=np.int32), 3),
                           "active": 0, "nonzero": 0, "gate_active": 0,
                           "act_sum": rng.normal(size=288) * n_tokens})
        path = tmp_path / f"counts-{pair}.parquet"
        write_counts(complete(df), path, {"pair": pair, "counted_lang": lang, "n_tokens": n_tokens})
        counts[lang] = (df["act_sum"].to_numpy().reshape(3, 96), n_tokens, str(path))
    paths = [str(_pair_table(tmp_path / "en-de.parquet", "en-de", SOURCES[:3], SOURCES[:3]))]
    selection = {0: np.arange(0, 96, 2), 1: np.arange(10), 2: np.arange(50, 90)}
    scores = pd.DataFrame([("de", layer, n) for layer, idx in selection.items() for n in idx],
                          columns=["group", "layer", "neuron"]).assign(score=1.0)
    write_table(scores, tmp_path / "s.parquet", SCORE_SCHEMA, metadata={"method": "m", "group_kind": "language"})
    T.translate_ablated_to_file(loaded, paths, str(tmp_path / "s.parquet"), str(tmp_path / "a.parquet"), method="m",
                                mode="mean", prompt_template=TEMPLATE, activation_paths=[c[2] for c in counts.values()],
                                **SETTINGS)
    got = read_table(tmp_path / "a.parquet").sort_values("id")
    # by hand: German's neurons patched to their mean over English and Russian tokens
    values = (counts["en"][0] + counts["ru"][0]) / (counts["en"][1] + counts["ru"][1])
    _, prompts, caps = _prompts(loaded, False, src=got["src"].tolist())
    with intervene(lm, selection, "mean", values):
        want = [G.extract_hypothesis(loaded.tokenizer.decode(g.tokens, skip_special_tokens=True))
                for g in G.greedy_generate(lm, loaded.tokenizer, prompts, caps, batch_size=1)]
    assert got["hyp"].tolist() == want
    with pytest.raises(NeurospecError, match="evaluate.translate: mode .mean. needs the count tables"):
        T.translate_ablated_to_file(loaded, paths, str(tmp_path / "s.parquet"), str(tmp_path / "b.parquet"),
                                    method="m", mode="mean", prompt_template=TEMPLATE, **SETTINGS)
    assert not (tmp_path / "b.parquet").exists()


def test_generation_benchmark_runs_every_row_to_its_cap(capsys):
    import json

    from neurospec.tools import translation_bench

    translation_bench.main(["generate", "--shape", "demo", "--layers", "2", "--device", "cpu", "--dtype", "float32",
                            "--sentences", "6", "--batch-size", "4", "--prompt-tokens", "5", "--new-tokens", "7"])
    out = json.loads(capsys.readouterr().out)
    assert out["layers"] == 2 and out["new_tokens"] == 6 * 7 and out["new_tokens_per_s"] > 0
    assert out["steer_neurons_per_layer"] == 0


def test_the_steered_generation_benchmark_generates_under_the_set_hooks(capsys):
    """--steer-neurons K: K neurons of every block set to 1.0 while it generates (steering's hooks):
    the logits change inside and are the model's own again after."""
    import json

    from neurospec.tools import translation_bench

    model = translation_bench.random_model("demo", torch.device("cpu"), torch.float32, layers=2)
    ids = torch.tensor([[5, 6, 7, 8]])
    base = model(ids).logits
    seen = {}
    with translation_bench.steered(model, 3, seed=0):
        handles = [layer.mlp.down_proj.register_forward_pre_hook(  # after the set hook: what down_proj gets
            lambda m, a, i=i: seen.__setitem__(i, a[0].clone())) for i, layer in enumerate(model.model.layers)]
        steered = model(ids).logits
        for h in handles:
            h.remove()
    assert not torch.allclose(base, steered) and torch.equal(model(ids).logits, base)
    for h in seen.values():  # [batch, seq, neurons]: 3 neurons of each block hold 1.0 at every position
        assert int((h == 1.0).all(dim=1).all(dim=0).sum()) == 3
    assert len(seen) == 2
    translation_bench.main(["generate", "--shape", "demo", "--layers", "2", "--device", "cpu", "--dtype", "float32",
                            "--sentences", "4", "--batch-size", "4", "--prompt-tokens", "5", "--new-tokens", "3",
                            "--steer-neurons", "3"])
    out = json.loads(capsys.readouterr().out)
    assert out["steer_neurons_per_layer"] == 3 and out["new_tokens"] == 4 * 3
