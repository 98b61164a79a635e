"""Synthetic count tables simulated sentence by sentence, with every column of the count schema.

A pair's sentences s = 0..S-1 (ids = s, so even ids form the even half) have L_s counted tokens
each; neuron u fires on each token of sentence s independently with probability p[s, u], so
p varying between sentences makes tokens of one sentence correlated.  The activation h of a token
is normal with mean mu[s, u] and standard deviation sigma.  Per sentence the simulation keeps the
count c[s, u] ~ Binomial(L_s, p[s, u]) and the sums of h and h**2; the table holds their totals,
the per-sentence firing-rate sums c / L_s and their squares, and the same over the even half:
exactly what the collector writes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from neurospec.tables import COUNT_COLUMNS, COUNT_SCHEMA, HALF, TOTAL_COLUMNS, write_counts


_SENTENCE_IDS = itertools.count()  # distinct synthetic sentence hashes across every table


def sentence_table(rng: np.random.Generator, p: np.ndarray, lengths: np.ndarray, n_layers: int,
                   mu: np.ndarray | float = 0.0, sigma: float = 0.5,
                   meta: dict | None = None, hashes: list | None = None) -> tuple[pd.DataFrame, dict]:
    """A count table and its metadata from per-sentence firing probabilities ``p`` [S, U].

    ``hashes`` [S]: the sentences' content hashes (metadata ``counted_hashes_even``/``_odd``, as
    collection records them); default: a new distinct one per sentence (no sentence shared).

    ``U`` = n_layers x neurons (units in layer-major order); ``lengths`` [S] counted tokens per
    sentence (>= 1); ``mu`` the activation's mean, scalar or broadcastable to [S, U].
    """
    p = np.asarray(p, dtype=np.float64)
    n_sent, n_units = p.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    L = lengths[:, None]
    c = rng.binomial(L, p)  # [S, U] tokens that fired
    mu = np.broadcast_to(np.asarray(mu, dtype=np.float64), p.shape)
    act = rng.normal(L * mu, np.sqrt(L) * sigma)  # sum of L normal activations per sentence
    # sum of squares of those L activations: its expectation L (sigma^2 + mu^2), plus the spread
    act_sq = act * act / L + sigma * sigma * rng.chisquare(np.maximum(L - 1, 1), size=p.shape)
    per_sentence = {"active": c, "nonzero": np.broadcast_to(L, p.shape), "gate_active": c,
                    "act_sum": act, "act_sumsq": act_sq}
    for col in COUNT_COLUMNS:
        r = per_sentence[col] / L
        per_sentence[f"{col}_rate_sum"] = r
        per_sentence[f"{col}_rate_sumsq"] = r * r
    even = np.arange(n_sent) % 2 == 0
    n_neurons = n_units // n_layers
    columns = {"layer": np.repeat(np.arange(n_layers), n_neurons).astype(np.int32),
               "neuron": np.tile(np.arange(n_neurons), n_layers).astype(np.int32)}
    for col in TOTAL_COLUMNS:
        values = per_sentence[col]
        for suffix, rows in (("", slice(None)), (f"_{HALF}", even)):
            total = values[rows].sum(axis=0)
            columns[col + suffix] = total.astype(np.int64) if col in COUNT_COLUMNS else total.astype(np.float64)
    if hashes is None:
        hashes = [f"{next(_SENTENCE_IDS):016x}" for _ in range(n_sent)]
    info = {"n_tokens": int(lengths.sum()), "n_sentences": n_sent, "n_tokens_even": int(lengths[even].sum()),
            "n_rate_sentences": n_sent, "n_rate_sentences_even": int(even.sum()),
            "counted_hashes_even": sorted({h for h, e in zip(hashes, even) if e}),
            "counted_hashes_odd": sorted({h for h, e in zip(hashes, even) if not e}), **(meta or {})}
    return pd.DataFrame(columns)[COUNT_SCHEMA.names], info


def pair_meta(pair: str) -> dict:
    src, tgt = pair.split("-")
    return {"pair": pair, "src_lang": src, "tgt_lang": tgt, "counted_lang": src}


def write_tables(tables: dict, directory) -> list:
    """Write {pair: (df, meta)} as count tables (schema version stamped); their paths."""
    paths = []
    for pair, (df, meta) in tables.items():
        path = directory / f"{pair}.parquet"
        write_counts(df, path, meta)
        paths.append(path)
    return paths


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """A count table with the columns a test does not care about filled with zeros (all of COUNT_SCHEMA)."""
    df = df.copy()
    for column in COUNT_SCHEMA.names:
        if column not in df:
            df[column] = 0 if str(COUNT_SCHEMA.field(column).type) == "int64" else 0.0
    return df[COUNT_SCHEMA.names]
