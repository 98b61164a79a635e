"""Interventions on MLP neurons at the input of the down projection: zeroing or patching.

A neuron's activation is the input of ``down_proj`` (and its equivalents, see ``architectures``).
``intervene`` registers a forward pre-hook on each hooked layer's ``down_input`` that overwrites the
chosen neurons of every token before the projection::

    h = act_fn(gate_proj(x)) * up_proj(x)        # [batch, seq, n_neurons]
    h[..., idx] = 0          (mode "zero")   or   h[..., idx] = values[idx]   (mode "mean": patching)
    out = down_proj(h)

Zeroing neuron i is the same as zeroing column i of ``down_proj``'s weight (the bias, if any, stays);
patching sets the neuron to a fixed value on every token, e.g. its mean activation over other
languages (``mean_activations``).  Nothing else of the forward pass changes.

This is a base module: the ablation and translation stages both use it.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .architectures import n_neurons as model_neurons
from .architectures import resolve_mlp_taps
from .errors import NeurospecError
from .tables import read_counts

MODES = ("zero", "mean")
# steering's interventions (neurospec.steering): "set" writes values into the neurons (as "mean"
# does), "add" adds values to them: h[..., idx] += values[idx]
STEER_MODES = ("set", "add")

# layer -> sorted neuron indices (int64)
Selection = dict[int, np.ndarray]


def selections_from_scores(scores: pd.DataFrame) -> dict[str, Selection]:
    """A score table (group, layer, neuron, ...) as {group: {layer: sorted neuron indices}}."""
    missing = [c for c in ("group", "layer", "neuron") if c not in scores.columns]
    if missing:
        raise NeurospecError(f"score table lacks column(s) {', '.join(missing)}")
    out: dict[str, Selection] = {}
    for (group, layer), rows in scores.groupby(["group", "layer"], sort=True, observed=True):
        out.setdefault(str(group), {})[int(layer)] = np.unique(rows["neuron"].to_numpy(np.int64))
    return out


def selection_size(selection: Mapping[int, np.ndarray]) -> int:
    return int(sum(len(v) for v in selection.values()))


def random_like(selection: Mapping[int, np.ndarray], n_neurons: int, rng: np.random.Generator) -> Selection:
    """A random selection with the same number of neurons in each layer (without replacement)."""
    out: Selection = {}
    for layer, idx in sorted(selection.items()):
        k = len(idx)
        if k > n_neurons:
            raise NeurospecError(f"layer {layer} selects {k} neurons, more than its {n_neurons}")
        out[int(layer)] = np.sort(rng.choice(n_neurons, size=k, replace=False).astype(np.int64))
    return out


def firing_rates(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], column: str) -> np.ndarray:
    """Each neuron's overall firing rate, [layers, neurons]: sum(``column``) / sum(n_tokens), pooled
    over every count table (``tables.read_counts``'s (table, metadata) per pair)."""
    total: np.ndarray | None = None
    n_tokens = 0
    for pair, (df, meta) in tables.items():
        if column not in df.columns:
            raise NeurospecError(f"count table of {pair!r} lacks column {column!r}")
        d = df.sort_values(["layer", "neuron"], kind="stable")
        c = d[column].to_numpy(np.float64).reshape(int(d["layer"].max()) + 1, -1)
        if total is None:
            total = c.copy()
        elif c.shape != total.shape:
            raise NeurospecError(f"count table of {pair!r} has {c.shape} layers x neurons, others {total.shape}")
        else:
            total += c
        n_tokens += int(meta.get("n_tokens") or 0)
    if total is None or n_tokens <= 0:
        raise NeurospecError("no count table with counted tokens to take firing rates from")
    return total / n_tokens


def rate_deciles(rates: np.ndarray) -> np.ndarray:
    """[layers, neurons] -> the decile (0..9) of each neuron's rate within its layer, by average rank:
    decile = floor(10 * (rank - 1) / neurons), so tied rates (e.g. neurons that never fire) share one."""
    from scipy.stats import rankdata

    rates = np.asarray(rates, dtype=np.float64)
    ranks = rankdata(rates, method="average", axis=1)
    return np.minimum((10 * (ranks - 1) / rates.shape[1]).astype(np.int64), 9)


def matched_like(selection: Mapping[int, np.ndarray], deciles: np.ndarray,
                 rng: np.random.Generator) -> tuple[Selection, int]:
    """A random selection matched per layer AND firing-rate decile: for each selected neuron, a neuron
    of the same layer and decile (``rate_deciles``), without replacement, outside the selection.

    Where a (layer, decile) holds fewer unselected neurons than the selection takes from it, the
    shortfall is drawn from the selected neurons of that cell (the decile histogram stays exact; such a
    control is conservative: it shares neurons with what it controls for).  Returns the control and
    the number of neurons drawn that way (0 unless a cell ran short).
    """
    out: Selection = {}
    overlap = 0
    n_layers, n_neurons = deciles.shape
    for layer, idx in sorted(selection.items()):
        idx = np.asarray(idx, dtype=np.int64)
        if not 0 <= int(layer) < n_layers:
            raise NeurospecError(f"selection names layer {layer}; the firing rates have layers 0..{n_layers - 1}")
        if len(idx) and (idx.min() < 0 or idx.max() >= n_neurons):
            raise NeurospecError(f"selection of layer {layer} names neurons outside 0..{n_neurons - 1}")
        d = deciles[int(layer)]
        chosen = np.zeros(n_neurons, dtype=bool)
        chosen[idx] = True
        picked = []
        for b in np.unique(d[idx]):
            k = int((d[idx] == b).sum())
            pool = np.flatnonzero((d == b) & ~chosen)
            if len(pool) >= k:
                picked.append(rng.choice(pool, size=k, replace=False))
            else:
                own = np.flatnonzero((d == b) & chosen)
                picked += [pool, rng.choice(own, size=k - len(pool), replace=False)]
                overlap += k - len(pool)
        out[int(layer)] = np.sort(np.concatenate(picked).astype(np.int64)) if picked else np.array([], np.int64)
    return out, overlap


def mean_activations(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]],
                     exclude: Sequence[str] = (), rest: str = "pooled") -> np.ndarray:
    """Mean down_proj input per layer and neuron, [layers, neurons], over count tables.

    ``tables`` maps a pair to (count table, metadata) as ``tables.read_counts`` gives them; tables
    whose ``counted_lang`` is in ``exclude`` are left out (e.g. the language whose neurons are
    patched: its neurons get their mean over the *other* languages).  ``rest="pooled"``:
    mean = sum(act_sum) / sum(n_tokens) over the tables; ``rest="balanced"`` (``scoring.rest``):
    the unweighted mean over the counted languages of each language's own mean (its tables'
    act_sum over their n_tokens), so every language weighs the same.
    """
    if rest not in ("balanced", "pooled"):
        raise NeurospecError(f"scoring.rest {rest!r}: choose one of balanced, pooled")
    if rest == "balanced":
        by_lang: dict[str, dict[str, tuple[pd.DataFrame, Mapping[str, Any]]]] = {}
        for pair, (df, meta) in tables.items():
            if meta.get("counted_lang") not in set(exclude):
                by_lang.setdefault(str(meta.get("counted_lang")), {})[pair] = (df, meta)
        if not by_lang:
            raise NeurospecError("no count table (outside the excluded languages "
                                 f"{', '.join(exclude) or 'none'}) to take mean activations from")
        means = [mean_activations(t) for t in by_lang.values()]
        if len({m.shape for m in means}) > 1:
            raise NeurospecError(f"count tables disagree on their layers x neurons: {sorted({m.shape for m in means})}")
        return np.mean(means, axis=0)
    total: np.ndarray | None = None
    n_tokens = 0
    shape = None
    for pair, (df, meta) in tables.items():
        if meta.get("counted_lang") in set(exclude):
            continue
        d = df.sort_values(["layer", "neuron"], kind="stable")
        n_layers = int(d["layer"].max()) + 1
        s = d["act_sum"].to_numpy(np.float64).reshape(n_layers, -1)
        if shape is None:
            shape, total = s.shape, s.copy()
        elif s.shape != shape:
            raise NeurospecError(f"count table of {pair!r} has {s.shape} layers x neurons, others {shape}")
        else:
            total += s
        n_tokens += int(meta.get("n_tokens") or 0)
    if total is None or n_tokens <= 0:
        raise NeurospecError("no count table (outside the excluded languages "
                             f"{', '.join(exclude) or 'none'}) to take mean activations from")
    return total / n_tokens


