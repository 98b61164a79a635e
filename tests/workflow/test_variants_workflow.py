"""Through snakemake: a named variant beside the default (its own tables, figures and report entries,
values by hand), what a variant's change reruns, scoring.methods and the evaluation switches, typed
nested --config values, the lone overlay's line, and the held-out slice of one file."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import shutil
from pathlib import Path

import pytest
import yaml

from neurospec.tables import read_metadata, read_table
from workflow_utils import ROOT, effective_config, job_counts, report_entries, snakemake, write_config

RESULTS = "results/demo-small/demo/validation"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# LAPE keeps round(top_rate x 288) of the 3 x 96 neurons: 14 by default here, 6 in the strict variant
VARIANT_RUN = {"scoring": {"k": 10, "diffmeans": {"k": 10}, "methods": ["lape"],
                           "lape": {"top_rate": 0.05},
                           "variants": {"strict": {"lape": {"top_rate": 0.02}}}},
               "evaluate": {"enabled": False}}
FIGURES = ("iou_layers", "specialized_counts", "family_iou", "clustering", "stability")


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    """The small demo with scoring.methods [lape], a variant 'strict' and the evaluation off; its report."""
    workdir = tmp_path_factory.mktemp("variant-run")
    cfg = write_config(workdir, VARIANT_RUN)
    proc = snakemake(workdir, configfile=cfg)
    snakemake(workdir, "--report", "report.html", configfile=cfg)
    return workdir, cfg, proc


def kept_units(scores):
    return set(zip(scores["layer"], scores["neuron"]))


def test_a_variant_lands_beside_the_default_with_different_values(variant_run):
    workdir, _, _ = variant_run
    scores = workdir / RESULTS / "scores"
    default, strict = read_table(scores / "lape.parquet"), read_table(scores / "lape@strict.parquet")
    meta_d, meta_s = read_metadata(scores / "lape.parquet"), read_metadata(scores / "lape@strict.parquet")
    assert meta_d["method"] == meta_s["method"] == "lape"
    assert "variant" not in meta_d and meta_s["variant"] == "strict"
    assert meta_d["params"]["top_rate"] == 0.05 and meta_s["params"]["top_rate"] == 0.02
    # by hand from the scores: LAPE keeps the round(top_rate x 288) lowest-entropy neurons that pass the
    # filter, so the strict variant's neurons are the default's highest-scoring ones, fewer of them
    units_d, units_s = kept_units(default), kept_units(strict)
    assert len(units_s) < len(units_d) <= 14 and len(units_s) <= 6
    assert units_s <= units_d
    by_unit = default.groupby(["layer", "neuron"])["score"].max()
    lowest_kept = min(by_unit[u] for u in units_s)
    assert all(by_unit[u] <= lowest_kept + 1e-12 for u in units_d - units_s)
    # the same neurons carry the same score and the same groups in both tables
    both = default.merge(strict, on=["group", "layer", "neuron"], suffixes=("_d", "_s"))
    assert len(both) == len(strict) and (both["score_d"] - both["score_s"]).abs().max() < 1e-12
    # the split-half stability of each, and its own figures, drawn from its own table
    stab_d = read_table(scores / "lape_stability.parquet")
    stab_s = read_table(scores / "lape@strict_stability.parquet")
    assert stab_s["n_even"].sum() < stab_d["n_even"].sum()
    assert read_metadata(scores / "lape@strict_stability.parquet")["variant"] == "strict"
    figures = workdir / RESULTS / "figures"
    for name in FIGURES:
        a, b = figures / "lape" / f"{name}.png", figures / "lape@strict" / f"{name}.png"
        assert a.stat().st_size > 0 and b.stat().st_size > 0
        if name != "family_iou":  # the per-layer counts and overlaps differ
            assert a.read_bytes() != b.read_bytes(), name


def test_scoring_methods_and_the_evaluation_switch_leave_out_their_files(variant_run):
    workdir, _, _ = variant_run
    made = {p.relative_to(workdir / RESULTS).as_posix() for p in (workdir / RESULTS).rglob("*") if p.is_file()}
    # no ablation, no translation (the neuron browser, browser.enabled, is not evaluation)
    assert {p.split("/")[0] for p in made} == {"activations", "scores", "figures", "browser", "summary"}
    assert {p for p in made if p.startswith("scores/")} == {
        f"scores/{s}{suffix}.parquet" for s in ("lape", "lape@strict") for suffix in ("", "_iou", "_stability")}
    assert {p.split("/")[1] for p in made if p.startswith("figures/") and p.count("/") == 2} == {"lape",
                                                                                              "lape@strict"}
    assert not (workdir / "results/data/demo/test").exists()  # no held-out pair table was built


def test_the_report_labels_each_variant_with_its_parameters(variant_run):
    workdir, _, _ = variant_run
    results, categories = report_entries((workdir / "report.html").read_text(errors="replace"))
    strict = f"{RESULTS}/figures/lape@strict/iou_layers.png"
    default = f"{RESULTS}/figures/lape/iou_layers.png"
    assert strict in categories["Overlap per layer"]["lape@strict (lape.top_rate=0.02)"]
    assert default in categories["Overlap per layer"]["lape"]
    assert "<strong>lape@strict</strong>" in html.unescape(results[strict]["caption"])
    assert base64.b64decode(results[strict]["data_uri"].split("base64,", 1)[1]) == \
        (workdir / strict).read_bytes()


def planned_outputs(stdout: str) -> list[str]:
    return [p.strip() for line in stdout.splitlines() if line.strip().startswith("output:")
            for p in line.split(":", 1)[1].split(",")]


def test_changing_a_variant_reruns_only_its_files(variant_run, tmp_path):
    workdir, _, _ = variant_run
    changed = yaml.safe_load(yaml.safe_dump(VARIANT_RUN))
    changed["scoring"]["variants"]["strict"]["lape"]["top_rate"] = 0.03
    cfg = write_config(tmp_path, changed, name="config-strict.yaml")
    proc = snakemake(workdir, "--dry-run", configfile=cfg)
    # the neuron browser (browser.enabled) and the summary tables (headline, scores, stability) read every
    # selection: they are made again with any of them
    assert job_counts(proc.stdout) == {"score": 1, "stability": 1, "figure_method": 1, "all": 1,
                                       "browser_contexts": 1, "browser_page": 1, "summary_table": 3}
    outputs = [p for p in planned_outputs(proc.stdout) if "/browser/" not in p and "/summary/" not in p]
    assert outputs and all("lape@strict" in p for p in outputs), outputs
    # a new variant adds its own files, the others stay
    changed["scoring"]["variants"]["loose"] = {"lape": {"top_rate": 0.1}}
    cfg = write_config(tmp_path, changed, name="config-loose.yaml")
    proc = snakemake(workdir, "--dry-run", configfile=cfg)
    assert job_counts(proc.stdout) == {"score": 2, "stability": 2, "figure_method": 2, "all": 1,
                                       "browser_contexts": 1, "browser_page": 1, "summary_table": 3}
    assert {re.search(r"lape@[a-z]+", p).group(0) for p in planned_outputs(proc.stdout)
            if "/browser/" not in p and "/summary/" not in p} == {"lape@strict", "lape@loose"}


def test_a_nested_config_value_is_a_number(variant_run):
    """--config 'scoring={...}' as typed on the command line: its values reach the job as numbers."""
    workdir, cfg, _ = variant_run
    target = f"{RESULTS}/scores/frequency.parquet"
    snakemake(workdir, target, "--config", "scoring={methods: [lape, frequency], k: 20}", configfile=cfg)
    meta = read_metadata(workdir / target)
    assert meta["params"] == {"k": 20} and type(meta["params"]["k"]) is int


def test_a_bad_variant_key_is_one_line_with_a_hint(tmp_path):
    cfg = write_config(tmp_path, {"scoring": {"variants": {"strict": {"lape": {"top_rat": 0.005}}}}})
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg, check=False)
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert lines == ["neurospec: config error: key 'scoring.variants.strict.lape.top_rat': unknown key (a typo?); "
                     "did you mean 'top_rate'? scoring.variants.strict.lape takes: activation_bar_ratio, "
                     "filter_rate, top_rate"], proc.stderr[-2000:]


def test_a_lone_overlay_is_one_line_naming_the_form_to_use(tmp_path):
    (tmp_path / "mine.yaml").write_text("scoring:\n  k: 20\n")
    proc = snakemake(tmp_path, "--dry-run", configfile=Path("mine.yaml"), check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "neurospec:" in line]
    assert lines == ["neurospec: config error: key 'pairs' is missing from --configfile mine.yaml: a --configfile "
                     "replaces config/config.yaml (it is not laid over it); to change a few keys, give "
                     "config/config.yaml first: --configfile config/config.yaml mine.yaml"], proc.stderr[-2000:]
    # the form it names works: the demo config with the overlay's key
    got = effective_config(tmp_path, ROOT / "config" / "config.yaml", tmp_path / "mine.yaml")
    assert got["scoring"]["k"] == 20 and got["pairs"] == yaml.safe_load(
        (ROOT / "config" / "config.yaml").read_text())["pairs"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_the_held_out_slice_of_one_file_is_disjoint_and_evaluated(tmp_path):
    """The own-corpus example without its test files: evaluate.holdout_fraction instead of evaluate.split.
    Its pair tables, built by snakemake: the held-out rows never share a sentence with the collected rows."""
    shutil.copy(ROOT / "config" / "examples" / "own-corpus.yaml", tmp_path / "own-corpus.yaml")
    cfg = yaml.safe_load((tmp_path / "own-corpus.yaml").read_text())
    del cfg["evaluate"]["split"]
    cfg["evaluate"]["holdout_fraction"] = 0.25
    (tmp_path / "one-file.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "corpus").mkdir()
    for lang in ("en", "de", "fr"):
        lines = [f"sentence {i} in {lang}" for i in range(20)]
        lines[17] = lines[2]  # a held-out line that repeats a selection line: dropped from the held-out slice
        (tmp_path / "corpus" / f"validation.{lang}").write_text("\n".join(lines) + "\n")
    proc = snakemake(tmp_path, "--dry-run", configfile=tmp_path / "one-file.yaml", env=OFFLINE)
    counts = job_counts(proc.stdout)
    assert counts["pair_table"] == 8 and counts["ablation"] == 5 and counts["translate"] == 4
    assert "corpus/test" not in proc.stdout
    data = "results/data/my-corpus"
    targets = [f"{data}/validation.{part}/{pair}.parquet" for part in ("select", "holdout")
               for pair in ("en-de", "fr-en")]
    snakemake(tmp_path, *targets, configfile=tmp_path / "one-file.yaml", env=OFFLINE)
    for pair in ("en-de", "fr-en"):
        select = read_table(tmp_path / f"{data}/validation.select/{pair}.parquet")
        held = read_table(tmp_path / f"{data}/validation.holdout/{pair}.parquet")
        src, tgt = pair.split("-")
        assert list(select["src"]) == [f"sentence {i} in {src}" for i in range(15)]
        assert list(held["src"]) == [f"sentence {i} in {src}" for i in (15, 16, 18, 19)]
        collected = {sha(t) for t in [*select["src"], *select["tgt"]]}
        assert not collected & {sha(t) for t in [*held["src"], *held["tgt"]]}
        info = read_metadata(tmp_path / f"{data}/validation.holdout/{pair}.parquet")["holdout"]
        assert info["n_holdout_dropped_duplicates"] == 1 and info["part"] == "holdout"
    # the collection reads the selection part, the evaluation the held-out part
    assert re.search(r"input: results/data/my-corpus/validation\.select/en-de\.parquet", proc.stdout)
    assert "validation.holdout/en-de.parquet" in proc.stdout
