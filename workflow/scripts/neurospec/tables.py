"""Parquet tables: schemas, key-value metadata, provenance and atomic writes.

Every output is written under a temporary name in the target's directory and renamed into place
when complete, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path, write_parquet  # noqa: F401 (atomic_path: imported from here too)
from .errors import NeurospecError

# Column types of the tables the workflow writes.
PAIR_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("src_lang", pa.string()),
        ("tgt_lang", pa.string()),
        ("src", pa.string()),
        ("tgt", pa.string()),
    ]
)
COUNT_COLUMNS = ("active", "nonzero", "gate_active")  # the counting criteria
# Per-sentence statistics of each criterion: a sentence's firing rate is the share of its counted
# tokens on which the neuron fired; the table keeps the sum of the rates over sentences and the sum
# of their squares (sentences with no counted token have no rate and are left out).
RATE_COLUMNS = tuple(f"{c}_rate_{s}" for c in COUNT_COLUMNS for s in ("sum", "sumsq"))
# Every additive column over all sentences (the first six are the table's original columns' order).
TOTAL_COLUMNS = (*COUNT_COLUMNS, "act_sum", "act_sumsq", *RATE_COLUMNS)
# The same sums over the sentences with an even id (the "even" half); the odd half is total - even,
# so split halves, like the totals, sum over shards.
HALF = "even"
HALF_COLUMNS = tuple(f"{c}_{HALF}" for c in TOTAL_COLUMNS)
ADDITIVE_COLUMNS = (*TOTAL_COLUMNS, *HALF_COLUMNS)
_COUNT_TYPES = {c: pa.int64() for c in COUNT_COLUMNS} | {f"{c}_{HALF}": pa.int64() for c in COUNT_COLUMNS}
COUNT_SCHEMA = pa.schema(
    [("layer", pa.int32()), ("neuron", pa.int32())]
    + [(c, _COUNT_TYPES.get(c, pa.float64())) for c in ADDITIVE_COLUMNS]
)
# Version of the count table's layout, in its metadata (``count_schema_version``).  1 (no key): the
# six columns layer, neuron, active, nonzero, gate_active, act_sum; 2: per-sentence statistics,
# act_sumsq and the even half of every additive column.
# 3: the counted sentences' content hashes (each sentence one unit when pooled); 4: the residual
# stream's sums over the counted tokens per layer (metadata ``residual_sum``, steering's baseline).
COUNT_SCHEMA_VERSION = 4
COUNT_VERSION_KEY = "count_schema_version"
# Metadata that adds up over shards (and whose even-half values exist, where named ``*_even``).
SUMMED_KEYS = ("n_tokens", "n_sentences", "n_truncated", "n_skipped", "n_prompt_tokens", "n_tokens_even",
               "n_rate_sentences", "n_rate_sentences_even")
SCORE_SCHEMA = pa.schema(
    [
        ("group", pa.string()),
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("score", pa.float64()),
    ]
)

PROVENANCE_PACKAGES = ("neurospec", "torch", "transformers", "tokenizers", "huggingface_hub", "pandas", "pyarrow")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PROVENANCE_PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _encode(value: Any) -> bytes:
    return (value if isinstance(value, str) else json.dumps(value, sort_keys=True)).encode()


def write_table(df: pd.DataFrame, path: str | os.PathLike, schema: pa.Schema | None = None,
                metadata: dict[str, Any] | None = None) -> None:
    """Write ``df`` atomically as Parquet with string (or JSON-encoded) key-value ``metadata``."""
    table = pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.pop(b"pandas", None)
    for key, value in (metadata or {}).items():
        meta[key.encode()] = _encode(value)
    table = table.replace_schema_metadata(meta)
    write_parquet(table, path)


def read_table(path: str | os.PathLike, columns: list[str] | None = None,
               required: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a Parquet table; a missing, corrupt or truncated file is one clear error naming it."""
    path = Path(path)
    if not path.exists():
        raise NeurospecError(f"input table {path} does not exist")
    try:
        df = pq.read_table(path, columns=columns).to_pandas()
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise NeurospecError(f"cannot read Parquet file {path}: corrupt or truncated ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise NeurospecError(f"table {path} lacks column(s) {', '.join(missing)}")
    return df


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The key-value metadata of a Parquet file, JSON values decoded."""
    path = Path(path)
    try:
        raw = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as exc:
        raise NeurospecError(f"cannot read Parquet file {path}: corrupt or truncated ({exc})") from None
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key, text = k.decode(), v.decode()
        if key == "pandas":
            continue
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def check_count_version(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    """One clear line when a count table was written in another layout than this version reads."""
    version = meta.get(COUNT_VERSION_KEY, 1)
    if version == COUNT_SCHEMA_VERSION:
        return
    older = not isinstance(version, int) or version < COUNT_SCHEMA_VERSION
    raise NeurospecError(
        f"count table {path} has count schema version {version}, this neurospec reads version "
        f"{COUNT_SCHEMA_VERSION}{' (per-sentence statistics, split halves, counted-sentence hashes, residual sums)' if older else ''}: it was "
        f"written by {'an older' if older else 'a newer'} neurospec; recollect it: "
        f"`snakemake --forcerun collect_activations` with your usual arguments (or delete it and rerun)")


def read_counts(path: str | os.PathLike, columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A count table (one row per layer x neuron) and its metadata (``n_tokens`` etc.).

    ``columns``: the additive columns to read besides ``layer`` and ``neuron`` (default: all).
    A table of another count schema version is one clear error saying what to rerun.
    """
    if not Path(path).exists():
        raise NeurospecError(f"input table {path} does not exist")
    meta = read_metadata(path)
    check_count_version(path, meta)
    wanted = list(ADDITIVE_COLUMNS if columns is None else columns)
    unknown = [c for c in wanted if c not in ADDITIVE_COLUMNS]
    if unknown:
        raise NeurospecError(f"unknown count table column(s) {', '.join(unknown)}")
    names = ["layer", "neuron", *wanted]
    present = set(pq.read_schema(path).names)  # readable: read_metadata read it
    missing = [c for c in names if c not in present]
    if missing:
        raise NeurospecError(f"table {path} lacks column(s) {', '.join(missing)}")
    df = read_table(path, columns=names)
    if "n_tokens" not in meta:
        raise NeurospecError(f"count table {path} lacks the 'n_tokens' metadata key")
    return df, meta


def write_counts(df: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, Any]) -> None:
    """Write a count table (every column of COUNT_SCHEMA) atomically, stamped with its schema version."""
    missing = [c for c in COUNT_SCHEMA.names if c not in df.columns]
    if missing:
        raise NeurospecError(f"count table for {path} lacks column(s) {', '.join(missing)}")
    write_table(df[COUNT_SCHEMA.names], path, COUNT_SCHEMA,
                metadata={**metadata, COUNT_VERSION_KEY: COUNT_SCHEMA_VERSION})


