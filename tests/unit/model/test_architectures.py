"""Every supported architecture: the hooked tensors equal an independent recomputation from the
weights (``resolve_mlp_taps``), and, through the user's path (a tiny model saved with
``save_pretrained``, ``load_model`` as the workflow calls it, the collector with padded multi-row
batches), the count table equals a one-sentence-at-a-time recomputation (tests/reference.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformers as tf
from torch import nn

from neurospec.collect import collect, encoding
from neurospec import batching
from neurospec.data import pairs as pair_tables
from neurospec.architectures import SUPPORTED, ActFn, n_neurons, resolve_mlp_taps
from neurospec.errors import NeurospecError
from neurospec.models import load_model
from neurospec.tables import PAIR_SCHEMA, read_counts, read_table, write_table
from reference import (ARCHITECTURES, LAYERS, assert_stats_equal, build_model, capture_mlp_inputs, randomize,
                       reference_counts, table_arrays)

V = 101  # vocabulary of the directly built models
TEMPLATE = "Translate from {src_name} to {tgt_name}: {src}"


def _ids(seed: int = 1, batch: int = 2, seq: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (batch, seq), generator=g)


def _module(block: nn.Module, path: str | None) -> nn.Module | None:
    for part in (path.split(".") if path else []):
        block = getattr(block, part)
    return block if path else None


def _capture_taps(model: nn.Module, base: nn.Module, arch, taps):
    """One forward: the taps' hooks (as the collector registers them) and the MLP inputs x."""
    down, gate, handles = {}, {}, []
    calls = {"down": 0, "gate": 0}

    def pre_down(i):
        def hook(module, args):
            calls["down"] += 1
            down[i] = args[0].detach().clone()
        return hook

    def fwd_gate(i):
        def hook(module, args, output):
            calls["gate"] += 1
            gate[i] = output.detach().clone()
        return hook

    for t in taps:
        handles.append(t.down_input.register_forward_pre_hook(pre_down(t.layer)))
        if t.gate is not None:
            handles.append(t.gate.register_forward_hook(fwd_gate(t.layer)))
    try:
        x_in = capture_mlp_inputs(model, arch, input_ids=_ids())
    finally:
        for h in handles:
            h.remove()
    return down, gate, x_in, calls


@pytest.mark.parametrize("causal", [True, False], ids=["causal_lm", "base"])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_taps_equal_recomputation(name, causal):
    arch = ARCHITECTURES[name]
    model = build_model(name, V, causal=causal)
    base = model.base_model if causal else model
    blocks = arch.blocks(base)
    taps = resolve_mlp_taps(model)
    assert [t.layer for t in taps] == list(range(LAYERS))
    assert n_neurons(model) == arch.n_neurons
    down_name, gate_name = arch.tap_names
    for t, block in zip(taps, blocks):
        assert t.down_input is _module(block, down_name)
        assert t.gate is _module(block, gate_name)
    gated = gate_name is not None
    if gated:
        assert len({id(t.gate) for t in taps}) == LAYERS  # one gate module per layer

    down, gate, x_in, calls = _capture_taps(model, base, arch, taps)
    assert calls == {"down": LAYERS, "gate": LAYERS if gated else 0}  # once per layer per forward
    for i, block in enumerate(blocks):
        with torch.no_grad():
            h, g = arch.neurons(block, x_in[i])
        assert down[i].shape == (2, 7, arch.n_neurons)
        torch.testing.assert_close(down[i], h, atol=1e-5, rtol=1e-5)
        if gated:
            torch.testing.assert_close(gate[i], g, atol=1e-5, rtol=1e-5)
            assert (gate[i] > 0).any() and (gate[i] <= 0).any()  # the test is not trivial
        else:
            assert (down[i] > 0).any() and (down[i] < 0).any()


def test_function_act_fn_is_wrapped_without_changing_outputs():
    model = build_model("llama", V, causal=False)
    arch = ARCHITECTURES["llama"]
    with torch.no_grad():
        ref = model(input_ids=_ids()).last_hidden_state
    for layer in model.layers:
        del layer.mlp.act_fn
        layer.mlp.act_fn = F.silu  # a plain function, not a module
    taps = resolve_mlp_taps(model)
    assert all(isinstance(t.gate, ActFn) for t in taps)
    assert resolve_mlp_taps(model)[0].gate is taps[0].gate  # idempotent
    down, gate, x_in, calls = _capture_taps(model, model, arch, taps)
    assert calls == {"down": LAYERS, "gate": LAYERS}
    torch.testing.assert_close(gate[0], F.silu(x_in[0] @ model.layers[0].mlp.gate_proj.weight.T))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=_ids()).last_hidden_state, ref)


