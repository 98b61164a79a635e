"""Which modules to hook, per architecture, to read the MLP neuron activations.

A neuron's activation is the input of the MLP's down projection (``down_proj`` and its
equivalents), shape ``[batch, seq, n_neurons]``. For gated MLPs
(``down_proj(act_fn(gate_proj(x)) * up_proj(x))``) the gate activation ``act_fn(gate_proj(x))``
is read too, as the output of ``mlp.act_fn``. The collector registers a forward *pre*-hook on
``MLPTap.down_input`` (``args[0]``) and a forward hook on ``MLPTap.gate`` (its output), so
reading adds no computation to the forward pass.

Verified against the modeling code of transformers 5.23 (see ``SUPPORTED``). The model must be in
eval mode: XGLM applies ``activation_dropout`` between the activation and ``fc2``, a no-op in eval.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import NeurospecError


@dataclass(frozen=True)
class MLPTap:
    layer: int
    # The module whose INPUT (args[0] of a forward pre-hook) is the neuron activation vector,
    # shape [batch, seq, n_neurons].
    down_input: nn.Module
    # A module whose OUTPUT is act_fn(gate_proj(x)), shape [batch, seq, n_neurons]; None for plain
    # (non-gated) MLPs, where gate_active == active.
    gate: nn.Module | None


# Architecture -> what is hooked (for the README). Every entry was checked against the modeling
# code of transformers 5.23 and is exercised by tests/unit/model/test_architectures.py (tiny random models
# saved, loaded with load_model and collected; tests/reference.py recomputes them from the weights).
_GATED = "`mlp.down_proj` input; gate: `mlp.act_fn` output ({act})"
SUPPORTED: dict[str, str] = {
    "Cohere (Aya)": _GATED.format(act="SiLU"),
    "Llama": _GATED.format(act="`hidden_act`, SiLU by default"),
    "Qwen2": _GATED.format(act="`hidden_act`, SiLU by default"),
    "Gemma": _GATED.format(act="`hidden_act`, GELU-tanh"),
    "Gemma 2": _GATED.format(act="`hidden_activation`, GELU-tanh"),
    "Gemma 3": _GATED.format(act="`hidden_activation`, GELU-tanh; text models: `Gemma3ForCausalLM`"),
    "Mistral": _GATED.format(act="`hidden_act`, SiLU by default"),
    "other gated MLPs": "any model whose blocks have `mlp.gate_proj`, `mlp.up_proj`, `mlp.down_proj` "
                        "and whose MLP forward applies `self.act_fn` once, to `gate_proj`'s output "
                        "(checked on the source): as above",
    "GPT-2": "`mlp.c_proj` input (= `mlp.act` output); no separate gate",
    "BLOOM": "`mlp.dense_4h_to_h` input (= GELU output); no separate gate "
             "(not with `pretraining_tp > 1` and `slow_but_exact`)",
    "XGLM": "`fc2` input of each decoder layer (= activation output); no separate gate",
}

# Where the list of blocks lives, tried in order before a generic search over all ModuleLists.
_LAYER_PATHS = (
    "model.layers", "layers", "transformer.h", "h", "model.decoder.layers", "decoder.layers",
    "model.language_model.layers", "language_model.layers", "transformer.layers",
)


def _supported_line() -> str:
    return ", ".join(k for k in SUPPORTED if not k.startswith("other")) + \
        " and other models whose blocks have mlp.gate_proj/up_proj/down_proj"


class ActFn(nn.Module):
    """Module wrapper around an activation: installed as ``mlp.act_fn`` where the model's act_fn is
    a plain function, or a module shared between layers (so that a forward hook fires once per
    layer). Computes exactly what the wrapped callable computes."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _get(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _forward_source(mlp: nn.Module) -> str:
    try:
        src = inspect.getsource(type(mlp).forward)
    except (OSError, TypeError):
        return ""
    src = re.sub(r"#.*", "", src)
    return re.sub(r"\s+", "", src)


def _is_module(m: object) -> bool:
    return isinstance(m, nn.Module)


# A recognizer takes a block and returns (down_input, gate, kind) or None.
def _gated(block: nn.Module):
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(_is_module(getattr(mlp, n, None)) for n in ("gate_proj", "up_proj", "down_proj")):
        return None
    return mlp.down_proj, mlp, "gated"


def _gpt2(block: nn.Module):
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(_is_module(getattr(mlp, n, None)) for n in ("c_fc", "c_proj")):
        return None
    return mlp.c_proj, None, "plain"


