"""What each steering condition changes in the model.

For a group X (a language, or a pair group whose counted language is X) with selection S
({layer: neurons}) and strength alpha, at the input of ``down_proj`` on every position:

- ``set``: h[..., S] = alpha * mean_X[S]          (Kojima et al. / LAPE: the language's typical value)
- ``add``: h[..., S] += alpha * (mean_X - mean_rest)[S]   (Gurgurov et al.'s additive arithmetic)

mean_X is the mean activation on X's counted tokens (``act_sum / n_tokens`` of X's count tables,
pooled), mean_rest the other languages' (``scoring.rest``: balanced or pooled), both
``interventions.mean_activations``.  Controls: ``random`` (sets matched per layer and firing-rate
decile, ``interventions.matched_like``, given the same mode and alpha: seed j of ``random_sets``),
``none`` (no intervention) and ``residual``: alpha * (residual mean_X - mean_rest) added to the
output of the configured blocks (``residual.residual_vector``).
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from neurospec import interventions
from neurospec.errors import NeurospecError
from neurospec.interventions import Selection, add_to_residual, intervene, matched_like

CONDITIONS = ("selected", "random", "none", "residual")
MODES = interventions.STEER_MODES  # set, add


def language_mean(tables: Mapping[str, tuple[pd.DataFrame, Mapping[str, Any]]], lang: str) -> np.ndarray:
    """[layers, neurons]: the mean activation over ``lang``'s counted tokens (its tables pooled)."""
    others = sorted({str(m.get("counted_lang")) for _, m in tables.values()} - {lang})
    if lang not in {str(m.get("counted_lang")) for _, m in tables.values()}:
        raise NeurospecError(f"no count table counted language {lang!r}: cannot take its mean activations")
    return interventions.mean_activations(tables, exclude=others, rest="pooled")


def neuron_values(mode: str, alpha: float, mean_x: np.ndarray, mean_rest: np.ndarray | None) -> np.ndarray:
    """[layers, neurons]: what ``mode`` writes (set) or adds (add) at each neuron, for strength alpha."""
    if mode == "set":
        return alpha * mean_x
    if mode == "add":
        if mean_rest is None:
            raise NeurospecError("steering mode 'add' needs the rest's mean activations")
        return alpha * (mean_x - mean_rest)
    raise NeurospecError(f"evaluate.steering.modes has {mode!r}: choose from {', '.join(MODES)}")


def control_rng(seed: int, group: str, j: int) -> np.random.Generator:
    """Random control j of ``group``: the same set for every mode and alpha (paired comparisons)."""
    return np.random.default_rng([int(seed), int(j), zlib.crc32(group.encode())])


def random_controls(selection: Selection, deciles: np.ndarray, group: str, n_sets: int,
                    seed: int) -> tuple[list[Selection], int]:
    """``n_sets`` matched random sets (per layer and firing-rate decile) and their total overlap."""
    out, overlap = [], 0
    for j in range(n_sets):
        ctrl, o = matched_like(selection, deciles, control_rng(seed, group, j))
        out.append(ctrl)
        overlap += o
    return out, overlap


@dataclass
class Condition:
    """One intervention of the result table: its labels and how to apply it."""

    group: str
    lang: str  # the language X steered towards
    mode: str  # set | add | none (no intervention)
    alpha: float
    condition: str  # selected | random | none | residual
    seed: int | None = None  # the random control's index (random only)
    selection: Selection = field(default_factory=dict)
    values: np.ndarray | None = None  # [layers, neurons] for set/add
    residual: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> [hidden] for residual

    @property
    def n_neurons(self) -> int:
        return interventions.selection_size(self.selection)

    @contextmanager
    def applied(self, model) -> Iterator[None]:
        """Within the block the model is steered by this condition; it is left as it was found."""
        if self.condition == "none":
            ctx = nullcontext()
        elif self.condition == "residual":
            ctx = add_to_residual(model, self.residual)
        else:
            ctx = intervene(model, self.selection, self.mode, self.values)
        with ctx:
            yield


def conditions_for(group: str, lang: str, selection: Selection, *, modes: Sequence[str], alphas: Sequence[float],
                   mean_x: np.ndarray, mean_rest: np.ndarray, controls: Sequence[Selection],
                   residual_vector: np.ndarray | None, residual_layers: Sequence[int],
                   residual_alphas: Sequence[float] | None = None) -> list[Condition]:
    """Every condition of one group: selected and random per mode x alpha, residual per residual alpha
    (``residual_alphas``, None: ``alphas``), and none."""
    out = [Condition(group, lang, "none", 0.0, "none")]
    for mode in modes:
        for alpha in alphas:
            values = neuron_values(mode, float(alpha), mean_x, mean_rest)
            out.append(Condition(group, lang, mode, float(alpha), "selected", None, selection, values))
            for j, ctrl in enumerate(controls):
                out.append(Condition(group, lang, mode, float(alpha), "random", j, ctrl, values))
    if residual_vector is not None:
        for alpha in (alphas if residual_alphas is None else residual_alphas):
            vecs = {int(layer): float(alpha) * residual_vector[int(layer)] for layer in residual_layers}
            out.append(Condition(group, lang, "add", float(alpha), "residual", residual=vecs))
    return out
