"""The fake hub answers huggingface_hub 2.4.0 and transformers the way the real hub does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fake_hub import FakeHub, fake_commit, use_fake_hub

EC40_DIR = Path(__file__).resolve().parents[4] / "shared" / "ec40"
EC40_REPO = "ShaomuTan/EC40"
EC40_REVISION = "93f0ec4fbc6ac1198668871b3e7a411c57c1c260"
EC40_FILE = "Ntrex-eval-set/test.en-de.de"


def save_tiny_model(directory: Path) -> Path:
    """A tiny random Llama model and a word-level fast tokenizer, saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>", "hello", "world", "hallo", "welt"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny")


@pytest.fixture
def hub(tmp_path, tiny_dir):
    with FakeHub(tmp_path / "hub-root", gated={"acme/gated"}) as h:
        h.add_repo("acme/tiny", tiny_dir)
        h.add_repo("acme/gated", tiny_dir)
        if EC40_DIR.is_dir():
            h.add_repo(EC40_REPO, EC40_DIR, repo_type="dataset", commit=EC40_REVISION)
        yield h


def test_ec40_file_download(hub, tmp_path, monkeypatch):
    if not (EC40_DIR / EC40_FILE).is_file():
        pytest.skip(f"EC40 copy not found at {EC40_DIR}")
    from huggingface_hub import hf_hub_download

    use_fake_hub(monkeypatch, hub, tmp_path / "cache")
    path = hf_hub_download(repo_id=EC40_REPO, repo_type="dataset", revision=EC40_REVISION, filename=EC40_FILE)
    assert Path(path).read_bytes() == (EC40_DIR / EC40_FILE).read_bytes()
    assert str(tmp_path / "cache") in str(Path(path).parent)  # cached under HF_HUB_CACHE
    assert EC40_REVISION in path  # snapshot folder named by the commit
    assert hub.count("HEAD", f"/datasets/{EC40_REPO}/resolve/{EC40_REVISION}/{EC40_FILE}") == 1
    assert hub.count("GET", f"/datasets/{EC40_REPO}/resolve/{EC40_REVISION}/{EC40_FILE}") == 1
    # A second call is served from the cache: pinned to a commit, huggingface_hub skips even the HEAD.
    n = len(hub.requests)
    assert hf_hub_download(repo_id=EC40_REPO, repo_type="dataset", revision=EC40_REVISION,
                           filename=EC40_FILE) == path
    assert hub.count("GET") == sum(1 for r in hub.requests[:n] if r.method == "GET")


def test_errors_like_the_hub(hub, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    use_fake_hub(monkeypatch, hub, tmp_path / "cache")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/tiny", "missing.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("acme/tiny", "config.json", revision="0" * 40)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("acme/nope", "config.json")
    # A commit pin of a served repo works; files under root_dir are served too.
    assert Path(hf_hub_download("acme/tiny", "config.json", revision=fake_commit("model", "acme/tiny"))).is_file()
    (tmp_path / "hub-root" / "datasets" / "org" / "data").mkdir(parents=True)
    (tmp_path / "hub-root" / "datasets" / "org" / "data" / "a.txt").write_text("hi\n")
    assert Path(hf_hub_download("org/data", "a.txt", repo_type="dataset")).read_text() == "hi\n"


def test_transformers_from_pretrained(hub, tmp_path, monkeypatch, tiny_dir):
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    use_fake_hub(monkeypatch, hub, tmp_path / "cache")
    tok = AutoTokenizer.from_pretrained("acme/tiny", revision="main")
    assert tok("hello world")["input_ids"] == [4, 5]
    model = AutoModel.from_pretrained("acme/tiny", revision="main")
    assert type(model).__name__ == "LlamaModel"
    # transformers 5.23 keeps no config._commit_hash; the snapshot folder is named by the commit.
    from transformers.utils.hub import cached_file, extract_commit_hash
    assert extract_commit_hash(cached_file("acme/tiny", "config.json"), None) == fake_commit("model", "acme/tiny")
    local = AutoModelForCausalLM.from_pretrained(tiny_dir)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(p, local.model.state_dict()[name])
    # transformers 5.23 resolves "main" to the commit (GET /api/models/acme/tiny[/revision/main]), then
    # downloads by commit.
    commit = fake_commit("model", "acme/tiny")
    resolved = {r.path for r in hub.requests if r.status == 200 and r.method == "GET"}
    assert "/api/models/acme/tiny/revision/main" in resolved
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert f"/acme/tiny/resolve/{commit}/{name}" in resolved
    assert all(r.status in (200, 206, 404) for r in hub.requests), \
        [(r.method, r.path, r.status) for r in hub.requests if r.status not in (200, 206, 404)]


def test_gated_repo(hub, tmp_path, monkeypatch):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    use_fake_hub(monkeypatch, hub, tmp_path / "cache")
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "config.json")
    assert hub.requests[-1].status == 401 and hub.requests[-1].authorization is None
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(GatedRepoError):
        hf_hub_download("acme/gated", "config.json")
    assert hub.requests[-1].status == 403
    monkeypatch.setenv("HF_TOKEN", hub.token)
    path = hf_hub_download("acme/gated", "config.json")
    assert Path(path).is_file()
    assert hub.requests[-1].authorization == f"Bearer {hub.token}"


