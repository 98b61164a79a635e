#!/usr/bin/env python
"""Compare two results folders file by file (a development tool; the workflow does not import it).

    python tools/compare_results.py BEFORE AFTER [--exclude 'logs/*' ...] [--ignore-key seconds ...]

Typical use: run the demo before and after a change (each into its own --directory) and compare
their results/ folders.  Files are matched by their path relative to each folder, and compared by kind:

- Parquet (.parquet): the schema (column names, types, nullability, field metadata), the schema's
  key-value metadata (neurospec's JSON values are compared parsed, and the first differing key is
  named), and the data, exactly: floats by their bits (NaN equals NaN, -0.0 does not equal 0.0).
  The first differing column and row are reported, with both values and how many rows differ;
  every differing metadata key is reported too, so a timing in the metadata hides nothing.
- JSON, CSV, TSV: byte for byte; when they differ, the first differing JSON key (or line and field).
- PNG: pixel for pixel (decoded with PIL when installed, else matplotlib.image): size and every
  channel; the file's own metadata (e.g. the Software text chunk) is ignored.
- SVG: rendered with cairosvg when installed and compared pixel for pixel; without it, as text with
  the <metadata> block (its date) removed and element ids renumbered in order of appearance
  (matplotlib salts them at random), which the report says.
- anything else: byte for byte.

Files present on one side only are listed.  ``--exclude GLOB`` skips files (e.g. the logs);
``--ignore-key KEY`` skips a metadata key, in Parquet schema metadata and JSON objects at any depth
(e.g. ``seconds`` and ``new_tokens_per_s``: the timings neurospec records, which differ between
any two runs).  Exit status: 0 when every file is equal, 1 when
anything differs (with a summary line), 2 when a folder is missing.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------
# Parquet
# --------------------------------------------------------------------------------------------


def _short(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _first_json_difference(a: Any, b: Any, path: str = "", ignore: frozenset = frozenset()) -> str | None:
    """The first place where two parsed JSON values differ: 'key.sub[3]: a != b'; None if equal.
    Object keys named in ``ignore`` are skipped at any depth."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in list(a) + [k for k in b if k not in a] if k not in ignore]
        for key in keys:
            where = f"{path}.{key}" if path else str(key)
            if key not in b:
                return f"{where}: only in the first"
            if key not in a:
                return f"{where}: only in the second"
            found = _first_json_difference(a[key], b[key], where, ignore)
            if found:
                return found
        if [k for k in a if k not in ignore] != [k for k in b if k not in ignore]:
            return f"{path or '(top)'}: same keys in another order"
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_json_difference(x, y, f"{path}[{i}]", ignore)
            if found:
                return found
        if len(a) != len(b):
            return f"{path or '(top)'}: {len(a)} items against {len(b)}"
        return None
    if type(a) is not type(b) or not (a == b or (_is_nan(a) and _is_nan(b))):
        return f"{path or '(top)'}: {_short(a)} != {_short(b)}"
    return None


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _metadata_differences(ma: dict | None, mb: dict | None, ignore: frozenset = frozenset()) -> list[str]:
    """Every schema metadata key whose value differs (JSON values compared parsed: the first differing
    place is named), skipping keys named in ``ignore`` (at any depth of a JSON value)."""
    ma, mb = ma or {}, mb or {}
    out = []
    for key in list(ma) + [k for k in mb if k not in ma]:
        name = key.decode("utf-8", "replace")
        if name in ignore:
            continue
        if key not in mb:
            out.append(f"schema metadata {name!r} only in the first")
        elif key not in ma:
            out.append(f"schema metadata {name!r} only in the second")
        elif ma[key] != mb[key]:
            try:
                inner = _first_json_difference(json.loads(ma[key]), json.loads(mb[key]), ignore=ignore)
            except ValueError:
                inner = f"(top): {_short(ma[key])} != {_short(mb[key])}"
            if inner:
                out.append(f"schema metadata {name!r} differs at {inner}")
    return out


