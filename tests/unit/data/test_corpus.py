"""Bring your own corpus: local TSV / JSONL / Parquet / text files and Hugging Face datasets (a local
dataset directory, a save_to_disk directory, and a hub id through the stand-in hub) become the same
pair tables, with the same errors, detokenization option and provenance; data integrity is checked
in full whatever max_samples is (EC40 too, on files the tests write)."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from neurospec.data import corpus, ec40, hashing, pairs
from neurospec.errors import NeurospecError
from neurospec.languages import FLORES_CODES, LANGUAGES

EN = ["Hello , world .", "The cat sleeps .", "", "It is @-@ raining .", "Good night ."]
DE = ["Hallo , Welt .", "Die Katze schläft .", "Leer", "Es regnet .", "Gute Nacht ."]
FR = ["Bonjour , le monde .", "Le chat dort .", "Vide", "Il pleut .", "Bonne nuit ."]


def one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_ec40(root, split, xx, en_lines, xx_lines):
    """EC40's layout (as on the hub) in a tmp dir: no ../shared needed."""
    for side, lines in (("en", en_lines), (xx, xx_lines)):
        write_lines(root / ec40.remote_path(split, xx, side), lines)
    return root


# -- data integrity: both sides checked in full, at any max_samples ------------------------------------


@pytest.mark.parametrize("max_samples", [1, 2, 4, None])
def test_ec40_unequal_lengths_fail_at_any_max_samples(tmp_path, max_samples):
    root = write_ec40(tmp_path / "ec40", "validation", "de", EN, DE[:-1])  # German one line short
    cfg = {"name": "ec40", "split": "validation", "local_dir": str(root), "max_samples": max_samples}
    with pytest.raises(NeurospecError) as exc:
        pairs.build_pair_table("en-de", cfg)
    msg = one_line(exc)
    en, de = (str(root / ec40.remote_path("validation", "de", s)) for s in ("en", "de"))
    assert f"dataset files {en} and {de} have unequal lengths: {en} has 5 lines, {de} has 4" in msg
    assert f"({de} ends at line 4; line 5 is only in {en})" in msg
    with pytest.raises(NeurospecError, match="have unequal lengths"):  # the other direction too
        pairs.build_pair_table("de-en", cfg)


def test_ec40_equal_files_with_max_samples_and_provenance(tmp_path):
    root = write_ec40(tmp_path / "ec40", "validation", "de", EN, DE)
    cfg = {"name": "ec40", "split": "validation", "local_dir": str(root), "max_samples": 2}
    df, stats = pairs.build_pair_table("de-en", cfg)
    assert df["src"].tolist() == ["Hallo, Welt.", "Die Katze schläft."]  # detokenized: EC40's default
    assert df["id"].tolist() == [0, 1] and stats["max_samples"] == 2
    assert stats["dataset_revision"].startswith("sha256:")
    write_lines(root / ec40.remote_path("validation", "de", "de"), DE[:-1] + ["Gute Nacht!"])
    _, edited = pairs.build_pair_table("de-en", cfg)
    assert edited["dataset_revision"] != stats["dataset_revision"]  # the hash covers the content


def test_ec40_missing_and_empty_files_without_shared(tmp_path):
    root = tmp_path / "ec40"
    cfg = {"name": "ec40", "split": "validation", "local_dir": str(root)}
    with pytest.raises(NeurospecError, match=r"dataset file .*test\.en-de\.en is missing") as exc:
        pairs.build_pair_table("en-de", cfg)
    one_line(exc)
    write_ec40(root, "validation", "de", ["", " "], ["x", ""])
    with pytest.raises(NeurospecError, match="hold no non-empty sentence pair") as exc:
        pairs.build_pair_table("en-de", cfg)
    one_line(exc)
    with pytest.raises(NeurospecError, match="dataset.split 'dev': EC40 has no such split"):
        pairs.build_pair_table("en-de", {**cfg, "split": "dev"})