def test_gated_repo_from_pretrained(hub, tmp_path, monkeypatch):
    from huggingface_hub.errors import GatedRepoError
    from transformers import AutoConfig

    use_fake_hub(monkeypatch, hub, tmp_path / "cache")
    with pytest.raises(OSError) as exc:
        AutoConfig.from_pretrained("acme/gated")
    chain, e = [], exc.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(e, GatedRepoError) for e in chain) or "gated repo" in str(exc.value).lower()
    monkeypatch.setenv("HF_TOKEN", hub.token)
    assert AutoConfig.from_pretrained("acme/gated").model_type == "llama"


def test_api_endpoints(hub, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, list_repo_files, model_info

    use_fake_hub(monkeypatch, hub, tmp_path / "cache")
    info = model_info("acme/tiny")  # module-level api: its endpoint was copied at import
    assert info.sha == fake_commit("model", "acme/tiny")
    assert "config.json" in {s.rfilename for s in info.siblings}
    assert "model.safetensors" in list_repo_files("acme/tiny")
    assert HfApi().file_exists("acme/tiny", "tokenizer.json")
    assert not HfApi().file_exists("acme/tiny", "nope.json")


def test_subprocess_env(hub, tmp_path):
    """The most robust way: a child process with hub.env() (HF_ENDPOINT read at import there)."""
    code = ("from huggingface_hub import hf_hub_download; "
            "print(open(hf_hub_download('acme/tiny', 'config.json')).read())")
    out = subprocess.run([sys.executable, "-c", code], env=hub.env(tmp_path / "cache"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"model_type": "llama"' in out.stdout
    assert hub.count("GET", "/acme/tiny/resolve/main/config.json") == 1
    gated = subprocess.run([sys.executable, "-c", code.replace("acme/tiny", "acme/gated")],
                           env=hub.env(tmp_path / "cache2"), capture_output=True, text=True, timeout=60)
    assert gated.returncode != 0 and "GatedRepoError" in gated.stderr


def test_a_later_hub_is_reached_by_shared_clients(tiny_dir, tmp_path, monkeypatch):
    """transformers' shared HfApi (made at its first use, under the first hub here) asks each later hub, not
    the first one's closed port (refused connections that huggingface_hub retries for ~23 s, swallowed)."""
    from transformers import AutoTokenizer
    from transformers.utils.hub import hf_api

    for i in range(2):
        with FakeHub() as h, monkeypatch.context() as patch:
            h.add_repo("acme/tiny", tiny_dir)
            use_fake_hub(patch, h, tmp_path / f"cache{i}")
            assert hf_api().endpoint == h.endpoint
            assert AutoTokenizer.from_pretrained("acme/tiny")("hello world")["input_ids"] == [4, 5]
            listed = [r for r in h.requests if r.path == "/api/models/acme/tiny/tree/main"]  # list_repo_files
            assert [r.status for r in listed] == [200], [(r.method, r.path, r.status) for r in h.requests]