def _bloom(block: nn.Module):
    mlp = getattr(block, "mlp", None)
    if mlp is None or not all(_is_module(getattr(mlp, n, None)) for n in ("dense_h_to_4h", "dense_4h_to_h")):
        return None
    if getattr(mlp, "pretraining_tp", 1) > 1 and getattr(mlp, "slow_but_exact", False):
        # BloomMLP then multiplies slices with F.linear and never calls dense_4h_to_h.
        raise NeurospecError(
            f"{type(mlp).__name__} with pretraining_tp > 1 and slow_but_exact=True does not call "
            f"dense_4h_to_h; load the model with slow_but_exact=False"
        )
    return mlp.dense_4h_to_h, None, "plain"


def _xglm(block: nn.Module):
    if getattr(block, "mlp", None) is not None:
        return None
    if not all(_is_module(getattr(block, n, None)) for n in ("fc1", "fc2")):
        return None
    return block.fc2, None, "plain"


_RECOGNIZERS = (_gated, _gpt2, _bloom, _xglm)


def _recognize(block: nn.Module):
    for rec in _RECOGNIZERS:
        hit = rec(block)
        if hit is not None:
            return hit
    return None


def _find_blocks(model: nn.Module) -> list[nn.Module] | None:
    for path in _LAYER_PATHS:
        layers = _get(model, path)
        if isinstance(layers, nn.ModuleList) and len(layers) and all(_recognize(b) for b in layers):
            return list(layers)
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) and all(_recognize(b) for b in mod):
            return list(mod)
    return None


def resolve_blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (decoder layers) of a ``*ForCausalLM`` or a base model, in order; each
    block's output is the residual stream after it (steering's residual baseline hooks them)."""
    if not isinstance(model, nn.Module):
        raise NeurospecError(f"{type(model).__name__} is not a torch model")
    blocks = _find_blocks(model)
    if blocks is None:
        raise NeurospecError(f"model class {type(model).__name__} is not supported: no MLP blocks found "
                             f"(supported: {_supported_line()})")
    return blocks


def _gate_module(layer: int, mlp: nn.Module, uses: dict[int, int]) -> nn.Module:
    """The module whose output is act_fn(gate_proj(x)); installs an ``ActFn`` wrapper if needed."""
    src = _forward_source(mlp)
    if src.count("self.act_fn(") != 1 or "self.act_fn(self.gate_proj(" not in src \
            or src.count("self.down_proj(") != 1:
        raise NeurospecError(
            f"{type(mlp).__name__} (layer {layer}) has gate_proj/up_proj/down_proj but its forward does "
            f"not apply self.act_fn exactly once to gate_proj's output; supported: {_supported_line()}"
        )
    act = mlp.act_fn
    if not callable(act):
        raise NeurospecError(f"{type(mlp).__name__} (layer {layer}): act_fn is not callable")
    if not isinstance(act, nn.Module) or uses.get(id(act), 0) > 1:
        # A function (no hooks possible) or a module that also runs elsewhere (a hook on it would
        # fire more than once per layer): give this layer its own wrapper module.
        act = ActFn(act)
        mlp.act_fn = act  # registered as a submodule; the forward now calls the wrapper
    return act


def resolve_mlp_taps(model: nn.Module) -> list[MLPTap]:
    """The modules to hook, one ``MLPTap`` per block, for a ``*ForCausalLM`` or a base model.

    May install an ``ActFn`` wrapper as ``mlp.act_fn`` (see ``ActFn``); calling it twice is safe.
    """
    if not isinstance(model, nn.Module):
        raise NeurospecError(f"{type(model).__name__} is not a torch model")
    blocks = _find_blocks(model)
    if blocks is None:
        raise NeurospecError(
            f"model class {type(model).__name__} is not supported: no MLP blocks found "
            f"(supported: {_supported_line()})"
        )
    uses: dict[int, int] = {}  # how often each module occurs in the module tree
    for _, mod in model.named_modules(remove_duplicate=False):
        uses[id(mod)] = uses.get(id(mod), 0) + 1
    taps: list[MLPTap] = []
    for i, block in enumerate(blocks):
        down, mlp, kind = _recognize(block)
        gate = _gate_module(i, mlp, uses) if kind == "gated" else None
        taps.append(MLPTap(layer=i, down_input=down, gate=gate))
    return taps


def _in_features(module: nn.Module) -> int:
    for attr in ("in_features", "nx"):  # nn.Linear (and subclasses), GPT-2's Conv1D
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[1])
    raise NeurospecError(f"cannot tell the input size of {type(module).__name__}")


def n_neurons(model: nn.Module) -> int:
    """Neurons per MLP (the size of the down projection's input); equal in every block."""
    sizes = {_in_features(t.down_input) for t in resolve_mlp_taps(model)}
    if len(sizes) != 1:
        raise NeurospecError(
            f"model class {type(model).__name__} has MLPs of different sizes ({sorted(sizes)}); "
            f"neurospec needs the same number of neurons in every layer"
        )
    return sizes.pop()