@pytest.mark.parametrize("max_samples", [1, 3, None])
def test_text_files_per_language_unequal_lengths(tmp_path, max_samples):
    write_lines(tmp_path / "c" / "dev.en", EN)
    write_lines(tmp_path / "c" / "dev.de", DE[:2] + DE[3:])  # a deleted line: every later pair misaligned
    cfg = {"name": "files", "split": "dev", "max_samples": max_samples,
           "files": {"path": str(tmp_path / "c" / "{split}.{lang}")}}
    with pytest.raises(NeurospecError) as exc:
        pairs.build_pair_table("en-de", cfg)
    msg = one_line(exc)
    assert f"{tmp_path / 'c' / 'dev.en'} has 5 lines, {tmp_path / 'c' / 'dev.de'} has 4" in msg
    assert "line 5 is only in" in msg


@pytest.mark.parametrize("max_samples", [1, 3, None])
def test_tsv_row_with_a_missing_field(tmp_path, max_samples):
    path = write_lines(tmp_path / "en-de.tsv", ["en\tde", "Hello\tHallo", "Cat", "Night\tNacht"])
    cfg = {"name": "files", "split": "dev", "max_samples": max_samples, "files": {"path": str(path)}}
    with pytest.raises(NeurospecError, match=rf"dataset file {path}, line 3: 1 tab-separated field\(s\), "
                                             r"the header has 2 \(en, de\)") as exc:
        pairs.build_pair_table("en-de", cfg)
    one_line(exc)


@pytest.mark.parametrize("max_samples", [1, None])
def test_sentences_matched_by_id_in_full(tmp_path, max_samples):
    sides = {"en": [(1, "One"), (2, "Two"), (3, "Three")], "de": [(3, "Drei"), (1, "Eins"), (4, "Vier")]}
    for lang, rows in sides.items():
        write_lines(tmp_path / f"{lang}.jsonl", [json.dumps({"id": i, "text": t}) for i, t in rows])
    cfg = {"name": "files", "split": "dev", "max_samples": max_samples,
           "files": {"path": str(tmp_path / "{lang}.jsonl")}, "rows": {"layout": "sentences"}}
    with pytest.raises(NeurospecError, match=r"do not match by id: id 2 is in .*en.jsonl only, not in "
                                             r".*de.jsonl \(3 and 3 rows\)") as exc:
        pairs.build_pair_table("en-de", cfg)
    one_line(exc)
    write_lines(tmp_path / "de.jsonl", [json.dumps({"id": i, "text": t}) for i, t in
                                        [(3, "Drei"), (1, "Eins"), (2, "Zwei")]])
    df, _ = pairs.build_pair_table("de-en", cfg)
    # in the English side's order, matched by id (not by position)
    assert df["src"].tolist()[: max_samples or 3] == ["Eins", "Zwei", "Drei"][: max_samples or 3]
    assert df["tgt"].tolist()[: max_samples or 3] == ["One", "Two", "Three"][: max_samples or 3]


# -- local files --------------------------------------------------------------------------------------------


def test_tsv_columns_both_directions_detokenize_and_provenance(tmp_path):
    path = write_lines(tmp_path / "corpus" / "dev.en-de.tsv", ["en\tde"] + [f"{e}\t{d}" for e, d in zip(EN, DE)])
    cfg = {"name": "files", "split": "dev", "files": {"path": str(tmp_path / "corpus" / "{split}.en-{xx}.tsv")}}
    df, stats = pairs.build_pair_table("en-de", cfg)
    assert df["src"].tolist() == ["Hello , world .", "The cat sleeps .", "It is @-@ raining .", "Good night ."]
    assert df["id"].tolist() == [0, 1, 3, 4]  # row index; row 2 has an empty side
    assert stats["n_lines_read"] == 5 and stats["n_empty_dropped"] == 1 and stats["detokenize"] is False
    assert stats["dataset"] == "files" and stats["source"] == str(path)
    assert stats["dataset_revision"] == hashing.file_hash([path])
    rev, _ = pairs.build_pair_table("de-en", cfg)
    assert (rev["src"].tolist(), rev["tgt"].tolist()) == (df["tgt"].tolist(), df["src"].tolist())
    det, det_stats = pairs.build_pair_table("en-de", {**cfg, "detokenize": True, "max_samples": 3})
    assert det["src"].tolist() == ["Hello, world.", "The cat sleeps.", "It is-raining."]
    assert det_stats["detokenize"] is True and det_stats["max_samples"] == 3


