"""The residual stream per language: its sums collected beside the neuron counts, and the residual
steering vector (difference of means) built from them.

Collection (``ResidualSums``) adds a forward hook on every transformer block: per batch it sums the
block's output hidden state (the residual stream after the block) over the counted tokens,
on the device, in float64::

    hidden = block(x)                      # [batch, seq, hidden]
    sums[layer] += counted[b, s] @ hidden  # [hidden]: one small matrix-vector product per layer

so a count table carries one [layers, hidden] float64 sum, over exactly its ``n_tokens`` counted
tokens.  It is stored in the table's metadata (key ``residual_sum``: shape, dtype and the raw
float64 bytes in base64), written with the table (atomically, one file), summed over shards.

The residual vector of language X at layer l: mean over X's tokens minus the mean over the rest
(``scoring.rest``: ``balanced`` = the unweighted mean of the other languages' means, ``pooled`` =
the other tables' sums over their tokens).
"""

from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import NeurospecError

RESIDUAL_KEY = "residual_sum"


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """A float64 array as JSON-able metadata: shape, dtype and its bytes in base64 (exact)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "dtype": "float64", "base64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_array(value: Mapping[str, Any], what: str = "residual_sum") -> np.ndarray:
    try:
        raw = base64.b64decode(value["base64"])
        return np.frombuffer(raw, dtype=np.float64).reshape(value["shape"]).copy()
    except (KeyError, TypeError, ValueError) as exc:
        raise NeurospecError(f"{what} metadata is malformed ({exc})") from None


def block_output(output: Any) -> torch.Tensor:
    """A block's hidden state out of its forward's return value (a tensor, or a tuple led by it)."""
    return output[0] if isinstance(output, (tuple, list)) else output


class ResidualSums:
    """Forward hooks on every block that sum its output hidden state over a batch's counted tokens.

    ``set_batch(counted)`` before each forward pass ([batch, seq] bool); ``commit()`` after a
    successful one adds the batch's sums to ``totals`` ([layers, hidden] float64, on the device).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from ..architectures import resolve_blocks

        self.blocks = resolve_blocks(model)
        self.pending: torch.Tensor | None = None
        self.totals: torch.Tensor | None = None
        self._handles: list = []
        self._counted: torch.Tensor | None = None

    def set_batch(self, counted: torch.Tensor) -> None:
        self._counted = counted[..., None]  # [batch, seq, 1] bool
        if self.pending is not None:
            self.pending.zero_()

    def _hook(self, layer: int):
        def hook(module, args, output):
            h = block_output(output)  # [batch, seq, hidden]
            if self.pending is None:
                self.pending = torch.zeros((len(self.blocks), h.shape[-1]), dtype=torch.float64, device=h.device)
                self.totals = torch.zeros_like(self.pending)
            # masked positions may hold anything (padding): select, never multiply, so inf/NaN stays out
            x = torch.where(self._counted, h, 0.0)  # [batch, seq, hidden]
            self.pending[layer] = x.sum(dim=(0, 1), dtype=torch.float64)

        return hook

    def __enter__(self) -> "ResidualSums":
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def commit(self) -> None:
        if self.totals is not None:
            self.totals += self.pending

    def result(self, n_layers: int | None = None, hidden: int | None = None) -> np.ndarray:
        if self.totals is None:
            return np.zeros((len(self.blocks) if n_layers is None else n_layers, hidden or 0), dtype=np.float64)
        return self.totals.cpu().numpy()


def residual_means(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[np.ndarray, int]]:
    """Per counted language: (sum of its tables' residual sums [layers, hidden], their n_tokens).

    ``tables``: pair -> count-table metadata (``counted_lang``, ``n_tokens``, ``residual_sum``)."""
    out: dict[str, tuple[np.ndarray, int]] = {}
    for pair, meta in tables.items():
        if RESIDUAL_KEY not in meta:
            raise NeurospecError(f"count table of {pair!r} has no residual sums (metadata {RESIDUAL_KEY!r}): "
                                 "recollect it with this neurospec")
        s = decode_array(meta[RESIDUAL_KEY], f"count table of {pair!r}: {RESIDUAL_KEY}")
        lang = str(meta.get("counted_lang"))
        n = int(meta.get("n_tokens") or 0)
        if lang in out:
            prev, m = out[lang]
            if prev.shape != s.shape:
                raise NeurospecError(f"count table of {pair!r} has residual sums of shape {s.shape}, others {prev.shape}")
            out[lang] = (prev + s, m + n)
        else:
            out[lang] = (s, n)
    return out


def residual_vector(per_lang: Mapping[str, tuple[np.ndarray, int]], lang: str, rest: str = "balanced") -> np.ndarray:
    """[layers, hidden]: mean residual stream on ``lang``'s tokens minus the rest's (``scoring.rest``)."""
    if rest not in ("balanced", "pooled"):
        raise NeurospecError(f"scoring.rest {rest!r}: choose one of balanced, pooled")
    if lang not in per_lang or per_lang[lang][1] <= 0:
        raise NeurospecError(f"no counted token of language {lang!r} to take its residual mean from")
    others = [k for k in per_lang if k != lang and per_lang[k][1] > 0]
    if not others:
        raise NeurospecError(f"no other language than {lang!r} to take the rest's residual mean from")
    s, n = per_lang[lang]
    mean = s / n
    if rest == "balanced":
        rest_mean = np.mean([per_lang[k][0] / per_lang[k][1] for k in others], axis=0)
    else:
        rest_mean = sum(per_lang[k][0] for k in others) / sum(per_lang[k][1] for k in others)
    return mean - rest_mean


def parse_layers(layers: str | Sequence[int], n_layers: int) -> list[int]:
    """``evaluate.steering.residual_layers``: "all" or a list of layer indices (negative from the end)."""
    if layers == "all":
        return list(range(n_layers))
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise NeurospecError(f"evaluate.steering.residual_layers {layers!r}: give \"all\" or a list of layer indices")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
            raise NeurospecError(f"evaluate.steering.residual_layers names layer {layer!r}; "
                                 f"the model has layers 0..{n_layers - 1}")
        out.append(layer % n_layers)
    return sorted(set(out))
