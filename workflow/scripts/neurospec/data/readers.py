"""Reading a corpus's files: text files line by line as bytes (a line ends at ``\\n`` only; other line
separators inside a line replaced and counted; a byte order mark stripped; an undecodable byte one error
naming file, offset and line), two line-aligned files checked for equal length (``scan_parallel``), the
per-file report (``text_report``), and TSV, JSON lines, Parquet and plain text read into a ``Table``
(``read_file``). See ``neurospec.data.corpus`` for the rules in full."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..errors import NeurospecError


FORMATS = ("auto", "tsv", "jsonl", "parquet", "text")


EXTENSIONS = {".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}  # else text


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


def cell_text(value: Any) -> str:
    """A cell as text: None and NaN (missing) are empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


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
