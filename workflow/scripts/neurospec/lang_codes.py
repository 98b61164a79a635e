"""Any language: ISO 639 codes resolved to a name, a family and a script.

A language code is ISO 639-1 (``ja``), ISO 639-3 (``jpn``) or a FLORES-200 code (ISO 639-3 and an
ISO 15924 script: ``jpn_Jpan``, ``zho_Hans``, ``srp_Latn``).  Resolution, first match wins:

1. ``languages:`` in the config (``{code: {name, family, script}}``; passed to every job as the
   environment variable ``NEUROSPEC_LANGUAGES``, see ``configure``);
2. EC40's 40 languages and English (``neurospec.languages.LANGUAGES``: names, groups and tiers as
   EC40 has them);
3. the shipped table ``data/languages.tsv`` (every FLORES-200 language; its header cites its sources),
   looked up by FLORES code, by ISO 639-1 code, or by ISO 639-3 code when one row has it;
4. any other valid ISO 639 code ``langcodes`` knows: family "Other", the script of the code's
   subtag, else the one CLDR's likely-subtags data gives.

Names come from ``langcodes`` (CLDR's English names, data of the ``language_data`` package),
the table's name where ``langcodes`` has none; the config's name wins over both.  Languages outside
EC40 have no tier (``tier`` "unknown").
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import NeurospecError
from .messages import PAIR_FORMAT  # noqa: F401  (one wording of what a pair is, used here and by languages)

TABLE = Path(__file__).with_name("data") / "languages.tsv"
ENV = "NEUROSPEC_LANGUAGES"
OTHER = "Other"
UNKNOWN_TIER = "unknown"
CODE_FORMAT = ("a language code is ISO 639-1 or 639-3, optionally with an ISO 15924 script "
               "(ja, jpn, jpn_Jpan, zho_Hans)")

# ISO 15924 code -> the script's name (the names EC40's table uses)
SCRIPT_NAMES = {
    "Latn": "Latin", "Cyrl": "Cyrillic", "Arab": "Arabic", "Hebr": "Hebrew", "Grek": "Greek",
    "Armn": "Armenian", "Geor": "Georgian", "Ethi": "Ethiopic", "Deva": "Devanagari", "Beng": "Bengali",
    "Gujr": "Gujarati", "Guru": "Gurmukhi", "Orya": "Oriya", "Taml": "Tamil", "Telu": "Telugu",
    "Knda": "Kannada", "Mlym": "Malayalam", "Sinh": "Sinhala", "Thai": "Thai", "Laoo": "Lao",
    "Khmr": "Khmer", "Mymr": "Myanmar", "Tibt": "Tibetan", "Hang": "Hangul", "Kore": "Korean",
    "Jpan": "Japanese", "Hira": "Hiragana", "Kana": "Katakana", "Hans": "Han (Simplified)",
    "Hant": "Han (Traditional)", "Hani": "Han", "Tfng": "Tifinagh", "Olck": "Ol Chiki",
    "Mong": "Mongolian", "Thaa": "Thaana", "Syrc": "Syriac", "Cher": "Cherokee", "Cans": "Canadian Syllabics",
}
SCRIPT_CODES = {name: code for code, name in SCRIPT_NAMES.items()}


def script_name(script: str) -> str:
    """``Latn`` -> ``Latin``; a name (``Latin``) or an unknown code is returned as it is."""
    return SCRIPT_NAMES.get(script, script)


def script_code(script: str) -> str:
    """``Latin`` -> ``Latn``; an ISO 15924 code is returned as it is."""
    return SCRIPT_CODES.get(script, script)


@functools.lru_cache(maxsize=1)
def table_rows() -> tuple[dict[str, str], ...]:
    """The shipped table's rows (code, iso639_1, name, family, script), comment lines skipped."""
    with open(TABLE, encoding="utf-8", newline="") as fh:
        lines = [line for line in fh if not line.startswith("#")]
    return tuple(dict(row) for row in csv.DictReader(lines, delimiter="\t"))


@functools.lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, str]]:
    """code -> table row, by FLORES code, ISO 639-1 code, and ISO 639-3 code where only one row has it."""
    rows = table_rows()
    out: dict[str, dict[str, str]] = {}
    by_iso3: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_iso3.setdefault(row["code"].split("_")[0], []).append(row)
    for iso3, found in by_iso3.items():
        if len(found) == 1:
            out[iso3] = found[0]
    for row in rows:
        if row["iso639_1"]:
            out[row["iso639_1"]] = row
    for row in rows:
        out[row["code"]] = row
    return out


def flores_code(code: str) -> str | None:
    """The FLORES-200 code of a language code (``ja`` -> ``jpn_Jpan``), None when the table lacks it."""
    row = _index().get(code)
    return row["code"] if row else None


_CONFIGURED: str | None = None  # the config's languages: as JSON, in the process that read the config


def _current() -> str:
    """The config's ``languages:`` as JSON: the one this process read (``configure``), else the one
    its run passed down (``NEUROSPEC_LANGUAGES``, set by ``export`` when the run starts)."""
    return _CONFIGURED if _CONFIGURED is not None else os.environ.get(ENV, "")


def overrides() -> dict[str, dict[str, Any]]:
    """The config's ``languages:`` as every job sees it."""
    raw = _current()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise NeurospecError(f"environment variable {ENV} is not JSON: {raw[:80]!r}") from None
    return value if isinstance(value, dict) else {}


