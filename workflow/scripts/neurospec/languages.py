"""The 40 EC40 languages and English: names, families, scripts and resource tiers.

The tiers are EC40's training-data sizes (Tan & Monz, 2023): high 5M sentence pairs with English,
medium 1M, low 100k, extremely low 50k.  EC40 groups its languages into five families of eight,
two per tier; we keep those groups (``family``) and add the linguistic subgroup where EC40's group
is broader than one genus (Kannada is Dravidian, Hausa Chadic, Somali Cushitic, Kabyle Berber...).

Any other ISO 639 language is resolved by ``neurospec.lang_codes`` (the config's ``languages:``, the
shipped FLORES-200 table, langcodes; tier "unknown"); a pair is any two different languages.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .errors import NeurospecError
from .messages import pair_hint

TIERS = ("high", "medium", "low", "extremely-low")
TIER_SIZES = {"high": 5_000_000, "medium": 1_000_000, "low": 100_000, "extremely-low": 50_000}
FAMILIES = ("Germanic", "Romance", "Slavic", "Indo-Aryan", "Afro-Asiatic")


@dataclass(frozen=True)
class Language:
    code: str  # EC40 code (ISO 639-1 where one exists)
    name: str  # English name, as used in prompts
    family: str  # EC40 family group ("English" is Germanic)
    subgroup: str  # linguistic subgroup
    script: str  # ISO 15924 script name
    tier: str  # EC40 resource tier; "pivot" for English


_L = Language
LANGUAGES: dict[str, Language] = {
    lang.code: lang
    for lang in [
        _L("en", "English", "Germanic", "West Germanic", "Latin", "pivot"),
        # Germanic
        _L("de", "German", "Germanic", "West Germanic", "Latin", "high"),
        _L("nl", "Dutch", "Germanic", "West Germanic", "Latin", "high"),
        _L("sv", "Swedish", "Germanic", "North Germanic", "Latin", "medium"),
        _L("da", "Danish", "Germanic", "North Germanic", "Latin", "medium"),
        _L("is", "Icelandic", "Germanic", "North Germanic", "Latin", "low"),
        _L("af", "Afrikaans", "Germanic", "West Germanic", "Latin", "low"),
        _L("lb", "Luxembourgish", "Germanic", "West Germanic", "Latin", "extremely-low"),
        _L("no", "Norwegian", "Germanic", "North Germanic", "Latin", "extremely-low"),
        # Romance
        _L("fr", "French", "Romance", "Gallo-Romance", "Latin", "high"),
        _L("es", "Spanish", "Romance", "Ibero-Romance", "Latin", "high"),
        _L("it", "Italian", "Romance", "Italo-Romance", "Latin", "medium"),
        _L("pt", "Portuguese", "Romance", "Ibero-Romance", "Latin", "medium"),
        _L("ro", "Romanian", "Romance", "Eastern Romance", "Latin", "low"),
        _L("oc", "Occitan", "Romance", "Occitano-Romance", "Latin", "low"),
        _L("ast", "Asturian", "Romance", "Ibero-Romance", "Latin", "extremely-low"),
        _L("ca", "Catalan", "Romance", "Occitano-Romance", "Latin", "extremely-low"),
        # Slavic
        _L("ru", "Russian", "Slavic", "East Slavic", "Cyrillic", "high"),
        _L("cs", "Czech", "Slavic", "West Slavic", "Latin", "high"),
        _L("pl", "Polish", "Slavic", "West Slavic", "Latin", "medium"),
        _L("bg", "Bulgarian", "Slavic", "South Slavic", "Cyrillic", "medium"),
        _L("uk", "Ukrainian", "Slavic", "East Slavic", "Cyrillic", "low"),
        _L("sr", "Serbian", "Slavic", "South Slavic", "Latin", "low"),
        _L("be", "Belarusian", "Slavic", "East Slavic", "Cyrillic", "extremely-low"),
        _L("bs", "Bosnian", "Slavic", "South Slavic", "Latin", "extremely-low"),
        # Indo-Aryan (EC40's group; Kannada is Dravidian)
        _L("hi", "Hindi", "Indo-Aryan", "Central Indo-Aryan", "Devanagari", "high"),
        _L("bn", "Bengali", "Indo-Aryan", "Eastern Indo-Aryan", "Bengali", "high"),
        _L("kn", "Kannada", "Indo-Aryan", "Dravidian", "Kannada", "medium"),
        _L("mr", "Marathi", "Indo-Aryan", "Southern Indo-Aryan", "Devanagari", "medium"),
        _L("sd", "Sindhi", "Indo-Aryan", "Northwestern Indo-Aryan", "Arabic", "low"),
        _L("gu", "Gujarati", "Indo-Aryan", "Western Indo-Aryan", "Gujarati", "low"),
        _L("ne", "Nepali", "Indo-Aryan", "Northern Indo-Aryan", "Devanagari", "extremely-low"),
        _L("ur", "Urdu", "Indo-Aryan", "Central Indo-Aryan", "Arabic", "extremely-low"),
        # Afro-Asiatic
        _L("ar", "Arabic", "Afro-Asiatic", "Semitic", "Arabic", "high"),
        _L("he", "Hebrew", "Afro-Asiatic", "Semitic", "Hebrew", "high"),
        _L("ha", "Hausa", "Afro-Asiatic", "Chadic", "Latin", "medium"),
        _L("mt", "Maltese", "Afro-Asiatic", "Semitic", "Latin", "medium"),
        _L("ti", "Tigrinya", "Afro-Asiatic", "Semitic", "Ethiopic", "low"),
        _L("am", "Amharic", "Afro-Asiatic", "Semitic", "Ethiopic", "low"),
        _L("so", "Somali", "Afro-Asiatic", "Cushitic", "Latin", "extremely-low"),
        _L("kab", "Kabyle", "Afro-Asiatic", "Berber", "Latin", "extremely-low"),
    ]
}
EC40_LANGUAGES: tuple[str, ...] = tuple(c for c in LANGUAGES if c != "en")
PIVOT = "en"

# EC40 code -> FLORES-200 / FLORES+ code (ISO 639-3 and ISO 15924), as FLORES+ names its configs.
# FLORES writes Norwegian as Bokmal (nob), Nepali as npi, Arabic as Modern Standard Arabic (arb), and
# Serbian in Cyrillic only: EC40's Serbian is Latin, so sr -> srp_Cyrl changes the script.
FLORES_CODES: dict[str, str] = {
    "en": "eng_Latn",
    "de": "deu_Latn", "nl": "nld_Latn", "sv": "swe_Latn", "da": "dan_Latn",
    "is": "isl_Latn", "af": "afr_Latn", "lb": "ltz_Latn", "no": "nob_Latn",
    "fr": "fra_Latn", "es": "spa_Latn", "it": "ita_Latn", "pt": "por_Latn",
    "ro": "ron_Latn", "oc": "oci_Latn", "ast": "ast_Latn", "ca": "cat_Latn",
    "ru": "rus_Cyrl", "cs": "ces_Latn", "pl": "pol_Latn", "bg": "bul_Cyrl",
    "uk": "ukr_Cyrl", "sr": "srp_Cyrl", "be": "bel_Cyrl", "bs": "bos_Latn",
    "hi": "hin_Deva", "bn": "ben_Beng", "kn": "kan_Knda", "mr": "mar_Deva",
    "sd": "snd_Arab", "gu": "guj_Gujr", "ne": "npi_Deva", "ur": "urd_Arab",
    "ar": "arb_Arab", "he": "heb_Hebr", "ha": "hau_Latn", "mt": "mlt_Latn",
    "ti": "tir_Ethi", "am": "amh_Ethi", "so": "som_Latn", "kab": "kab_Latn",
}


def flores(code: str) -> str:
    """The FLORES-200 / FLORES+ code of a language (``de`` -> ``deu_Latn``, ``ja`` -> ``jpn_Jpan``):
    ``FLORES_CODES`` for EC40, else the shipped table; a code the table lacks is returned as it is."""
    from . import lang_codes

    return FLORES_CODES.get(code) or lang_codes.flores_code(code) or code


def language(code: str, key: str | None = None) -> Language:
    """EC40's entry of ``code``, else any ISO 639 language (``neurospec.lang_codes``: the config's
    ``languages:``, the shipped table, langcodes), its tier "unknown".  An unknown code is one line
    with a did-you-mean; ``key`` names the config key it came from."""
    from . import lang_codes

    over = lang_codes.overrides().get(code) if isinstance(code, str) else None
    if code in LANGUAGES and not over:
        return LANGUAGES[code]
    found = lang_codes.resolve(code)
    if found is None:
        where = f" in {key}" if key else ""
        raise NeurospecError(
            f"unknown language code {code!r}{where}; {lang_codes.suggestion(code, EC40_NAMES)}"
            f"{lang_codes.CODE_FORMAT}; {lang_codes.PAIR_FORMAT}; a language neurospec does not know "
            f"can be named under 'languages:' in the config"
        )
    if code in LANGUAGES:  # the config renames an EC40 language: its tier stays
        ec = LANGUAGES[code]
        return Language(code, found["name"], over.get("family") or ec.family, ec.subgroup,
                        lang_codes.script_name(over.get("script") or ec.script), ec.tier)
    return Language(code, found["name"], found["family"], "", found["script"], lang_codes.UNKNOWN_TIER)


EC40_NAMES = {code: lang.name for code, lang in LANGUAGES.items()}


def parse_pair(pair: str) -> tuple[str, str]:
    """``"en-de"`` -> ``("en", "de")``: any two different languages (``de-fr``, ``zho_Hans-en``);
    English-centric pairs are EC40's reference, not a rule."""
    from . import lang_codes

    parts = pair.split("-") if isinstance(pair, str) else []
    if len(parts) != 2 or not all(parts):
        raise NeurospecError(f"malformed pair {pair!r} in 'pairs': {pair_hint(pair)}")
    src, tgt = parts
    for code in (src, tgt):
        language(code, key=f"pair {pair!r} (key 'pairs')")
    if src == tgt:
        raise NeurospecError(f"pair {pair!r} in 'pairs' has the same language on both sides; "
                             f"{lang_codes.PAIR_FORMAT}")
    return src, tgt


