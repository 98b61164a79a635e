"""Corpus integrity as a contract (issue #19): lines split at \\n only, BOMs stripped and reported, other
encodings one line naming file, byte offset and line, a JSON object lacking a key is an error, and
every dropped row counted by cause.  Unit tests of the readers first, then the user's path: Snakemake
with a config on files the tests write."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from neurospec.data import ec40, pairs, readers
from neurospec.errors import NeurospecError
from neurospec.tables import read_metadata, read_table
from workflow_utils import snakemake

N = 60
EN = [f"Sentence {k} in English." for k in range(1, N + 1)]
DE = [f"Satz {k} auf Deutsch." for k in range(1, N + 1)]


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


def number(text: str) -> int:
    return int(re.search(r"(?:Sentence|Satz) (\d+)", text).group(1))


def write_bytes(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def hostile_cr(en=EN, de=DE):
    """The report's corpus: a stray \\r inside en line 5 and de line 40 (wc -l: 60/60; universal newlines: 61/61)."""
    en, de = list(en), list(de)
    en[4] = "One\r" + en[4]
    de[39] = "Vierzig\r" + de[39]
    return en, de


def utf8(lines) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


# -- the readers -------------------------------------------------------------------------------------------------


def test_line_separators_are_everything_splitlines_splits_on_but_newline():
    splitting = {chr(c) for c in range(0x110000) if 0xD800 > c or c > 0xDFFF
                 if len(f"a{chr(c)}b".splitlines()) == 2}
    assert splitting - {"\n"} == set(readers.LINE_SEPARATORS)


