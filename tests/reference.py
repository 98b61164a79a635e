"""Independent recomputations for the tests: every supported architecture as a tiny random model,
where its MLP input is, and its neurons recomputed from the weights with formulas written here.

``ARCHITECTURES`` maps a short name to an ``Arch``: how to configure a tiny model of that class, the
blocks of its base model, the module whose input (or output) is the MLP's input ``x``, and
``neurons(block, x) -> (h, gate)``: the down projection's input h and the gate activation
act_fn(gate_proj(x)) (plain MLPs: gate = h), from the block's weights, without calling the block's
own MLP modules. ``reference_counts`` counts a pair table one sentence at a time with them: no
batching, no padding, no hooks on the modules the collector hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import transformers as tf
from torch import nn

from neurospec.prompts import render

HIDDEN, INTERMEDIATE, LAYERS = 32, 64, 2
ATTN = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation, written out (GPT-2's ``gelu_new``)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def bloom_gelu(x: torch.Tensor) -> torch.Tensor:
    """BLOOM's GELU: the tanh approximation with its own rounded constant, 0.79788456 for sqrt(2/pi)."""
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


# Activations by the config's name. Counts compare signs, and the tanh approximations saturate
# (exact zeros for very negative inputs): a formula must round like the model's own, so the fused
# torch kernels stand for the activations that transformers computes with them.
ACTS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_new": gelu_tanh,
    "gelu": F.gelu,
}


@dataclass(frozen=True)
class Arch:
    readme: str  # the row of the architecture table in docs/architectures.md
    make_config: Callable[..., Any]  # (vocab_size, **token ids) -> config
    causal: str  # the causal LM class (AutoModelForCausalLM), in transformers
    base: str  # the base model class (LoadedModel.model)
    blocks: Callable[[nn.Module], nn.ModuleList]  # base model -> its blocks
    mlp_input: Callable[[nn.Module], nn.Module]  # block -> module whose input (or output) is x
    neurons: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    attention: str  # what load_model picks on a CPU (auto: SDPA where the class supports it)
    input_from_output: bool = False  # x is mlp_input's output (XGLM: final_layer_norm), not its input
    dtype: str = "float64"  # the dtype the load-and-collect test uses
    n_neurons: int = INTERMEDIATE
    tap_names: tuple[str, str | None] = ("mlp.down_proj", "mlp.act_fn")  # hooked modules, in the block


def _gated_act(act_name: str):
    def neurons(block, x):
        mlp = block.mlp
        gate = ACTS[act_name](x @ mlp.gate_proj.weight.T)
        return gate * (x @ mlp.up_proj.weight.T), gate

    return neurons


def _plain(act: Callable[[torch.Tensor], torch.Tensor], w: Callable[[nn.Module], torch.Tensor],
           b: Callable[[nn.Module], torch.Tensor]):
    def neurons(block, x):
        h = act(x @ w(block) + b(block))
        return h, h

    return neurons


def _gated_config(cls, **extra):
    return lambda vocab_size, **ids: cls(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                                         num_hidden_layers=LAYERS, **ATTN, **extra, **ids)


def _layers(base):
    return base.layers


def _mlp(block):
    return block.mlp


