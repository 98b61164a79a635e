"""Language identification of texts (model outputs) with heliport, and the project's codes in its labels.

heliport (PyPI ``heliport``, pinned) ships its model inside the wheel: 220 languages, offline, no
download.  Its labels are ISO 639-3 codes without a script (``deu``, ``cmn``, ``hbs``), plus two of
its own: ``und`` (best guess below heliport's per-language confidence threshold) and ``zxx`` (no
linguistic content: empty, digits, punctuation).  Neither counts as identified.

``TARGET_LABELS`` maps each EC40 code (and English) to the heliport labels that count as that
language.  Where heliport knows only the macrolanguage, the macrolanguage counts: Serbian and
Bosnian are both ``hbs`` (Serbo-Croatian; heliport does not tell them, or Croatian, apart, in either
script), Norwegian is Bokmal or Nynorsk.  Three EC40 languages have no heliport label at all
(``NOT_COVERED``): Asturian (``ast``), Hausa (``hau``) and Kabyle (``kab``); their outputs get a label
but an off-target rate is not defined for them (NaN, ``lid_covered`` false), never counted as wrong.
``coverage()`` recomputes the covered set from the label set of the installed heliport.
"""

from __future__ import annotations

import functools
import logging
from typing import Iterable, Sequence

from . import languages as L
from .errors import NeurospecError

logger = logging.getLogger("neurospec")

# heliport's own labels that name no language: below the confidence threshold, no linguistic content
UNDETERMINED = ("und", "zxx")

# project code -> heliport labels that count as that language (ISO 639-3; the first is the code's own)
TARGET_LABELS: dict[str, tuple[str, ...]] = {
    "en": ("eng",),
    "de": ("deu",), "nl": ("nld",), "sv": ("swe",), "da": ("dan",), "is": ("isl",), "af": ("afr",),
    "lb": ("ltz",), "no": ("nob", "nno"),
    "fr": ("fra",), "es": ("spa",), "it": ("ita",), "pt": ("por",), "ro": ("ron",), "oc": ("oci",),
    "ast": ("ast",), "ca": ("cat",),
    "ru": ("rus",), "cs": ("ces",), "pl": ("pol",), "bg": ("bul",), "uk": ("ukr",), "sr": ("hbs",),
    "be": ("bel",), "bs": ("hbs",),
    "hi": ("hin",), "bn": ("ben",), "kn": ("kan",), "mr": ("mar",), "sd": ("snd",), "gu": ("guj",),
    "ne": ("nep",), "ur": ("urd",),
    "ar": ("ara",), "he": ("heb",), "ha": ("hau",), "mt": ("mlt",), "ti": ("tir",), "am": ("amh",),
    "so": ("som",), "kab": ("kab",),
}
# the languages heliport 1.0.1 has no label for (tests/unit/core/test_lid.py recomputes this from heliport itself)
NOT_COVERED: tuple[str, ...] = ("ast", "ha", "kab")
# the languages heliport identifies only as their macrolanguage, shared with another language
MACROLANGUAGE: dict[str, str] = {"sr": "hbs", "bs": "hbs"}


@functools.lru_cache(maxsize=2)
def identifier():
    """heliport's Identifier, loaded once per process (about 1 to 5 s: it maps its n-gram model files)."""
    try:
        import heliport
    except ImportError as exc:  # a broken install, not the user's data
        raise NeurospecError(f"language identification needs heliport (pip install heliport==1.0.1): {exc}") from None
    return heliport.Identifier()


def labels() -> frozenset[str]:
    """Every label the installed heliport can return (its languages plus ``und`` and ``zxx``)."""
    return frozenset(identifier().identify_topk("label set", 100_000)) | frozenset(UNDETERMINED)


# ISO 639-3 individual language (as FLORES names it) -> the labels heliport may give it instead
MORE_LABELS: dict[str, tuple[str, ...]] = {
    "zho": ("cmn", "zho"), "cmn": ("cmn", "zho"), "arb": ("ara", "arb"), "pes": ("fas", "pes"),
    "prs": ("fas", "prs"), "zsm": ("msa", "zsm"), "npi": ("nep", "npi"), "lvs": ("lav", "lvs"),
    "swh": ("swa", "swh"), "uzn": ("uzb", "uzn"), "khk": ("mon", "khk"), "azj": ("aze", "azj"),
    "als": ("sqi", "als"), "plt": ("mlg", "plt"), "gaz": ("orm", "gaz"), "pbt": ("pus", "pbt"),
    "ydd": ("yid", "ydd"), "quy": ("que", "quy"), "ayr": ("aym", "ayr"), "hrv": ("hbs", "hrv"),
}


def target_labels(code: str) -> tuple[str, ...]:
    """heliport labels that count as the project language ``code`` (unknown code: one-line error).
    A language outside EC40: its ISO 639-3 code (``ja`` -> ``jpn``) and its macrolanguage's."""
    L.language(code)
    if code in TARGET_LABELS:
        return TARGET_LABELS[code]
    iso3 = L.flores(code).split("_")[0]
    if len(iso3) != 3:  # no table row: langcodes' ISO 639-3 form of the code
        import langcodes

        iso3 = langcodes.Language.get(code.replace("_", "-")).to_alpha3()
    return MORE_LABELS.get(iso3, (iso3,))


def coverage(known: Iterable[str] | None = None) -> dict[str, bool]:
    """Project code -> whether heliport has a label for it (``known``: a label set, default heliport's)."""
    known = labels() if known is None else frozenset(known)
    return {code: any(label in known for label in TARGET_LABELS[code]) for code in L.LANGUAGES}


def covered(code: str) -> bool:
    """Whether an output's language can be checked against ``code`` (False for NOT_COVERED)."""
    accepted = target_labels(code)
    if code in TARGET_LABELS:
        return code not in NOT_COVERED
    return any(label in labels() for label in accepted)


def identify(texts: Sequence[str], *, threshold: bool = True, batch_size: int = 4096) -> list[str]:
    """heliport's label of every text, in order (batched; ``threshold``: heliport's confidence thresholds,
    below which a text is ``und``).  An empty or non-linguistic text is ``zxx``."""
    ident = identifier()
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        batch = ["" if t is None else str(t) for t in texts[start:start + batch_size]]
        out.extend(ident.par_identify(batch, ignore_confidence=not threshold))
    return out


def on_target(labels_: Sequence[str], code: str) -> list[bool | None]:
    """Per label: True if it is ``code``'s language, False if another language, None if undetermined
    (``und``/``zxx``) or if heliport does not cover ``code`` at all."""
    accepted = set(target_labels(code))
    if not covered(code):
        return [None] * len(labels_)
    return [None if lab in UNDETERMINED else lab in accepted for lab in labels_]