def test_shared_act_module_gets_one_gate_per_layer():
    model = build_model("qwen2", V, causal=False)
    shared = nn.SiLU()
    for layer in model.layers:
        layer.mlp.act_fn = shared
    taps = resolve_mlp_taps(model)
    assert len({id(t.gate) for t in taps}) == LAYERS
    _, gate, x_in, calls = _capture_taps(model, model, ARCHITECTURES["qwen2"], taps)
    assert calls["gate"] == LAYERS
    for i, layer in enumerate(model.layers):
        torch.testing.assert_close(gate[i], F.silu(x_in[i] @ layer.mlp.gate_proj.weight.T))


def test_bloom_slow_but_exact_is_refused():
    cfg = tf.BloomConfig(vocab_size=V, hidden_size=32, n_layer=LAYERS, n_head=4, pretraining_tp=2,
                         slow_but_exact=True)
    with pytest.raises(NeurospecError, match="slow_but_exact") as exc:
        resolve_mlp_taps(tf.BloomModel(cfg))
    assert "\n" not in str(exc.value)


# -- through the user's path: save_pretrained -> load_model -> the collector -> the count table ----------


@pytest.fixture(scope="module")
def tokenizer(small_model_dir):
    """The demo's byte-level BPE tokenizer (fast: character offsets for token_scope 'source')."""
    return tf.AutoTokenizer.from_pretrained(small_model_dir)


@pytest.fixture(scope="module")
def pair_table_path(tmp_path_factory):
    """A pair table as the workflow writes it: demo sentences, en-de and hi-en (Latin, Devanagari)."""
    out = tmp_path_factory.mktemp("pairs")
    frames = []
    for pair in ("en-de", "hi-en"):
        pair_tables.write_pair_table(pair, {"name": "demo", "split": "validation", "max_samples": 12},
                                     str(out / f"{pair}.parquet"))
        frames.append(read_table(out / f"{pair}.parquet"))
    # one table with both directions' sentences (ids made unique): more varied lengths per batch
    both = pd.concat(frames, ignore_index=True)
    both["id"] = range(len(both))
    path = out / "mixed.parquet"
    write_table(both, path, PAIR_SCHEMA, metadata={"pair": "en-de"})
    return path


def save_tiny(name: str, directory, tokenizer):
    """A tiny random model of ``name`` and the tokenizer, saved as a user's local model directory."""
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    arch = ARCHITECTURES[name]
    cfg = arch.make_config(len(tokenizer), **ids)
    torch.manual_seed(0)
    model = randomize(getattr(tf, arch.causal)(cfg))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


BUDGET = 160  # tokens per batch: several rows of unequal length per batch (asserted below)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_load_and_collect_equal_recomputation(name, tmp_path, tokenizer, pair_table_path):
    arch = ARCHITECTURES[name]
    directory = save_tiny(name, tmp_path / name, tokenizer)
    # load_model's arguments as the workflow passes them (common.smk: model_params)
    loaded = load_model(model_id=str(directory), revision="main", dtype=arch.dtype, device="cpu",
                        attn_implementation="auto")
    assert type(loaded.lm).__name__ == arch.causal and type(loaded.model).__name__ == arch.base
    assert loaded.info["attn_implementation"] == arch.attention
    assert loaded.model.config._attn_implementation == arch.attention  # what the modules run

    pairs = read_table(pair_table_path)
    enc = encoding.encode(loaded.tokenizer, pairs["src"].tolist(), pairs["src_lang"].tolist(),
                         pairs["tgt_lang"].tolist(), template=TEMPLATE)
    batches = batching.make_batches(enc.lengths, BUDGET)
    padded = [b for b in batches if len(b) > 1 and len({enc.lengths[i] for i in b}) > 1]
    assert len(padded) >= 2, "the budget must force padded multi-row batches"

    out = tmp_path / "activations" / "en-de.parquet"
    collect.collect_to_file(loaded, str(pair_table_path), str(out), prompt_template=TEMPLATE,
                            token_budget=BUDGET)
    df, meta = read_counts(out)
    assert meta["attn_implementation"] == arch.attention and meta["model_class"] == arch.causal
    assert meta["dtype"] == arch.dtype and meta["model_revision"].startswith("local-sha256:")

    got = table_arrays(df, LAYERS)
    ref, ref_tokens = reference_counts(loaded, pairs, TEMPLATE)
    assert meta["n_tokens"] == ref_tokens and meta["n_sentences"] == len(pairs)
    assert got["active"].shape == (LAYERS, arch.n_neurons)
    # every column: counts exactly, sums (of h, h^2, per-sentence rates, the even half) to float tolerance
    assert_stats_equal(got, ref, rtol=1e-9 if arch.dtype == "float64" else 1e-4)
    assert 0 < got["active"].mean() < ref_tokens  # neither all-zero nor all-maximal
    if arch.tap_names[1] is not None:  # gated: the gate is its own count
        assert (got["gate_active"] != got["active"]).any()
    else:
        np.testing.assert_array_equal(got["gate_active"], got["active"])


