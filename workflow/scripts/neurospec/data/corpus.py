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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import pandas as pd

from ..errors import NeurospecError
from ..languages import PIVOT, flores, parse_pair

LAYOUTS = ("auto", "translation", "columns", "sentences")
CODES = ("ec40", "flores")
FORMATS = ("auto", "tsv", "jsonl", "parquet", "text")
PLACEHOLDERS = ("split", "lang", "xx", "en", "sorted_pair")
EXTENSIONS = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}  # else text


# -- reading, checking and assembling (every source) --------------------------------------------------

# What str.splitlines() (and so Python's universal newlines) splits on besides "\n": only "\n" ends a
# line here; one of these inside a line is replaced by a space and reported (see the module docstring).
LINE_SEPARATORS = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_SEPARATORS = re.compile("[" + re.escape(LINE_SEPARATORS) + "]")
BOM = "\ufeff"
DEFAULT_ENCODING = "utf-8"
ENCODING_FIX = ("set dataset.files.encoding to the file's encoding (e.g. latin-1, cp1252) or convert the file to "
                "UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = BOM.encode("utf-8")
_FIRST_LINES = 10  # line numbers kept per file for the report


def check_encoding(encoding: str | None, key: str = "dataset.files.encoding") -> str:
    """The codec's name for ``encoding`` (null: UTF-8); an unknown one, or one that does not write a
    newline as the byte 0x0A (UTF-16, UTF-32: their lines cannot be split byte-wise), is an error naming
    the key.  ``utf-8-sig`` is UTF-8 (a BOM is stripped whatever the encoding's name)."""
    import codecs

    if encoding is None:
        return DEFAULT_ENCODING
    try:
        name = codecs.lookup(str(encoding)).name
        if name == "utf-8-sig":
            return DEFAULT_ENCODING
        ascii_lines = "a\r\n".encode(name) == b"a\r\n"
    except LookupError:
        raise NeurospecError(f"key {key!r}: {encoding!r} is not a text encoding Python knows (e.g. utf-8, "
                             f"latin-1, cp1252)") from None
    if not ascii_lines:
        raise NeurospecError(f"key {key!r}: {encoding!r} is not supported (lines are split at the byte 0x0A); "
                             f"convert the file to UTF-8 (e.g. iconv -f {name.upper()} -t UTF-8)")
    return name


@dataclass
class FileScan:
    """What reading one text file found: its lines (split at ``\\n`` only), a stripped BOM, ``\\r\\n``
    endings, and the lines in which another line separator was replaced by a space (1-based)."""

    path: str
    encoding: str = DEFAULT_ENCODING
    n_lines: int = 0
    bom: bool = False
    crlf_lines: int = 0
    separator_lines: int = 0
    first_separator_lines: list[int] = field(default_factory=list)
    blank_lines: int = 0  # JSON lines only: blank lines skipped
    cr_lines: int = 0  # lines holding a lone \r

    def check(self) -> "FileScan":
        """A file that is one line holding lone ``\\r``: classic Mac OS line endings, an error."""
        if self.n_lines == 1 and self.cr_lines:
            raise NeurospecError(f"dataset file {self.path} ends its lines with \\r only (classic Mac OS), not \\n: "
                                 f"convert it (e.g. tr '\\r' '\\n')")
        return self

    def report(self) -> dict[str, Any]:
        """For the pair table's metadata (``text_files``)."""
        return {"lines": self.n_lines, "encoding": self.encoding, "bom_stripped": self.bom,
                "crlf_lines": self.crlf_lines, "separator_lines": self.separator_lines,
                "first_separator_lines": self.first_separator_lines}


def _decode_error(path: Path, raw: bytes, exc: UnicodeDecodeError, offset: int, line: int, encoding: str,
                  fix: str) -> NeurospecError:
    start = offset + exc.start
    if line == 1 and exc.start == 0 and raw.startswith(_UTF16_BOMS):
        return NeurospecError(f"dataset file {path} starts with a UTF-16 byte order mark (byte offset 0, line 1): "
                              f"convert it to UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")
    bad = raw[exc.start:exc.end]
    return NeurospecError(f"dataset file {path} is not {encoding.upper()}: byte 0x{bad[:1].hex()} at byte offset "
                          f"{start} (line {line}) cannot be decoded; {fix}")


def iter_lines(path: Path, encoding: str = DEFAULT_ENCODING, scan: FileScan | None = None,
               fix: str = ENCODING_FIX) -> Iterator[str]:
    """The lines of a text file, split at ``\\n`` only (never universal newlines): a trailing ``\\r``
    (a ``\\r\\n`` ending) is stripped, a BOM at the start of the file is stripped, and any other line
    separator inside a line (``LINE_SEPARATORS``) becomes a space; each is recorded in ``scan``.  A byte
    that does not decode is one error naming the file, the byte offset (0-based) and the line (1-based)."""
    scan = scan if scan is not None else FileScan(str(path), encoding)
    offset = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if n == 1 and raw.startswith(_UTF8_BOM) and encoding != "utf-8":
                raise NeurospecError(f"dataset file {path} starts with a UTF-8 byte order mark but is read as "
                                     f"{encoding} (dataset.files.encoding): it is UTF-8; set "
                                     f"dataset.files.encoding to utf-8")
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                raise _decode_error(path, raw, exc, offset, n, encoding, fix) from None
            offset += len(raw)
            if line.endswith("\r\n"):
                line = line[:-2]
                scan.crlf_lines += 1
            elif line.endswith("\n"):
                line = line[:-1]
            if n == 1 and line.startswith(BOM):
                line = line[1:]
                scan.bom = True
            if _SEPARATORS.search(line):
                scan.cr_lines += "\r" in line
                line = _SEPARATORS.sub(" ", line)
                scan.separator_lines += 1
                if len(scan.first_separator_lines) < _FIRST_LINES:
                    scan.first_separator_lines.append(n)
            scan.n_lines = n
            yield line


_SEPARATOR_IN_TEXT = re.compile("\r(?!\n)|[" + re.escape(LINE_SEPARATORS.replace("\r", "")) + "]")


def scan_file(path: Path, encoding: str = DEFAULT_ENCODING, fix: str = ENCODING_FIX,
              chunk: int = 1 << 24) -> FileScan:
    """Read a text file in full, decoding every byte: what ``iter_lines`` finds (the same ``FileScan``),
    in blocks of ``chunk`` bytes cut after a ``\\n`` (several times faster than line by line: EC40's
    train files have millions of lines)."""
    scan = FileScan(str(path), encoding)
    offset = n_lines = 0  # bytes and lines before the block
    last_sep = last_cr = 0
    rest = b""
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            data = rest + block
            if not data:
                break
            if block:
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # one line longer than the block: read on
                    rest = data
                    continue
                data, rest = data[:cut], data[cut:]
            else:
                rest = b""
            if offset == 0 and data.startswith(_UTF8_BOM) and encoding != "utf-8":
                next(iter_lines(path, encoding, fix=fix))  # the error
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError:  # where: line by line
                line_offset = offset
                for n, raw in enumerate(data.split(b"\n"), start=n_lines + 1):
                    try:
                        raw.decode(encoding)
                    except UnicodeDecodeError as exc:
                        raise _decode_error(path, raw, exc, line_offset, n, encoding, fix) from None
                    line_offset += len(raw) + 1
                raise
            if offset == 0 and text.startswith(BOM):
                scan.bom = True
            crlf = text.count("\r\n")
            scan.crlf_lines += crlf
            found = text.count("\r") != crlf or any(c in text for c in LINE_SEPARATORS[1:])  # fast: no regex
            pos, line = 0, n_lines + 1
            for m in _SEPARATOR_IN_TEXT.finditer(text) if found else ():
                line += text.count("\n", pos, m.start())
                pos = m.start()
                if line != last_sep:
                    scan.separator_lines += 1
                    if len(scan.first_separator_lines) < _FIRST_LINES:
                        scan.first_separator_lines.append(line)
                    last_sep = line
                if m.group() == "\r" and line != last_cr:
                    scan.cr_lines += 1
                    last_cr = line
            n_lines += text.count("\n") + (0 if text.endswith("\n") else 1)
            offset += len(data)
    scan.n_lines = n_lines
    return scan.check()


def read_lines(path: Path, encoding: str = DEFAULT_ENCODING, fix: str = ENCODING_FIX) -> tuple[list[str], FileScan]:
    """All lines of a text file (``iter_lines``) and what reading them found."""
    scan = FileScan(str(path), encoding)
    lines = list(iter_lines(path, encoding, scan, fix))
    return lines, scan.check()


def count_lines(path: Path, encoding: str = DEFAULT_ENCODING) -> int:
    """Lines as ``read_parallel`` reads them (split at ``\\n`` only; a last line without newline counts)."""
    return scan_file(path, encoding).n_lines


def unequal_lengths(a: str, n_a: int, b: str, n_b: int, unit: str = "lines") -> NeurospecError:
    """One line naming both sides, their lengths and where they diverge."""
    short, n_short, long_, n_long = (a, n_a, b, n_b) if n_a < n_b else (b, n_b, a, n_a)
    singular = unit.rstrip("s")
    return NeurospecError(
        f"dataset files {a} and {b} have unequal lengths: {a} has {n_a} {unit}, {b} has {n_b} "
        f"({short} ends at {singular} {n_short}; {singular} {n_short + 1} is only in {long_})"
    )


def scan_parallel(src_path: Path, tgt_path: Path, encoding: str = DEFAULT_ENCODING,
                  fix: str = ENCODING_FIX) -> tuple[FileScan, FileScan]:
    """Both files of a line-aligned pair read in full (every byte decoded) and their line counts
    compared: a file one line short misaligns every later pair, even when only the first lines are read."""
    src, tgt = scan_file(src_path, encoding, fix), scan_file(tgt_path, encoding, fix)
    if src.n_lines != tgt.n_lines:
        raise unequal_lengths(str(src_path), src.n_lines, str(tgt_path), tgt.n_lines)
    return src, tgt


def read_parallel(src_path: Path, tgt_path: Path, encoding: str = DEFAULT_ENCODING,
                  fix: str = ENCODING_FIX) -> Iterator[tuple[int, str, str]]:
    """Aligned lines ``(line_index, src, tgt)`` of two files checked in full first (``scan_parallel``)."""
    scan_parallel(src_path, tgt_path, encoding, fix)
    yield from aligned_lines(src_path, tgt_path, encoding, fix)


def aligned_lines(src_path: Path, tgt_path: Path, encoding: str = DEFAULT_ENCODING,
                  fix: str = ENCODING_FIX) -> Iterator[tuple[int, str, str]]:
    """``(line_index, src, tgt)`` of two files (check them with ``scan_parallel`` first)."""
    for i, (s, t) in enumerate(zip(iter_lines(src_path, encoding, fix=fix), iter_lines(tgt_path, encoding, fix=fix))):
        yield i, s, t


def text_report(scans: Iterable[FileScan]) -> dict[str, Any]:
    """The pair table's metadata on the text files read: per file what ``iter_lines`` found, and the
    files whose BOM was stripped."""
    scans = list(scans)
    return {"encoding": scans[0].encoding if scans else None,
            "text_files": {s.path: s.report() for s in scans},
            "bom_stripped": [s.path for s in scans if s.bom]}


class Detokenizer:
    """Moses detokenization per language (sacremoses), cached."""

    def __init__(self) -> None:
        self._by_lang: dict = {}

    def __call__(self, text: str, lang: str) -> str:
        from sacremoses import MosesDetokenizer

        if lang not in self._by_lang:
            self._by_lang[lang] = MosesDetokenizer(lang=lang)
        return self._by_lang[lang].detokenize(text.split())


def _text(value: Any) -> str:
    """A cell as text: None and NaN (missing) are empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


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
        s, t = _text(s), _text(t)
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


# -- how rows hold the languages --------------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """``dataset.rows``: where the two languages are in a source's rows."""

    layout: str = "auto"
    codes: str = "ec40"
    code_map: Mapping[str, str] = field(default_factory=dict)
    translation_column: str = "translation"
    text_column: str = "text"
    id_column: str | None = "id"
    lang_column: str | list[str] | None = None

    @classmethod
    def from_config(cls, rows: Mapping[str, Any] | None) -> "Rows":
        rows = dict(rows or {})
        unknown = set(rows) - set(cls.__dataclass_fields__)
        if unknown:
            raise NeurospecError(f"key 'dataset.rows.{sorted(unknown)[0]}' is not a known key")
        out = cls(**rows)
        if out.layout not in LAYOUTS:
            raise NeurospecError(f"key 'dataset.rows.layout': {out.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if out.codes not in CODES:
            raise NeurospecError(f"key 'dataset.rows.codes': {out.codes!r}; choose one of {', '.join(CODES)}")
        return out

    def code(self, lang: str) -> str:
        """How the data names ``lang`` (an EC40 code)."""
        if lang in self.code_map:
            return self.code_map[lang]
        return flores(lang) if self.codes == "flores" else lang


def placeholders(template: str, key: str) -> set[str]:
    """The placeholders of a template; an unknown one is an error naming the key."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise NeurospecError(f"key {key!r}: {template!r} is not a valid template ({exc})") from None
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise NeurospecError(f"key {key!r} has unknown placeholder {{{unknown[0]}}}; "
                             f"known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}")
    return names


def fill(template: str, key: str, pair: str, split: str, rows: Rows, lang: str | None = None) -> str:
    """A config name or path for one pair (and, with ``{lang}``, one of its languages)."""
    names = placeholders(template, key)
    src, tgt = parse_pair(pair)
    if PIVOT not in (src, tgt) and names & {"xx", "en"}:
        raise NeurospecError(f"key {key!r}: {template!r} names English-centric sources ({{en}}, {{xx}}); pair "
                             f"{pair!r} has no English side: use {{lang}} (a source per language) or "
                             f"{{sorted_pair}} (a source per pair)")
    xx = tgt if src == PIVOT else src
    codes = sorted((rows.code(src), rows.code(tgt)))
    values = {"split": split, "xx": rows.code(xx), "en": rows.code(PIVOT), "sorted_pair": "-".join(codes),
              "lang": rows.code(lang) if lang else "{lang}"}
    return template.format(**values)


def per_language(template: str | None, key: str) -> bool:
    return bool(template) and "lang" in placeholders(template, key)


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()  # a key a JSON object lacks (a JSON null is None: an empty sentence)


@dataclass
class Table:
    """A loaded source: its columns (name -> values), for messages its name, and its unit (lines, rows).
    JSON lines: ``row_lines`` (the line of each row, 1-based) and ``MISSING`` where an object lacks a key;
    text files: ``scans`` (what reading them found)."""

    name: str
    columns: dict[str, list]
    unit: str = "rows"
    row_lines: list[int] | None = None
    scans: list[FileScan] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def column(self, name: str, what: str) -> list:
        """A column's values; a row without it (a JSON object lacking the key) is an error naming the
        file, the line and the key."""
        if name not in self.columns:
            raise NeurospecError(f"dataset source {self.name} has no column {name!r} ({what}); it has "
                                 f"{', '.join(map(repr, self.columns)) or 'no columns'}")
        values = self.columns[name]
        for k, value in enumerate(values):
            if value is MISSING:
                line = self.row_lines[k] if self.row_lines else k + 1
                has = [repr(c) for c, vals in self.columns.items() if vals[k] is not MISSING]
                raise NeurospecError(f"dataset file {self.name}, line {line}: no key {name!r} ({what}); the "
                                     f"object has {', '.join(has) or 'no keys'}")
        return values


def _resolve_layout(rows: Rows, table: Table, src_code: str, tgt_code: str) -> str:
    if rows.layout != "auto":
        return rows.layout
    if rows.lang_column:
        return "sentences"
    if rows.translation_column in table.columns:
        return "translation"
    if src_code in table.columns and tgt_code in table.columns:
        return "columns"
    raise NeurospecError(
        f"dataset source {table.name}: cannot tell where the languages are: no column "
        f"{rows.translation_column!r} (dataset.rows.translation_column), no columns {src_code!r} and "
        f"{tgt_code!r}, and no dataset.rows.lang_column; it has {', '.join(map(repr, table.columns))}"
    )


def _lang_values(table: Table, lang_column: str | list[str]) -> list[str]:
    """The language of every row: one column, or several joined by '_' (FLORES+: iso_639_3, iso_15924)."""
    cols = [lang_column] if isinstance(lang_column, str) else list(lang_column)
    values = [table.column(c, "dataset.rows.lang_column") for c in cols]
    return ["_".join(_text(v) for v in vals) for vals in zip(*values)]


def align(src: Table, src_texts: list, tgt: Table, tgt_texts: list, src_ids: list | None,
          tgt_ids: list | None, english_is_src: bool) -> list[tuple[int, Any, Any]]:
    """Match one side's sentences to the other's, in full: by id (a one-to-one match) or by position
    (equal lengths).  Records ``(id, src, tgt)`` in the English side's order, id = its position."""
    if src_ids is None or tgt_ids is None:
        if len(src_texts) != len(tgt_texts):
            raise unequal_lengths(src.name, len(src_texts), tgt.name, len(tgt_texts), src.unit)
        return [(i, s, t) for i, (s, t) in enumerate(zip(src_texts, tgt_texts))]
    by_id = []
    for table, ids in ((src, src_ids), (tgt, tgt_ids)):
        seen: dict[Any, int] = {}
        for pos, i in enumerate(ids):
            if i in seen:
                raise NeurospecError(f"dataset source {table.name}: id {i!r} occurs twice (rows {seen[i] + 1} "
                                     f"and {pos + 1})")
            seen[i] = pos
        by_id.append(seen)
    only_src = [i for i in src_ids if i not in by_id[1]]
    only_tgt = [i for i in tgt_ids if i not in by_id[0]]
    if only_src or only_tgt:
        name, other, first = (src.name, tgt.name, only_src[0]) if only_src else (tgt.name, src.name, only_tgt[0])
        raise NeurospecError(
            f"dataset sources {src.name} and {tgt.name} do not match by id: id {first!r} is in {name} only, "
            f"not in {other} ({len(src_ids)} and {len(tgt_ids)} rows)"
        )
    english_ids = src_ids if english_is_src else tgt_ids
    return [(pos, src_texts[by_id[0][i]], tgt_texts[by_id[1][i]]) for pos, i in enumerate(english_ids)]


def records(tables: Mapping[str, Table] | Table, src_lang: str, tgt_lang: str, rows: Rows
            ) -> list[tuple[int, Any, Any]]:
    """The ``(id, src, tgt)`` records of one direction, checked in full.

    ``tables`` is one table holding both languages, or ``{lang: table}`` with one per language.
    """
    src_code, tgt_code = rows.code(src_lang), rows.code(tgt_lang)
    english_is_src = src_lang == PIVOT or tgt_lang != PIVOT  # no English side: the source's order
    if not isinstance(tables, Table):  # one source per language: rows of sentences
        src, tgt = tables[src_lang], tables[tgt_lang]
        ids = [None, None]
        if rows.id_column:
            ids = [src.column(rows.id_column, "dataset.rows.id_column"),
                   tgt.column(rows.id_column, "dataset.rows.id_column")]
        return align(src, src.column(rows.text_column, "dataset.rows.text_column"),
                     tgt, tgt.column(rows.text_column, "dataset.rows.text_column"), ids[0], ids[1], english_is_src)
    table = tables
    layout = _resolve_layout(rows, table, src_code, tgt_code)
    if layout == "translation":
        out = []
        for i, item in enumerate(table.column(rows.translation_column, "dataset.rows.translation_column")):
            if not isinstance(item, Mapping) or src_code not in item or tgt_code not in item:
                have = ", ".join(map(repr, item)) if isinstance(item, Mapping) else type(item).__name__
                line = f"; line {table.row_lines[i]}" if table.row_lines else ""
                raise NeurospecError(f"dataset source {table.name}, {table.unit.rstrip('s')} {i + 1}: "
                                     f"{rows.translation_column!r} lacks {src_code!r} or {tgt_code!r} "
                                     f"(has {have}{line})")
            out.append((i, item[src_code], item[tgt_code]))
        return out
    if layout == "columns":
        src = table.column(src_code, f"the {src_lang!r} side")
        tgt = table.column(tgt_code, f"the {tgt_lang!r} side")
        return [(i, s, t) for i, (s, t) in enumerate(zip(src, tgt))]
    if layout == "sentences":
        if not rows.lang_column:
            raise NeurospecError("dataset.rows.layout 'sentences' needs {lang} in dataset.hf.config / "
                                 "dataset.files.path (one source per language) or dataset.rows.lang_column")
        langs = _lang_values(table, rows.lang_column)
        texts = table.column(rows.text_column, "dataset.rows.text_column")
        ids = table.column(rows.id_column, "dataset.rows.id_column") if rows.id_column else None
        sides = []
        for code in (src_code, tgt_code):
            keep = [k for k, v in enumerate(langs) if v == code]
            if not keep:
                found = sorted(set(langs))
                raise NeurospecError(f"dataset source {table.name} has no rows of language {code!r} "
                                     f"(dataset.rows.lang_column); it has {', '.join(found[:12])}"
                                     + (", ..." if len(found) > 12 else ""))
            sides.append((Table(f"{table.name} [{code}]", {}, table.unit), [texts[k] for k in keep],
                          [ids[k] for k in keep] if ids is not None else None))
        (src, s_texts, s_ids), (tgt, t_texts, t_ids) = sides
        return align(src, s_texts, tgt, t_texts, s_ids, t_ids, english_is_src)
    raise NeurospecError(f"key 'dataset.rows.layout': {layout!r}; choose one of {', '.join(LAYOUTS)}")


# -- local files ----------------------------------------------------------------------------------------------


def file_format(path: Path, fmt: str = "auto") -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise NeurospecError(f"key 'dataset.files.format': {fmt!r}; choose one of {', '.join(FORMATS)}")
        return fmt
    return EXTENSIONS.get(path.suffix.lower(), "text")


def read_file(path: Path, fmt: str, text_column: str = "text", encoding: str = DEFAULT_ENCODING) -> Table:
    """One local file as a table. TSV: a header row, every row with as many fields; JSON lines: one
    object per line (blank lines skipped and counted; a key an object lacks is ``MISSING``); Parquet;
    text: one sentence per line, as the column ``text_column``.  Text formats are read with
    ``iter_lines`` (lines split at ``\\n`` only, BOM stripped, ``encoding``)."""
    if not path.is_file():
        raise NeurospecError(f"dataset file {path} is missing (dataset.files.path)")
    name = str(path)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            return Table(name, pq.read_table(path).to_pydict())
        except (pa.ArrowException, OSError) as exc:
            raise NeurospecError(f"cannot read Parquet file {path}: {str(exc).splitlines()[0]}") from None
    lines, scan = read_lines(path, encoding)
    if fmt == "text":
        return Table(name, {text_column: lines}, unit="lines", scans=[scan])
    if fmt == "tsv":
        if not lines:
            raise NeurospecError(f"dataset file {path} is empty: a TSV file needs a header row naming its columns")
        header = lines[0].split("\t")
        columns: dict[str, list] = {h: [] for h in header}
        for n, line in enumerate(lines[1:], start=2):
            fields = line.split("\t")
            if len(fields) != len(header):
                raise NeurospecError(f"dataset file {path}, line {n}: {len(fields)} tab-separated field(s), the "
                                     f"header has {len(header)} ({', '.join(header)})")
            for h, v in zip(header, fields):
                columns[h].append(v)
        return Table(name, columns, unit="rows", scans=[scan])
    objects, row_lines = [], []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            scan.blank_lines += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise NeurospecError(f"dataset file {path}, line {n}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise NeurospecError(f"dataset file {path}, line {n}: a JSON object per line expected")
        objects.append(obj)
        row_lines.append(n)
    keys: dict[str, None] = {}
    for obj in objects:
        keys.update(dict.fromkeys(obj))
    return Table(name, {k: [obj.get(k, MISSING) for obj in objects] for k in keys}, unit="objects",
                 row_lines=row_lines, scans=[scan])


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
