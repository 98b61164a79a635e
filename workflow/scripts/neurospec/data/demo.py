"""The embedded demo corpus: translations that pycountry ships, paired with their English originals.

pycountry carries gettext catalogs for ISO 3166 (countries and subdivisions), ISO 4217 (currencies),
ISO 15924 (scripts) and ISO 639 (languages) in over a hundred locales, 39 of the 40 EC40 languages
among them (not Luxembourgish).  Each catalog entry is a real human translation of an English name:
a short but genuine parallel corpus that needs no download.

Entries that a catalog leaves identical to English are skipped (mostly untranslated).  Entries are
ordered by catalog (countries first) and English text; the split is a hash of the English text,
so an entry falls into the same split in every language: ``validation`` or ``test``.
"""

from __future__ import annotations

import gettext
import os
import zlib
from functools import lru_cache

import pandas as pd

from ..errors import NeurospecError
from ..languages import EC40_LANGUAGES, PIVOT, parse_pair

CATALOGS = ("iso3166-1", "iso3166-3", "iso4217", "iso15924", "iso639-5", "iso639-3", "iso3166-2")
SPLITS = ("validation", "test")
LOCALES = {"no": "nb_NO"}  # EC40 code -> pycountry locale where they differ


def _locale_dir() -> str:
    import pycountry

    return pycountry.LOCALES_DIR


@lru_cache(maxsize=None)
def translations(lang: str) -> tuple[tuple[str, str, str], ...]:
    """``(catalog, english, translation)`` for every translated entry of ``lang``, in corpus order."""
    locale = LOCALES.get(lang, lang)
    out = []
    for catalog in CATALOGS:
        path = os.path.join(_locale_dir(), locale, "LC_MESSAGES", f"{catalog}.mo")
        if not os.path.exists(path):
            continue
        with open(path, "rb") as fh:
            entries = gettext.GNUTranslations(fh)._catalog  # msgid -> msgstr
        for en, xx in sorted((k, v) for k, v in entries.items() if isinstance(k, str)):
            en, xx = en.strip(), xx.strip()
            if en and xx and en != xx:
                out.append((catalog, en, xx))
    return tuple(out)


def available_languages() -> list[str]:
    return [lang for lang in EC40_LANGUAGES if translations(lang)]


def split_of(english: str) -> str:
    return SPLITS[zlib.crc32(english.encode("utf-8")) % len(SPLITS)]


def build_pair_table(pair: str, split: str, *, max_samples: int | None = None) -> tuple[pd.DataFrame, dict]:
    """The demo pair table of one direction; ``max_samples`` keeps the first N entries in corpus order."""
    if split not in SPLITS:
        raise NeurospecError(f"dataset.split {split!r}: the demo dataset has only {', '.join(SPLITS)}")
    src_lang, tgt_lang = parse_pair(pair)
    sides = {}
    for lang in (src_lang, tgt_lang):
        if lang == PIVOT:
            continue
        sides[lang] = translations(lang)
        if not sides[lang]:
            raise NeurospecError(
                f"pair {pair!r}: pycountry ships no translations for {lang!r}; the demo covers "
                f"{', '.join(available_languages())}"
            )
    # a pair without English: the entries both languages translate, matched by their English original
    first = next(iter(sides.values()))
    other = {(c, en): tr for c, en, tr in sides[tgt_lang]} if len(sides) == 2 else None
    entries = first
    rows = []
    for i, (catalog, en, tr) in enumerate(first):
        if split_of(en) != split:
            continue
        if other is not None:
            if (catalog, en) not in other:
                continue
            s, t = tr, other[(catalog, en)]
        else:
            s, t = (en, tr) if src_lang == PIVOT else (tr, en)
        rows.append((i, src_lang, tgt_lang, s, t))
        if max_samples is not None and len(rows) >= max_samples:
            break
    df = pd.DataFrame(rows, columns=["id", "src_lang", "tgt_lang", "src", "tgt"])
    stats = {
        "dataset": "demo",
        "split": split,
        "source": "pycountry " + _pycountry_version(),
        "dataset_revision": "pycountry " + _pycountry_version(),
        "detokenize": False,
        "n_lines_read": len(entries),
        "n_empty_dropped": 0,
        "dropped": {"empty_src": 0, "empty_tgt": 0, "empty_both": 0},  # the names are never empty
        "max_samples": max_samples,
    }
    return df, stats


def corpus_texts() -> list[str]:
    """Every sentence of the demo corpus, English and all languages, for training the demo tokenizer."""
    texts: list[str] = []
    seen_en: set[str] = set()
    for lang in available_languages():
        for _, en, tr in translations(lang):
            if en not in seen_en:
                seen_en.add(en)
                texts.append(en)
            texts.append(tr)
    return texts


def _pycountry_version() -> str:
    from importlib.metadata import version

    return version("pycountry")


def build_model(out_dir: str, **shapes) -> None:
    """The demo model: its BPE tokenizer trained on this corpus, seeded random weights (rule build_demo_model)."""
    from ..models import build_demo_model

    build_demo_model(out_dir, corpus_texts(), **shapes)