class MeanPatchValues:
    """Mode "mean"'s values from a stage's count tables: read once, and the mean over the tables
    outside each set of excluded languages computed once (``excluding``)."""

    def __init__(self, count_paths: Sequence[str], needed_by: str, rest: str = "pooled") -> None:
        self.rest = rest  # scoring.rest: how the other languages are averaged (mean_activations)
        if not count_paths:
            raise NeurospecError(f"{needed_by}: mode 'mean' needs the count tables (act_sum, n_tokens)")
        self.tables: dict[str, tuple[pd.DataFrame, Mapping[str, Any]]] = {}
        for path in count_paths:
            df, meta = read_counts(path, ["act_sum"])
            self.tables[str(meta.get("pair") or path)] = (df, meta)
        # pair -> the language whose tokens its table counted
        self.counted = {pair: str(meta.get("counted_lang")) for pair, (_, meta) in self.tables.items()}
        self._cache: dict[tuple[str, ...], np.ndarray] = {}

    def excluding(self, languages: Sequence[str]) -> np.ndarray:
        """[layers, neurons]: each neuron's mean activation over the tables of the other languages."""
        key = tuple(sorted(set(languages)))
        if key not in self._cache:
            self._cache[key] = mean_activations(self.tables, exclude=key, rest=self.rest)
        return self._cache[key]