ARCHITECTURES: dict[str, Arch] = {
    "cohere": Arch("Cohere (Aya)", _gated_config(tf.CohereConfig, use_qk_norm=False), "CohereForCausalLM",
                   "CohereModel", _layers, _mlp, _gated_act("silu"), "sdpa"),
    "llama": Arch("Llama", _gated_config(tf.LlamaConfig), "LlamaForCausalLM", "LlamaModel", _layers, _mlp,
                  _gated_act("silu"), "sdpa"),
    "qwen2": Arch("Qwen2", _gated_config(tf.Qwen2Config), "Qwen2ForCausalLM", "Qwen2Model", _layers, _mlp,
                  _gated_act("silu"), "sdpa"),
    "gemma": Arch("Gemma", _gated_config(tf.GemmaConfig, head_dim=8), "GemmaForCausalLM", "GemmaModel", _layers,
                  _mlp, _gated_act("gelu_pytorch_tanh"), "sdpa"),
    # Gemma 2 lacks SDPA in transformers 5.23 (flash attention 2 on CUDA, else eager)
    "gemma2": Arch("Gemma 2", _gated_config(tf.Gemma2Config, head_dim=8, query_pre_attn_scalar=8),
                   "Gemma2ForCausalLM", "Gemma2Model", _layers, _mlp, _gated_act("gelu_pytorch_tanh"), "eager"),
    "gemma3": Arch("Gemma 3", _gated_config(tf.Gemma3TextConfig, head_dim=8, query_pre_attn_scalar=8),
                   "Gemma3ForCausalLM", "Gemma3TextModel", _layers, _mlp, _gated_act("gelu_pytorch_tanh"), "sdpa"),
    # "other gated MLPs": a class the resolver does not name, recognized by its gate/up/down MLP
    "qwen3": Arch("other gated MLPs", _gated_config(tf.Qwen3Config), "Qwen3ForCausalLM", "Qwen3Model", _layers,
                  _mlp, _gated_act("silu"), "sdpa"),
    "mistral": Arch("Mistral", _gated_config(tf.MistralConfig, sliding_window=None), "MistralForCausalLM",
                    "MistralModel", _layers, _mlp, _gated_act("silu"), "sdpa"),
    "gpt2": Arch(
        "GPT-2",
        lambda vocab_size, **ids: tf.GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_inner=INTERMEDIATE,
                                                n_layer=LAYERS, n_head=4, n_positions=256, **ids),
        "GPT2LMHeadModel", "GPT2Model", lambda base: base.h, _mlp,
        # Conv1D: y = x @ W + b, W of shape [in, out]
        _plain(ACTS["gelu_new"], lambda b: b.mlp.c_fc.weight, lambda b: b.mlp.c_fc.bias), "sdpa",
        tap_names=("mlp.c_proj", None)),
    "bloom": Arch(
        "BLOOM",
        lambda vocab_size, **ids: tf.BloomConfig(vocab_size=vocab_size, hidden_size=HIDDEN, n_layer=LAYERS,
                                                 n_head=4, **ids),
        "BloomForCausalLM", "BloomModel", lambda base: base.h, _mlp,
        _plain(bloom_gelu, lambda b: b.mlp.dense_h_to_4h.weight.T, lambda b: b.mlp.dense_h_to_4h.bias), "eager",
        n_neurons=4 * HIDDEN, tap_names=("mlp.dense_4h_to_h", None)),
    "xglm": Arch(
        "XGLM",
        lambda vocab_size, **ids: tf.XGLMConfig(vocab_size=vocab_size, d_model=HIDDEN, ffn_dim=INTERMEDIATE,
                                                num_layers=LAYERS, attention_heads=4, max_position_embeddings=256,
                                                **ids),
        "XGLMForCausalLM", "XGLMModel", _layers, lambda block: block.final_layer_norm,
        _plain(ACTS["gelu"], lambda b: b.fc1.weight.T, lambda b: b.fc1.bias), "eager", input_from_output=True,
        # transformers' XGLM attention builds a float32 constant and overflows in float64
        dtype="float32", tap_names=("fc2", None)),
}


def arch_of(model: nn.Module) -> Arch:
    """The registry entry of a causal LM or base model, by class name."""
    name = type(model).__name__
    for arch in ARCHITECTURES.values():
        if name in (arch.causal, arch.base):
            return arch
    raise KeyError(f"no reference for {name}")


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights large enough that activations are not all near zero (biases and norms too)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.3)
            elif "norm" in name or "ln" in name:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.1)
    return model.eval()


