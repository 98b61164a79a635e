"""Crash safety of writes, corrupt inputs, determinism of the demo model and of collection."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from neurospec import collect, demo, models
from neurospec.errors import NeurospecError
from neurospec.tables import COUNT_SCHEMA, atomic_path, read_counts, read_table, write_table


def _digests(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_demo_model_is_byte_identical_across_builds(tmp_path):
    texts = demo.corpus_texts()[::20]
    kwargs = dict(seed=3, vocab_size=400, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1)
    models.build_demo_model(tmp_path / "a", texts, **kwargs)
    models.build_demo_model(tmp_path / "b", texts, **kwargs)
    a, b = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert a == b and {"model.safetensors", "tokenizer.json", "config.json"} <= set(a)
    models.build_demo_model(tmp_path / "c", texts, **{**kwargs, "seed": 4})
    assert _digests(tmp_path / "c")["model.safetensors"] != a["model.safetensors"]
    assert not list(tmp_path.glob(".*.part"))


def test_two_cpu_fp32_runs_give_identical_tables(small_model_dir):
    loaded = models.load_model(str(small_model_dir), dtype="float32", device="cpu")
    pairs, _ = demo.build_pair_table("ru-en", "validation", max_samples=30)
    a, meta_a = collect.collect_pair(loaded, pairs, template="{src}")
    b, meta_b = collect.collect_pair(loaded, pairs, template="{src}")
    assert a.equals(b) and meta_a == meta_b


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "table.parquet"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a table")
            raise RuntimeError("killed")
    assert not target.exists() and not list(target.parent.iterdir())


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_parquet_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "en-de.parquet"
    df = pd.DataFrame({"layer": np.zeros(4, np.int32), "neuron": np.arange(4, dtype=np.int32),
                       "active": [1, 2, 3, 4], "nonzero": [4, 4, 4, 4], "gate_active": [0, 1, 2, 3],
                       "act_sum": [0.5, 1.0, 1.5, 2.0]})
    write_table(df, path, COUNT_SCHEMA, metadata={"n_tokens": 4})
    got, meta = read_counts(path)
    assert got.equals(df) and meta["n_tokens"] == 4
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not parquet" * 10, "empty": b""}[damage])
    with pytest.raises(NeurospecError, match=rf"cannot read Parquet file {path}: corrupt or truncated") as exc:
        read_counts(path)
    assert "\n" not in str(exc.value)


def test_missing_count_metadata_and_columns_are_named(tmp_path):
    path = tmp_path / "x.parquet"
    write_table(pd.DataFrame({"layer": [0], "neuron": [1]}), path)
    with pytest.raises(NeurospecError, match=r"lacks column\(s\) active, nonzero, gate_active, act_sum"):
        read_counts(path)
    with pytest.raises(NeurospecError, match="does not exist"):
        read_table(tmp_path / "nope.parquet")


def test_unknown_model_path_is_one_line(tmp_path):
    with pytest.raises(NeurospecError, match=r"model.id .*no-such-model.*: no such directory"):
        models.load_model(str(tmp_path / "no-such-model"), device="cpu")