def test_jsonl_translation_dicts_with_sorted_pair(tmp_path):
    """OPUS-100's shape: {"translation": {"de": ..., "en": ...}}, files named by the sorted pair."""
    write_lines(tmp_path / "de-en.jsonl", [json.dumps({"translation": {"en": e, "de": d}}) for e, d in zip(EN, DE)])
    write_lines(tmp_path / "en-fr.jsonl", [json.dumps({"translation": {"en": e, "fr": f}}) for e, f in zip(EN, FR)])
    cfg = {"name": "files", "split": "test", "files": {"path": str(tmp_path / "{sorted_pair}.jsonl")}}
    de, _ = pairs.build_pair_table("de-en", cfg)
    fr, _ = pairs.build_pair_table("en-fr", cfg)
    assert de["src"].iloc[0] == "Hallo , Welt ." and de["tgt"].iloc[0] == "Hello , world ."
    assert fr["tgt"].iloc[1] == "Le chat dort ."
    write_lines(tmp_path / "de-en.jsonl", [json.dumps({"translation": {"en": "x"}})])
    with pytest.raises(NeurospecError, match=r"de-en.jsonl, object 1: 'translation' lacks 'de' or 'en'") as exc:
        pairs.build_pair_table("de-en", cfg)
    one_line(exc)


def test_parquet_columns_with_flores_codes(tmp_path):
    path = tmp_path / "ntrex.parquet"
    pd.DataFrame({"eng_Latn": EN, "deu_Latn": DE, "fra_Latn": FR}).to_parquet(path)
    cfg = {"name": "files", "split": "test", "files": {"path": str(path)}, "rows": {"codes": "flores"}}
    df, stats = pairs.build_pair_table("fr-en", cfg)
    assert df["src"].iloc[0] == "Bonjour , le monde ." and len(df) == 4
    with pytest.raises(NeurospecError, match=r"ntrex.parquet: cannot tell where the languages are") as exc:
        pairs.build_pair_table("en-ru", cfg)
    one_line(exc)
    with pytest.raises(NeurospecError, match=r"has no column 'rus_Cyrl' \(the 'ru' side\)"):
        pairs.build_pair_table("en-ru", {**cfg, "rows": {"codes": "flores", "layout": "columns"}})


def test_missing_file_and_bad_templates(tmp_path):
    cfg = {"name": "files", "split": "dev", "files": {"path": str(tmp_path / "{split}.{lang}.txt")}}
    with pytest.raises(NeurospecError, match=r"dataset file .*dev.en.txt is missing") as exc:
        pairs.build_pair_table("en-de", cfg)
    one_line(exc)
    with pytest.raises(NeurospecError, match=r"key 'dataset.files.path' has unknown placeholder \{language\}"):
        pairs.check_dataset({"name": "files", "files": {"path": "c/{language}.txt"}}, ["en-de"], "dev")
    with pytest.raises(NeurospecError, match=r"key 'dataset.files.path' is required"):
        pairs.check_dataset({"name": "files"}, ["en-de"], "dev")
    with pytest.raises(NeurospecError, match=r"key 'dataset.hf.id' is required"):
        pairs.check_dataset({"name": "hf", "hf": {"config": "{lang}"}}, ["en-de"], "dev")
    with pytest.raises(NeurospecError, match=r"dataset.split 'dev': EC40 has no such split"):
        pairs.check_dataset({"name": "ec40"}, ["en-de"], "dev")
    pairs.check_dataset({"name": "files", "files": {"path": "c/{split}.{lang}"}}, ["en-de", "fr-en"], "dev")


# -- Hugging Face datasets -----------------------------------------------------------------------------------

FLORES = {  # FLORES+-like: ids shared across languages, one config per language
    "eng_Latn": [(1, "Hello, world."), (2, "The cat sleeps."), (3, "Good night.")],
    "deu_Latn": [(1, "Hallo, Welt."), (2, "Die Katze schläft."), (3, "Gute Nacht.")],
    "hin_Deva": [(3, "शुभ रात्रि।"), (1, "नमस्ते दुनिया।"), (2, "बिल्ली सोती है।")],  # another row order
}


