"""The ablation stage in the workflow: its tables and figures on the small demo, and what reruns when."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from neurospec.tables import read_metadata, read_table
from workflow_utils import job_counts, snakemake, write_config, write_shared_config

RESULTS = "results/demo-small/demo/validation"
METHODS = ("frequency", "frequency_language", "lape", "contrast", "diffmeans")
# what the shared run (.test/config/config.yaml) sets for this stage
ABLATION = {"split": None, "ablation": {"mode": "zero", "random_sets": 2, "max_sentences": 12, "seed": 5}}


@pytest.fixture(scope="module")
def ablation_run(shared_run):
    """The shared run (its ablation stage and report; tests/workflow/conftest.py)."""
    workdir, cfg = shared_run
    evaluate = yaml.safe_load(cfg.read_text())["evaluate"]
    assert evaluate["split"] is None and evaluate["ablation"] == ABLATION["ablation"], evaluate
    return workdir


def _config(workdir, ablation=None, **sections):
    return write_shared_config(workdir, {"evaluate": {"ablation": ablation or {}}, **sections},
                               name="config-changed.yaml")


def test_ablation_tables_hold_every_group_language_and_condition(ablation_run):
    workdir = ablation_run
    held_out = {}  # language -> its test-split sentences, from the pair tables
    for pair in ("en-de", "en-ru", "en-hi"):
        table = read_table(workdir / "results/data/demo/test" / f"{pair}.parquet").sort_values("id")
        held_out.setdefault("en", []).extend(t for t in table["src"] if t not in held_out.get("en", []))
        held_out[pair[3:]] = list(table["tgt"])
    for method in METHODS:
        path = workdir / RESULTS / "ablation" / f"{method}.parquet"
        df, meta = read_table(path), read_metadata(path)
        scores, score_meta = read_table(workdir / RESULTS / "scores" / f"{method}.parquet"), \
            read_metadata(workdir / RESULTS / "scores" / f"{method}.parquet")
        assert list(df.columns) == ["group", "eval_lang", "condition", "seed", "n_neurons", "n_tokens", "nll",
                                    "base_nll", "delta_nll", "rel_delta_nll", "delta_nll_low", "delta_nll_high",
                                    "p_controls", "budget"]
        assert sorted(df["group"].unique()) == sorted(score_meta["groups"])
        assert meta["eval_split"] == "test" and meta["eval_languages"] == ["en", "de", "hi", "ru"]
        assert meta["mode"] == "zero" and meta["seeds"] == [5, 6] and meta["demo_model"] is True
        # every group: 1 selected + 2 random conditions on each of the 4 languages
        per_group = df.groupby("group").apply(lambda d: sorted(zip(d.condition, d.seed, d.eval_lang)),
                                              include_groups=False)
        expected = sorted((c, s, lang) for c, s in [("selected", -1), ("random", 5), ("random", 6)]
                          for lang in ["de", "en", "hi", "ru"])
        assert all(v == expected for v in per_group)
        # n_neurons is the group's selection size; the controls ablate as many
        sizes = scores.groupby("group").size()
        for group, d in df.groupby("group"):
            assert (d["n_neurons"] == sizes.get(group, 0)).all()
        # one baseline per language, shared by all conditions; delta = nll - base
        assert (df.groupby("eval_lang")["base_nll"].nunique() == 1).all()
        assert (df.groupby("eval_lang")["n_tokens"].nunique() == 1).all()
        np.testing.assert_allclose(df["delta_nll"], df["nll"] - df["base_nll"], atol=1e-12)
        assert np.isfinite(df["nll"]).all() and (df["base_nll"] > 0).all()
        ablated = df[df["n_neurons"] > 0]
        assert len(ablated) and (ablated["delta_nll"] != 0).any()
        assert (df[df["n_neurons"] == 0]["delta_nll"] == 0).all()
        # the held-out sentences: each language's first 12 test-split sentences, named in the metadata
        for lang, sources in meta["sentences"].items():
            taken = []
            for src in sources:
                table = read_table(workdir / "results/data/demo/test" / f"{src['pair']}.parquet").set_index("id")
                taken += [table.loc[i, src["side"]] for i in src["ids"]]
            assert taken == held_out[lang][:12] and meta["n_sentences"][lang] == 12


def test_ablation_figures_are_in_the_report(ablation_run):
    import matplotlib.image as mpimg

    workdir = ablation_run
    report = (workdir / "report.html").read_text(errors="replace")
    pngs = [workdir / RESULTS / "figures" / m / "ablation.png" for m in METHODS]
    pngs.append(workdir / RESULTS / "figures" / "ablation_specificity.png")
    for png in pngs:
        assert png.stat().st_size > 5000 and png.name in report
        pixels = mpimg.imread(png)[..., :3]
        assert (pixels < 0.9).mean() > 0.02  # drawn, not blank
    assert "these numbers are noise" in report


def test_figure_data_are_selected_minus_random(ablation_run):
    from neurospec.plots.ablation_figures import delta_matrix, read, specificity

    df, meta = read(ablation_run / RESULTS / "ablation" / "lape.parquet")
    matrix = delta_matrix(df, meta)
    assert list(matrix.columns) == ["en", "de", "ru", "hi"]  # by family: English, Germanic, Slavic, Indo-Aryan
    for group in matrix.index:
        for lang in matrix.columns:
            d = df[(df.group == group) & (df.eval_lang == lang)]
            expected = d[d.condition == "selected"]["delta_nll"].iloc[0] - d[d.condition == "random"]["delta_nll"].mean()
            assert matrix.loc[group, lang] == pytest.approx(expected)
    spec = specificity(df, meta)
    assert sorted(spec["group"]) == sorted(meta["group_lang"])
    for _, row in spec.iterrows():
        d = df[df.group == row["group"]]
        sel = d[d.condition == "selected"].set_index("eval_lang")
        sel = sel["delta_nll"] / sel["base_nll"]  # specificity is on the relative scale
        rand = d[(d.condition == "random") & (d.eval_lang == row["lang"])]
        assert row["own"] == pytest.approx(sel[row["lang"]])
        assert row["specific"] == bool(sel[row["lang"]] > sel.drop(row["lang"]).max() and sel[row["lang"]] >
                                       (rand["delta_nll"] / rand["base_nll"]).max())


def test_an_ablation_parameter_reruns_ablation_only(ablation_run):
    for change in ({"random_sets": 3}, {"max_sentences": 5}, {"mode": "mean"}, {"seed": 0}):
        counts = job_counts(snakemake(ablation_run, "--dry-run", configfile=_config(ablation_run, change)).stdout)
        # and the two summary tables that read the ablation tables (headline, ablation)
        assert counts == {"ablation": len(METHODS), "figure_ablation": len(METHODS), "figure_ablation_specificity": 1,
                          "summary_table": 2, "all": 1}, (change, counts)


def test_the_gemma3_model_is_built_by_the_workflow(tmp_path):
    """model.id gemma3-270m: one build job, which every model job waits for (dry run: nothing is built)."""
    cfg = write_config(tmp_path, {"model": {"id": "gemma3-270m", "name": "gemma3-270m"}})
    out = snakemake(tmp_path, "--dry-run", configfile=cfg).stdout
    counts = job_counts(out)
    assert counts.get("build_gemma3_model") == 1 and "build_demo_model" not in counts
    assert counts.get("collect_activations") == 6 and counts.get("ablation") == len(METHODS)
    assert "results/models/gemma3-270m" in out
