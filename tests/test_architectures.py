"""resolve_mlp_taps: the hooked tensors equal an independent recomputation from the weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurospec.architectures import SUPPORTED, ActFn, MLPTap, n_neurons, resolve_mlp_taps
from neurospec.errors import NeurospecError

import transformers as tf

H, I, L, V = 32, 64, 2, 101  # hidden, intermediate, layers, vocab
ATTN = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


ACTS = {  # independent formulas, by config activation name
    "silu": lambda x: x * torch.sigmoid(x),
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_new": _gelu_tanh,
    "gelu": lambda x: 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0))),
}

# name -> (config class, config kwargs, model class names (causal LM, base), activation name)
GATED = {
    "cohere": (tf.CohereConfig, dict(use_qk_norm=False), "Cohere", "silu"),
    "llama": (tf.LlamaConfig, {}, "Llama", "silu"),
    "qwen2": (tf.Qwen2Config, {}, "Qwen2", "silu"),
    "gemma": (tf.GemmaConfig, dict(head_dim=8), "Gemma", "gelu_pytorch_tanh"),
    "gemma2": (tf.Gemma2Config, dict(head_dim=8, query_pre_attn_scalar=8), "Gemma2", "gelu_pytorch_tanh"),
    "mistral": (tf.MistralConfig, dict(sliding_window=None), "Mistral", "silu"),
}


def _ids(seed: int = 1, batch: int = 2, seq: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (batch, seq), generator=g)


def _randomize(model: nn.Module) -> nn.Module:
    """Random weights large enough that activations are not all near zero (biases too)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
            elif "norm" in name or "ln" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    return model.eval()


def _capture(model: nn.Module, taps: list[MLPTap], mlp_input_modules: list[nn.Module],
             mlp_input_from_output: bool = False):
    """Run a forward with the taps' hooks and independent hooks capturing each MLP's input."""
    down, gate, x_in, handles = {}, {}, {}, []
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

    def x_hook(i):
        if mlp_input_from_output:  # e.g. XGLM's final_layer_norm: its output is the MLP input
            return lambda m, a, out: x_in.__setitem__(i, out.detach().clone())
        return lambda m, a: x_in.__setitem__(i, a[0].detach().clone())

    for t in taps:
        handles.append(t.down_input.register_forward_pre_hook(pre_down(t.layer)))
        if t.gate is not None:
            handles.append(t.gate.register_forward_hook(fwd_gate(t.layer)))
    for i, m in enumerate(mlp_input_modules):
        if mlp_input_from_output:
            handles.append(m.register_forward_hook(x_hook(i)))
        else:
            handles.append(m.register_forward_pre_hook(x_hook(i)))
    try:
        with torch.no_grad():
            model(input_ids=_ids())
    finally:
        for h in handles:
            h.remove()
    return down, gate, x_in, calls


def _gated_model(name: str, causal: bool):
    cfg_cls, extra, prefix, act = GATED[name]
    cfg = cfg_cls(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L, **ATTN, **extra)
    cfg._attn_implementation = "eager"
    cls = getattr(tf, f"{prefix}ForCausalLM" if causal else f"{prefix}Model")
    torch.manual_seed(0)
    return _randomize(cls(cfg)), act


@pytest.mark.parametrize("causal", [True, False], ids=["causal_lm", "base"])
@pytest.mark.parametrize("name", list(GATED))
def test_gated_mlp_taps(name, causal):
    model, act_name = _gated_model(name, causal)
    base = model.model if causal else model
    taps = resolve_mlp_taps(model)
    assert [t.layer for t in taps] == list(range(L))
    assert n_neurons(model) == I
    for t, layer in zip(taps, base.layers):
        assert t.down_input is layer.mlp.down_proj
        assert t.gate is layer.mlp.act_fn
    assert len({id(t.gate) for t in taps}) == L  # one gate module per layer

    down, gate, x_in, calls = _capture(model, taps, [layer.mlp for layer in base.layers])
    assert calls == {"down": L, "gate": L}  # each hook fires once per layer per forward
    act = ACTS[act_name]
    for i, layer in enumerate(base.layers):
        x = x_in[i]
        g = act(x @ layer.mlp.gate_proj.weight.T)
        u = x @ layer.mlp.up_proj.weight.T
        assert down[i].shape == (2, 7, I)
        torch.testing.assert_close(gate[i], g, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(down[i], g * u, atol=1e-5, rtol=1e-5)
        assert (gate[i] > 0).any() and (gate[i] <= 0).any()  # the test is not trivial


def test_function_act_fn_is_wrapped_without_changing_outputs():
    model, _ = _gated_model("llama", causal=False)
    with torch.no_grad():
        ref = model(input_ids=_ids()).last_hidden_state
    for layer in model.layers:
        del layer.mlp.act_fn
        layer.mlp.act_fn = F.silu  # a plain function, not a module
    taps = resolve_mlp_taps(model)
    assert all(isinstance(t.gate, ActFn) for t in taps)
    assert resolve_mlp_taps(model)[0].gate is taps[0].gate  # idempotent
    down, gate, x_in, calls = _capture(model, taps, [layer.mlp for layer in model.layers])
    assert calls == {"down": L, "gate": L}
    x = x_in[0]
    torch.testing.assert_close(gate[0], F.silu(x @ model.layers[0].mlp.gate_proj.weight.T))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=_ids()).last_hidden_state, ref)


