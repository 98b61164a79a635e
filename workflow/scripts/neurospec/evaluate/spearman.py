"""Spearman's rho with its uncertainty: the plain and the cluster bootstrap, the cluster permutation test,
the partial rho (tier and script), and Benjamini-Hochberg q-values.

``spearman``: rho of two samples with a bootstrap percentile interval over the units (scipy's
``stats.bootstrap``) and scipy's test p-value; ``cluster_spearman``: the same where the unit is a
cluster (a language with several directions), resampled and permuted whole; ``bh_q_values``: the
Benjamini-Hochberg adjusted p-values. See ``neurospec.evaluate.correlation`` for the whole method."""

from __future__ import annotations

import inspect
import warnings
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
from scipy import stats

from .. import languages as L
from ..errors import NeurospecError


def _row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with the same row of ``b``; NaN where one is constant."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / denom
    # a constant row has an exactly zero sum of squares; guard rounding as well
    return np.where(denom > 1e-12 * max(1.0, float(a.shape[1])), np.clip(r, -1.0, 1.0), np.nan)


# scipy >= 1.15 names the generator ``rng``; ``random_state``, the name before, will warn one day
_SEED_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


def _rank_rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rho along ``axis`` (vectorized for scipy.stats.bootstrap); NaN where one is constant."""
    x, y = np.moveaxis(x, axis, -1), np.moveaxis(y, axis, -1)
    n = x.shape[-1]
    rho = _row_pearson(stats.rankdata(x, axis=-1).reshape(-1, n), stats.rankdata(y, axis=-1).reshape(-1, n))
    return rho.reshape(x.shape[:-1])


def spearman(x: Sequence[float], y: Sequence[float], *, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict[str, float]:
    """Spearman's rho of the finite (x, y) pairs, its p-value and a percentile bootstrap interval.

    rho is the Pearson correlation of the average ranks (ties share their mean rank); the p-value is
    scipy's (t distribution).  The interval is ``scipy.stats.bootstrap``'s (paired, percentile
    method, ``n_boot`` resamples of the pairs with replacement, ``np.random.default_rng(seed)``).  A
    resample in which a variable is constant has no rho: such resamples are skipped, the interval
    is the percentile interval of the others (scipy again, from their bootstrap distribution), and
    ``n_boot`` in the result counts those used.  NaN everywhere when fewer than 3 pairs remain or a
    variable is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise NeurospecError(f"spearman: x has {x.shape} values, y {y.shape}")
    if not 0 < level < 1:
        raise NeurospecError(f"evaluate.correlation.level must lie in (0, 1), got {level!r}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    out = {"n": n, "rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "n_boot": 0}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    rho = float(_rank_rho(x, y))
    p_value = float(stats.spearmanr(x, y).pvalue)
    out.update(rho=rho, p_value=p_value)
    if n_boot > 0:
        options = dict(paired=True, vectorized=True, method="percentile", confidence_level=level)
        with warnings.catch_warnings():  # a skipped resample makes the first interval NaN: not news
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap((x, y), _rank_rho, n_resamples=int(n_boot),
                                  **{_SEED_KEYWORD: np.random.default_rng(seed)}, **options)
        boot = res.bootstrap_distribution
        defined = np.isfinite(boot)
        if not defined.all() and defined.any():
            res = stats.bootstrap((x, y), _rank_rho, n_resamples=0, **options,
                                  bootstrap_result=SimpleNamespace(bootstrap_distribution=boot[defined]))
        if defined.any():
            out.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high),
                       n_boot=int(defined.sum()))
    return out


def confounds(langs: Sequence[str]) -> np.ndarray:
    """The design a partial rho regresses out, one row per language code: intercept, tier (ordinal:
    high 0, medium 1, low 2, extremely-low 3) and script (1 Latin, 0 other).  When a language has no
    EC40 tier (any language outside EC40), the tier column is left out: the partial rho is then on
    script alone."""
    rows = []
    for code in langs:
        lang = L.language(code)
        rows.append((1.0, float(L.TIERS.index(lang.tier)) if lang.tier in L.TIERS else np.nan,
                     1.0 if lang.script == "Latin" else 0.0))
    z = np.asarray(rows, dtype=np.float64).reshape(len(rows), 3)
    return z[:, [0, 2]] if np.isnan(z[:, 1]).any() else z


