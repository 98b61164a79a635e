"""Every input bounded, through snakemake: a 20,000-character sentence in translation is truncated,
counted and logged, leaves the other hypotheses as they were, and keeps the worker's memory bounded;
sharded collection equals unsharded collection within a stated bound."""

from __future__ import annotations

import re

import numpy as np
import pytest

from neurospec.tables import COUNT_COLUMNS, HALF, RATE_COLUMNS, read_counts, read_metadata, read_table
from workflow_utils import copy_run, snakemake, write_config

MODEL = "demo-small"
EN = ["Germany", "Federal Republic of Germany", None, "Bosnia and Herzegovina", "Euro", "Latin",
      "United States of America", "Chad"]
DE = ["Deutschland", "Bundesrepublik Deutschland", "Peru", "Bosnien und Herzegowina", "Euro", "Latein",
      "Vereinigte Staaten von Amerika", "Tschad"]
LONG_ID = 2
LONG = ("Saint Helena, Ascension and Tristan da Cunha " * 500)[:20000]
TRANSLATION = f"results/{MODEL}/files/validation/translation"
LOGS = f"results/logs/{MODEL}/files/validation/translation"


def _run(workdir, long: bool):
    """The demo model on a local text corpus (validation and test: the same lines); English line
    LONG_ID holds the 20,000-character sentence, or 'Peru'. Targets: the two translation tables."""
    corpus = workdir / "corpus"
    corpus.mkdir()
    en = [(LONG if long else "Peru") if s is None else s for s in EN]
    for split in ("validation", "test"):
        (corpus / f"{split}.en").write_text("\n".join(en) + "\n", encoding="utf-8")
        (corpus / f"{split}.de").write_text("\n".join(DE) + "\n", encoding="utf-8")
    cfg = write_config(workdir, {
        "pairs": ["en-de", "de-en"],
        "dataset": {"name": "files", "split": "validation", "max_samples": None,
                    "files": {"path": str(corpus / "{split}.{lang}")}},
        # a max_length above the demo model's context (1024): its context less max_new_tokens bounds it
        "evaluate": {"translate": {"max_sentences": None, "max_new_tokens": 16, "max_length": 4096}},
    })
    snakemake(workdir, f"{TRANSLATION}/en-de.parquet", f"{TRANSLATION}/de-en.parquet", configfile=cfg)
    return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {name: _run(tmp_path_factory.mktemp(f"bounds-{name}"), name == "long") for name in ("long", "short")}


def _peak_rss_mib(log_text: str) -> float:
    found = re.findall(r"worker peak RSS (\d+) MiB", log_text)
    assert found, log_text[-2000:]
    return float(found[-1])


def test_a_20000_character_sentence_is_truncated_counted_and_bounded(runs):
    long_dir, short_dir = runs["long"], runs["short"]
    for pair, n_truncated in (("en-de", 1), ("de-en", 0)):
        df = read_table(long_dir / TRANSLATION / f"{pair}.parquet")
        meta = read_metadata(long_dir / TRANSLATION / f"{pair}.parquet")
        ref = read_table(short_dir / TRANSLATION / f"{pair}.parquet")
        ref_meta = read_metadata(short_dir / TRANSLATION / f"{pair}.parquet")
        # the demo model's context is 1024 tokens; 16 are kept for the new tokens
        assert meta["max_prompt_tokens"] == ref_meta["max_prompt_tokens"] == 1024 - 16
        assert meta["n_truncated"] == n_truncated and ref_meta["n_truncated"] == 0
        assert meta["truncated_ids"] == ([LONG_ID] if n_truncated else [])
        assert meta["generation"]["max_length"] == 4096
        log = (long_dir / LOGS / f"{pair}.log").read_text()
        assert f"{pair}: 8 sentences, {n_truncated} truncated to 1008 prompt tokens" in log
        # every other sentence: the same hypothesis as in the run without the long sentence
        others = df["id"] != LONG_ID
        assert others.sum() == 7
        assert df.loc[others, ["id", "hyp", "n_new_tokens", "stop"]].reset_index(drop=True).equals(
            ref.loc[ref["id"] != LONG_ID, ["id", "hyp", "n_new_tokens", "stop"]].reset_index(drop=True))
    de = read_table(long_dir / TRANSLATION / "en-de.parquet").set_index("id")
    assert de.loc[LONG_ID, "src"] == LONG  # the table keeps the whole sentence
    en_meta = read_metadata(long_dir / TRANSLATION / "en-de.parquet")
    short_meta = read_metadata(short_dir / TRANSLATION / "en-de.parquet")
    # the long prompt holds at most 1008 tokens (a few fewer where the cut source's last token merges
    # with the cue after it): the prompt tokens of both runs differ by it less the 'Peru' prompt
    from transformers import AutoTokenizer

    from neurospec.evaluate.translation_prompts import encode_prompts, prompt_texts

    tok = AutoTokenizer.from_pretrained(long_dir / "results" / "models" / "demo")
    peru = len(encode_prompts(tok, prompt_texts(tok, ["Peru"], "en", "de", template=en_meta["prompt_template"],
                                                continuation="\n{tgt_name}:", chat=False), False)[0])
    assert 1008 - 4 <= en_meta["n_prompt_tokens"] - short_meta["n_prompt_tokens"] + peru <= 1008
    # memory: the worker that translated en-de peaked within 1.5 x its peak in the run without the
    # long sentence (measured: 658 against 582 MiB; untruncated, the sentence's ~8,000 tokens took
    # the worker to several GiB)
    long_rss = _peak_rss_mib((long_dir / LOGS / "en-de.log").read_text())
    short_rss = _peak_rss_mib((short_dir / LOGS / "en-de.log").read_text())
    print(f"worker peak RSS: {long_rss:.0f} MiB with the long sentence, {short_rss:.0f} MiB without")
    assert long_rss <= 1.5 * short_rss, (long_rss, short_rss)