def _column_difference(name: str, ca, cb) -> str | None:
    """The first differing row of two columns of the same type and length, or None."""
    import numpy as np
    import pyarrow as pa

    if not pa.types.is_floating(ca.type) and ca.equals(cb):  # Arrow's equals takes -0.0 for 0.0
        return None
    ca, cb = ca.combine_chunks(), cb.combine_chunks()
    typ = ca.type
    if pa.types.is_floating(typ) or pa.types.is_integer(typ) or pa.types.is_boolean(typ):
        na, nb = ca.is_null().to_numpy(zero_copy_only=False), cb.is_null().to_numpy(zero_copy_only=False)
        va = ca.fill_null(0 if not pa.types.is_boolean(typ) else False).to_numpy(zero_copy_only=False)
        vb = cb.fill_null(0 if not pa.types.is_boolean(typ) else False).to_numpy(zero_copy_only=False)
        if pa.types.is_floating(typ):  # bits, with every NaN equal to every NaN
            bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[va.dtype.itemsize]
            same = (va.view(bits) == vb.view(bits)) | (np.isnan(va) & np.isnan(vb))
        else:
            same = va == vb
        differ = np.flatnonzero(~same | (na != nb))
        if not differ.size:
            return None
        row = int(differ[0])
        x = None if na[row] else va[row].item()
        y = None if nb[row] else vb[row].item()
        detail = f" (difference {x - y!r})" if isinstance(x, float) and isinstance(y, float) else ""
        return (f"column {name!r} row {row}: {_short(x)} != {_short(y)}{detail}; "
                f"{differ.size} of {len(va)} rows differ")
    la, lb = ca.to_pylist(), cb.to_pylist()
    differ = [i for i, (x, y) in enumerate(zip(la, lb)) if _first_json_difference(x, y) is not None]
    if not differ:
        return None
    row = differ[0]
    return f"column {name!r} row {row}: {_short(la[row])} != {_short(lb[row])}; {len(differ)} of {len(la)} rows differ"


