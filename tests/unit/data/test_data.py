"""Pair tables: the EC40 files (line counts, empty lines, detokenization, both directions) and the demo."""

from __future__ import annotations

import hashlib

import pytest

from neurospec.data import demo, ec40, pairs
from neurospec.errors import NeurospecError
from neurospec.languages import EC40_LANGUAGES, LANGUAGES, language_table, parse_pair


def _lines(path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


@pytest.mark.parametrize(("split", "xx", "n_lines"), [
    ("validation", "de", 1997), ("validation", "ast", 109), ("validation", "kab", 792), ("validation", "oc", 842),
    ("test", "am", 2009), ("test", "sr", 2009),
])
def test_ec40_line_counts_and_empty_lines(ec40_dir, split, xx, n_lines):
    en_path, xx_path = ec40.fetch_files(split, xx, local_dir=ec40_dir)
    en, other = _lines(en_path), _lines(xx_path)
    assert len(en) == len(other) == n_lines
    n_empty = sum(1 for a, b in zip(en, other) if not a.strip() or not b.strip())
    df, stats = ec40.build_pair_table(f"en-{xx}", split, local_dir=ec40_dir)
    assert stats["n_lines_read"] == n_lines and stats["n_empty_dropped"] == n_empty
    assert len(df) == n_lines - n_empty
    assert df["src"].str.strip().ne("").all() and df["tgt"].str.strip().ne("").all()


def test_ec40_has_empty_lines_in_ast_and_oc(ec40_dir):
    for xx in ("ast", "oc"):
        _, stats = ec40.build_pair_table(f"{xx}-en", "validation", local_dir=ec40_dir)
        assert stats["n_empty_dropped"] > 0


def test_ec40_detokenization_and_directions(ec40_dir):
    raw, _ = ec40.build_pair_table("en-de", "validation", local_dir=ec40_dir, detokenize=False, max_samples=50)
    det, _ = ec40.build_pair_table("en-de", "validation", local_dir=ec40_dir, max_samples=50)
    rev, _ = ec40.build_pair_table("de-en", "validation", local_dir=ec40_dir, max_samples=50)
    assert raw["src"].str.contains(" , ").any() and not det["src"].str.contains(" , ").any()
    assert raw["src"].str.contains("@-@").any() and not det["src"].str.contains("@-@").any()
    # line 2 of NTREX de: 'Bei einigen ... Vorschlag , ihren Titel in " MWP " ( Member ...'
    assert det.loc[det["id"] == 1, "tgt"].item().startswith("Bei einigen Nationalversammlungsmitgliedern löst "
                                                            "der Vorschlag, ihren Titel in \"MWP\" (Member")
    assert (rev["src"].tolist(), rev["tgt"].tolist()) == (det["tgt"].tolist(), det["src"].tolist())
    assert set(rev["src_lang"]) == {"de"} and set(rev["tgt_lang"]) == {"en"}
    assert raw["id"].tolist() == list(range(50))


def test_ec40_max_samples_is_the_first_non_empty_lines(ec40_dir):
    full, _ = ec40.build_pair_table("oc-en", "validation", local_dir=ec40_dir)
    head, stats = ec40.build_pair_table("oc-en", "validation", local_dir=ec40_dir, max_samples=300)
    assert head.equals(full.head(300)) and stats["max_samples"] == 300


def test_ec40_layout_covers_all_forty_languages(ec40_dir):
    for xx in EC40_LANGUAGES:
        for split in ("validation", "test"):
            en_path, xx_path = ec40.fetch_files(split, xx, local_dir=ec40_dir)
            assert en_path.is_file() and xx_path.is_file()


def test_demo_corpus_is_real_translations_in_both_splits():
    df_v, stats = demo.build_pair_table("en-de", "validation")
    df_t, _ = demo.build_pair_table("en-de", "test")
    assert not set(df_v["src"]) & set(df_t["src"])
    row = df_v[df_v["src"] == "Germany"]
    if row.empty:
        row = df_t[df_t["src"] == "Germany"]
    assert row["tgt"].item() == "Deutschland"
    rev, _ = demo.build_pair_table("de-en", "validation")
    assert rev["src"].tolist() == df_v["tgt"].tolist()
    assert len(demo.available_languages()) == 39 and "lb" not in demo.available_languages()


def test_demo_corpus_is_deterministic(repo_root):
    """The corpus built in a fresh interpreter (other hash seed) is the same, text for text."""
    import os
    import subprocess
    import sys

    code = ("import hashlib; from neurospec.data import demo; "
            "print(hashlib.sha256('\\n'.join(demo.corpus_texts()).encode()).hexdigest())")
    env = {**os.environ, "PYTHONPATH": str(repo_root / "workflow" / "scripts"), "PYTHONHASHSEED": "123"}
    other = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    digest = hashlib.sha256("\n".join(demo.corpus_texts()).encode()).hexdigest()
    assert other.stdout.strip() == digest
    a, _ = demo.build_pair_table("hi-en", "validation", max_samples=100)
    assert len(a) == 100 and a["id"].is_monotonic_increasing


def test_language_metadata():
    table = language_table()
    assert len(table) == 41 and set(table["code"]) == set(LANGUAGES)
    ec = table[table["code"] != "en"]
    assert ec.groupby("family").size().to_dict() == {f: 8 for f in ec["family"].unique()}
    assert ec.groupby(["family", "tier"]).size().eq(2).all()
    assert LANGUAGES["kn"].script == "Kannada" and LANGUAGES["sr"].script == "Latin"


@pytest.mark.parametrize(("pair", "message"), [
    ("en-xx", "unknown language code 'xx'"), ("ende", "malformed pair"), ("de-de", "the same language on both sides"),
])
def test_bad_pairs(pair, message):
    with pytest.raises(NeurospecError, match=message):
        parse_pair(pair)


def test_bad_split_and_missing_empty_unequal_files(tmp_path):
    """EC40-layout files written here: the error paths never depend on ../shared."""
    with pytest.raises(NeurospecError, match="dataset.split 'train': the demo dataset has only"):
        pairs.build_pair_table("en-de", {"name": "demo", "split": "train"})
    with pytest.raises(NeurospecError, match="dataset.split 'dev': EC40 has no such split"):
        pairs.build_pair_table("en-de", {"name": "ec40", "split": "dev", "local_dir": str(tmp_path / "ec40")})
    root = tmp_path / "ec40" / "Ntrex-eval-set"
    root.mkdir(parents=True)
    cfg = {"name": "ec40", "split": "validation", "local_dir": str(tmp_path / "ec40")}
    with pytest.raises(NeurospecError, match=r"dataset file .*test.en-de.en is missing"):
        pairs.build_pair_table("en-de", cfg)
    (root / "test.en-de.en").write_text("")
    (root / "test.en-de.de").write_text("")
    with pytest.raises(NeurospecError, match="hold no non-empty sentence pair"):
        pairs.build_pair_table("en-de", cfg)
    (root / "test.en-de.en").write_text("a\nb\nc\n")
    (root / "test.en-de.de").write_text("x\ny\n")
    with pytest.raises(NeurospecError, match=r"unequal lengths: .*test.en-de.en has 3 lines, .*test.en-de.de has 2 "
                                             r"\(.*test.en-de.de ends at line 2; line 3 is only in .*test.en-de.en\)"):
        pairs.build_pair_table("en-de", cfg)
    with pytest.raises(NeurospecError, match="unequal lengths"):  # whatever max_samples is
        pairs.build_pair_table("en-de", {**cfg, "max_samples": 1})