def test_iter_lines_splits_at_newline_only_and_reports(tmp_path):
    inner = ["a\rb", "c\x0bd", "e\x0cf", "g\x1ch", "i\x1dj", "k\x1el", "m\x85n", "o\u2028p", "q\u2029r"]
    raw = "\ufeff" + "first\r\n" + "".join(f"{s}\n" for s in inner) + "crlf\r\n" + "last, no newline"
    path = write_bytes(tmp_path / "f.txt", raw.encode("utf-8"))
    scan = readers.FileScan(str(path))
    lines = list(readers.iter_lines(path, scan=scan))
    assert len(raw.splitlines()) > len(lines)  # universal newlines would have split them
    assert len(lines) == path.read_bytes().count(b"\n") + 1  # wc -l, plus the last line without newline
    assert lines == ["first"] + [re.sub(r"[^a-z]", " ", s) for s in inner] + ["crlf", "last, no newline"]
    assert (scan.n_lines, scan.bom, scan.crlf_lines, scan.separator_lines) == (12, True, 2, 9)
    assert scan.first_separator_lines == list(range(2, 11))[:10]
    assert readers.count_lines(path) == 12
    # a BOM only at the start of the file is the file's; a \r without \n at the end is a separator
    path = write_bytes(tmp_path / "g.txt", b"x\r\ny\r")
    assert readers.read_lines(path)[0] == ["x", "y "]


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 24])
def test_scan_in_blocks_finds_what_reading_line_by_line_finds(tmp_path, chunk):
    """scan_file (blocks cut after a \\n, for speed) and iter_lines (line by line) agree on every count."""
    lines = ["\ufeffBOM first", "plain", "two\rcarriage\rreturns", "", "nel\x85", "ls\u2028ps\u2029", "é ü ß",
             "\r", "\r\x0b\x0c", *[f"filler {k}" for k in range(12)], *[f"sep\x1c{k}" for k in range(12)]]
    endings = ["\n", "\r\n"]
    raw = "".join(line + endings[k % 2] for k, line in enumerate(lines)) + "tail\r"
    path = write_bytes(tmp_path / "h.txt", raw.encode("utf-8"))
    by_line = readers.FileScan(str(path))
    read = list(readers.iter_lines(path, scan=by_line))
    by_block = readers.scan_file(path, chunk=chunk)
    assert by_block == by_line and by_block.n_lines == len(read) == len(lines) + 1
    assert (by_block.crlf_lines, by_block.separator_lines, by_block.bom) == (len(lines) // 2, 18, True)
    assert by_block.first_separator_lines == [3, 5, 6, 8, 9, 22, 23, 24, 25, 26]
    bad = write_bytes(tmp_path / "bad.txt", raw.encode("utf-8") + "\nStraße\n".encode("latin-1"))
    with pytest.raises(NeurospecError) as by_block_exc:
        readers.scan_file(bad, chunk=chunk)
    with pytest.raises(NeurospecError) as by_line_exc:
        list(readers.iter_lines(bad))
    assert str(by_block_exc.value) == str(by_line_exc.value)
    assert f"byte offset {len(raw.encode()) + 5} (line {len(lines) + 2})" in str(by_line_exc.value)


def test_decoding_error_names_file_byte_offset_and_line(tmp_path):
    lines = ["Hello", "Grüße", "Straße", "Ende"]
    raw = "".join(f"{s}\n" for s in lines).encode("latin-1")
    path = write_bytes(tmp_path / "de.txt", raw)
    offset = raw.index("ü".encode("latin-1"))  # the first byte UTF-8 cannot decode
    line = raw[:offset].count(b"\n") + 1
    with pytest.raises(NeurospecError) as exc:
        readers.scan_file(path)
    assert one_line(exc) == (f"dataset file {path} is not UTF-8: byte 0xfc at byte offset {offset} (line {line}) "
                             f"cannot be decoded; set dataset.files.encoding to the file's encoding (e.g. latin-1, "
                             f"cp1252) or convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)")
    assert (offset, line) == (8, 2)  # "Hello\n" is 6 bytes, "Gr" 2
    assert readers.read_lines(path, readers.check_encoding("latin-1"))[0] == lines
    # the error comes from the full read, before any pair: the bad byte on the last line, max_samples 1
    write_bytes(tmp_path / "x.en", utf8(["a", "b", "c"]))
    write_bytes(tmp_path / "x.de", utf8(["a", "b"]) + "ç\n".encode("latin-1"))
    with pytest.raises(NeurospecError, match=r"x.de is not UTF-8: byte 0xe7 at byte offset 4 \(line 3\)"):
        pairs.build_pair_table("en-de", {"name": "files", "split": "x", "max_samples": 1,
                                         "files": {"path": str(tmp_path / "{split}.{lang}")}})


def test_encodings_and_byte_order_marks_that_cannot_be_read(tmp_path):
    assert readers.check_encoding(None) == "utf-8" and readers.check_encoding("UTF-8-SIG") == "utf-8"
    assert readers.check_encoding("Latin-1") == "iso8859-1" and readers.check_encoding("cp1252") == "cp1252"
    for bad, why in (("klingon", "is not a text encoding Python knows"), ("rot13", "is not a text encoding"),
                     ("utf-16", "is not supported (lines are split at the byte 0x0A)")):
        with pytest.raises(NeurospecError, match=rf"key 'dataset.files.encoding': '{bad}' {re.escape(why)}") as exc:
            readers.check_encoding(bad)
        one_line(exc)
    with pytest.raises(NeurospecError, match=r"key 'dataset.files.encoding': 'klingon'"):
        pairs.check_dataset({"name": "files", "files": {"path": "c/{split}.{lang}", "encoding": "klingon"}},
                            ["en-de"], "dev")
    utf16 = write_bytes(tmp_path / "w.txt", "Hallo\nWelt\n".encode("utf-16"))
    with pytest.raises(NeurospecError, match=r"w.txt starts with a UTF-16 byte order mark .*iconv -f UTF-16"):
        readers.scan_file(utf16)
    bom8 = write_bytes(tmp_path / "b.txt", utf8(["\ufeffHallo"]))
    with pytest.raises(NeurospecError, match=r"b.txt starts with a UTF-8 byte order mark but is read as "
                                             r"iso8859-1 .*: it is UTF-8"):
        readers.scan_file(bom8, "iso8859-1")
    mac = write_bytes(tmp_path / "mac.txt", b"one\rtwo\rthree\r")
    with pytest.raises(NeurospecError, match=r"mac.txt ends its lines with \\r only \(classic Mac OS\)"):
        readers.scan_file(mac)


def test_ec40_files_that_do_not_decode_name_the_damaged_copy(tmp_path):
    root = tmp_path / "ec40"
    write_bytes(root / ec40.remote_path("validation", "de", "en"), utf8(EN[:3]))
    write_bytes(root / ec40.remote_path("validation", "de", "de"), utf8(DE[:2]) + b"\xff\n")
    with pytest.raises(NeurospecError) as exc:
        pairs.build_pair_table("en-de", {"name": "ec40", "split": "validation", "local_dir": str(root)})
    msg = one_line(exc)
    offset = len(utf8(DE[:2]))
    assert f"is not UTF-8: byte 0xff at byte offset {offset} (line 3)" in msg and "EC40's files are UTF-8" in msg


def test_boms_stripped_in_text_tsv_and_jsonl_and_reported(tmp_path):
    bom = "\ufeff"
    text = {lang: write_bytes(tmp_path / "t" / f"dev.{lang}", utf8([bom + lines[0], *lines[1:5]]))
            for lang, lines in (("en", EN), ("de", DE))}
    tsv = write_bytes(tmp_path / "en-de.tsv", utf8([bom + "en\tde"] + [f"{e}\t{d}" for e, d in zip(EN[:5], DE)]))
    jsonl = write_bytes(tmp_path / "de-en.jsonl", (bom + "\n".join(json.dumps({"en": e, "de": d})
                                                                   for e, d in zip(EN[:5], DE))).encode())
    for path, files in ((text["en"], str(tmp_path / "t" / "{split}.{lang}")), (tsv, str(tsv)), (jsonl, str(jsonl))):
        df, stats = pairs.build_pair_table("en-de", {"name": "files", "split": "dev", "files": {"path": files}})
        assert df["src"].tolist() == EN[:5] and df["tgt"].tolist() == DE[:5], path
        assert str(path) in stats["bom_stripped"] and stats["text_files"][str(path)]["bom_stripped"] is True
    assert stats["bom_stripped"] == [str(jsonl)]  # and no file without one
    # a sentence (a Parquet cell) that starts with a BOM: stripped and counted
    import pandas as pd

    pd.DataFrame({"en": [bom + EN[0], EN[1]], "de": [bom + DE[0], bom + DE[1]]}).to_parquet(tmp_path / "p.parquet")
    df, stats = pairs.build_pair_table("de-en", {"name": "files", "split": "dev",
                                                 "files": {"path": str(tmp_path / "p.parquet")}})
    assert df["src"].tolist() == DE[:2] and df["tgt"].tolist() == EN[:2]
    assert stats["bom_stripped_sentences"] == 3 and stats["bom_stripped"] == [] and stats["text_files"] == {}


@pytest.mark.parametrize("max_samples", [1, None])
def test_jsonl_object_without_a_language_key_is_an_error(tmp_path, max_samples):
    rows = [json.dumps({"en": e, "de": d}) for e, d in zip(EN[:6], DE)]
    rows[4] = json.dumps({"en": EN[4]})  # no "de"
    path = write_bytes(tmp_path / "en-de.jsonl", utf8(["", *rows]))  # a blank first line: object 5 is line 6
    cfg = {"name": "files", "split": "dev", "max_samples": max_samples, "files": {"path": str(path)}}
    with pytest.raises(NeurospecError) as exc:
        pairs.build_pair_table("en-de", cfg)
    assert one_line(exc) == f"dataset file {path}, line 6: no key 'de' (the 'de' side); the object has 'en'"
    # sentences layout, one file per language: a missing text key
    for lang, lines in (("en", EN), ("de", DE)):
        objs = [{"id": k, "text": s} for k, s in enumerate(lines[:4])]
        if lang == "de":
            del objs[2]["text"]
        write_bytes(tmp_path / f"{lang}.jsonl", utf8(json.dumps(o) for o in objs))
    with pytest.raises(NeurospecError, match=r"de.jsonl, line 3: no key 'text' \(dataset.rows.text_column\); "
                                             r"the object has 'id'$"):
        pairs.build_pair_table("de-en", {"name": "files", "split": "dev", "max_samples": max_samples,
                                         "files": {"path": str(tmp_path / "{lang}.jsonl")}})
    # translation dicts: a row without the column, and a dict without a language, name their line
    write_bytes(tmp_path / "t.jsonl", utf8([json.dumps({"translation": {"en": "a", "de": "b"}}), "",
                                            json.dumps({"en": "c"}), json.dumps({"translation": {"en": "d"}})]))
    tcfg = {"name": "files", "split": "dev", "max_samples": max_samples, "files": {"path": str(tmp_path / "t.jsonl")}}
    with pytest.raises(NeurospecError, match=r"t.jsonl, line 3: no key 'translation' "
                                             r"\(dataset.rows.translation_column\); the object has 'en'$"):
        pairs.build_pair_table("en-de", tcfg)
    write_bytes(tmp_path / "t.jsonl", utf8([json.dumps({"translation": {"en": "a", "de": "b"}}), "",
                                            json.dumps({"translation": {"en": "d"}})]))
    with pytest.raises(NeurospecError, match=r"t.jsonl, object 2: 'translation' lacks 'en' or 'de' "
                                             r"\(has 'en'; line 3\)$"):
        pairs.build_pair_table("en-de", tcfg)
    # a JSON null is an empty side (dropped and counted), not a missing key
    rows[4] = json.dumps({"en": EN[4], "de": None})
    write_bytes(path, utf8(["", *rows]))
    df, stats = pairs.build_pair_table("en-de", {**cfg, "max_samples": None})
    assert len(df) == 5 and stats["dropped"] == {"empty_src": 0, "empty_tgt": 1, "empty_both": 0, "blank_line": 1}


# -- through Snakemake, as a user runs it ---------------------------------------------------------------------------

SPLITS = ("cr", "bom", "latin")


def drops_corpus():
    """Sentences with empty, whitespace-only and separator-only sides at known lines."""
    en, de = list(EN), list(DE)
    for k in (2, 9):
        en[k] = ""
    for k in (6, 9, 21):
        de[k] = ""
    en[14] = " \t "
    de[30] = "\u2028"  # a separator alone: a space once replaced, so empty
    en[44] = de[44] = "  "
    return ["\ufeff" + en[0], *en[1:]], de


def config(tmp_path, files):
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump({"pairs": ["en-de", "de-en"], "evaluate": {"split": "other"},
                                    "dataset": {"name": "files", "split": "cr", "files": files}}))
    return path


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """One Snakemake run over three text corpora (``corpus/{split}.{lang}``): the stray-\\r corpus, a BOM
    corpus with planted empty sides, and a latin-1 German file; --keep-going, so one failing job fails alone."""
    work = tmp_path_factory.mktemp("integrity")
    en, de = hostile_cr()
    write_bytes(work / "corpus" / "cr.en", utf8(en))
    write_bytes(work / "corpus" / "cr.de", utf8(de))
    en, de = drops_corpus()
    write_bytes(work / "corpus" / "bom.en", utf8(en))
    write_bytes(work / "corpus" / "bom.de", "".join(f"{s}\r\n" for s in de).encode())  # Windows line endings
    latin = [*DE[:7], "Die Straße ist naß.", *DE[8:]]
    write_bytes(work / "corpus" / "latin.en", utf8(EN))
    write_bytes(work / "corpus" / "latin.de", utf8(latin).decode().encode("latin-1"))
    cfg = config(work, {"path": "corpus/{split}.{lang}"})
    targets = [f"results/data/files/{split}/{pair}.parquet" for split in SPLITS for pair in ("en-de", "de-en")]
    proc = snakemake(work, *targets, "--keep-going", configfile=cfg, check=False)
    return work, proc, latin