def compare_parquet(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    """Schema, then metadata (every differing key), then the data (the first differing column, from
    the left), all reported: a metadata difference does not hide a difference in the data."""
    import pyarrow.parquet as pq

    try:
        ta, tb = pq.read_table(a), pq.read_table(b)
    except Exception as exc:  # an unreadable file is a difference to report, not a crash
        return f"unreadable Parquet ({type(exc).__name__}: {exc})"
    sa, sb = ta.schema, tb.schema
    if sa.names != sb.names:
        only_a = [n for n in sa.names if n not in sb.names]
        only_b = [n for n in sb.names if n not in sa.names]
        return (f"columns differ: {sa.names} against {sb.names}"
                + (f" (only in the first: {only_a})" if only_a else "")
                + (f" (only in the second: {only_b})" if only_b else ""))
    found = []
    for fa, fb in zip(sa, sb):
        if fa.type != fb.type or fa.nullable != fb.nullable:
            found.append(f"column {fa.name!r}: type {fa.type}{'' if fa.nullable else ' not null'} against "
                         f"{fb.type}{'' if fb.nullable else ' not null'}")
        elif (fa.metadata or {}) != (fb.metadata or {}):
            found.append(f"column {fa.name!r}: field metadata differs")
    found += _metadata_differences(sa.metadata, sb.metadata, ignore)
    if ta.num_rows != tb.num_rows:
        found.append(f"{ta.num_rows} rows against {tb.num_rows}")
    elif not any(x.startswith("column") for x in found):  # same types: compare the data
        for name in sa.names:
            column = _column_difference(name, ta.column(name), tb.column(name))
            if column:
                found.append(column)
                break
    return "; ".join(found) or None


# --------------------------------------------------------------------------------------------
# Text, images, bytes
# --------------------------------------------------------------------------------------------


def compare_bytes(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    da, db = a.read_bytes(), b.read_bytes()
    if da == db:
        return None
    at = next((i for i, (x, y) in enumerate(zip(da, db)) if x != y), min(len(da), len(db)))
    return f"bytes differ from offset {at} ({len(da)} bytes against {len(db)})"


def compare_json(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    if a.read_bytes() == b.read_bytes():
        return None
    try:
        inner = _first_json_difference(json.loads(a.read_text()), json.loads(b.read_text()), ignore=ignore)
    except ValueError as exc:
        return f"{compare_bytes(a, b)} (not JSON: {exc})"
    if inner:
        return f"JSON differs at {inner}"
    if ignore and _first_json_difference(json.loads(a.read_text()), json.loads(b.read_text())):
        return None  # only ignored keys differ
    return "same JSON value, different bytes (layout or number spelling)"


def compare_table_text(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    if a.read_bytes() == b.read_bytes():
        return None
    delimiter = "\t" if a.suffix.lower() == ".tsv" else ","
    try:
        ra = list(csv.reader(io.StringIO(a.read_text()), delimiter=delimiter))
        rb = list(csv.reader(io.StringIO(b.read_text()), delimiter=delimiter))
    except (UnicodeDecodeError, csv.Error) as exc:
        return f"{compare_bytes(a, b)} ({exc})"
    for line, (x, y) in enumerate(zip(ra, rb), start=1):
        if x != y:
            field = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
            return (f"line {line} field {field + 1}: {_short(x[field] if field < len(x) else None)} != "
                    f"{_short(y[field] if field < len(y) else None)}")
    if len(ra) != len(rb):
        return f"{len(ra)} lines against {len(rb)}"
    return "same fields, different bytes (quoting or line endings)"


def _pixels(path: Path):
    import numpy as np

    try:
        from PIL import Image
    except ImportError:
        import matplotlib.image

        return np.asarray(matplotlib.image.imread(str(path)))
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA") if image.mode not in ("RGB", "RGBA", "L", "LA") else image)


def _compare_pixels(pa, pb) -> str | None:
    import numpy as np

    if pa.shape != pb.shape:
        return f"image shape (height, width, channels) {pa.shape} against {pb.shape}"
    differ = np.any(pa != pb, axis=-1) if pa.ndim == 3 else pa != pb
    if not differ.any():
        return None
    y, x = (int(v[0]) for v in np.nonzero(differ))
    return f"pixels differ: {int(differ.sum())} of {differ.size}, first at x={x}, y={y}"


def compare_png(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    if a.read_bytes() == b.read_bytes():
        return None
    try:
        pa, pb = _pixels(a), _pixels(b)
    except Exception as exc:
        return f"{compare_bytes(a, b)} (not decodable: {type(exc).__name__}: {exc})"
    return _compare_pixels(pa, pb)


_SVG_METADATA = re.compile(rb"<metadata>.*?</metadata>", re.S)
_SVG_ID = re.compile(rb'\bid="([^"]+)"')


def _normal_svg(data: bytes) -> bytes:
    data = _SVG_METADATA.sub(b"", data)
    ids = list(dict.fromkeys(_SVG_ID.findall(data)))
    if not ids:
        return data
    names = {old: f"id{i}".encode() for i, old in enumerate(ids)}
    pattern = re.compile(rb'(id="|#)(' + b"|".join(re.escape(i) for i in sorted(ids, key=len, reverse=True))
                         + rb')(?=["\)])')
    return pattern.sub(lambda m: m.group(1) + names[m.group(2)], data)


def compare_svg(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    da, db = a.read_bytes(), b.read_bytes()
    if da == db:
        return None
    try:
        import cairosvg
    except ImportError:
        if _normal_svg(da) == _normal_svg(db):
            return None
        return "SVG differs (compared as text without <metadata> and with ids renumbered: no SVG renderer, " \
               "cairosvg, is installed)"
    import numpy as np

    def render(data: bytes):
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(cairosvg.svg2png(bytestring=data))).convert("RGBA"))

    return _compare_pixels(render(da), render(db))


COMPARERS = {".parquet": compare_parquet, ".json": compare_json, ".csv": compare_table_text,
             ".tsv": compare_table_text, ".png": compare_png, ".svg": compare_svg}


def compare_file(a: Path, b: Path, ignore: frozenset = frozenset()) -> str | None:
    """Why two files differ (one line), or None when they are equal; ``ignore``: metadata and JSON keys
    not compared."""
    return COMPARERS.get(a.suffix.lower(), compare_bytes)(a, b, ignore)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


def files_under(root: Path, exclude: list[str]) -> set[str]:
    out = set()
    for path in root.rglob("*"):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            if not any(fnmatch.fnmatch(rel, pattern) for pattern in exclude):
                out.add(rel)
    return out


def compare_folders(a: Path, b: Path, exclude: list[str] | None = None, ignore: frozenset = frozenset()
                    ) -> dict[str, Any]:
    """{'equal': [...], 'differ': {path: why}, 'only_a': [...], 'only_b': [...]}, paths relative and sorted."""
    exclude = exclude or []
    fa, fb = files_under(a, exclude), files_under(b, exclude)
    result: dict[str, Any] = {"equal": [], "differ": {}, "only_a": sorted(fa - fb), "only_b": sorted(fb - fa)}
    for rel in sorted(fa & fb):
        why = compare_file(a / rel, b / rel, ignore)
        if why is None:
            result["equal"].append(rel)
        else:
            result["differ"][rel] = why
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path, help="a results folder (e.g. of the run before a change)")
    ap.add_argument("second", type=Path, help="the results folder to compare it with")
    ap.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                    help="skip files whose relative path matches (fnmatch, '*' crosses '/'; repeatable), "
                         "e.g. 'logs/*'")
    ap.add_argument("--ignore-key", action="append", default=[], metavar="KEY",
                    help="do not compare this Parquet schema-metadata key, nor JSON object keys of this name at "
                         "any depth (repeatable), e.g. 'seconds' (timings)")
    args = ap.parse_args(argv)
    for folder in (args.first, args.second):
        if not folder.is_dir():
            print(f"compare_results: error: {folder} is not a folder", file=sys.stderr)
            return 2
    result = compare_folders(args.first, args.second, args.exclude, frozenset(args.ignore_key))
    for rel in result["only_a"]:
        print(f"only in {args.first}: {rel}")
    for rel in result["only_b"]:
        print(f"only in {args.second}: {rel}")
    for rel, why in result["differ"].items():
        print(f"differs: {rel}: {why}")
    n_equal, n_differ = len(result["equal"]), len(result["differ"])
    n_only = len(result["only_a"]) + len(result["only_b"])
    summary = (f"{n_equal + n_differ} files in both: {n_equal} equal, {n_differ} differ; "
               f"{len(result['only_a'])} only in the first, {len(result['only_b'])} only in the second")
    if n_differ or n_only:
        print(f"DIFFERENT: {summary}")
        return 1
    print(f"EQUAL: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
