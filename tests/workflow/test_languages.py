"""Any language and any pair (issue #22, items 1 and 2): the shipped language table, code resolution,
the config's `languages:`, did-you-mean, pairs without English through snakemake, and Aya-23's own
23 languages on FLORES+ (config/examples/aya23-flores-plus.yaml) planned offline and run against the
stand-in hub."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from neurospec import lang_codes
from neurospec.data import ec40
from neurospec import languages as L
from neurospec.errors import NeurospecError
from neurospec.plots import style
from workflow_utils import SHARED_EC40
from test_configs import OFFLINE
from workflow_utils import ROOT, job_counts, snakemake, write_config

# The 204 codes of the FLORES-200 README (facebookresearch/flores, flores200/README.md), typed from it
# independently of data/languages.tsv, plus NLLB's sat_Beng (the NLLB-200 list writes Santali so).
FLORES200 = """
ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab arb_Arab arb_Latn
ars_Arab ary_Arab arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn ban_Latn
bel_Cyrl bem_Latn ben_Beng bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn
ces_Latn cjk_Latn ckb_Arab crh_Latn cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn
epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn
gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn
ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab
kas_Deva kat_Geor knc_Arab knc_Latn kaz_Cyrl kbp_Latn kea_Latn khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn
kmr_Latn kon_Latn kor_Hang lao_Laoo lij_Latn lim_Latn lin_Latn lit_Latn lmo_Latn ltg_Latn ltz_Latn lua_Latn
lug_Latn luo_Latn lus_Latn lvs_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Arab min_Latn mkd_Cyrl plt_Latn
mlt_Latn mni_Beng khk_Cyrl mos_Latn mri_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva nso_Latn nus_Latn
nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pes_Arab pol_Latn por_Latn prs_Arab pbt_Arab
quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Olck scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn
smo_Latn sna_Latn snd_Arab som_Latn sot_Latn spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn
swh_Latn szl_Latn tam_Taml taq_Latn taq_Tfng tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi tpi_Latn
tsn_Latn tso_Latn tuk_Latn tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn
vec_Latn vie_Latn war_Latn wol_Latn xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zsm_Latn zul_Latn
""".split()
AYA23 = ["ar", "zh", "cs", "nl", "en", "fr", "de", "el", "he", "hi", "id", "it", "ja", "ko", "fa", "pl", "pt",
         "ro", "ru", "es", "tr", "uk", "vi"]


def test_the_table_has_every_flores200_language_with_its_scripts_subtag():
    rows = {r["code"]: r for r in lang_codes.table_rows()}
    assert len(FLORES200) == 204 and len(set(FLORES200)) == 204
    assert set(FLORES200) | {"sat_Beng"} <= set(rows)
    for code, row in rows.items():
        assert row["script"] == code.split("_")[1], code
        assert row["name"] and row["family"] and row["script"] in lang_codes.SCRIPT_NAMES, code
    iso1 = [r["iso639_1"] for r in rows.values() if r["iso639_1"]]
    assert len(iso1) == len(set(iso1))  # one row per ISO 639-1 code
    # EC40's families for EC40's languages (Kannada in EC40's Indo-Aryan group), the flores codes agree
    for code, lang in L.LANGUAGES.items():
        assert rows[L.FLORES_CODES[code]]["family"] == lang.family, code
    assert {rows[c]["family"] for c in ("jpn_Jpan", "kor_Hang", "zho_Hans", "tur_Latn", "vie_Latn",
                                        "ind_Latn", "ell_Grek", "pes_Arab")} == {
        "Japonic", "Koreanic", "Sino-Tibetan", "Turkic", "Austroasiatic", "Austronesian", "Hellenic", "Iranian"}


def test_ec40_languages_are_as_they_were():
    assert len(L.EC40_LANGUAGES) == 40
    de, kab, sr = L.language("de"), L.language("kab"), L.language("sr")
    assert (de.name, de.family, de.script, de.tier) == ("German", "Germanic", "Latin", "high")
    assert (kab.name, kab.tier, sr.script) == ("Kabyle", "extremely-low", "Latin")  # EC40's Serbian is Latin
    assert L.parse_pair("en-de") == ("en", "de") and L.direction("de-en") == "xx-en"


@pytest.mark.parametrize(("code", "name", "family", "script", "flores"), [
    ("ja", "Japanese", "Japonic", "Japanese", "jpn_Jpan"),
    ("jpn", "Japanese", "Japonic", "Japanese", "jpn_Jpan"),
    ("jpn_Jpan", "Japanese", "Japonic", "Japanese", "jpn_Jpan"),
    ("zho_Hans", "Chinese (Simplified)", "Sino-Tibetan", "Han (Simplified)", "zho_Hans"),
    ("zh", "Chinese", "Sino-Tibetan", "Han (Simplified)", "zho_Hans"),
    ("srp_Latn", "Serbian (Latin)", "Slavic", "Latin", "srp_Latn"),
    ("fa", "Persian", "Iranian", "Arabic", "pes_Arab"),
    ("yua", "Yucateco", "Other", "Latin", "yua"),  # valid ISO 639-3 the table lacks: langcodes, "Other"
])
def test_any_iso_code_resolves(code, name, family, script, flores):
    lang = L.language(code)
    assert (lang.name, lang.family, lang.script, lang.tier) == (name, family, script, "unknown")
    assert L.flores(code) == flores


def test_pairs_of_any_two_languages_and_their_order():
    assert L.parse_pair("de-fr") == ("de", "fr") and L.parse_pair("zho_Hans-en") == ("zho_Hans", "en")
    assert [L.direction(p) for p in ("en-ja", "ja-en", "de-fr")] == ["en-xx", "xx-en", "xx-yy"]
    assert L.non_english("de-fr") == "de" and L.non_english("en-ja") == "ja"
    assert L.sort_pairs(["de-fr", "ja-en", "en-ja", "en-de"]) == ["en-de", "en-ja", "ja-en", "de-fr"]
    with pytest.raises(NeurospecError, match=r"^pair 'de-de' in 'pairs' has the same language on both sides"):
        L.parse_pair("de-de")


@pytest.mark.parametrize(("pair", "wanted"), [
    ("en-jp", "did you mean 'jpn' (Japanese)"), ("EN-de", "did you mean 'en' (English)"),
    ("en-germn", "did you mean 'de' (German)"), ("en-japanese", "did you mean 'ja' (Japanese)"),
])
def test_an_unknown_code_is_one_line_with_a_did_you_mean(pair, wanted):
    with pytest.raises(NeurospecError) as exc:
        L.parse_pair(pair)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(f"unknown language code {pair.split('-')[1]!r}"
                                                      if pair != "EN-de" else "unknown language code 'EN'")
    assert wanted in message and "a pair is two language codes joined by '-', e.g. en-de" in message


def test_the_configs_languages_name_a_language_and_override_the_table(monkeypatch):
    monkeypatch.setenv(lang_codes.ENV, "{}")  # restored after the test, whatever configure sets
    monkeypatch.setattr(lang_codes, "_CONFIGURED", None)
    with pytest.raises(NeurospecError, match="unknown language code 'xq'"):
        L.language("xq")
    lang_codes.configure({"xq": {"name": "Example", "family": "Exemplic", "script": "Latn"},
                          "ja": {"name": "Nihongo"}})
    xq, ja = L.language("xq"), L.language("ja")
    assert (xq.name, xq.family, xq.script, xq.tier) == ("Example", "Exemplic", "Latin", "unknown")
    assert (ja.name, ja.family) == ("Nihongo", "Japonic")  # the table's family stays
    assert style.color_of_family("Exemplic") == style.UNKNOWN_FAMILY_COLOR  # a family no table knows: grey
    with pytest.raises(NeurospecError, match=r"key 'languages.xr' needs a name"):
        lang_codes.configure({"xr": {"family": "X"}})


def test_family_colours_outside_ec40():
    assert style.color_of_family("Germanic") == style.FAMILY_COLORS["Germanic"]  # EC40's colours unchanged
    assert style.color_of_family("Other") == style.color_of_family("Made-up") == style.UNKNOWN_FAMILY_COLOR
    colours = {style.color_of_family(f) for f in ("Japonic", "Koreanic", "Sino-Tibetan", "Turkic", "Iranian")}
    assert len(colours) == 5 and style.UNKNOWN_FAMILY_COLOR not in colours and not colours & set(style.FAMILY_COLORS.values())
    assert style.family_color("ja") == style.color_of_family("Japonic")  # a language outside EC40, by code
    assert style.family_color("ja-en") == style.family_color("ja") and style.script_marker("ja") == "o"
    assert L.families_in_order(["Japonic", "Other", "Slavic", "Germanic"]) == ["Germanic", "Slavic", "Japonic",
                                                                               "Other"]


def test_pivot_records_match_two_english_centric_files_by_their_english_line():
    src_en, src = ["A", "B", "C", "D", "A"], ["a-de", "b-de", "c-de", "d-de", "a2-de"]
    tgt_en, tgt = ["C", "B", "X", "D"], ["c-fr", "b-fr", "x-fr", "d-fr"]
    # A occurs twice in the source's English: ambiguous, left out; X has no German line
    assert ec40.pivot_records(src_en, src, tgt_en, tgt) == [(1, "b-de", "b-fr"), (2, "c-de", "c-fr"),
                                                            (3, "d-de", "d-fr")]


def test_demo_pairs_without_english_match_through_the_english_original():
    from neurospec.data import demo

    df, _ = demo.build_pair_table("de-fr", "validation")
    de = {(c, en): t for c, en, t in demo.translations("de")}
    fr = {(c, en): t for c, en, t in demo.translations("fr")}
    expected = [(de[k], fr[k]) for k in de if k in fr and demo.split_of(k[1]) == "validation"]
    assert len(expected) > 100 and list(zip(df["src"], df["tgt"])) == expected
    assert set(df["src_lang"]) == {"de"} and set(df["tgt_lang"]) == {"fr"}


@pytest.mark.skipif(not SHARED_EC40.is_dir(), reason="no local EC40 copy (../shared/ec40)")
def test_ec40_de_fr_through_english():
    local = str(SHARED_EC40)
    de_fr, stats = ec40.build_pair_table("de-fr", "test", local_dir=local)
    en_de, _ = ec40.build_pair_table("en-de", "test", local_dir=local)
    en_fr, _ = ec40.build_pair_table("en-fr", "test", local_dir=local)
    assert len(de_fr) == 2009 == stats["n_lines_read"]  # FLORES-200 is multi-way parallel
    assert de_fr["src"].tolist() == en_de["tgt"].tolist() and de_fr["tgt"].tolist() == en_fr["tgt"].tolist()


# --------------------------------------------------------------------------------------------
# Through snakemake
# --------------------------------------------------------------------------------------------

SENTENCES = {
    "en": ["The dog runs home.", "A cat sleeps today.", "We eat bread.", "The house is big.", "It rains a lot."],
    "de": ["Der Hund läuft heim.", "Eine Katze schläft heute.", "Wir essen Brot.", "Das Haus ist groß.",
           "Es regnet viel."],
    "fr": ["Le chien court à la maison.", "Un chat dort aujourd'hui.", "Nous mangeons du pain.",
           "La maison est grande.", "Il pleut beaucoup."],
    "xq": ["Xa dogo runa.", "Xa kato slipa.", "Wi eta brodo.", "Xa haus bigo.", "Ita raina multo."],
    "ja": ["犬は家に走る。", "猫は今日寝ている。", "私たちはパンを食べる。", "家は大きい。", "雨がたくさん降る。"],
}


def write_files(root, n=12):
    (root / "corpus").mkdir()
    for split in ("validation", "test"):
        for lang, lines in SENTENCES.items():
            text = [f"{lines[i % len(lines)]} {split} {i}" for i in range(n)]
            (root / "corpus" / f"{split}.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def de_fr_run(tmp_path_factory):
    """de-fr, fr-de, en-ja, ja-en, en-de and xq-en (xq named under `languages:`) on files written here:
    collection, scoring, figures."""
    tmp = tmp_path_factory.mktemp("anylang")
    write_files(tmp)
    cfg = write_config(tmp, {"pairs": ["de-fr", "fr-de", "en-ja", "ja-en", "en-de", "xq-en"],
                             # a language no table knows, named in the config
                             "languages": {"xq": {"name": "Example", "family": "Exemplic", "script": "Latn"}},
                             "dataset": {"name": "files", "split": "validation",
                                         "files": {"path": "corpus/{split}.{lang}"}}})
    results = "results/demo-small/files/validation"
    methods = ("frequency", "frequency_language", "lape", "contrast", "diffmeans")
    targets = [f"{results}/scores/{m}.parquet" for m in methods] + [
        f"{results}/figures/{m}/{f}.png" for m in methods for f in ("iou_layers", "family_iou", "clustering")]
    targets += [f"{results}/figures/frequency/direction_iou.png", f"{results}/figures/activation_probability.png"]
    snakemake(tmp, *targets, configfile=cfg)
    return tmp, tmp / results


def test_a_pair_without_english_is_counted_as_an_independent_recount_says(de_fr_run):
    from neurospec.models import load_model
    from neurospec.tables import read_counts, read_table
    from reference import reference_counts, table_arrays

    tmp, results = de_fr_run
    pairs = read_table(tmp / "results/data/files/validation/de-fr.parquet")
    assert pairs["src"].iloc[1] == "Eine Katze schläft heute. validation 1"
    assert pairs["tgt"].iloc[1] == "Un chat dort aujourd'hui. validation 1"
    df, meta = read_counts(results / "activations" / "de-fr.parquet")
    loaded = load_model(str(tmp / "results/models/demo"), dtype="float32", device="cpu")
    n_layers = loaded.model.config.num_hidden_layers
    got = table_arrays(df, n_layers)
    ref, n_tokens = reference_counts(loaded, pairs, "Translate from {src_name} to {tgt_name}: {src}")
    assert meta["n_tokens"] == n_tokens and meta["counted_lang"] == "de"
    for layer in (0, n_layers - 1):
        np.testing.assert_array_equal(got["gate_active"][layer], ref["gate_active"][layer])
        np.testing.assert_array_equal(got["active"][layer], ref["active"][layer])
    assert got["gate_active"].sum() > 0


def test_scores_and_figures_hold_the_new_languages_and_their_families(de_fr_run, monkeypatch):
    from neurospec.plots import group_axes, iou_figures
    from neurospec.score.scoring import read_scores
    from neurospec.tables import read_metadata

    monkeypatch.setenv(lang_codes.ENV, "{}")  # restored after the test, whatever configure sets
    monkeypatch.setattr(lang_codes, "_CONFIGURED", None)
    tmp, results = de_fr_run
    scores, meta = read_scores(results / "scores" / "frequency_language.parquet")
    groups = sorted(str(g) for g in meta["groups"])
    assert groups == ["de", "en", "fr", "ja", "xq"]  # the counted (source) languages of the six pairs
    # the config's language reached the jobs: its name in the prompt, its family in the figures
    assert read_metadata(results / "activations" / "xq-en.parquet")["src_name"] == "Example"
    assert read_metadata(results / "activations" / "en-ja.parquet")["tgt_name"] == "Japanese"
    with pytest.raises(NeurospecError, match="unknown language code 'xq'"):
        group_axes.group_table(groups)  # this process has no `languages:` ...
    lang_codes.configure({"xq": {"name": "Example", "family": "Exemplic", "script": "Latn"}})  # ... the jobs had
    info = group_axes.group_table(groups).set_index("group")
    assert info.loc["xq", "family"] == "Exemplic" and style.color_of_family("Exemplic") == style.UNKNOWN_FAMILY_COLOR
    assert info.loc["ja", "family"] == "Japonic" and info.loc["ja", "tier"] == "unknown"
    assert info.loc["fr", "family"] == "Romance" and info.loc["de", "family"] == "Germanic"
    pair_info = group_axes.group_table(["de-fr", "fr-de", "en-ja", "ja-en", "en-de", "xq-en"]).set_index("group")
    assert pair_info.loc["de-fr", "direction"] == "xx-yy" and pair_info.loc["de-fr", "family"] == "Germanic"
    assert pair_info.loc["en-ja", "family"] == "Japonic"
    assert pair_info.index.tolist() == ["en-de", "en-ja", "ja-en", "xq-en", "de-fr", "fr-de"]
    methods = ("frequency", "frequency_language", "lape", "contrast", "diffmeans")
    for png in [results / f"figures/{m}/{f}.png" for m in methods for f in ("iou_layers", "family_iou", "clustering")]:
        assert png.stat().st_size > 1000, png
    # the family figure's numbers, recomputed: de and en are the only two languages of one family
    # (Germanic); fr (Romance), ja (Japonic) and xq (Exemplic) have none beside them
    from neurospec.score.scoring import iou_matrix, read_iou

    overlap, _ = read_iou(results / "scores" / "frequency_language_iou.parquet")
    drawn = iou_figures.family_iou(overlap, groups, [0, 1])
    for layer in (0, 1):
        m = pd.DataFrame(iou_matrix(overlap, groups, layer=layer), index=groups, columns=groups)
        assert drawn.loc[layer, "same family"] == pytest.approx(m.loc["de", "en"])
        others = [m.loc[a, b] for a in groups for b in groups if a != b and {a, b} != {"de", "en"}]
        assert drawn.loc[layer, "different families"] == pytest.approx(np.nanmean(others))


def test_a_wrong_code_is_one_line_with_a_did_you_mean_before_anything_runs(tmp_path):
    cfg = write_config(tmp_path, {"pairs": ["en-de", "en-jp"]})
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg, check=False, env=OFFLINE)
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "unknown language code 'jp' in pair 'en-jp' (key 'pairs'); did you mean 'jpn' (Japanese)" in lines[0]
    assert "a pair is two language codes joined by '-', e.g. en-de" in lines[0]
    assert not (tmp_path / "results").exists()


# --------------------------------------------------------------------------------------------
# Aya-23's 23 languages on FLORES+
# --------------------------------------------------------------------------------------------

AYA_CONFIG = ROOT / "config" / "examples" / "aya23-flores-plus.yaml"


def test_the_aya_flores_config_covers_ayas_languages_and_plans_offline(tmp_path):
    cfg = yaml.safe_load(AYA_CONFIG.read_text(encoding="utf-8"))
    langs = {c for p in cfg["pairs"] for c in L.parse_pair(p)}
    assert langs == set(AYA23)
    assert {p for p in cfg["pairs"] if "en" not in L.parse_pair(p)} == {"de-fr", "fr-de", "ja-zh", "ar-he"}
    assert {f"en-{x}" for x in AYA23 if x != "en"} | {f"{x}-en" for x in AYA23 if x != "en"} <= set(cfg["pairs"])
    proc = snakemake(tmp_path, "--dry-run", configfile=AYA_CONFIG, env=OFFLINE)
    counts = job_counts(proc.stdout)
    assert counts["collect_activations"] == len(cfg["pairs"]) == 48
    assert counts["pair_table"] == 2 * 48 and counts["translate"] == 48


def write_flores_plus(root, n=4):
    """openlanguagedata/flores_plus's layout: {split}/{iso_639_3}_{iso_15924}.parquet (columns id,
    iso_639_3, iso_15924, text; rows in a per-language order, matched by id), a config per language."""
    import datasets

    codes = {lang: ("cmn_Hans" if lang == "zh" else L.flores(lang)) for lang in AYA23}
    configs = []
    for lang, code in codes.items():
        for split in ("dev", "devtest"):
            (root / split).mkdir(parents=True, exist_ok=True)
            ids = list(range(n))[::-1] if lang == "ja" else list(range(n))  # another row order
            datasets.Dataset.from_dict({
                "id": ids, "iso_639_3": [code[:3]] * n, "iso_15924": [code[4:]] * n,
                "text": [f"{split} {code} sentence {i}" for i in ids]}).to_parquet(str(root / split / f"{code}.parquet"))
        configs.append(f"- config_name: {code}\n  data_files:\n  - split: dev\n    path: dev/{code}.parquet\n"
                       f"  - split: devtest\n    path: devtest/{code}.parquet\n")
    (root / "README.md").write_text("---\nconfigs:\n" + "".join(configs) + "---\n# FLORES+-like\n")
    return root


@pytest.mark.slow
def test_the_aya_flores_config_runs_against_the_stand_in_hub(tmp_path):
    """The shipped config, its dataset served by the stand-in hub in FLORES+'s layout and the demo
    model standing in for Aya-23: every pair table, collection, scoring and the figures."""
    from fake_hub import FakeHub
    from neurospec.tables import read_metadata, read_table

    cfg = yaml.safe_load(AYA_CONFIG.read_text(encoding="utf-8"))
    small = yaml.safe_load(write_config(tmp_path, name="small.yaml").read_text())
    cfg["model"] = small["model"]
    cfg["demo_model"], cfg["collect"]["token_budget"] = small["demo_model"], 1024
    path = tmp_path / "aya.yaml"
    path.write_text(yaml.safe_dump(cfg))
    root = write_flores_plus(tmp_path / "hub" / "flores_plus")
    commit = "a" * 40
    results = "results/demo-small/flores_plus/dev"
    targets = [f"{results}/scores/{m}.parquet" for m in ("frequency", "frequency_language", "lape")]
    targets += [f"{results}/figures/frequency_language/family_iou.png", f"{results}/figures/frequency/clustering.png"]
    with FakeHub() as hub:
        hub.add_repo(cfg["dataset"]["hf"]["id"], root, repo_type="dataset", commit=commit)
        env = {**hub.env(tmp_path / "hf-cache"), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
        snakemake(tmp_path, *targets, configfile=path, env=env, timeout=1500)
    ja_zh = read_table(tmp_path / "results/data/flores_plus/dev/ja-zh.parquet")
    assert ja_zh["src"].tolist() == [f"dev jpn_Jpan sentence {i}" for i in (3, 2, 1, 0)]  # ja's own order
    assert ja_zh["tgt"].tolist() == [f"dev cmn_Hans sentence {i}" for i in (3, 2, 1, 0)]  # matched by id
    meta = read_metadata(tmp_path / "results/data/flores_plus/dev/ja-zh.parquet")
    assert meta["dataset_revision"] == commit
    for pair in cfg["pairs"]:
        assert (tmp_path / results / "activations" / f"{pair}.parquet").is_file(), pair
    from neurospec.score.scoring import read_scores

    _, meta = read_scores(tmp_path / results / "scores" / "frequency_language.parquet")
    assert sorted(meta["groups"]) == sorted(AYA23)
