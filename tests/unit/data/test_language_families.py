"""The shipped language table's families, checked against Glottolog's classification as URIEL ships it
(``lang2vec``'s ``family_features.npz``: for each ISO 639-3 code, membership in every Glottolog node above
it). A row agrees when its ``family`` names one of the code's Glottolog ancestors (under the few spelling
aliases below); the rows that differ on purpose are listed with their reason, so a new disagreement fails.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from neurospec import lang_codes

# neurospec's label -> the Glottolog node names that mean the same group
ALIASES = {
    "Baltic": {"Eastern Baltic"},  # Lithuanian and Latvian are Glottolog's East Baltic
    "Hellenic": {"Greek"},
    "Aymaran": {"Aymara"},
    "Constructed": {"Artificial Language"},
    "Romance": {"Romance", "Imperial Latin"},  # Glottolog puts Sardinian directly under Imperial Latin
}
# an individual code URIEL lists without a family -> its macrolanguage, which has one
MACRO = {"lvs": "lav", "ltg": "lav", "nno": "nor", "nob": "nor", "twi": "aka"}
# rows that differ from Glottolog on purpose (docs/languages.md says why)
DIFFER = {
    "kan_Knda": "EC40's Indo-Aryan group (Kannada is Dravidian)",
    "hat_Latn": "creoles are grouped as Creole; Glottolog classifies them by their lexifier",
    "kea_Latn": "creole",
    "pap_Latn": "creole",
    "sag_Latn": "creole",
    "tpi_Latn": "creole",
    "eus_Latn": "an isolate: Glottolog gives Basque no family node above it",
}


def _glottolog() -> tuple[dict[str, int], list[str], np.ndarray]:
    spec = importlib.util.find_spec("lang2vec")  # not imported: its __init__ needs pkg_resources
    if spec is None:
        pytest.skip("lang2vec (the test extra) is not installed")
    data = np.load(Path(spec.origin).parent / "data" / "family_features.npz", allow_pickle=True)
    langs = {str(code): i for i, code in enumerate(data["langs"])}
    names = [str(f).removeprefix("F_") for f in data["feats"]]
    return langs, names, data["data"][:, :, 0]


def test_every_family_agrees_with_glottolog_or_is_a_listed_exception():
    langs, names, member = _glottolog()
    disagree, unknown = {}, []
    for row in lang_codes.table_rows():
        iso3 = row["code"].split("_")[0]
        iso3 = MACRO.get(iso3, iso3)
        if iso3 not in langs:
            unknown.append(row["code"])
            continue
        ancestors = {names[j] for j in np.nonzero(member[langs[iso3]] == 1)[0]}
        if not ancestors & ALIASES.get(row["family"], {row["family"]}):
            disagree[row["code"]] = (row["family"], sorted(ancestors))
    assert unknown == []
    assert set(disagree) == set(DIFFER), {c: disagree.get(c) for c in set(disagree) ^ set(DIFFER)}


def test_the_check_catches_a_wrong_family():
    """The check above can fail: Kannada's Glottolog ancestors do not include Indo-Aryan, Hindi's do."""
    langs, names, member = _glottolog()
    ancestors = {c: {names[j] for j in np.nonzero(member[langs[c]] == 1)[0]} for c in ("kan", "hin")}
    assert "Dravidian" in ancestors["kan"] and "Indo-Aryan" not in ancestors["kan"]
    assert "Indo-Aryan" in ancestors["hin"]