def write_flores(root):
    """A dataset directory laid out like openlanguagedata/flores_plus: {split}/{code}.parquet, a
    config per language declared in README.md, columns id, iso_639_3, iso_15924, text."""
    import datasets

    configs = []
    for code, rows in FLORES.items():
        for split in ("dev", "devtest"):
            (root / split).mkdir(parents=True, exist_ok=True)
            datasets.Dataset.from_dict({
                "id": [i for i, _ in rows], "iso_639_3": [code[:3]] * len(rows),
                "iso_15924": [code[4:]] * len(rows), "text": [f"{t}" if split == "dev" else f"[devtest] {t}"
                                                              for _, t in rows],
            }).to_parquet(str(root / split / f"{code}.parquet"))
        configs.append(f"- config_name: {code}\n  data_files:\n  - split: dev\n    path: dev/{code}.parquet\n"
                       f"  - split: devtest\n    path: devtest/{code}.parquet\n")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n# a FLORES+-like dataset\n")
    return root


@pytest.fixture(scope="module")
def flores_dir(tmp_path_factory):
    return write_flores(tmp_path_factory.mktemp("flores") / "flores_plus")


FLORES_CFG = {"name": "hf", "hf": {"config": "{lang}"}, "rows": {"codes": "flores", "layout": "sentences"}}


def test_flores_layout_from_a_local_dataset_directory(flores_dir, tmp_path):
    cfg = {**FLORES_CFG, "split": "dev", "hf": {"id": str(flores_dir), "config": "{lang}"}}
    df, stats = corpus.build_hf_pair_table("hi-en", "dev", hf=cfg["hf"], rows=cfg["rows"], cache_dir=tmp_path)
    assert df["src"].tolist() == ["नमस्ते दुनिया।", "बिल्ली सोती है।", "शुभ रात्रि।"]  # matched by id
    assert df["tgt"].tolist() == ["Hello, world.", "The cat sleeps.", "Good night."]
    assert df["id"].tolist() == [0, 1, 2]  # the English side's order
    assert stats["dataset_id"] == str(flores_dir) and stats["dataset_config"] == "{lang}"
    assert stats["dataset_revision"] == hashing.file_hash(hashing.directory_files(flores_dir))
    test, _ = corpus.build_hf_pair_table("en-de", "devtest", hf=cfg["hf"], rows=cfg["rows"], cache_dir=tmp_path)
    assert test["src"].iloc[0] == "[devtest] Hello, world."
    with pytest.raises(NeurospecError, match=r"dataset.split 'test': dataset .* has no such split; it has "
                                             r"\['dev', 'devtest'\]") as exc:
        corpus.build_hf_pair_table("en-de", "test", hf=cfg["hf"], rows=cfg["rows"], cache_dir=tmp_path)
    one_line(exc)
    with pytest.raises(NeurospecError, match=r"dataset.hf.config '\{lang\}': dataset .* has no config "
                                             r"'fra_Latn'") as exc:
        corpus.build_hf_pair_table("en-fr", "dev", hf=cfg["hf"], rows=cfg["rows"], cache_dir=tmp_path)
    one_line(exc)


def test_flores_all_languages_in_one_source_with_a_language_column(flores_dir, tmp_path):
    """FLORES+'s all-languages shape: one table, the language in iso_639_3 + iso_15924."""
    frames = [pd.read_parquet(flores_dir / "dev" / f"{code}.parquet") for code in FLORES]
    path = tmp_path / "all.parquet"
    pd.concat(frames, ignore_index=True).to_parquet(path)
    rows = {"codes": "flores", "lang_column": ["iso_639_3", "iso_15924"]}
    df, _ = pairs.build_pair_table("en-hi", {"name": "files", "split": "dev", "files": {"path": str(path)},
                                             "rows": rows})
    assert df["tgt"].tolist() == ["नमस्ते दुनिया।", "बिल्ली सोती है।", "शुभ रात्रि।"]
    with pytest.raises(NeurospecError, match=r"has no rows of language 'fra_Latn'"):
        pairs.build_pair_table("en-fr", {"name": "files", "split": "dev", "files": {"path": str(path)},
                                         "rows": rows})


