"""Shared fixtures: the repo root, a small demo model, and the EC40 copy beside the checkout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
SHARED_EC40 = ROOT.parent / "shared" / "ec40"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ec40_dir() -> Path:
    if not (SHARED_EC40 / "Ntrex-eval-set").is_dir():
        pytest.skip(f"the EC40 copy is absent ({SHARED_EC40})")
    return SHARED_EC40


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory) -> Path:
    """A demo-architecture model (Cohere, seeded) with a tokenizer trained on part of the demo corpus."""
    from neurospec import demo, models

    out = tmp_path_factory.mktemp("demo-model")
    texts = demo.corpus_texts()[::10]
    models.build_demo_model(out, texts, seed=1, vocab_size=600, hidden_size=32, intermediate_size=96,
                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
    return out
