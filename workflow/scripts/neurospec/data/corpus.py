r"""Parallel corpora -> pair tables: reading, checking and assembling sentence pairs, and the two
sources of one's own corpus.

Every source ends in ``assemble``: pairs where either side is empty or whitespace-only are dropped
and counted by cause (empty source, empty target, both; JSON lines also count the blank lines they
skip), the rest optionally Moses-detokenized, and ``max_samples`` keeps the first N in source
order.  The integrity of the source is checked in full before that, whatever ``max_samples`` is:
every byte of a text file is decoded, two line-aligned files must have the same number of lines
(``scan_parallel``), rows matched by id must match one to one (``align``), and every JSON object must
have the keys read from it.

Text files (plain text, TSV, JSON lines; EC40's files) are read as bytes, in ``iter_lines``:

- A line ends at ``\n`` and nowhere else (as ``wc -l`` counts; never Python's universal newlines,
  which also split at ``\r``, ``\v``, ``\f``, ``\x1c``-``\x1e``, U+0085, U+2028 and U+2029 and so
  shift every later pair of a line-aligned corpus).  A ``\r\n`` ending is a line ending: its ``\r`` is
  stripped and the lines so ended are counted per file.
- **Decision: normalise and report.**  Any of those other separators (``LINE_SEPARATORS``) *inside* a
  line is replaced by a space; the lines where that happened are counted per file, with their first
  line numbers, in the pair table's metadata (``text_files``) and as a warning in the job log.  The
  line is one sentence either way (the other file of the pair counts lines the same way); an error
  would reject corpora whose only fault is a stray control character.  The one exception: a file
  that is a single line holding ``\r`` (classic Mac OS endings, no ``\n`` at all) is an error.
- A byte order mark at the start of a file is stripped and reported (``bom_stripped``; a sentence
  that starts with U+FEFF, e.g. a Parquet cell, is stripped and counted too).
- The encoding is ``dataset.files.encoding`` (UTF-8 by default; EC40: UTF-8).  A byte that does not
  decode is one error naming the file, the byte offset (0-based, as ``xxd`` and ``grep -b`` show it) and
  the line (1-based), and the fix.  Only encodings that write ``\n`` as the byte 0x0A are supported
  (not UTF-16/32: convert those to UTF-8).

The sources (``dataset.name``):

- ``hf``: a Hugging Face dataset read with ``datasets.load_dataset(dataset.hf.id,
  dataset.hf.config, split=dataset.split, revision=...)`` (a hub id, whose revision is resolved to
  a commit and recorded; or a local dataset directory, or a directory written by
  ``Dataset.save_to_disk``, recorded by a content hash).
- ``files``: local files, ``dataset.files.path``: TSV with a header row, JSON lines, Parquet, or plain
  text (one sentence per line, one file per language, aligned by line).

Where the two languages are in the rows (``dataset.rows.layout``):

- ``translation``: one row per pair, a column (``translation_column``) holding ``{code: text}``
  (OPUS-100, WMT);
- ``columns``: one row per pair, a column per language named by its code (a TSV ``en<TAB>de``);
- ``sentences``: one row per sentence per language (FLORES+): one config / file per language
  (``{lang}`` in ``hf.config`` / ``files.path``) or a language column (``lang_column``); the two
  languages' rows are matched by ``id_column`` (or by position when it is null);
- ``auto``: ``sentences`` when the config / path names ``{lang}`` or ``lang_column`` is set, else
  ``translation`` when the translation column exists, else ``columns``.

Languages are named in the data by their EC40 codes (``rows.codes: ec40``: de, en) or their FLORES
codes (``flores``: deu_Latn, eng_Latn); ``rows.code_map`` overrides single codes.  Placeholders in
``hf.config`` and ``files.path``: ``{split}``, ``{lang}`` (each side's code: one source per
language), ``{xx}`` (the non-English side's code), ``{en}`` (English's code), ``{sorted_pair}`` (the
two codes sorted and joined by ``-``, as OPUS-100 names its configs: ``de-en``, ``en-fr``).

The modules: ``readers`` (text files, TSV, JSON lines, Parquet; the integrity checks), ``layouts``
(where the rows hold the languages, codes, placeholders, alignment), ``hashing`` (a local source's
content hash); this one assembles the pairs (``assemble``) and holds the two sources.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ..errors import NeurospecError
from ..languages import parse_pair
from .layouts import fill, per_language, records, Rows
from .readers import (aligned_lines, BOM, cell_text, check_encoding, file_format, read_file, scan_parallel, Table,
                      text_report)
from .hashing import directory_files, file_hash


# -- reading, checking and assembling (every source) --------------------------------------------------


class Detokenizer:
    """Moses detokenization per language (sacremoses), cached."""

    def __init__(self) -> None:
        self._by_lang: dict = {}

    def __call__(self, text: str, lang: str) -> str:
        from sacremoses import MosesDetokenizer

        if lang not in self._by_lang:
            self._by_lang[lang] = MosesDetokenizer(lang=lang)
        return self._by_lang[lang].detokenize(text.split())


DROP_CAUSES = ("empty_src", "empty_tgt", "empty_both")


def assemble(records: Iterable[tuple[int, Any, Any]], src_lang: str, tgt_lang: str, *, detokenize: bool,
             max_samples: int | None, where: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The pair table from ``(id, src, tgt)`` records in source order, and its metadata on them:
    ``n_lines_read`` (records read), ``dropped`` (by cause), ``n_empty_dropped`` (their sum),
    ``bom_stripped_sentences``.

    Records with an empty or whitespace-only side are dropped and counted by cause (``DROP_CAUSES``:
    the source side, the target side, both); a BOM (U+FEFF) that starts a sentence (a Parquet cell, a
    line of concatenated files) is stripped and counted; ``max_samples`` keeps the first N others
    (reading stops there: check the source's integrity before).
    """
    detok = Detokenizer()
    rows, n_read = [], 0
    counts = dict.fromkeys(DROP_CAUSES, 0)
    n_bom = 0
    for i, s, t in records:
        n_read += 1
        s, t = cell_text(s), cell_text(t)
        if s.startswith(BOM) or t.startswith(BOM):
            n_bom += s.startswith(BOM) + t.startswith(BOM)
            s, t = s.removeprefix(BOM), t.removeprefix(BOM)
        empty_s, empty_t = not s.strip(), not t.strip()
        if empty_s or empty_t:
            counts["empty_both" if empty_s and empty_t else "empty_src" if empty_s else "empty_tgt"] += 1
            continue
        if detokenize:
            s, t = detok(s, src_lang), detok(t, tgt_lang)
        rows.append((int(i), src_lang, tgt_lang, s, t))
        if max_samples is not None and len(rows) >= max_samples:
            break
    if not rows:
        raise NeurospecError(f"{where} hold no non-empty sentence pair")
    df = pd.DataFrame(rows, columns=["id", "src_lang", "tgt_lang", "src", "tgt"])
    return df, {"n_lines_read": n_read, "n_empty_dropped": sum(counts.values()), "dropped": counts,
                "bom_stripped_sentences": n_bom}


