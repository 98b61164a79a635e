"""A real pretrained model translates: Gemma 3 270M (from the PyPI package) on FLORES-200 sentences."""

from __future__ import annotations

import pytest

from neurospec import models
from neurospec.data import pairs
from neurospec.evaluate import translation as T
from neurospec.evaluate import translation_prompts as P
from neurospec.tables import PAIR_SCHEMA, read_metadata, read_table, write_table
from neurospec.evaluate.translation_quality import corpus_scores

TEMPLATE = "Translate from {src_name} to {tgt_name}: {src}"


@pytest.fixture(scope="session")
def gemma_dir(gemma3_workdir):
    """Gemma 3 270M as the workflow builds it (rule build_gemma3_model)."""
    return gemma3_workdir / "results/models/gemma3-270m"


@pytest.mark.slow
@pytest.mark.parametrize("pair", ["de-en", "fr-en"])
def test_gemma3_translates_far_better_than_copying_the_source(gemma_dir, ec40_dir, tmp_path, pair):
    loaded = models.load_model(str(gemma_dir), dtype="float32", device="cpu")
    assert P.use_chat_template(loaded.tokenizer, "auto") is False  # the base model: plain prompt
    table, stats = pairs.build_pair_table(pair, {"name": "ec40", "split": "test", "local_dir": str(ec40_dir),
                                                 "max_samples": 6, "detokenize": True})
    write_table(table, tmp_path / "pairs.parquet", PAIR_SCHEMA, metadata={"pair": pair, **stats})
    T.translate_to_file(loaded, str(tmp_path / "pairs.parquet"), str(tmp_path / "hyp.parquet"),
                        prompt_template=TEMPLATE, max_sentences=6, chat_template="auto", continuation="\n{tgt_name}:",
                        max_new_tokens=128, max_new_tokens_ratio=2.0, max_new_tokens_extra=16, batch_size=6)
    hyps = read_table(tmp_path / "hyp.parquet")
    meta = read_metadata(tmp_path / "hyp.parquet")
    chrf, _ = corpus_scores(hyps["hyp"].tolist(), hyps["ref"].tolist())
    copy, _ = corpus_scores(hyps["src"].tolist(), hyps["ref"].tolist())
    assert meta["example_prompt"].endswith("\nEnglish:") and meta["n_stop_newline"] >= 4
    assert chrf > 35 and chrf > copy + 10, (chrf, copy, hyps["hyp"].tolist())