def table(work, split, pair="en-de"):
    path = work / f"results/data/files/{split}/{pair}.parquet"
    return read_table(path), read_metadata(path), (work / f"results/logs/data/files/{split}/{pair}.log").read_text()


def test_stray_carriage_returns_never_shift_pairs(text_run):
    work, proc, _ = text_run
    en_file, de_file = work / "corpus" / "cr.en", work / "corpus" / "cr.de"
    with open(en_file, encoding="utf-8") as fh:
        assert len(fh.readlines()) == N + 1  # universal newlines: one line too many, every later pair shifted
    for pair in ("en-de", "de-en"):
        df, meta, log = table(work, "cr", pair)
        assert len(df) == N and df["id"].tolist() == list(range(N)), proc.stderr[-3000:]
        assert [number(s) for s in df["src"]] == [number(t) for t in df["tgt"]] == list(range(1, N + 1))
        english = df["src"] if pair == "en-de" else df["tgt"]
        german = df["tgt"] if pair == "en-de" else df["src"]
        assert english.iloc[4] == "One " + EN[4] and german.iloc[39] == "Vierzig " + DE[39]  # normalised
        files = meta["text_files"]
        assert files[str(en_file.relative_to(work))]["first_separator_lines"] == [5]
        assert files[str(de_file.relative_to(work))]["first_separator_lines"] == [40]
        assert files[str(en_file.relative_to(work))]["lines"] == N and meta["n_lines_read"] == N
    assert "corpus/cr.en: 1 line(s) hold a line separator other than \\n" in log and "(line 5)" in log
    assert "corpus/cr.de: 1 line(s) hold a line separator" in log and "(line 40)" in log


