"""Shared fixtures: the repo root, a small demo model, and the EC40 copy beside the checkout."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
# test modules import each other's fixtures and helpers by name (from test_scoring import synthetic)
for _stage in sorted((ROOT / "tests").glob("*/**/")):
    if any(_stage.glob("test_*.py")):
        sys.path.insert(0, str(_stage))
from scheduling import file_seconds, longest_first  # noqa: E402
from workflow_utils import SHARED_EC40  # noqa: E402  (one definition; `conftest` is also tests/workflow/conftest.py)


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
    from neurospec.data import demo
    from neurospec import models

    out = tmp_path_factory.mktemp("demo-model")
    texts = demo.corpus_texts()[::10]
    models.build_demo_model(out, texts, seed=1, vocab_size=600, hidden_size=32, intermediate_size=96,
                            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)
    return out


@pytest.fixture(scope="session")
def gemma3_workdir(tmp_path_factory) -> Path:
    """A workdir whose results/models/gemma3-270m was built by the workflow's own rule
    (`snakemake results/models/gemma3-270m --configfile config/gemma3-270m.yaml`), once per session;
    the slow real-model tests copy or read it. Skips when the optional extra is not installed."""
    from neurospec.model import gemma3
    from neurospec.errors import NeurospecError
    from workflow_utils import once_per_session, snakemake

    try:
        gemma3.check_installed()
    except NeurospecError as exc:  # pip install -e ".[gemma3]"; CI installs it
        pytest.skip(str(exc))
    workdir = once_per_session(tmp_path_factory, "gemma3-build", lambda folder: snakemake(
        folder, "results/models/gemma3-270m", configfile=ROOT / "config" / "gemma3-270m.yaml", timeout=1800))
    assert (workdir / "results/models/gemma3-270m/model.safetensors").is_file()
    return workdir


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`, pyproject's addopts) a test file runs on one worker, so its
    module-scoped fixtures (a module's own workflow run) are made once; a test marked
    `@pytest.mark.xdist_group("name")` runs with the other tests of that group instead (the SLURM tests:
    one cluster on the host at a time)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items[:] = longest_first(items, file_seconds(ROOT / "tests" / "durations.json"))

