"""The summary of a finished run: numbers equal the run's tables and a recomputation of both contrast units."""

from __future__ import annotations

import pytest

from neurospec.score import scoring, stability
from neurospec.tools import summary
from neurospec.errors import NeurospecError
from synthetic_counts import write_tables
from test_scoring import LANGS, N_LAYERS, N_NEURONS, synthetic


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run's directory as the workflow lays it out: activations/, scores/ (with stability), logs beside."""
    root = tmp_path_factory.mktemp("results")
    run = root / "m" / "demo" / "validation"
    (run / "activations").mkdir(parents=True)
    (root / "logs" / "m" / "demo" / "validation" / "scores").mkdir(parents=True)  # not a run
    (root / "logs" / "m" / "demo" / "validation" / "activations").mkdir(parents=True)
    tables, _ = synthetic(seed=0)
    paths = write_tables(tables, run / "activations")
    for method, params in (("contrast", {"fdr": 0.01, "min_log_odds": 1.0, "unit": "sentence"}),
                           ("frequency", {"k": 10})):
        scoring.run_scoring(paths, run / "scores" / f"{method}.parquet", run / "scores" / f"{method}_iou.parquet",
                            method, "gate_active", params)
        stability.run_stability(paths, run / "scores" / f"{method}_stability.parquet", method, "gate_active", params)
    return root, run, tables


def test_summary_numbers_are_the_runs(run, capsys):
    root, run_dir, tables = run
    assert summary.find_runs(root) == [run_dir] == summary.find_runs(run_dir)
    result = summary.main([str(root)])[0]
    methods = result["methods"].set_index("method")
    scores, _ = scoring.read_scores(run_dir / "scores" / "contrast.parquet")
    assert methods.loc["contrast", "selected"] == len(scores) > 0
    assert methods.loc["frequency", "groups"] == len(tables)
    stab = stability.summarize(stability.read_stability(run_dir / "scores" / "contrast_stability.parquet")[0])
    assert methods.loc["contrast", "median_iou"] == stab["median_iou"] >= 0.9
    # both contrast units, recomputed with the run's parameters
    c = result["contrast"]
    assert set(c["unit"]) == {"sentence", "token"} and set(c["language"]) == set(LANGS)
    sentence = c[c["unit"] == "sentence"].set_index("language")["selected"]
    assert sentence.to_dict() == scores.groupby("group").size().reindex(LANGS, fill_value=0).to_dict()
    assert (c["n_units"] == N_LAYERS * N_NEURONS).all()
    pooled = scoring.pool_by_language(scoring.stack_counts(tables, "gate_active"), scoring.counted_languages(tables))
    assert c[c["unit"] == "token"]["selected"].sum() == len(scoring.contrast(pooled, unit="token"))
    out = capsys.readouterr().out
    assert f"### {run_dir}" in out and "| sentence |" in out and "| token |" in out and "| frequency |" in out


def test_summary_errors_are_one_line(tmp_path):
    with pytest.raises(SystemExit, match="neurospec: error: no finished run under"):
        summary.main([str(tmp_path)])
    with pytest.raises(NeurospecError, match="does not exist"):
        summary.find_runs(tmp_path / "nope")
