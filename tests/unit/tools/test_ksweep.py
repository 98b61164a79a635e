"""python -m neurospec.tools.ksweep: what the frequency method's k selects, on tables whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from neurospec.tools import ksweep
from neurospec.tables import write_counts
from synthetic_counts import complete
from test_scoring import synthetic

N_LAYERS, N_NEURONS = 2, 200


def flat_tables(langs=("de", "fr", "ru")):
    """Every neuron counted for the same number of tokens, in every pair: a perfectly flat mass."""
    layer = np.repeat(np.arange(N_LAYERS), N_NEURONS).astype(np.int32)
    neuron = np.tile(np.arange(N_NEURONS), N_LAYERS).astype(np.int32)
    tables = {}
    for xx in langs:
        for src, tgt in ((xx, "en"), ("en", xx)):
            df = pd.DataFrame({"layer": layer, "neuron": neuron, "active": 500, "nonzero": 1000,
                               "gate_active": 500, "act_sum": 1.0})
            tables[f"{src}-{tgt}"] = (df, {"n_tokens": 1000, "pair": f"{src}-{tgt}", "counted_lang": src})
    return tables


def test_flat_counts_select_k_percent_of_the_neurons_and_the_same_ones_everywhere():
    table = ksweep.sweep(flat_tables(), ks=(10, 70, 95), columns=("gate_active",))
    for row in table.itertuples():
        expected = math.ceil(row.k / 100 * N_NEURONS) / N_NEURONS  # the crossing neuron included
        assert [row.share_mean, row.share_min, row.share_max] == pytest.approx([expected] * 3)
        assert row.iou_xx_en == row.iou_en_xx == 1.0  # ties broken by neuron index: no language signal


def test_planted_neurons_separate_languages_at_small_k_only():
    tables, _ = synthetic(seed=0)
    table = ksweep.sweep(tables, ks=(5, 95), columns=("gate_active",)).set_index("k")
    assert table.loc[5, "share_mean"] < 0.1 < 0.9 < table.loc[95, "share_mean"]
    # at k = 95 nearly all neurons are selected for every language: overlap near 1
    assert table.loc[95, "iou_xx_en"] > 0.85 > table.loc[5, "iou_xx_en"]
    # en->xx pairs all count English tokens: more alike than xx->en pairs at every k
    assert (table["iou_en_xx"] > table["iou_xx_en"]).all()


def test_command_line_prints_the_table(tmp_path, capsys):
    paths = []
    for pair, (df, meta) in flat_tables(("de",)).items():
        paths.append(tmp_path / f"{pair}.parquet")
        write_counts(complete(df), paths[-1], meta)  # the columns ksweep does not read: zero
    assert ksweep.main([*map(str, paths), "--k", "10", "95", "--column", "nonzero"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("| column | k |") and len(out) == 4
    assert out[2] == "| `nonzero` | 10 | 10.0% (10.0%–10.0%) | nan | nan |"  # one pair per direction
    assert out[3].startswith("| `nonzero` | 95 | 95.0% (95.0%–95.0%)")