def sum_count_tables(tables: Sequence[tuple[pd.DataFrame, dict[str, Any]]]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Counts and sums are additive: the pair's table is the sum of its shards' tables (every column)."""
    if not tables:
        raise NeurospecError("no shard tables to sum")
    first_df, first_meta = tables[0]
    total = first_df.copy()
    meta = dict(first_meta)
    for df, m in tables[1:]:
        if len(df) != len(first_df) or not (df["layer"].to_numpy() == first_df["layer"].to_numpy()).all() \
                or not (df["neuron"].to_numpy() == first_df["neuron"].to_numpy()).all():
            raise NeurospecError("shard tables disagree on their layer x neuron rows")
        for key in ("model", "model_revision", "prompt_template", "token_scope", "dtype", "pair", COUNT_VERSION_KEY):
            if m.get(key) != first_meta.get(key):
                raise NeurospecError(f"shard tables disagree on {key!r}: {first_meta.get(key)!r} vs {m.get(key)!r}")
        for col in ADDITIVE_COLUMNS:
            if col in total.columns:
                total[col] = total[col] + df[col]
        for key in SUMMED_KEYS:
            meta[key] = meta.get(key, 0) + m.get(key, 0)
        _sum_residual(meta, m)
        for key in ("counted_hashes_even", "counted_hashes_odd"):  # sets of sentence hashes: their union
            if key in meta and key in m:
                meta[key] = sorted(set(meta[key]) | set(m[key]))
            else:  # a shard without them: the pair's table has none (never a partial set)
                meta.pop(key, None)
    meta["shard"] = f"sum of {len(tables)}"
    return total, meta


def _sum_residual(meta: dict[str, Any], other: dict[str, Any]) -> None:
    """The shards' residual sums (metadata ``residual_sum``) add up like the counts; a shard without
    them leaves the pair's table without them (never a partial sum)."""
    from .steering.residual import RESIDUAL_KEY, decode_array, encode_array

    if RESIDUAL_KEY in meta and RESIDUAL_KEY in other:
        a, b = decode_array(meta[RESIDUAL_KEY]), decode_array(other[RESIDUAL_KEY])
        if a.shape != b.shape:
            raise NeurospecError(f"shard tables disagree on the residual sums' shape: {a.shape} vs {b.shape}")
        meta[RESIDUAL_KEY] = encode_array(a + b)
    else:
        meta.pop(RESIDUAL_KEY, None)


def merge_shard_files(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike) -> None:
    """Sum shard count tables into the pair's table (written atomically)."""
    df, meta = sum_count_tables([read_counts(p) for p in paths])
    write_counts(df, out_path, meta)
