"""Where a source's rows hold the two languages (``dataset.rows``): the layouts (translation column,
a column per language, a row per sentence), the language codes in the data (EC40 or FLORES, with
``rows.code_map`` overriding single codes), the placeholders of a config or path (``fill``), and the
rows of one or two read tables turned into aligned (id, src, tgt) records (``records``, ``align``).
See ``neurospec.data.corpus`` for the whole of it."""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import NeurospecError
from ..languages import flores, parse_pair, PIVOT
from .readers import cell_text, Table, unequal_lengths


LAYOUTS = ("auto", "translation", "columns", "sentences")


CODES = ("ec40", "flores")


PLACEHOLDERS = ("split", "lang", "xx", "en", "sorted_pair")


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
    return ["_".join(cell_text(v) for v in vals) for vals in zip(*values)]


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
