"""What a pair table records of its local source: a content hash of its files (``file_hash``: every
file's relative name and bytes, SHA-256) and the files of a directory that count (``directory_files``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable


def file_hash(paths: Iterable[Path]) -> str:
    """A content hash of files (their names relative to their common folder, and every byte)."""
    paths = sorted(Path(p) for p in paths)
    root = Path(os.path.commonpath([str(p.parent) for p in paths])) if paths else Path(".")
    h = hashlib.sha256()
    for p in paths:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return "sha256:" + h.hexdigest()[:16]


def directory_files(directory: Path) -> list[Path]:
    """The files of a local dataset directory (hidden ones, e.g. .git, left out)."""
    return sorted(p for p in Path(directory).rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))