def test_bom_stripped_crlf_counted_and_drops_by_cause_equal_a_count_by_hand(text_run):
    work, proc, _ = text_run
    en, de = drops_corpus()
    df, meta, log = table(work, "bom")
    assert df["src"].iloc[0] == EN[0] and not df["src"].str.contains("\ufeff").any(), proc.stderr[-3000:]
    assert meta["bom_stripped"] == ["corpus/bom.en"]
    assert meta["text_files"]["corpus/bom.en"]["bom_stripped"] is True
    assert meta["text_files"]["corpus/bom.de"]["bom_stripped"] is False
    assert meta["text_files"]["corpus/bom.de"]["crlf_lines"] == N and meta["text_files"]["corpus/bom.en"][
        "crlf_lines"] == 0
    blank = [not s.replace("\ufeff", "").strip() for s in en], [not s.strip() for s in de]
    by_hand = {"empty_src": sum(s and not t for s, t in zip(*blank)),
               "empty_tgt": sum(t and not s for s, t in zip(*blank)),
               "empty_both": sum(s and t for s, t in zip(*blank))}
    assert by_hand == {"empty_src": 2, "empty_tgt": 3, "empty_both": 2}  # en 2, 14; de 6, 21, 30; both 9, 44
    assert meta["dropped"] == by_hand and meta["n_empty_dropped"] == 7 and len(df) == N - 7
    assert [number(s) for s in df["src"]] == [number(t) for t in df["tgt"]]
    assert (f"{N - 7} sentence pairs ({N} lines read; dropped: 2 empty source, 3 empty target, 2 both sides "
            f"empty)") in log
    assert "corpus/bom.en: a byte order mark (BOM) at its start was stripped" in log
    assert "corpus/bom.de: 60 of 60 lines end in \\r\\n" in log
    rev, rev_meta, _ = table(work, "bom", "de-en")
    assert rev_meta["dropped"] == {"empty_src": 3, "empty_tgt": 2, "empty_both": 2}  # de-en: the sides swap
    assert rev["src"].tolist() == df["tgt"].tolist()