def test_translation_dicts_saved_with_save_to_disk(tmp_path):
    """OPUS-100's shape, saved with DatasetDict.save_to_disk, one directory per config."""
    import datasets

    for config, other in (("de-en", DE), ("en-fr", FR)):
        code = config.replace("en", "").strip("-")
        split = datasets.Dataset.from_dict({"translation": [{"en": e, code: o} for e, o in zip(EN, other)]})
        datasets.DatasetDict({"validation": split, "test": split.select(range(2))}).save_to_disk(
            str(tmp_path / "opus" / config))
    hf = {"id": str(tmp_path / "opus"), "config": "{sorted_pair}"}
    df, stats = corpus.build_hf_pair_table("de-en", "validation", hf=hf, detokenize=True)
    assert df["src"].tolist() == ["Hallo, Welt.", "Die Katze schläft.", "Es regnet.", "Gute Nacht."]
    assert stats["dataset_revision"].startswith("sha256:") and stats["n_empty_dropped"] == 1
    fr, _ = corpus.build_hf_pair_table("en-fr", "test", hf=hf)
    assert fr["tgt"].tolist() == FR[:2]
    with pytest.raises(NeurospecError, match=r"dataset.split 'dev': .*en-fr has no such split; it has "
                                             r"validation, test"):
        corpus.build_hf_pair_table("en-fr", "dev", hf=hf)