# -- how rows hold the languages --------------------------------------------------------------------------


# -- local files ----------------------------------------------------------------------------------------------


def file_paths(files: Mapping[str, Any], pair: str, split: str, rows: Rows) -> dict[str, Path] | Path:
    """The file of a pair, or ``{lang: file}`` when ``files.path`` names ``{lang}``."""
    template = files.get("path")
    if not template:
        raise NeurospecError("key 'dataset.files.path' is required when dataset.name is 'files'")
    if per_language(template, "dataset.files.path"):
        return {lang: Path(fill(template, "dataset.files.path", pair, split, rows, lang))
                for lang in parse_pair(pair)}
    return Path(fill(template, "dataset.files.path", pair, split, rows))


def build_files_pair_table(pair: str, split: str, *, files: Mapping[str, Any], rows: Mapping[str, Any] | None = None,
                           max_samples: int | None = None, detokenize: bool = False) -> tuple[pd.DataFrame, dict]:
    """The pair table of one direction from local files (``dataset.name: files``) and its stats."""
    spec = Rows.from_config(rows)
    src_lang, tgt_lang = parse_pair(pair)
    paths = file_paths(files, pair, split, spec)
    fmt = files.get("format", "auto")
    encoding = check_encoding(files.get("encoding"))
    if isinstance(paths, dict):
        src_path, tgt_path = paths[src_lang], paths[tgt_lang]
        formats = {file_format(p, fmt) for p in (src_path, tgt_path)}
        for p in (src_path, tgt_path):
            if not p.is_file():
                raise NeurospecError(f"dataset file {p} is missing (dataset.files.path)")
        if formats == {"text"}:
            scans = list(scan_parallel(src_path, tgt_path, encoding))  # line counts checked in full first
            recs: Iterable = aligned_lines(src_path, tgt_path, encoding)
            tables: list[Table] = []
        else:
            by_lang = {lang: read_file(p, file_format(p, fmt), spec.text_column, encoding) for lang, p in paths.items()}
            recs = records(by_lang, src_lang, tgt_lang, spec)
            tables = list(by_lang.values())
        used = [src_path, tgt_path]
        where = f"dataset files {src_path} and {tgt_path}"
    else:
        table = read_file(paths, file_format(paths, fmt), spec.text_column, encoding)
        recs = records(table, src_lang, tgt_lang, spec)
        tables = [table]
        used = [paths]
        where = f"dataset file {paths}"
    if tables:
        scans = [scan for t in tables for scan in t.scans]
    df, read = assemble(recs, src_lang, tgt_lang, detokenize=detokenize, max_samples=max_samples, where=where)
    if any(t.unit == "objects" for t in tables):  # JSON lines: blank lines are skipped, counted as drops
        read["dropped"]["blank_line"] = sum(scan.blank_lines for scan in scans)
    stats = {
        "dataset": "files",
        "split": split,
        "source": " ".join(str(p) for p in used),
        "dataset_revision": file_hash(used),
        "detokenize": detokenize,
        **read,
        "max_samples": max_samples,
        **text_report(scans),
    }
    return df, stats


