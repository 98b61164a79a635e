"""neurospec's hub code paths (EC40 download, model loading) through the fake hub on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fake_hub import FakeHub, fake_commit, use_fake_hub
from neurospec.data import ec40
from neurospec.errors import NeurospecError
from neurospec.models import load_model

PAIR_FILES = ("Ntrex-eval-set/test.en-de.en", "Ntrex-eval-set/test.en-de.de")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from test_fake_hub import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def mini_ec40(tmp_path) -> Path:
    """A small EC40-shaped dataset repo (English-German validation pair only)."""
    root = tmp_path / "mini-ec40"
    (root / "Ntrex-eval-set").mkdir(parents=True)
    (root / PAIR_FILES[0]).write_text("Hello world .\nA second line .\n", encoding="utf-8")
    (root / PAIR_FILES[1]).write_text("Hallo Welt .\nEine zweite Zeile .\n", encoding="utf-8")
    return root


@pytest.fixture
def hub(tmp_path, tiny_dir, monkeypatch):
    with FakeHub(gated={"acme/gated", "acme/gated-data"}) as h:
        h.add_repo("acme/tiny", tiny_dir)
        h.add_repo("acme/gated", tiny_dir)
        use_fake_hub(monkeypatch, h, tmp_path / "hf-cache")
        yield h


def test_fetch_files_real_ec40_pair(hub, ec40_dir, tmp_path):
    hub.add_repo(ec40.REPO_ID, ec40_dir, repo_type="dataset", commit=ec40.REVISION)
    en, de = ec40.fetch_files("validation", "de", repo_id=ec40.REPO_ID, revision=ec40.REVISION)
    assert en.read_bytes() == (ec40_dir / PAIR_FILES[0]).read_bytes()
    assert de.read_bytes() == (ec40_dir / PAIR_FILES[1]).read_bytes()
    assert str(tmp_path / "hf-cache") in str(en)  # HF_HUB_CACHE
    for name in PAIR_FILES:
        assert hub.count("GET", f"/datasets/{ec40.REPO_ID}/resolve/{ec40.REVISION}/{name}") == 1


def test_fetch_files_cache_dir_and_errors(hub, mini_ec40, tmp_path):
    commit = "1" * 40
    hub.add_repo("acme/ec40", mini_ec40, repo_type="dataset", commit=commit)
    en, de = ec40.fetch_files("validation", "de", repo_id="acme/ec40", revision=commit,
                              cache_dir=tmp_path / "own-cache")
    assert en.read_text(encoding="utf-8").startswith("Hello world")
    assert de.read_text(encoding="utf-8").startswith("Hallo Welt")
    assert str(tmp_path / "own-cache") in str(en)

    cases = [
        (dict(repo_id="acme/ec40", revision="2" * 40), "does not exist"),
        (dict(repo_id="acme/nope", revision=commit), "acme/nope"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(NeurospecError, match=needle) as exc:
            ec40.fetch_files("validation", "de", **kwargs)
        assert "\n" not in str(exc.value)
    with pytest.raises(NeurospecError, match="missing") as exc:  # French is not in the mini repo
        ec40.fetch_files("validation", "fr", repo_id="acme/ec40", revision=commit)
    assert "\n" not in str(exc.value)


def test_fetch_files_gated_dataset_is_one_line(hub, mini_ec40, monkeypatch):
    hub.add_repo("acme/gated-data", mini_ec40, repo_type="dataset")
    with pytest.raises(NeurospecError) as exc:
        ec40.fetch_files("validation", "de", repo_id="acme/gated-data", revision="main")
    assert "\n" not in str(exc.value)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    en, _ = ec40.fetch_files("validation", "de", repo_id="acme/gated-data", revision="main")
    assert en.is_file()


def test_load_model_through_hub(hub):
    loaded = load_model("acme/tiny", "main", "float32", "cpu")
    assert type(loaded.model).__name__ == "LlamaModel"
    assert loaded.tokenizer("hello world")["input_ids"] == [4, 5]
    assert loaded.info["model"] == "acme/tiny"
    assert hub.count("GET", "/acme/tiny/resolve/") >= 3


def test_load_model_records_resolved_commit(hub):
    loaded = load_model("acme/tiny", "main", "float32", "cpu")
    assert loaded.info["model_revision"] == fake_commit("model", "acme/tiny")


def test_gated_model_without_token(hub, monkeypatch):
    with pytest.raises(NeurospecError) as exc:
        load_model("acme/gated", "main", "float32", "cpu")
    msg = str(exc.value)
    assert "\n" not in msg
    assert "gated" in msg and "HF_TOKEN" in msg
    assert any(r.status == 401 and "/acme/gated/resolve/" in r.path for r in hub.requests)

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(NeurospecError, match="gated.*HF_TOKEN") as exc:
        load_model("acme/gated", "main", "float32", "cpu")
    assert "\n" not in str(exc.value)

    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert type(load_model("acme/gated", "main", "float32", "cpu").model).__name__ == "LlamaModel"


def test_load_model_errors(hub):
    with pytest.raises(NeurospecError, match="acme/missing") as exc:
        load_model("acme/missing", "main", "float32", "cpu")
    assert "\n" not in str(exc.value)
    with pytest.raises(NeurospecError, match="revision") as exc:
        load_model("acme/tiny", "3" * 40, "float32", "cpu")
    assert "\n" not in str(exc.value)