def non_english(pair: str) -> str:
    """The pair's language other than English; a pair without English: its source language (the
    language figures and correlations file the pair under)."""
    src, tgt = parse_pair(pair)
    return tgt if src == PIVOT else src


# collect.token_scope: which tokens of a pair's prompt collection counts
TOKEN_SCOPES = ("source", "all", "target")


def counted_language(src_lang: str, tgt_lang: str, token_scope: str = "source") -> str:
    """The language whose tokens collection counts for the pair ``src_lang``-``tgt_lang``.

    ``target``: the reference translation fed in after the prompt, so the target language (en-de
    counts German as it is produced); ``source``: the source sentence; ``all``: the whole prompt,
    whose sentence is the source, so the source language too.  Language pooling
    (``scoring.pool_by_language``) and ablation group by this language.
    """
    if token_scope not in TOKEN_SCOPES:
        raise NeurospecError(f"collect.token_scope {token_scope!r}: choose one of {', '.join(TOKEN_SCOPES)}")
    return tgt_lang if token_scope == "target" else src_lang


def group_language(group: str, token_scope: str = "source") -> str:
    """The language a scoring group's neurons were selected on: a language group itself; for a pair
    (``src-tgt``), the language whose tokens collection counted (``counted_language``)."""
    if "-" not in group:
        return group
    return counted_language(*parse_pair(group), token_scope)


