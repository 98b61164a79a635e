"""The translation stage in the workflow: its tables and figures on the small demo, and what reruns when."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import yaml

from neurospec.tables import read_metadata, read_table
from workflow_utils import job_counts, snakemake, write_shared_config

RESULTS = "results/demo-small/demo/validation"
PAIRS = ["en-de", "de-en", "en-ru", "ru-en", "en-hi", "hi-en"]
# what the shared run (.test/config/config.yaml) sets for this stage
EVALUATE = {"translate": {"max_sentences": 12, "max_new_tokens": 16, "ablate": True},
            "correlation": {"n_boot": 200, "seed": 0}}
STAGE = {"translate", "translate_ablated", "translation_scores", "correlation", "figure_translation_quality",
         "figure_correlation"}


def _evaluate(**changes):
    out = {key: dict(value) for key, value in EVALUATE.items()}
    for key, value in changes.items():
        out[key].update(value)
    return out


@pytest.fixture(scope="module")
def translated(shared_run):
    """The shared run (translation and ablated translation on, to its report; tests/workflow/conftest.py)."""
    workdir, cfg = shared_run
    evaluate = yaml.safe_load(cfg.read_text())["evaluate"]
    assert all(evaluate[key][k] == v for key, part in EVALUATE.items() for k, v in part.items()), evaluate
    return workdir, cfg


def _methods(workdir):
    """The scoring methods the run scored (never a hard-coded list)."""
    return sorted(p.stem for p in (workdir / RESULTS / "scores").glob("*.parquet")
                  if not p.stem.endswith(("_iou", "_stability")))


def test_hypotheses_are_held_out_and_scored_as_sacrebleu_scores_them(translated):
    workdir, _ = translated
    scores = read_table(workdir / RESULTS / "translation" / "scores.parquet")
    methods = _methods(workdir)
    assert len(methods) >= 4
    assert sorted(p.stem for p in (workdir / RESULTS / "translation" / "ablated").glob("*.parquet")) == methods
    assert len(scores) == len(PAIRS) * (1 + len(methods))
    assert sorted(scores.loc[scores["condition"] == "ablated", "method"].unique()) == methods
    for pair in PAIRS:
        hyps = read_table(workdir / RESULTS / "translation" / f"{pair}.parquet")
        meta = read_metadata(workdir / RESULTS / "translation" / f"{pair}.parquet")
        test = read_table(workdir / "results/data/demo/test" / f"{pair}.parquet").sort_values("id").head(12)
        assert meta["split"] == "test" and meta["n_sentences"] == 12 and meta["prompt_mode"] == "plain"
        assert hyps["id"].tolist() == test["id"].tolist() and hyps["ref"].tolist() == test["tgt"].tolist()
        assert (hyps["n_new_tokens"] <= 16).all()
    # one direction against the command line, on files written from the saved hypotheses
    hyps = read_table(workdir / RESULTS / "translation" / "hi-en.parquet")
    (workdir / "ref.txt").write_text("\n".join(hyps["ref"]) + "\n", encoding="utf-8")
    (workdir / "hyp.txt").write_text("\n".join(hyps["hyp"]) + "\n", encoding="utf-8")
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(workdir / "ref.txt"), "-i", str(workdir / "hyp.txt"),
                          "-m", "chrf", "--chrf-word-order", "2", "-b", "-w", "6"], capture_output=True, text=True,
                         check=True)
    base = scores[(scores["pair"] == "hi-en") & (scores["condition"] == "base")].iloc[0]
    assert base["chrf"] == pytest.approx(float(cli.stdout), abs=1e-5)
    # ablated rows: n_neurons is the size of the selection of the direction's group
    freq = read_table(workdir / RESULTS / "scores" / "frequency.parquet")
    row = scores[(scores["pair"] == "en-de") & (scores["method"] == "frequency")].iloc[0]
    assert row["group"] == "en-de" and row["n_neurons"] == (freq["group"] == "en-de").sum()
    lang = scores[(scores["pair"] == "en-de") & (scores["method"] == "frequency_language")].iloc[0]
    assert lang["group"] == "de"


def test_correlation_tables_and_figures_are_in_the_report(translated):
    workdir, _ = translated
    methods = _methods(workdir)
    result = read_table(workdir / RESULTS / "translation" / "correlation.parquet")
    measures = read_table(workdir / RESULTS / "translation" / "measures.parquet")
    n_measures = 3 * len(methods) + 1  # three per method, and the tier
    # three scopes of every measure against chrF++, and of every method's measures against its delta chrF++
    assert len(measures) == len(PAIRS) * n_measures and len(result) == 3 * (n_measures + 3 * len(methods))
    assert sorted(result.loc[result["quality"] == "delta_chrf", "method"].unique()) == methods
    scores = read_table(workdir / RESULTS / "translation" / "scores.parquet")
    ablated = scores[(scores["condition"] == "ablated") & (scores["method"] == "frequency")].set_index("pair")
    delta = measures[(measures["method"] == "frequency") & (measures["measure"] == "n_selected")].set_index("pair")
    assert delta["delta_chrf"].to_dict() == pytest.approx(ablated.loc[delta.index, "delta_chrf"].to_dict())
    # the unit is the language: 3 languages, 6 directions over both kinds
    full = result[(result["scope"] == "all") & result["rho"].notna()]
    assert len(full) and (full["unit"] == "language").all() and (full["n_directions"] == 6).all()
    assert (full["n"] == 3).all() and (full["p_test"] == "cluster permutation").all()
    assert "Benjamini-Hochberg" in read_metadata(workdir / RESULTS / "translation" / "correlation.parquet")[
        "q_value_family"]
    freq = read_table(workdir / RESULTS / "scores" / "frequency.parquet")
    got = measures[(measures["method"] == "frequency") & (measures["measure"] == "n_selected")].set_index("pair")
    for pair in PAIRS:
        assert got.loc[pair, "value"] == (freq["group"] == pair).sum()
    everything = result[result["scope"] == "all"]
    assert (everything["n"] <= len(PAIRS) // 2).all() and (everything["n_boot"] <= 200).all()
    report = (workdir / "report.html").read_text(errors="replace")
    for name in ("quality.png", "correlation.png"):
        png = workdir / RESULTS / "figures" / "translation" / name
        assert png.stat().st_size > 5000 and name in report
    # the demo's noise warning, in both captions
    assert "random weights: it does not translate" in report and "its selected neurons are noise" in report


def _dry(workdir, name, overrides):
    cfg = write_shared_config(workdir, overrides, name=name)
    counts = job_counts(snakemake(workdir, "--dry-run", configfile=cfg).stdout)
    counts.pop("all", None)
    return counts


def test_a_generation_parameter_reruns_translation_only(translated):
    workdir, _ = translated
    n_methods = len(_methods(workdir))
    counts = _dry(workdir, "c-sentences.yaml", {"evaluate": _evaluate(translate={"max_sentences": 10})})
    # and the translation quality table (summary/translation_quality)
    assert counts == {"translate": 6, "translate_ablated": n_methods, "translation_scores": 1, "correlation": 1,
                      "figure_translation_quality": 1, "figure_correlation": 1, "summary_table": 1}


def test_the_ablation_mode_reruns_the_ablated_translations_only(translated):
    workdir, _ = translated
    counts = _dry(workdir, "c-mean.yaml", {"evaluate": _evaluate(translate={"ablation_mode": "mean"})})
    assert counts.pop("translate_ablated") == len(_methods(workdir))
    assert set(counts) == STAGE - {"translate", "translate_ablated"} | {"summary_table"}


def test_a_correlation_parameter_reruns_the_correlation_only(translated):
    workdir, _ = translated
    counts = _dry(workdir, "c-boot.yaml", {"evaluate": _evaluate(correlation={"n_boot": 300})})
    assert counts == {"correlation": 1, "figure_correlation": 1}


def test_scores_have_the_off_target_rate_and_delta_intervals(translated):
    """Through snakemake: every output's heliport label in lid.parquet, the score table's off-target rate
    recomputed from it, and the paired bootstrap interval of delta chrF++ (default n_boot) in range."""
    from neurospec import lid as LID

    workdir, _ = translated
    scores = read_table(workdir / RESULTS / "translation" / "scores.parquet")
    lid = read_table(workdir / RESULTS / "translation" / "lid.parquet")
    known = LID.labels()
    assert set(lid["lid"]) <= known and len(lid) > 0
    n_generated = (scores["condition"] == "base").sum() + ((scores["condition"] == "ablated")
                                                          & (scores["n_neurons"] > 0)).sum()
    assert len(lid) == 12 * n_generated
    for row in scores.itertuples():
        part = lid[(lid["pair"] == row.pair) & (lid["condition"] == row.condition)
                   & (lid["method"] == (row.method if row.condition == "ablated" else ""))]
        if row.condition == "ablated" and row.n_neurons == 0:  # not generated again: the baseline's
            part = lid[(lid["pair"] == row.pair) & (lid["condition"] == "base")]
            assert row.delta_chrf == 0 and row.delta_chrf_low == 0 and row.delta_chrf_high == 0
        assert row.lid_covered  # de, ru, hi and English are all covered
        verdicts = part["on_target"].dropna().astype(bool)
        assert row.n_identified == len(verdicts) <= row.n == len(part)
        if len(verdicts):
            assert 0 <= row.off_target <= 1 and row.off_target == pytest.approx(1 - verdicts.mean())
        else:
            assert pd.isna(row.off_target)
        if row.condition == "base":
            assert pd.isna(row.delta_chrf_low) and pd.isna(row.delta_chrf_high)
        else:
            assert -100 <= row.delta_chrf_low <= row.delta_chrf <= row.delta_chrf_high <= 100
    meta = read_metadata(workdir / RESULTS / "translation" / "scores.parquet")
    assert meta["delta_chrf_interval"]["n_boot"] == 1000 and meta["delta_chrf_interval"]["unit"] == "sentences"
    assert meta["lid"]["not_covered"] == ["ast", "ha", "kab"] and meta["lid"]["confidence_threshold"] is True


def test_a_translation_scores_parameter_reruns_the_scores_only(translated):
    workdir, _ = translated
    evaluate = {**_evaluate(), "translation_scores": {"n_boot": 50, "lid_threshold": False}}
    counts = _dry(workdir, "c-scores.yaml", {"evaluate": evaluate})
    assert counts == {"translation_scores": 1, "correlation": 1, "figure_translation_quality": 1, "summary_table": 1,
                      "figure_correlation": 1}
