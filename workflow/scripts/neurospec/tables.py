"""Parquet tables: schemas, key-value metadata, provenance and atomic writes.

Every output is written under a temporary name in the target's directory and renamed into place
when complete, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

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
COUNT_SCHEMA = pa.schema(
    [
        ("layer", pa.int32()),
        ("neuron", pa.int32()),
        ("active", pa.int64()),  # tokens with down_proj input > 0
        ("nonzero", pa.int64()),  # tokens with down_proj input != 0 (the seed's criterion)
        ("gate_active", pa.int64()),  # tokens with act_fn(gate_proj(x)) > 0 (LAPE's criterion)
        ("act_sum", pa.float64()),  # sum of the down_proj input over counted tokens
    ]
)
COUNT_COLUMNS = ("active", "nonzero", "gate_active")
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


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


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


def read_counts(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A count table (one row per layer x neuron) and its metadata (``n_tokens`` etc.)."""
    df = read_table(path, required=tuple(COUNT_SCHEMA.names))
    meta = read_metadata(path)
    if "n_tokens" not in meta:
        raise NeurospecError(f"count table {path} lacks the 'n_tokens' metadata key")
    return df, meta