def configure(languages: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Make the config's ``languages:`` known to this process (at parse time: the environment is left
    alone, so --lint, -n and --report change nothing; ``export`` passes them on when a run starts)."""
    global _CONFIGURED
    languages = dict(languages or {})
    for code, spec in languages.items():
        if not isinstance(spec, Mapping) or not spec.get("name"):
            raise NeurospecError(f"key 'languages.{code}' needs a name (and may give family and script), "
                                 f"e.g. languages: {{{code}: {{name: ..., family: ..., script: Latn}}}}")
    _CONFIGURED = json.dumps({k: dict(v) for k, v in sorted(languages.items())}, sort_keys=True)


def export() -> None:
    """At a run's start (onstart): the jobs and model workers it starts inherit the config's
    ``languages:`` through ``NEUROSPEC_LANGUAGES`` (nothing to pass on when it names none)."""
    if _CONFIGURED and _CONFIGURED != "{}":
        os.environ[ENV] = _CONFIGURED


def _split(code: str) -> tuple[str, str | None]:
    """``zho_Hans`` -> (``zho``, ``Hans``); ``ja`` -> (``ja``, None)."""
    lang, _, script = code.partition("_")
    return lang, script or None


def well_formed(code: Any) -> bool:
    """2 or 3 lowercase letters, optionally ``_`` and a 4-letter script (``Xxxx``)."""
    if not isinstance(code, str):
        return False
    lang, script = _split(code)
    ok = 2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha() and lang.islower()
    if script is not None:
        ok = ok and len(script) == 4 and script.isascii() and script.isalpha() and script[0].isupper() \
            and script[1:].islower()
    return ok


def _langcodes(code: str):
    """The ``langcodes.Language`` of a valid ISO 639 code, else None."""
    try:
        import langcodes
    except ImportError:  # pragma: no cover - pinned in pyproject.toml and envs/*.yaml
        return None
    tag = code.replace("_", "-")
    if not langcodes.tag_is_valid(tag):
        return None
    lang = langcodes.Language.get(tag)
    if not lang.language or lang.language_name().startswith("Unknown language"):
        return None
    return lang


def langcodes_name(code: str) -> str | None:
    """The English name CLDR gives the code (``zho_Hans`` -> ``Chinese (Simplified)``), or None."""
    lang = _langcodes(code)
    return lang.display_name() if lang is not None else None


def resolve(code: str) -> dict[str, str] | None:
    """{code, name, family, script (name), flores} of a code outside EC40, or None if unknown.

    The config's entry, else the table's row, else langcodes (family "Other")."""
    if not well_formed(code):
        return None
    found = _resolve(code, _current())  # cached per code and `languages:` (prompts call it per row)
    return dict(found) if found is not None else None


@functools.lru_cache(maxsize=4096)
def _resolve(code: str, _env: str) -> dict[str, str] | None:
    over = overrides().get(code)
    row = _index().get(code)
    lang_subtag, script_subtag = _split(code)
    known = _langcodes(code)
    if over is None and row is None and known is None:
        return None
    name = (over or {}).get("name") or (langcodes_name(code) if known is not None else None) or (row or {}).get("name")
    # the family of the language in another script (srp_Latn: srp_Cyrl's), or of its ISO 639-1 code
    kin = row or _index().get(lang_subtag) or next(
        (r for r in table_rows() if r["code"].split("_")[0] == lang_subtag), None)
    if kin is None and known is not None:
        kin = _index().get(known.language)
    family = (over or {}).get("family") or (kin or {}).get("family") or OTHER
    script = (over or {}).get("script") or script_subtag or (row or {}).get("script")
    if not script and known is not None:
        script = known.maximize().script
    return {"code": code, "name": str(name), "family": str(family), "script": script_name(script or "Zyyy"),
            "flores": (row or {}).get("code") or (code if script_subtag else "")}


def known_codes() -> list[str]:
    """Every code the table and the config know (FLORES codes, ISO 639-1 and unique ISO 639-3 codes)."""
    return sorted(set(_index()) | set(overrides()))


def suggestion(code: str, extra: Mapping[str, str] = ()) -> str:
    """A did-you-mean for an unknown code: close codes, and codes whose name starts like it."""
    names = {c: r["name"] for c, r in _index().items()}
    names.update(dict(extra))
    candidates = sorted(set(names) | set(overrides()))
    close = difflib.get_close_matches(str(code), candidates, n=3, cutoff=0.6)
    low = str(code).lower()
    if low != code and low in names:
        close = [low] + [c for c in close if c != low]
    if len(low) >= 4:  # a language's name, or a misspelling of one: its shortest code
        short: dict[str, str] = {}
        for c, n in sorted(names.items(), key=lambda kv: (len(kv[0]), kv[0])):
            short.setdefault(n.lower(), c)
        by_name = [short[n] for n in short if n.startswith(low)]
        by_name += [short[n] for n in difflib.get_close_matches(low, list(short), n=2, cutoff=0.75)]
        close = list(dict.fromkeys(by_name[:2] + close))[:3]
    if not close:
        return ""
    return "did you mean " + " or ".join(f"{c!r} ({names.get(c) or overrides().get(c, {}).get('name', '')})"
                                          for c in close) + "? "
