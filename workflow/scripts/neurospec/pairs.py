"""Sources -> the pair table of one direction (``id, src_lang, tgt_lang, src, tgt``)."""

from __future__ import annotations

from typing import Any, Mapping

from . import demo, ec40
from .errors import NeurospecError
from .tables import PAIR_SCHEMA, write_table

DATASETS = ("demo", "ec40")


def build_pair_table(pair: str, dataset: Mapping[str, Any]):
    """Dispatch on ``dataset['name']``; returns (table, metadata)."""
    name = dataset.get("name")
    if name == "demo":
        return demo.build_pair_table(pair, dataset["split"], max_samples=dataset.get("max_samples"))
    if name == "ec40":
        return ec40.build_pair_table(
            pair, dataset["split"], local_dir=dataset.get("local_dir"),
            repo_id=dataset.get("repo_id", ec40.REPO_ID), revision=dataset.get("revision", ec40.REVISION),
            max_samples=dataset.get("max_samples"), detokenize=dataset.get("detokenize", True),
        )
    raise NeurospecError(f"dataset.name {name!r}: choose one of {', '.join(DATASETS)}")


def write_pair_table(pair: str, dataset: Mapping[str, Any], out_path: str) -> None:
    import logging

    df, stats = build_pair_table(pair, dataset)
    logging.getLogger("neurospec").info(
        "%s: %d sentence pairs (%d lines read, %d empty dropped) from %s",
        pair, len(df), stats["n_lines_read"], stats["n_empty_dropped"], stats["source"])
    write_table(df, out_path, PAIR_SCHEMA, metadata={"pair": pair, **stats})