def build_model(name: str, vocab_size: int, causal: bool = True) -> nn.Module:
    """A tiny random model of architecture ``name`` (eager attention: built directly, not loaded)."""
    arch = ARCHITECTURES[name]
    cfg = arch.make_config(vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    return randomize(getattr(tf, arch.causal if causal else arch.base)(cfg))


def capture_mlp_inputs(model: nn.Module, arch: Arch, **forward) -> dict[int, torch.Tensor]:
    """Run ``model`` (a causal LM or its base model) once; each block's MLP input x, [batch, seq, hidden]."""
    x_in: dict[int, torch.Tensor] = {}
    handles = []
    base = model if type(model).__name__ == arch.base else model.base_model
    for i, block in enumerate(arch.blocks(base)):
        module = arch.mlp_input(block)
        if arch.input_from_output:
            handles.append(module.register_forward_hook(lambda m, a, out, i=i: x_in.__setitem__(i, out.detach())))
        else:
            handles.append(module.register_forward_pre_hook(lambda m, a, i=i: x_in.__setitem__(i, a[0].detach())))
    try:
        with torch.no_grad():
            model(**forward)
    finally:
        for h in handles:
            h.remove()
    return x_in


def reference_counts(loaded, pairs: pd.DataFrame, template: str, token_scope: str = "source",
                     max_length: int = 512) -> tuple[dict[str, np.ndarray], int]:
    """One prompt at a time, no padding: every additive column of the count table, recomputed.

    Returns (stats, n_tokens): stats maps every column of ``tables.ADDITIVE_COLUMNS`` (the counts, the
    sums of h and h^2, the per-sentence firing-rate sums and sums of squares, and all of them again
    over the sentences with an even ``id``: the ``_even`` half) to a [layers, neurons] float64 array;
    the per-sentence rates are computed sentence by sentence from the weights.
    """
    from neurospec.tables import ADDITIVE_COLUMNS

    base, tok = loaded.model, loaded.tokenizer
    arch = arch_of(base)
    blocks = arch.blocks(base)
    stats: dict[str, np.ndarray] | None = None
    n_tokens = 0
    for row in pairs.itertuples():
        if not str(row.src).strip():
            continue
        text, (start, end) = render(template, row.src, row.src_lang, row.tgt_lang)
        enc = tok(text, return_offsets_mapping=True)
        ids = enc["input_ids"][:max_length]
        offs = enc["offset_mapping"][:max_length]
        if token_scope == "source":
            keep = torch.tensor([s < end and e > start for s, e in offs])
        else:
            keep = torch.ones(len(ids), dtype=torch.bool)
        n_keep = int(keep.sum())
        n_tokens += n_keep
        x_in = capture_mlp_inputs(base, arch, input_ids=torch.tensor([ids]), use_cache=False)
        for i, block in enumerate(blocks):
            with torch.no_grad():
                h, gate = arch.neurons(block, x_in[i][0])
            if stats is None:
                stats = {c: np.zeros((len(blocks), h.shape[-1])) for c in ADDITIVE_COLUMNS}
            add_sentence(stats, i, h[keep], gate[keep], even=row.id % 2 == 0)
    return stats, n_tokens


def add_sentence(stats: dict[str, np.ndarray], layer: int, h: torch.Tensor, gate: torch.Tensor, even: bool) -> None:
    """Add one sentence's counted tokens (h, gate: [counted tokens, neurons]) at ``layer`` to every
    additive column of ``stats``, and to the ``_even`` half when ``even``."""
    h, n = h.double(), h.shape[0]
    counts = {"active": (h > 0).sum(0).numpy(), "nonzero": (h != 0).sum(0).numpy(),
              "gate_active": (gate > 0).sum(0).numpy()}
    for suffix in ("", "_even") if even else ("",):
        for c, v in counts.items():
            stats[c + suffix][layer] += v
            if n:  # a sentence without counted tokens has no firing rate
                stats[f"{c}_rate_sum{suffix}"][layer] += v / n
                stats[f"{c}_rate_sumsq{suffix}"][layer] += (v / n) ** 2
        stats["act_sum" + suffix][layer] += h.sum(0).numpy()
        stats["act_sumsq" + suffix][layer] += (h * h).sum(0).numpy()


def hooked_target_counts(loaded, pairs: pd.DataFrame, template: str,
                         max_length: int = 512) -> tuple[dict[str, np.ndarray], int, int]:
    """collect.token_scope "target" recomputed one sentence at a time, without padding, from hooks.

    Per sentence: the prompt's ids (special tokens added) then the reference translation's ids (none
    added), cut to ``max_length``; one forward pass of the base model with a pre-hook on every
    block's ``mlp.down_proj`` (its input is h, one value per neuron) and a hook on ``mlp.gate_proj``
    (the gate activation is ``mlp.act_fn`` of its output); only the reference's surviving positions
    are counted.  Pairs with an empty source or reference are skipped.  Returns (stats, n_tokens,
    n_truncated) with stats as ``reference_counts`` gives them.
    """
    from neurospec.tables import ADDITIVE_COLUMNS

    tok, mlps = loaded.tokenizer, [layer.mlp for layer in loaded.model.layers]
    stats = {c: np.zeros((len(mlps), mlps[0].down_proj.in_features)) for c in ADDITIVE_COLUMNS}
    n_tokens = n_truncated = 0
    for row in pairs.itertuples():
        if not (str(row.src).strip() and str(row.tgt).strip()):
            continue
        prompt = tok(render(template, row.src, row.src_lang, row.tgt_lang)[0])["input_ids"]
        ref = tok(row.tgt, add_special_tokens=False)["input_ids"]
        ids = (prompt + ref)[:max_length]
        n_truncated += len(prompt) + len(ref) > max_length
        positions = list(range(len(prompt), len(ids)))  # the reference's tokens that survived the cut
        captured: dict[tuple[str, int], torch.Tensor] = {}
        handles = []
        for i, mlp in enumerate(mlps):
            handles.append(mlp.down_proj.register_forward_pre_hook(
                lambda m, args, i=i: captured.__setitem__(("h", i), args[0][0].detach().clone())))
            handles.append(mlp.gate_proj.register_forward_hook(
                lambda m, args, out, i=i, mlp=mlp: captured.__setitem__(("g", i), mlp.act_fn(out[0]).detach())))
        try:
            with torch.no_grad():
                loaded.model(input_ids=torch.tensor([ids]), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        n_tokens += len(positions)
        for i in range(len(mlps)):
            add_sentence(stats, i, captured[("h", i)][positions], captured[("g", i)][positions], row.id % 2 == 0)
    return stats, n_tokens, n_truncated


def table_arrays(df: pd.DataFrame, n_layers: int) -> dict[str, np.ndarray]:
    """A count table's additive columns as [layers, neurons] arrays."""
    from neurospec.tables import ADDITIVE_COLUMNS

    return {c: df[c].to_numpy().reshape(n_layers, -1) for c in ADDITIVE_COLUMNS}


def assert_stats_equal(got: dict, ref: dict, rtol: float = 1e-9, columns=None) -> None:
    """Counts exactly; sums to ``rtol`` of each column's largest value."""
    from neurospec.tables import ADDITIVE_COLUMNS, COUNT_COLUMNS

    for c in columns or ADDITIVE_COLUMNS:
        if c.removesuffix("_even") in COUNT_COLUMNS:
            np.testing.assert_array_equal(got[c], ref[c], err_msg=c)
        else:
            np.testing.assert_allclose(got[c], ref[c], rtol=rtol, atol=rtol * max(np.abs(ref[c]).max(), 1.0),
                                       err_msg=c)