def test_shared_act_module_gets_one_gate_per_layer():
    model, _ = _gated_model("qwen2", causal=False)
    shared = nn.SiLU()
    for layer in model.layers:
        layer.mlp.act_fn = shared
    taps = resolve_mlp_taps(model)
    assert len({id(t.gate) for t in taps}) == L
    _, gate, x_in, calls = _capture(model, taps, [layer.mlp for layer in model.layers])
    assert calls["gate"] == L
    for i, layer in enumerate(model.layers):
        torch.testing.assert_close(gate[i], F.silu(x_in[i] @ layer.mlp.gate_proj.weight.T))


def _plain_check(model, taps, blocks, w_in, b_in, act, x_modules, from_output=False, n=I):
    assert [t.layer for t in taps] == list(range(L))
    assert all(t.gate is None for t in taps)
    assert n_neurons(model) == n
    down, gate, x_in, calls = _capture(model, taps, x_modules, mlp_input_from_output=from_output)
    assert calls == {"down": L, "gate": 0} and gate == {}
    for i, block in enumerate(blocks):
        expected = act(x_in[i] @ w_in(block) + b_in(block))
        assert down[i].shape == (2, 7, n)
        torch.testing.assert_close(down[i], expected, atol=1e-5, rtol=1e-5)
        assert (down[i] > 0).any() and (down[i] < 0).any()


@pytest.mark.parametrize("causal", [True, False], ids=["causal_lm", "base"])
def test_gpt2_taps(causal):
    cfg = tf.GPT2Config(vocab_size=V, n_embd=H, n_inner=I, n_layer=L, n_head=4, n_positions=64)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = _randomize((tf.GPT2LMHeadModel if causal else tf.GPT2Model)(cfg))
    blocks = (model.transformer if causal else model).h
    taps = resolve_mlp_taps(model)
    assert all(t.down_input is b.mlp.c_proj for t, b in zip(taps, blocks))
    # Conv1D: y = x @ W + b, W of shape [in, out]
    _plain_check(model, taps, blocks, lambda b: b.mlp.c_fc.weight, lambda b: b.mlp.c_fc.bias,
                 ACTS["gelu_new"], [b.mlp for b in blocks])


@pytest.mark.parametrize("causal", [True, False], ids=["causal_lm", "base"])
def test_bloom_taps(causal):
    cfg = tf.BloomConfig(vocab_size=V, hidden_size=H, n_layer=L, n_head=4)
    torch.manual_seed(0)
    model = _randomize((tf.BloomForCausalLM if causal else tf.BloomModel)(cfg))
    blocks = (model.transformer if causal else model).h
    taps = resolve_mlp_taps(model)
    assert all(t.down_input is b.mlp.dense_4h_to_h for t, b in zip(taps, blocks))
    _plain_check(model, taps, blocks, lambda b: b.mlp.dense_h_to_4h.weight.T,
                 lambda b: b.mlp.dense_h_to_4h.bias, _gelu_tanh, [b.mlp for b in blocks], n=4 * H)


def test_bloom_slow_but_exact_is_refused():
    cfg = tf.BloomConfig(vocab_size=V, hidden_size=H, n_layer=L, n_head=4, pretraining_tp=2,
                         slow_but_exact=True)
    with pytest.raises(NeurospecError, match="slow_but_exact") as exc:
        resolve_mlp_taps(tf.BloomModel(cfg))
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("causal", [True, False], ids=["causal_lm", "base"])
def test_xglm_taps(causal):
    cfg = tf.XGLMConfig(vocab_size=V, d_model=H, ffn_dim=I, num_layers=L, attention_heads=4,
                        max_position_embeddings=64)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = _randomize((tf.XGLMForCausalLM if causal else tf.XGLMModel)(cfg))
    blocks = (model.model if causal else model).layers
    taps = resolve_mlp_taps(model)
    assert all(t.down_input is b.fc2 for t, b in zip(taps, blocks))
    _plain_check(model, taps, blocks, lambda b: b.fc1.weight.T, lambda b: b.fc1.bias, ACTS["gelu"],
                 [b.final_layer_norm for b in blocks], from_output=True)


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
    cfg = tf.BertConfig(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
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
    keys = " ".join(SUPPORTED)
    for arch in ("Cohere", "Llama", "Qwen2", "Gemma", "Gemma 2", "Mistral", "GPT-2", "BLOOM", "XGLM"):
        assert arch in keys
    assert all(isinstance(v, str) and v for v in SUPPORTED.values())
