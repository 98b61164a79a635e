"""Crash safety of writes, corrupt inputs, determinism of the demo model and of collection."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from neurospec.collect import collect
from neurospec.data import demo
from neurospec import models, tables
from neurospec.errors import NeurospecError
from neurospec.tables import atomic_path, read_counts, read_table, write_counts, write_table
from synthetic_counts import sentence_table


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
    df, meta = sentence_table(np.random.default_rng(0), np.full((4, 4), 0.5), np.full(4, 3), 1)
    write_counts(df, path, meta)
    got, got_meta = read_counts(path)
    assert got.equals(df) and got_meta["n_tokens"] == 12 and got_meta["count_schema_version"] == tables.COUNT_SCHEMA_VERSION
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not parquet" * 10, "empty": b""}[damage])
    with pytest.raises(NeurospecError, match=rf"cannot read Parquet file {path}: corrupt or truncated") as exc:
        read_counts(path)
    assert "\n" not in str(exc.value)


def test_missing_count_metadata_and_columns_are_named(tmp_path):
    path = tmp_path / "x.parquet"
    write_table(pd.DataFrame({"layer": [0], "neuron": [1]}), path, metadata={"count_schema_version": tables.COUNT_SCHEMA_VERSION})
    with pytest.raises(NeurospecError, match=r"lacks column\(s\) active, nonzero, gate_active, act_sum"):
        read_counts(path)
    with pytest.raises(NeurospecError, match="does not exist"):
        read_table(tmp_path / "nope.parquet")
    with pytest.raises(NeurospecError, match="does not exist"):
        read_counts(tmp_path / "nope.parquet")


def test_old_count_tables_say_what_to_rerun(tmp_path):
    """A table of the first layout (six columns, no version) is one line naming it and the rerun,
    wherever it is read: scoring, stability, figures, merging shards."""
    from neurospec.plots import figures
    from neurospec.score import scoring, stability
    from neurospec.tables import merge_shard_files

    old = pd.DataFrame({"layer": np.zeros(4, np.int32), "neuron": np.arange(4, dtype=np.int32),
                        "active": [1, 2, 3, 4], "nonzero": [4, 4, 4, 4], "gate_active": [0, 1, 2, 3],
                        "act_sum": [0.5, 1.0, 1.5, 2.0]})
    path = tmp_path / "en-de.parquet"
    write_table(old, path, metadata={"n_tokens": 4, "pair": "en-de", "counted_lang": "en"})
    line = (rf"count table {path} has count schema version 1, this neurospec reads version 4 \(per-sentence "
            r"statistics, split halves, counted-sentence hashes, residual sums\): it was written by an older neurospec; recollect it: "
            r"`snakemake --forcerun collect_activations`")
    calls = [
        lambda: read_counts(path),
        lambda: scoring.run_scoring([path], tmp_path / "s.parquet", tmp_path / "i.parquet", "lape", "active", {}),
        lambda: stability.run_stability([path], tmp_path / "t.parquet", "lape", "active", {}),
        lambda: figures.draw("activation_probability", tmp_path / "a.png", activations=[str(path)]),
        lambda: merge_shard_files([path, path], tmp_path / "m.parquet"),
    ]
    for call in calls:
        with pytest.raises(NeurospecError, match=line) as exc:
            call()
        assert "\n" not in str(exc.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["en-de.parquet"]  # nothing half-written
    write_table(old, path, metadata={"n_tokens": 4, "count_schema_version": 5})
    with pytest.raises(NeurospecError, match="version 5, this neurospec reads version 4: it was written by a newer"):
        read_counts(path)


def test_unknown_model_path_is_one_line(tmp_path):
    with pytest.raises(NeurospecError, match=r"model.id .*no-such-model.*: no such directory"):
        models.load_model(str(tmp_path / "no-such-model"), device="cpu")
