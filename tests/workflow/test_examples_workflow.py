"""The README's examples for one's own corpus and one's own model, run end to end through snakemake:
each test copies config/examples/X.yaml, points it at files the test writes (the corpus; for the own
model a local model directory and an EC40-layout copy), and runs the whole workflow. The models side
by side example (Gemma 3 270M: minutes of CPU) is planned offline here; two models in one run are
run end to end on the demo model in tests/workflow/test_compare_workflow.py."""

from __future__ import annotations

import shutil

import pytest
import yaml

from neurospec.data import demo, ec40
from neurospec.tables import read_metadata, read_table
from workflow_utils import ROOT, job_counts, snakemake

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
METHODS = ("frequency", "frequency_language", "lape", "contrast", "diffmeans")
# the examples keep the schema's evaluation defaults (20 random control sets, up to 256 new tokens), made
# for real runs: on the demo model and a shared CPU they take minutes, so the tests shrink them on the
# command line, the nested --config form the docs show; the files themselves are used as shipped
QUICK = ("--config", "evaluate={ablation: {random_sets: 2}, translate: {max_new_tokens: 16}, "
                     "correlation: {n_boot: 100, n_perm: 100}, translation_scores: {n_boot: 100}}")


def aligned(langs, split, n):
    """n lines per language, aligned by line: the demo corpus's translations of the same English entries."""
    tables = {xx: demo.build_pair_table(f"en-{xx}", split)[0].set_index("src")["tgt"] for xx in langs}
    def one_line(text):
        return len(str(text).splitlines()) == 1 and str(text).strip() == str(text)

    english = [e for e in tables[langs[0]].index if one_line(e) and all(
        e in t.index and isinstance(t[e], str) and one_line(t[e]) for t in tables.values())][:n]
    assert len(english) == n
    return {"en": english, **{xx: [str(tables[xx][e]) for e in english] for xx in langs}}


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def outputs_of_a_full_run(results, pairs):
    return ([f"{results}/activations/{p}.parquet" for p in pairs]
            + [f"{results}/scores/{m}{s}.parquet" for m in METHODS for s in ("", "_iou", "_stability")]
            + [f"{results}/ablation/{m}.parquet" for m in METHODS]
            + [f"{results}/translation/{p}.parquet" for p in pairs]
            + [f"{results}/translation/{t}.parquet" for t in ("scores", "correlation", "measures")]
            + [f"{results}/figures/{m}/iou_layers.png" for m in METHODS])


def test_the_own_corpus_example_runs_end_to_end(tmp_path):
    shutil.copy(ROOT / "config" / "examples" / "own-corpus.yaml", tmp_path / "own-corpus.yaml")
    cfg = yaml.safe_load((tmp_path / "own-corpus.yaml").read_text())
    lines = {}
    for split, n in (("validation", 16), ("test", 8)):
        lines[split] = aligned(["de", "fr"], split, n)
        for lang, text in lines[split].items():
            write_lines(tmp_path / "corpus" / f"{split}.{lang}", text)
    snakemake(tmp_path, *QUICK, configfile=tmp_path / "own-corpus.yaml", env=OFFLINE, timeout=1500)
    results = "results/demo-cohere/my-corpus/validation"
    for path in outputs_of_a_full_run(results, cfg["pairs"]):
        assert (tmp_path / path).is_file(), path
    table = read_table(tmp_path / "results/data/my-corpus/validation/fr-en.parquet")
    assert list(table["src"]) == lines["validation"]["fr"] and list(table["tgt"]) == lines["validation"]["en"]
    held = read_table(tmp_path / "results/data/my-corpus/test/en-de.parquet")
    assert list(held["tgt"]) == lines["test"]["de"]
    assert read_metadata(tmp_path / f"{results}/activations/de-en.parquet")["n_sentences"] == 16
    # the evaluation read the held-out file: every direction's 8 test sentences translated, and the
    # --config overlay reached the ablation as a number
    for pair in cfg["pairs"]:
        assert len(read_table(tmp_path / f"{results}/translation/{pair}.parquet")) == 8
    ablation = read_table(tmp_path / f"{results}/ablation/lape.parquet")
    assert set(ablation["condition"]) == {"selected", "random"}
    assert ablation[ablation["condition"] == "random"].groupby(["group", "eval_lang"])["seed"].nunique().eq(2).all()


def test_the_own_model_example_runs_end_to_end(tmp_path, small_model_dir):
    """own-model.yaml with its hub id replaced by a local model directory and EC40 by a copy in the
    hub's layout (both written by the test): the rest of the file as shipped."""
    cfg = yaml.safe_load((ROOT / "config" / "examples" / "own-model.yaml").read_text())
    xxs = sorted({p.replace("en", "").strip("-") for p in cfg["pairs"]})
    root = tmp_path / "ec40"
    for split, n in (("validation", 8), ("test", 4)):
        texts = aligned(xxs, "validation" if split == "validation" else "test", n)
        for xx in xxs:
            for side in ("en", xx):
                write_lines(root / ec40.remote_path(split, xx, side), texts[side])
    cfg["model"]["id"] = str(small_model_dir)
    cfg["dataset"]["local_dir"] = str(root)
    (tmp_path / "own-model.yaml").write_text(yaml.safe_dump(cfg))
    snakemake(tmp_path, *QUICK, configfile=tmp_path / "own-model.yaml", env=OFFLINE, timeout=1500)
    results = f"results/{cfg['model']['name']}/ec40/validation"
    for path in outputs_of_a_full_run(results, cfg["pairs"]):
        assert (tmp_path / path).is_file(), path
    meta = read_metadata(tmp_path / f"{results}/activations/en-hi.parquet")
    assert meta["n_sentences"] == 8 and meta["counted_lang"] == "en"
    assert str(small_model_dir) in str(meta.get("model_id") or meta.get("model"))


def test_the_models_side_by_side_example_plans_both_models_and_their_comparison(tmp_path):
    """config/examples/models-side-by-side.yaml, offline: every model's jobs under its own folder, the
    shared pair tables once, each model built once, one comparison per scoring method."""
    path = ROOT / "config" / "examples" / "models-side-by-side.yaml"
    cfg = yaml.safe_load(path.read_text())
    proc = snakemake(tmp_path, "--dry-run", configfile=path, env=OFFLINE)
    counts = job_counts(proc.stdout)
    n_pairs, n_methods = len(cfg["pairs"]), len(cfg["scoring"]["methods"])
    assert [m["name"] for m in cfg["models"]] == ["demo-cohere", "gemma3-270m"]
    assert counts["build_demo_model"] == counts["build_gemma3_model"] == 1
    assert counts["pair_table"] == 2 * n_pairs  # selection and held-out split, shared by the models
    assert counts["collect_activations"] == 2 * n_pairs
    assert counts["score"] == counts["ablation"] == 2 * n_methods
    assert counts["compare"] == n_methods
    for name in ("demo-cohere", "gemma3-270m"):
        assert f"results/{name}/ec40/validation/activations/de-en.parquet" in proc.stdout
    assert "results/compare/ec40/validation/lape_summary.png" in proc.stdout
    assert not (tmp_path / "results").exists()