def test_attention_falls_back_where_unsupported(tmp_path, tokenizer):
    """Asked for SDPA, a class without it is one line naming what it supports; auto loads it (eager)."""
    directory = save_tiny("bloom", tmp_path / "bloom", tokenizer)
    with pytest.raises(NeurospecError, match=r"model.attn_implementation 'sdpa': BloomForCausalLM does not "
                                             r"support it \(it supports eager\)") as exc:
        load_model(str(directory), dtype="float32", device="cpu", attn_implementation="sdpa")
    assert "\n" not in str(exc.value)
    with pytest.raises(NeurospecError, match="'flash_attention_2'") as exc:
        load_model(str(directory), dtype="float32", device="cpu", attn_implementation="flash_attention_2")
    assert load_model(str(directory), dtype="float32", device="cpu",
                      attn_implementation="eager").info["attn_implementation"] == "eager"


def _broken(directory, tokenizer, damage: str):
    """A local model directory that exists but fails to load in one place."""
    save_tiny("llama", directory, tokenizer)
    if damage == "config":
        (directory / "config.json").write_text("{not json", encoding="utf-8")
    elif damage == "no_config":
        (directory / "config.json").unlink()
    elif damage == "weights":
        (directory / "model.safetensors").write_bytes(b"not a safetensors file")
    elif damage == "no_weights":
        (directory / "model.safetensors").unlink()
    elif damage == "no_tokenizer":
        for p in directory.glob("tokenizer*"):
            p.unlink()
    return directory


@pytest.mark.parametrize(("damage", "message"), [
    ("config", r"cannot load the config of local model directory '.*llama': .*config.json.*not a valid JSON"),
    ("no_config", r"local model directory '.*llama' has no config.json"),
    ("weights", r"cannot load the weights of local model directory '.*llama': .*header"),
    ("no_weights", r"cannot load the weights of local model directory '.*llama': .*model.safetensors"),
    ("no_tokenizer", r"cannot load the tokenizer of local model directory '.*llama': it has no tokenizer files"),
])
def test_load_error_names_the_real_cause(tmp_path, tokenizer, damage, message):
    directory = _broken(tmp_path / "llama", tokenizer, damage)
    with pytest.raises(NeurospecError, match=message) as exc:
        load_model(str(directory), dtype="float32", device="cpu")
    msg = str(exc.value)
    assert "\n" not in msg and "neither a local directory" not in msg and "no such directory" not in msg


class _OddMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)
        self.act_fn = nn.SiLU()

    def forward(self, x):  # act_fn applied twice: its output is not act_fn(gate_proj(x))
        return self.down_proj(self.act_fn(self.act_fn(self.gate_proj(x))) * self.up_proj(x))


class _OddBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = _OddMLP()


class _OddModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([_OddBlock(), _OddBlock()])


def _bert():
    cfg = tf.BertConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                        num_attention_heads=4)
    return tf.BertModel(cfg)


@pytest.mark.parametrize("make, cls_name", [
    (lambda: nn.Module(), "Module"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU()), "Sequential"),
    (_bert, "BertModel"),
])
def test_unknown_model_is_one_line_error(make, cls_name):
    with pytest.raises(NeurospecError) as exc:
        resolve_mlp_taps(make())
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"model class {cls_name} is not supported" in msg
    for arch in ("Cohere", "Llama", "Qwen2", "Gemma", "Mistral", "GPT-2", "BLOOM", "XGLM"):
        assert arch in msg


def test_gated_mlp_with_unverified_forward_is_refused():
    with pytest.raises(NeurospecError, match="_OddMLP") as exc:
        resolve_mlp_taps(_OddModel())
    assert "\n" not in str(exc.value)


def test_supported_table_names_every_tested_architecture():
    """SUPPORTED, the test registry and the architecture table (docs/architectures.md) agree, and each
    row names the test that proves it through load_model and the collector."""
    import re

    from workflow_utils import ROOT

    named = {arch.readme for arch in ARCHITECTURES.values()}
    assert named == set(SUPPORTED)  # every supported row has a tiny model (and nothing untested is listed)
    doc = (ROOT / "docs" / "architectures.md").read_text(encoding="utf-8")
    table = doc[doc.index("| architecture |"):]
    table = table[:table.index("\n\n")]  # the table ends at the first blank line
    rows = {cells[0]: cells for line in table.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    for name, arch in ARCHITECTURES.items():
        row = rows[arch.readme]
        assert row[1] == SUPPORTED[arch.readme]  # what is hooked: the library's own words
        assert f"`test_load_and_collect_equal_recomputation[{name}]`" in row[3]
        if not arch.readme.startswith("other"):  # that row stands for many classes
            assert row[2].split()[0] == arch.attention
    ids = re.findall(r"test_load_and_collect_equal_recomputation\[(\w+)\]", table)
    assert set(ids) == set(ARCHITECTURES)
