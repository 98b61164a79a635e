"""The ablation's controls and uncertainty: matched random neuron sets, the sentence bootstrap, p-values.

Per group, random control sets matched to the selection on layer and firing-rate decile
(``matched_controls``; on the layer only without count tables, ``random_controls``), each from its own
seed; the sentence bootstrap of the selected set's delta NLL (``bootstrap_delta_ci``, ``N_BOOT``
resamples, percentile interval at ``LEVEL``, seeded per group and language by ``ci_rng``); the
empirical p-value against the controls (``p_controls``); and the matched budgets' top-N selections
(``budget_selections``). See ``neurospec.evaluate.ablation`` for the whole method."""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import NeurospecError
from ..interventions import matched_like, random_like, Selection, selections_from_scores


# the sentence bootstrap of the selected sets' delta NLL: resamples and two-sided level
N_BOOT = 1000


LEVEL = 0.95


def language_means(sums: np.ndarray, counts: np.ndarray, langs: np.ndarray, order: Sequence[str]) -> np.ndarray:
    """Mean NLL per token of each language in ``order``: its sentences' summed NLL over their tokens."""
    out = np.empty(len(order))
    for k, lang in enumerate(order):
        mask = langs == lang
        out[k] = sums[mask].sum() / max(int(counts[mask].sum()), 1)
    return out


def ci_rng(seed: int, group: str, lang: str) -> np.random.Generator:
    """The bootstrap's generator of one (group, evaluated language): the same on every rerun."""
    return np.random.default_rng([int(seed), zlib.crc32(group.encode()), zlib.crc32(lang.encode())])


def bootstrap_delta_ci(base_sums: np.ndarray, sums: np.ndarray, counts: np.ndarray, rng: np.random.Generator,
                       n_boot: int = N_BOOT, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of delta NLL = (sum(sums) - sum(base_sums)) / sum(counts) over sentences
    resampled with replacement (``n_boot`` resamples of all sentences at once, one
    ``rng.integers(0, n, size=(n_boot, n))`` draw): per sentence its summed NLL with the intervention
    (``sums``) and without (``base_sums``) and its predicted tokens (``counts``)."""
    counts = np.asarray(counts, dtype=np.float64)
    n = len(counts)
    if n == 0 or n_boot < 1:
        return float("nan"), float("nan")
    idx = rng.integers(0, n, size=(n_boot, n))
    diff = np.asarray(sums, dtype=np.float64) - np.asarray(base_sums, dtype=np.float64)
    deltas = diff[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1.0)
    alpha = (1.0 - level) / 2
    return float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1.0 - alpha))


def p_controls(delta: float, control_deltas: Sequence[float]) -> float:
    """Empirical p-value of a selected set's delta NLL against its controls':
    (1 + #{controls with delta >= the selected one's}) / (1 + #controls)."""
    controls = np.asarray(control_deltas, dtype=np.float64)
    return float((1 + int((controls >= delta).sum())) / (1 + len(controls)))


def random_controls(selection: Selection, n_neurons: int, group: str, seeds: Sequence[int],
                    salt: Sequence[int] = ()) -> list[Selection]:
    """One random selection per seed with ``selection``'s neurons per layer; the draw depends on the
    seed and the group only (and ``salt``: a budget's N), so a rerun (or another method's run) gives
    the same sets."""
    return [random_like(selection, n_neurons,
                        np.random.default_rng([int(s), zlib.crc32(group.encode()), *map(int, salt)]))
            for s in seeds]


def matched_controls(selection: Selection, deciles: np.ndarray, group: str,
                     seeds: Sequence[int], salt: Sequence[int] = ()) -> list[tuple[Selection, int]]:
    """One control per seed matched on layer and firing-rate decile (``interventions.matched_like``),
    with the number of its neurons that had to come from the selection; seeded like ``random_controls``."""
    return [matched_like(selection, deciles,
                         np.random.default_rng([int(s), zlib.crc32(group.encode()), *map(int, salt)]))
            for s in seeds]


# methods whose selection keeps the largest |score| (diffmeans' score is a signed difference)
ABS_SCORE_METHODS = ("diffmeans",)


def budget_selections(scores: pd.DataFrame, budgets: Sequence[int],
                      method: str) -> tuple[dict[str, dict[int, Selection]], dict[str, list[int]]]:
    """Per group and budget N, the group's top N neurons of the score table, ranked over all layers by
    ``score`` (by |score| for ``ABS_SCORE_METHODS``), ties by layer, then neuron.

    Returns {group: {N: selection}} and {group: [the budgets larger than its scored neurons]} (the
    score table holds the selected neurons only, so a budget beyond them is left out, not padded).
    """
    if any(isinstance(n, bool) or int(n) < 1 for n in budgets):
        raise NeurospecError(f"evaluate.ablation.budgets must be positive integers, not {list(budgets)}")
    out: dict[str, dict[int, Selection]] = {}
    skipped: dict[str, list[int]] = {}
    for group, d in scores.groupby("group", sort=True, observed=True):
        key = d["score"].to_numpy(np.float64)
        key = np.abs(key) if method in ABS_SCORE_METHODS else key
        order = np.lexsort((d["neuron"].to_numpy(), d["layer"].to_numpy(), -key))
        for n in sorted({int(b) for b in budgets}):
            if n > len(d):
                skipped.setdefault(str(group), []).append(n)
                continue
            top = d.iloc[order[:n]]
            out.setdefault(str(group), {})[n] = selections_from_scores(top).get(str(group), {})
    return out, skipped