# --------------------------------------------------------------------------------------------
# Shards: the same table as unsharded collection, counts exactly, float sums within a bound
# --------------------------------------------------------------------------------------------

SHARD_PAIRS = ["en-de", "de-en", "en-hi"]
INTEGER_COLUMNS = (*COUNT_COLUMNS, *(f"{c}_{HALF}" for c in COUNT_COLUMNS))
FLOAT_COLUMNS = tuple(f"{c}{s}" for c in ("act_sum", "act_sumsq", *RATE_COLUMNS) for s in ("", f"_{HALF}"))
# |sharded - unsharded| <= FLOAT_RTOL x the largest |value| of the unsharded column (per pair): float32
# per-batch sums over other batch compositions round differently (measured on this demo: under 2e-7)
FLOAT_RTOL = 1e-6


ACTIVATIONS = f"results/{MODEL}/demo/validation/activations"


def _tables(workdir):
    return {p: read_counts(workdir / ACTIVATIONS / f"{p}.parquet") for p in SHARD_PAIRS}


def test_sharded_collection_equals_unsharded_within_the_stated_bound(shared_run, tmp_path):
    """Unsharded: the shared run's tables (the same model, pair tables and collect.* but shards); sharded:
    3 shards per pair, on a copy of the shared run's model and pair tables."""
    shared, _ = shared_run
    copy_run(shared, tmp_path, "results/models", "results/data")
    cfg = write_config(tmp_path, {"pairs": SHARD_PAIRS, "collect": {"token_budget": 1024, "shards": 3}})
    snakemake(tmp_path, *(f"{ACTIVATIONS}/{p}.parquet" for p in SHARD_PAIRS), configfile=cfg)
    assert not list((tmp_path / ACTIVATIONS / "shards").rglob("*.parquet"))  # temp(): the shards are removed
    whole, sharded = _tables(shared), _tables(tmp_path)
    worst = {}
    for pair in SHARD_PAIRS:
        (ref, ref_meta), (got, got_meta) = whole[pair], sharded[pair]
        assert got_meta["shard"] == "sum of 3" and ref_meta["shard"] == "0/1"
        assert list(got["layer"]) == list(ref["layer"]) and list(got["neuron"]) == list(ref["neuron"])
        for col in INTEGER_COLUMNS:  # counts: exactly equal
            np.testing.assert_array_equal(got[col].to_numpy(), ref[col].to_numpy(), err_msg=f"{pair} {col}")
        for key in ("n_tokens", "n_tokens_even", "n_sentences", "n_truncated", "n_skipped", "n_prompt_tokens",
                    "n_rate_sentences", "n_rate_sentences_even"):
            assert got_meta[key] == ref_meta[key], (pair, key)
        for col in FLOAT_COLUMNS:
            a, b = got[col].to_numpy(), ref[col].to_numpy()
            scale = np.abs(b).max()
            assert scale > 0, (pair, col)
            rel = float(np.abs(a - b).max() / scale)
            worst[col] = max(worst.get(col, 0.0), rel)
            assert rel <= FLOAT_RTOL, (pair, col, rel)
    print("largest |sharded - unsharded| / max |unsharded| per column:",
          ", ".join(f"{c} {v:.1e}" for c, v in worst.items()))