# -- Hugging Face datasets ------------------------------------------------------------------------------------


def _saved_to_disk(directory: Path) -> bool:
    return (directory / "state.json").is_file() or (directory / "dataset_dict.json").is_file()


def _gated(repo_id: str) -> NeurospecError:
    token = " (HF_TOKEN is not set)" if not os.environ.get("HF_TOKEN") else " (HF_TOKEN has no access)"
    return NeurospecError(f"dataset {repo_id!r} is gated on the hub: accept its terms on its hub page and set "
                          f"HF_TOKEN{token}")


def resolve_dataset_commit(repo_id: str, revision: str) -> str:
    """The commit a hub dataset's revision points to (recorded, and loaded exactly)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        return HfApi().dataset_info(repo_id, revision=revision, token=os.environ.get("HF_TOKEN")).sha
    except GatedRepoError:
        raise _gated(repo_id) from None
    except RevisionNotFoundError:
        raise NeurospecError(f"dataset.hf.revision {revision!r} does not exist in {repo_id}") from None
    except RepositoryNotFoundError:
        raise NeurospecError(f"dataset.hf.id {repo_id!r} is neither a local directory nor a dataset on the "
                             f"hub") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        text = " ".join(str(exc).split())
        raise NeurospecError(f"cannot reach dataset {repo_id!r} on the hub: {text[:300]}") from None


def _load_error(exc: Exception, repo: str, config: str | None, split: str, template: str | None) -> NeurospecError:
    import re

    text = " ".join(str(exc).split())
    m = re.search(r"BuilderConfig '([^']*)' not found\. Available: (\[.*\])", text)
    if m:
        return NeurospecError(f"dataset.hf.config {template or config!r}: dataset {repo!r} has no config "
                              f"{m.group(1)!r} (it has {m.group(2)[:300]})")
    if "is a gated dataset on the hub" in text.lower():
        return _gated(repo)
    if "doesn't exist on the hub" in text.lower():
        return NeurospecError(f"dataset.hf.id {repo!r} is neither a local directory nor a dataset on the hub")
    m = re.search(r'Unknown split "([^"]*)"\. Should be one of (\[.*\])', text)
    if m:
        return NeurospecError(f"dataset.split {split!r}: dataset {repo!r} (config {config!r}) has no such split; "
                              f"it has {m.group(2)}")
    return NeurospecError(f"cannot load dataset {repo!r} (config {config!r}, split {split!r}): {text[:300]}")


def load_hf(repo: str, config: str | None, split: str, revision: str, *, cache_dir=None,
            template: str | None = None) -> tuple[Table, str]:
    """One config and split of a dataset as a table, and its revision (commit or content hash).
    ``template``: the ``dataset.hf.config`` that gave ``config``, for messages."""
    import datasets

    datasets.disable_progress_bars()
    local = Path(repo).expanduser()
    name = f"{repo}" + (f" [{config}]" if config else "") + f" split {split!r}"
    try:
        if local.is_dir():
            revision_out = file_hash(directory_files(local))
            disk = local / config if config and _saved_to_disk(local / config) else local
            if _saved_to_disk(disk):
                ds = datasets.load_from_disk(str(disk))
                if isinstance(ds, datasets.DatasetDict):
                    if split not in ds:
                        raise NeurospecError(f"dataset.split {split!r}: {disk} has no such split; it has "
                                             f"{', '.join(ds)}")
                    ds = ds[split]
            else:
                ds = datasets.load_dataset(str(local), name=config, split=split, cache_dir=cache_dir)
        elif repo.startswith((".", "/", "~")):
            raise NeurospecError(f"dataset.hf.id {repo!r}: no such directory")
        else:
            is_commit = len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)
            revision_out = revision if is_commit else resolve_dataset_commit(repo, revision)
            name = f"{repo}@{revision_out[:12]}" + (f" [{config}]" if config else "") + f" split {split!r}"
            ds = datasets.load_dataset(repo, name=config, split=split, revision=revision_out, cache_dir=cache_dir,
                                       token=os.environ.get("HF_TOKEN"))
    except NeurospecError:
        raise
    except (ValueError, OSError, datasets.exceptions.DatasetsError) as exc:
        raise _load_error(exc, repo, config, split, template) from None
    return Table(name, ds.to_dict()), revision_out


def build_hf_pair_table(pair: str, split: str, *, hf: Mapping[str, Any], rows: Mapping[str, Any] | None = None,
                        max_samples: int | None = None, detokenize: bool = False,
                        cache_dir=None) -> tuple[pd.DataFrame, dict]:
    """The pair table of one direction from a Hugging Face dataset (``dataset.name: hf``) and its stats."""
    spec = Rows.from_config(rows)
    src_lang, tgt_lang = parse_pair(pair)
    repo = hf.get("id")
    if not repo:
        raise NeurospecError("key 'dataset.hf.id' is required when dataset.name is 'hf'")
    template, revision = hf.get("config"), hf.get("revision") or "main"
    if not Path(repo).expanduser().is_dir() and not repo.startswith((".", "/", "~")):
        revision = resolve_dataset_commit(repo, revision)  # once: both languages load the same commit
    if per_language(template, "dataset.hf.config"):
        loaded = {lang: load_hf(repo, fill(template, "dataset.hf.config", pair, split, spec, lang), split, revision,
                                cache_dir=cache_dir, template=template) for lang in (src_lang, tgt_lang)}
        tables: Mapping[str, Table] | Table = {lang: table for lang, (table, _) in loaded.items()}
        revisions = {rev for _, rev in loaded.values()}
        source = f"{tables[src_lang].name} and {tables[tgt_lang].name}"
        where = f"dataset sources {source}"
    else:
        config = fill(template, "dataset.hf.config", pair, split, spec) if template else None
        tables, rev = load_hf(repo, config, split, revision, cache_dir=cache_dir, template=template)
        revisions = {rev}
        source = tables.name
        where = f"dataset source {source}"
    recs = records(tables, src_lang, tgt_lang, spec)
    df, read = assemble(recs, src_lang, tgt_lang, detokenize=detokenize, max_samples=max_samples, where=where)
    stats = {
        "dataset": "hf",
        "dataset_id": repo,
        "dataset_config": template,
        "split": split,
        "source": source,
        "dataset_revision": " ".join(sorted(revisions)),
        "detokenize": detokenize,
        **read,
        "max_samples": max_samples,
    }
    return df, stats