def _check(selection: Mapping[int, np.ndarray], n_layers: int, n_neurons: int) -> None:
    for layer, idx in selection.items():
        if not 0 <= int(layer) < n_layers:
            raise NeurospecError(f"selection names layer {layer}; the model has layers 0..{n_layers - 1}")
        idx = np.asarray(idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= n_neurons):
            raise NeurospecError(f"selection of layer {layer} names neurons outside 0..{n_neurons - 1}")


@contextmanager
def intervene(model: torch.nn.Module, selection: Mapping[int, np.ndarray], mode: str = "zero",
              values: np.ndarray | None = None) -> Iterator[None]:
    """Within the block, the selected neurons of ``model`` are zeroed or patched on every token.

    ``selection``: {layer: neuron indices}; ``mode``: "zero", or "mean" with ``values`` of shape
    [layers, neurons] (the value each neuron is set to, e.g. ``mean_activations``).  Works on a causal
    LM or its base model; the hooks are removed on exit, also after an exception.
    Steering's modes (``STEER_MODES``) take ``values`` too: "set" is "mean"'s overwrite
    (h[..., idx] = values[idx]), "add" adds them (h[..., idx] += values[idx]); every position of every
    forward pass (prompt and each generated token) is changed.
    """
    if mode not in MODES + STEER_MODES:
        raise NeurospecError(f"ablation mode {mode!r}: choose one of {', '.join(MODES)}")
    taps = resolve_mlp_taps(model)
    n = model_neurons(model)
    _check(selection, len(taps), n)
    if mode != "zero":
        if values is None:
            raise NeurospecError(f"intervention mode {mode!r} needs the neurons' values")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (len(taps), n):
            raise NeurospecError(f"mean activations have shape {values.shape}, the model {(len(taps), n)}")
    handles = []
    for tap in taps:
        idx = np.asarray(selection.get(tap.layer, ()), dtype=np.int64)
        if not len(idx):
            continue
        param = next(tap.down_input.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        index = torch.as_tensor(idx, device=device)
        fill = None if mode == "zero" else torch.as_tensor(values[tap.layer, idx], device=device)

        def hook(module, args, index=index, fill=fill, add=mode == "add"):
            h = args[0]  # [batch, seq, n_neurons], an intermediate of the MLP: safe to overwrite
            if fill is None:
                h.index_fill_(-1, index, 0.0)
            elif add:
                h.index_add_(-1, index, fill.to(h.dtype).expand(*h.shape[:-1], len(index)))
            else:
                h.index_copy_(-1, index, fill.to(h.dtype).expand(*h.shape[:-1], len(index)))
            return (h, *args[1:])

        handles.append(tap.down_input.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_to_residual(model: torch.nn.Module, vectors: Mapping[int, np.ndarray]) -> Iterator[None]:
    """Within the block, ``vectors[l]`` ([hidden]) is added to the output hidden state of block ``l``
    (the residual stream after it) on every position: steering's residual baseline.  The hooks are
    removed on exit, also after an exception."""
    from .architectures import resolve_blocks

    blocks = resolve_blocks(model)
    handles = []
    for layer, vec in sorted(vectors.items()):
        if not 0 <= int(layer) < len(blocks):
            raise NeurospecError(f"residual vector for layer {layer}; the model has layers 0..{len(blocks) - 1}")
        block = blocks[int(layer)]
        param = next(block.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        v = torch.as_tensor(np.asarray(vec, dtype=np.float64), device=device)

        def hook(module, args, output, v=v):
            h = output[0] if isinstance(output, (tuple, list)) else output  # [batch, seq, hidden]
            h = h + v.to(h.dtype)
            if isinstance(output, tuple):
                return (h, *output[1:])
            if isinstance(output, list):
                return [h, *output[1:]]
            return h

        handles.append(block.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