def _rank_stats(x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(rho, partial rho) of every row of ``x`` (B x m) with the same row of ``y``; ``z`` (B x m x p)
    the confounds of each row (None: no partial).  Ranks are taken within each row."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rho = _row_pearson(rx, ry)
    partial = np.full(rho.shape, np.nan)
    if z is not None:
        m = x.shape[-1]
        hat = z @ np.linalg.pinv(z)  # B x m x m: projection onto the confounds' span
        ex = rx - (hat @ rx[..., None])[..., 0]
        ey = ry - (hat @ ry[..., None])[..., 0]
        partial = _row_pearson(ex, ey)
        # fewer than 3 residual degrees of freedom, or a rank vector the confounds explain: undefined
        dof = m - np.linalg.matrix_rank(z)
        cx = ((rx - rx.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        cy = ((ry - ry.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
        flat = ((ex * ex).sum(axis=-1) <= 1e-10 * cx) | ((ey * ey).sum(axis=-1) <= 1e-10 * cy)
        partial = np.where((dof >= 3) & ~flat, partial, np.nan)
    return rho, partial


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return np.nan, np.nan
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def _permutation_p(x: np.ndarray, y: np.ndarray, members: list[np.ndarray], rho: float, n_perm: int,
                   seed: int) -> float:
    """Two-sided p of rho when whole languages' y values are permuted between languages with the
    same set of directions (``members``: each language's indices, in direction order)."""
    rng = np.random.default_rng([seed, 1])
    strata: dict[tuple, list[np.ndarray]] = {}
    for idx, key in members:
        strata.setdefault(key, []).append(idx)
    perm = np.empty((n_perm, len(y)), dtype=np.int64)
    for blocks in strata.values():
        blocks = np.stack(blocks)  # k x s
        order = rng.permuted(np.broadcast_to(np.arange(len(blocks)), (n_perm, len(blocks))), axis=1)
        perm[:, blocks.ravel()] = blocks[order].reshape(n_perm, -1)
    rho_perm, _ = _rank_stats(np.broadcast_to(x, perm.shape), y[perm], None)
    extreme = np.abs(np.nan_to_num(rho_perm, nan=0.0)) >= abs(rho) - 1e-12
    return float((1 + extreme.sum()) / (1 + n_perm))


def cluster_spearman(x: Sequence[float], y: Sequence[float], clusters: Sequence[str], *,
                     kinds: Sequence[str] | None = None, n_boot: int = 1000, n_perm: int = 1000, seed: int = 0,
                     level: float = 0.95, partial: bool = True) -> dict[str, Any]:
    """Spearman's rho of the finite (x, y) pairs with the language (``clusters``) as the unit.

    ``kinds`` (e.g. each direction's kind) orders a language's directions for the permutation test
    and keeps languages with different sets of directions apart; ``clusters`` are language codes
    (their tier and script are the confounds of the partial rho; ``partial=False`` skips it).  See
    the module docstring for the bootstrap, the test and the partial rho.  NaN where fewer than 3
    languages remain or a variable is constant.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    clusters = np.asarray(clusters, dtype=object)
    kinds = np.asarray(kinds if kinds is not None else [""] * len(x), dtype=object)
    if not (x.shape == y.shape == clusters.shape == kinds.shape):
        raise NeurospecError(f"cluster_spearman: x has {x.shape} values, y {y.shape}, clusters {clusters.shape}")
    if not 0 < level < 1:
        raise NeurospecError(f"evaluate.correlation.level must lie in (0, 1), got {level!r}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, clusters, kinds = x[ok], y[ok], clusters[ok], kinds[ok]
    codes = sorted(set(clusters))
    members = []
    for c in codes:
        idx = np.flatnonzero(clusters == c)
        idx = idx[np.argsort(kinds[idx], kind="stable")]
        members.append((idx, tuple(kinds[idx])))
    k, sizes = len(codes), {len(idx) for idx, _ in members}
    out = {"unit": "language" if max(sizes, default=1) > 1 else "direction", "n": k, "n_directions": len(x),
           "rho": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "p_test": "",
           "partial_rho": np.nan, "partial_ci_low": np.nan, "partial_ci_high": np.nan, "n_boot": 0, "n_perm": 0}
    if k < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    z = confounds(clusters.tolist()) if partial else None
    rho, prho = _rank_stats(x[None], y[None], None if z is None else z[None])
    out.update(rho=float(rho[0]), partial_rho=float(prho[0]))
    if out["unit"] == "direction":
        out.update(p_value=float(stats.spearmanr(x, y).pvalue), p_test="spearman")
    elif n_perm > 0:
        out.update(p_value=_permutation_p(x, y, members, out["rho"], int(n_perm), seed),
                   p_test="cluster permutation", n_perm=int(n_perm))
    if n_boot > 0:
        draws = np.random.default_rng(seed).integers(0, k, size=(int(n_boot), k))
        boot, pboot = np.full(int(n_boot), np.nan), np.full(int(n_boot), np.nan)
        if len(sizes) == 1:  # every language has as many directions: one matrix of resamples
            blocks = np.stack([idx for idx, _ in members])
            for start in range(0, int(n_boot), 200):
                idx = blocks[draws[start:start + 200]].reshape(len(draws[start:start + 200]), -1)
                b, pb = _rank_stats(x[idx], y[idx], None if z is None else z[idx])
                boot[start:start + len(idx)], pboot[start:start + len(idx)] = b, pb
        else:
            for i, row in enumerate(draws):
                idx = np.concatenate([members[j][0] for j in row])
                b, pb = _rank_stats(x[idx][None], y[idx][None], None if z is None else z[idx][None])
                boot[i], pboot[i] = b[0], pb[0]
        lo, hi = _percentile(boot, level)
        plo, phi = _percentile(pboot, level) if np.isfinite(out["partial_rho"]) else (np.nan, np.nan)
        out.update(ci_low=lo, ci_high=hi, partial_ci_low=plo, partial_ci_high=phi,
                   n_boot=int(np.isfinite(boot).sum()))
    return out


def bh_q_values(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values of the finite ``p`` (the family); NaN where p is NaN."""
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(p[ok], method="bh")
    return q
