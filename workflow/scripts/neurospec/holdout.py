"""A held-out slice of the selection split, for a corpus without a second file (evaluate.holdout_fraction).

With ``evaluate.holdout_fraction: f`` each pair table of ``dataset.split`` is cut in two: the last
``ceil(f x n)`` rows (after ``dataset.max_samples``) are held out for the evaluation stage (the pair
tables under ``<split>.holdout/``), the rest are what neurons are selected on (``<split>.select/``).
A held-out row whose source or target text (by SHA-256 of the text) also occurs in a selection row,
on either side, is dropped from the held-out slice: no evaluated sentence was collected. The
metadata of both tables records the cut (``holdout``).

The cut is by position in each pair's own table: where a corpus is multi-way parallel and every
pair's table has the same rows in the same order (one file per language, aligned by line), the same
lines are held out in every pair.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pandas as pd

from .errors import NeurospecError

PARTS = ("select", "holdout")
SUFFIX = {"select": ".select", "holdout": ".holdout"}


def sentence_hash(text: str) -> str:
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def holdout_size(n: int, fraction: float) -> int:
    """How many of ``n`` rows are held out: ceil(fraction x n), at least one row left to select on."""
    if not 0 < fraction < 1:
        raise NeurospecError(f"evaluate.holdout_fraction {fraction!r}: must be between 0 and 1 (exclusive)")
    return math.ceil(fraction * n)


def holdout_slice(df: pd.DataFrame, fraction: float, part: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One part ("select" or "holdout") of a pair table (id, src_lang, tgt_lang, src, tgt) and what
    the cut did (rows of each part, held-out rows dropped as duplicates of selection rows)."""
    if part not in PARTS:
        raise NeurospecError(f"holdout part {part!r}: one of {', '.join(PARTS)}")
    n = len(df)
    n_hold = holdout_size(n, fraction)
    if n - n_hold < 1 or n_hold < 1:
        raise NeurospecError(f"evaluate.holdout_fraction {fraction}: a table of {n} sentence pairs leaves "
                             f"{n - n_hold} to select on and {n_hold} to hold out; both need at least one")
    select = df.iloc[: n - n_hold]
    tail = df.iloc[n - n_hold:]
    seen = {sentence_hash(t) for t in pd.concat([select["src"], select["tgt"]])}
    fresh = [sentence_hash(s) not in seen and sentence_hash(t) not in seen for s, t in zip(tail["src"], tail["tgt"])]
    held = tail[fresh]
    info = {"fraction": fraction, "part": part, "n_rows": n, "n_select": int(len(select)),
            "n_holdout": int(len(held)), "n_holdout_dropped_duplicates": int(len(tail) - len(held)),
            "rule": "the last ceil(fraction x n) rows held out, less any sharing a text with a selection row"}
    if part == "holdout" and held.empty:
        raise NeurospecError(f"evaluate.holdout_fraction {fraction}: every one of the {len(tail)} held-out "
                             "sentence pairs repeats a sentence of the selection rows; nothing is left to evaluate on")
    return (select if part == "select" else held).reset_index(drop=True), info