DIRECTIONS = ("en-xx", "xx-en", "xx-yy")


def direction(pair: str) -> str:
    """``"en-xx"`` (out of English), ``"xx-en"`` (into English) or ``"xx-yy"`` (no English side)."""
    src, tgt = parse_pair(pair)
    return "en-xx" if src == PIVOT else "xx-en" if tgt == PIVOT else "xx-yy"


def language_table(codes=()) -> pd.DataFrame:
    """One row per language: code, name, family, subgroup, script, tier, tier_size; EC40's
    languages and English, then ``codes`` outside them (neurospec.lang_codes)."""
    extra = [language(c) for c in dict.fromkeys(codes) if c not in LANGUAGES]
    df = pd.DataFrame([vars(language(c)) for c in LANGUAGES] + [vars(lang) for lang in extra])
    df["tier_size"] = df["tier"].map(TIER_SIZES).astype("Int64")
    return df


def family_order() -> tuple[str, ...]:
    """EC40's five families, then the shipped table's other families (alphabetical), then "Other"."""
    from . import lang_codes

    more = sorted({row["family"] for row in lang_codes.table_rows()} - set(FAMILIES) - {lang_codes.OTHER})
    return FAMILIES + tuple(more) + (lang_codes.OTHER,)


def family_rank(family: str) -> int:
    """A family's place in ``family_order`` (a family the config names but no table knows: before
    "Other")."""
    order = family_order()
    return order.index(family) if family in order else len(order) - 1


def families_in_order(families) -> list[str]:
    """The distinct families of ``families`` in figure order (legends)."""
    return sorted(set(families), key=lambda f: (family_rank(f), f))


def sort_key(code: str) -> tuple[int, int, str]:
    """Order languages by family, then tier (high first), then code: the order figures use."""
    lang = language(code)
    fam = family_rank(lang.family) if code != PIVOT else -1
    tier = TIERS.index(lang.tier) if lang.tier in TIERS else len(TIERS)
    return (fam, tier, code)


def sort_pairs(pairs: list[str]) -> list[str]:
    """en->xx pairs first, then xx->en, then pairs without English, each by family and tier of the
    language they are filed under (``non_english``), then the other side."""
    return sorted(pairs, key=lambda p: (DIRECTIONS.index(direction(p)), sort_key(non_english(p)), p))
