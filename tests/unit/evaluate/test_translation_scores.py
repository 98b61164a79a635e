"""chrF++ and BLEU per direction equal sacrebleu's command line on the saved files; the quality figure."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from neurospec.evaluate import translation_quality as Q
from neurospec.errors import NeurospecError
from neurospec.tables import read_metadata, read_table, write_table

REFS = {
    "en-de": ["Der Hund bellt laut.", "Das Wetter ist heute schön.", "Wir fahren morgen nach Berlin.",
              "Ich habe das Buch nicht gelesen.", "Die Preise steigen weiter."],
    "hi-en": ["The dog barks loudly.", "The weather is nice today.", "We are going to Berlin tomorrow.",
              "I have not read the book.", "Prices keep rising."],
}
SRCS = {
    "en-de": REFS["hi-en"],
    "hi-en": ["कुत्ता ज़ोर से भौंकता है।", "आज मौसम अच्छा है।", "हम कल बर्लिन जा रहे हैं।",
              "मैंने किताब नहीं पढ़ी है।", "कीमतें बढ़ती जा रही हैं।"],
}
HYPS = {
    "en-de": ["Der Hund bellt.", "Das Wetter ist schön heute.", "Morgen fahren wir nach Berlin.", "",
              "Die Preise steigen."],
    "hi-en": ["The dog barks loud.", "Today the weather is good.", "We go to Berlin tomorrow.",
              "I did not read the book.", "Prices are rising."],
}
ABLATED = {"en-de": ["Hund.", "Wetter schön.", "Berlin morgen.", "Buch", "Preise."],
           "hi-en": ["dog", "weather good", "Berlin", "book", "prices"]}


def _cli(ref_lines, hyp_lines, tmp_path, *metric):
    (tmp_path / "ref.txt").write_text("\n".join(ref_lines) + "\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("\n".join(hyp_lines) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
                          "-m", *metric, "-b", "-w", "6"], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


@pytest.fixture()
def saved(tmp_path):
    """Baseline hypotheses per direction and one method's ablated ones, as the translate rules write them."""
    base = []
    for pair in REFS:
        df = pd.DataFrame({"id": np.arange(5, dtype=np.int64), "src": SRCS[pair], "ref": REFS[pair],
                           "hyp": HYPS[pair]})
        write_table(df, tmp_path / f"{pair}.parquet", metadata={"pair": pair, "split": "test"})
        base.append(tmp_path / f"{pair}.parquet")
    rows = []
    for pair in REFS:
        rows.append(pd.DataFrame({"pair": pair, "group": pair.split("-")[1], "n_neurons": 7,
                                  "id": np.arange(5, dtype=np.int64)[::-1], "src": SRCS[pair][::-1],
                                  "ref": REFS[pair][::-1], "hyp": ABLATED[pair][::-1]}))
    write_table(pd.concat(rows), tmp_path / "m.parquet", metadata={"method": "m", "mode": "zero", "unablated": {}})
    write_table(rows[0].iloc[:0], tmp_path / "none.parquet",
                metadata={"method": "none", "mode": "zero", "unablated": {"en-de": "de", "hi-en": "en"}})
    out = tmp_path / "scores.parquet"
    Q.score_to_file([str(p) for p in base], str(out), ablated_paths=[str(tmp_path / "m.parquet"),
                                                                    str(tmp_path / "none.parquet")])
    return tmp_path, out


def test_scores_equal_sacrebleus_command_line(saved):
    tmp_path, out = saved
    scores = read_table(out)
    assert list(scores.columns) == list(Q.SCORE_COLUMNS)
    cli = tmp_path / "cli"
    cli.mkdir()
    for pair in REFS:
        saved_hyps = read_table(tmp_path / f"{pair}.parquet")  # the saved file, as the CLI would read it
        row = scores[(scores["pair"] == pair) & (scores["condition"] == "base")].iloc[0]
        chrf = _cli(saved_hyps["ref"], saved_hyps["hyp"], cli, "chrf", "--chrf-word-order", "2")
        bleu = _cli(saved_hyps["ref"], saved_hyps["hyp"], cli, "bleu")
        copy = _cli(saved_hyps["ref"], saved_hyps["src"], cli, "chrf", "--chrf-word-order", "2")
        assert row["chrf"] == pytest.approx(chrf, abs=1e-5) and row["bleu"] == pytest.approx(bleu, abs=1e-5)
        assert row["chrf_copy"] == pytest.approx(copy, abs=1e-5)
        assert 20 < row["chrf"] < 100 and row["n"] == 5 and row["delta_chrf"] == 0
        assert row["lang"] == ("de" if pair == "en-de" else "hi")
        ablated = read_table(tmp_path / "m.parquet")
        part = ablated[ablated["pair"] == pair]
        abl = scores[(scores["pair"] == pair) & (scores["method"] == "m")].iloc[0]
        chrf_a = _cli(part["ref"], part["hyp"], cli, "chrf", "--chrf-word-order", "2")
        assert abl["chrf"] == pytest.approx(chrf_a, abs=1e-5)
        assert abl["delta_chrf"] == pytest.approx(chrf_a - chrf, abs=1e-5) and abl["delta_chrf"] < -10
        assert abl["condition"] == "ablated" and abl["n_neurons"] == 7 and abl["group"] == pair.split("-")[1]
        # nothing selected, nothing ablated: the baseline's scores, delta 0
        none = scores[(scores["pair"] == pair) & (scores["method"] == "none")].iloc[0]
        assert none["n_neurons"] == 0 and none["delta_chrf"] == 0 and none["chrf"] == row["chrf"]
    sig = read_metadata(out)["signatures"]
    assert sig["chrf"] == "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0"
    assert sig["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0")


def test_ablated_translations_of_other_sentences_are_refused(saved):
    tmp_path, out = saved
    df = read_table(tmp_path / "m.parquet")
    df.loc[df.index[0], "id"] = 99
    write_table(df, tmp_path / "m.parquet", metadata={"method": "m", "mode": "zero", "unablated": {}})
    with pytest.raises(NeurospecError, match="other sentences than its baseline"):
        Q.score_to_file([str(tmp_path / f"{p}.parquet") for p in REFS], str(tmp_path / "again.parquet"),
                        ablated_paths=[str(tmp_path / "m.parquet")])
    assert not (tmp_path / "again.parquet").exists()


def test_quality_figure_draws_the_table(saved, tmp_path):
    _, out = saved
    scores = read_table(out)
    png = tmp_path / "quality.png"
    drawn = Q.plot_quality(scores, png, demo=True)
    assert drawn["order"] == ["en-de", "hi-en"]  # en->xx first
    base = scores[scores["condition"] == "base"].set_index("pair")
    np.testing.assert_allclose(drawn["chrf"], base.loc[["en-de", "hi-en"], "chrf"])
    assert list(drawn["delta"].columns) == ["m", "none"]
    np.testing.assert_allclose(drawn["delta"]["none"], 0.0)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)
    assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05  # not blank