def test_latin1_file_fails_with_one_line_and_writes_no_table(text_run):
    work, proc, latin = text_run
    assert proc.returncode != 0
    raw = (work / "corpus" / "latin.de").read_bytes()
    offset = raw.index("ß".encode("latin-1"))
    line = raw[:offset].count(b"\n") + 1
    expected = (f"neurospec: error: dataset file corpus/latin.de is not UTF-8: byte 0xdf at byte offset {offset} "
                f"(line {line}) cannot be decoded; set dataset.files.encoding to the file's encoding (e.g. "
                f"latin-1, cp1252) or convert the file to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8)")
    assert line == 8
    errors = [ln for ln in proc.stderr.splitlines() if "neurospec: error" in ln]
    assert errors and all(ln.endswith(expected) for ln in errors), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "UnicodeDecodeError" not in proc.stderr
    for pair in ("en-de", "de-en"):
        assert not (work / f"results/data/files/latin/{pair}.parquet").exists()
        assert (work / f"results/logs/data/files/latin/{pair}.log").read_text().strip().endswith(expected)
    # the fix the line names: dataset.files.encoding
    fixed = work / "fixed"
    fixed.mkdir()
    for lang in ("en", "de"):
        write_bytes(fixed / "corpus" / f"latin.{lang}", (work / "corpus" / f"latin.{lang}").read_bytes())
    cfg = config(fixed, {"path": "corpus/{split}.{lang}", "encoding": "latin-1"})
    snakemake(fixed, "results/data/files/latin/en-de.parquet", configfile=cfg)
    df = read_table(fixed / "results/data/files/latin/en-de.parquet")
    assert df["tgt"].tolist() == latin and df["src"].tolist() == EN
    assert read_metadata(fixed / "results/data/files/latin/en-de.parquet")["encoding"] == "iso8859-1"


def test_jsonl_missing_language_key_through_snakemake(tmp_path):
    rows = [json.dumps({"en": e, "de": d}) for e, d in zip(EN[:4], DE)]
    rows[2] = json.dumps({"en": EN[2], "note": "German lost"})  # no "de": line 4, after a blank line
    write_bytes(tmp_path / "corpus" / "cr.de-en.jsonl", utf8([rows[0], "", *rows[1:]]))
    cfg = config(tmp_path, {"path": "corpus/{split}.{sorted_pair}.jsonl"})
    proc = snakemake(tmp_path, "results/data/files/cr/en-de.parquet", configfile=cfg, check=False)
    expected = ("neurospec: error: dataset file corpus/cr.de-en.jsonl, line 4: no key 'de' (the 'de' side); the "
                "object has 'en', 'note'")
    errors = [ln for ln in proc.stderr.splitlines() if "neurospec: error" in ln]
    assert proc.returncode != 0 and errors and all(ln.endswith(expected) for ln in errors), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results/data/files/cr/en-de.parquet").exists()