def test_hf_hub_id_through_the_stand_in_hub(flores_dir, tmp_path):
    """A hub id: its revision resolved to the commit, recorded, and loaded at that commit; gated is one line.
    In a child process, as a rule's job runs (datasets copies the endpoint at import)."""
    from fake_hub import FakeHub

    commit = "c" * 40
    code = ("import json, sys; from neurospec.data import corpus\n"
            "df, stats = corpus.build_hf_pair_table(sys.argv[1], 'dev', hf={'id': sys.argv[2], 'config': '{lang}',"
            " 'revision': 'main'}, rows={'codes': 'flores', 'layout': 'sentences'}, cache_dir=sys.argv[3])\n"
            "print(json.dumps({'src': df['src'].tolist(), **{k: str(v) for k, v in stats.items()}}))\n")
    with FakeHub(gated={"acme/gated-flores"}) as hub:
        hub.add_repo("acme/flores_plus", flores_dir, repo_type="dataset", commit=commit)
        hub.add_repo("acme/gated-flores", flores_dir, repo_type="dataset")
        env = {**hub.env(tmp_path / "hf-cache"), "PYTHONPATH": str(corpus_path()),
               "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}

        def run(*args):
            return subprocess.run([sys.executable, "-c", code, *args, str(tmp_path / "ds-cache")], env=env,
                                  capture_output=True, text=True, timeout=300)

        proc = run("de-en", "acme/flores_plus")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["src"] == ["Hallo, Welt.", "Die Katze schläft.", "Gute Nacht."]
        assert out["dataset_revision"] == commit and out["dataset_id"] == "acme/flores_plus"
        assert hub.count("GET", f"/api/datasets/acme/flores_plus/revision/main") == 1
        assert hub.count("GET", f"/datasets/acme/flores_plus/resolve/{commit}/dev/deu_Latn.parquet") == 1
        gated = run("de-en", "acme/gated-flores")
        assert gated.returncode != 0
        assert "dataset 'acme/gated-flores' is gated on the hub: accept its terms" in gated.stderr
        env["HF_TOKEN"] = hub.token
        assert run("de-en", "acme/gated-flores").returncode == 0
        del env["HF_TOKEN"]
        missing = run("de-en", "acme/nope")
        assert "dataset.hf.id 'acme/nope' is neither a local directory nor a dataset on the hub" in missing.stderr


def corpus_path():
    from pathlib import Path

    return Path(corpus.__file__).resolve().parents[2]


# -- what the rules see ------------------------------------------------------------------------------------------


def test_dataset_params_are_the_sources_own_keys_sorted():
    dataset = {"name": "hf", "split": "validation", "local_dir": "x", "repo_id": "r", "revision": "v",
               "max_samples": None, "detokenize": None, "files": {"path": "p"},
               "rows": {"text_column": "text", "codes": "flores"},
               "hf": {"revision": "main", "id": "a/b", "config": "{lang}"}}
    params = pairs.dataset_params(dataset, "dev")
    assert list(params) == ["detokenize", "hf", "max_samples", "name", "rows", "split"]
    assert list(params["hf"]) == ["config", "id", "revision"] and list(params["rows"]) == ["codes", "text_column"]
    assert params["detokenize"] is False and params["split"] == "dev"
    ec40_params = pairs.dataset_params({**dataset, "name": "ec40"}, "test")
    assert list(ec40_params) == ["detokenize", "local_dir", "max_samples", "name", "repo_id", "revision", "split"]
    assert ec40_params["detokenize"] is True  # null: on for EC40's Moses-tokenized text
    assert pairs.dataset_params({**dataset, "name": "demo"}, "test") == {"max_samples": None, "name": "demo",
                                                                          "split": "test"}
    reordered = dict(reversed(list(dataset.items())))
    reordered["hf"] = dict(reversed(list(dataset["hf"].items())))
    assert pairs.dataset_params(reordered, "dev") == params and \
        list(pairs.dataset_params(reordered, "dev")["hf"]) == list(params["hf"])


def test_dataset_files_are_the_local_files_a_pair_reads(tmp_path, flores_dir):
    en, de = write_lines(tmp_path / "dev.en", EN), write_lines(tmp_path / "dev.de", DE)
    files = {"name": "files", "files": {"path": str(tmp_path / "{split}.{lang}")}}
    assert sorted(pairs.dataset_files(files, "de-en", "dev")) == sorted([str(en), str(de)])
    assert pairs.dataset_files(files, "fr-en", "dev") == [str(en)]  # a missing file fails in the job instead
    root = write_ec40(tmp_path / "ec40", "test", "de", EN, DE)
    assert len(pairs.dataset_files({"name": "ec40", "local_dir": str(root)}, "en-de", "test")) == 2
    assert pairs.dataset_files({"name": "ec40", "local_dir": None}, "en-de", "test") == []
    local = pairs.dataset_files({"name": "hf", "hf": {"id": str(flores_dir)}}, "en-de", "dev")
    assert str(flores_dir / "dev" / "deu_Latn.parquet") in local and str(flores_dir / "README.md") in local
    assert pairs.dataset_files({"name": "hf", "hf": {"id": "acme/flores"}}, "en-de", "dev") == []
    assert pairs.dataset_folder({"name": "hf", "hf": {"id": "openlanguagedata/flores_plus"}}) == "flores_plus"
    assert pairs.dataset_folder({"name": "hf", "folder": "mine", "hf": {"id": "a/b"}}) == "mine"


def test_flores_codes_cover_every_language_and_match_its_script():
    scripts = {"Latin": "Latn", "Cyrillic": "Cyrl", "Devanagari": "Deva", "Bengali": "Beng", "Kannada": "Knda",
               "Gujarati": "Gujr", "Arabic": "Arab", "Hebrew": "Hebr", "Ethiopic": "Ethi"}
    assert set(FLORES_CODES) == set(LANGUAGES)
    mismatched = {code for code, lang in LANGUAGES.items() if FLORES_CODES[code][4:] != scripts[lang.script]}
    assert mismatched == {"sr"}  # FLORES+ Serbian is Cyrillic, EC40's Latin (documented)
    assert len(set(FLORES_CODES.values())) == len(FLORES_CODES)


@pytest.mark.parametrize("max_samples", [1, None])
def test_sentences_matched_by_position_need_equal_lengths(tmp_path, max_samples):
    """A file per language without an id column (id_column: null): matched by position, lengths checked."""
    pd.DataFrame({"text": EN}).to_parquet(tmp_path / "en.parquet")
    pd.DataFrame({"text": DE[:3]}).to_parquet(tmp_path / "de.parquet")
    cfg = {"name": "files", "split": "dev", "max_samples": max_samples,
           "files": {"path": str(tmp_path / "{lang}.parquet")}, "rows": {"layout": "sentences", "id_column": None}}
    with pytest.raises(NeurospecError, match=r"de.parquet has 3 rows, .*en.parquet has 5 \(.*de.parquet ends at "
                                             r"row 3; row 4 is only in .*en.parquet\)") as exc:
        pairs.build_pair_table("de-en", cfg)
    one_line(exc)
