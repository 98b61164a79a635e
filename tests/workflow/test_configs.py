"""Configs mean what they say: a --configfile is complete on its own (nothing of the demo config is
merged into it), every shipped config validates and dry-runs offline, and local corpus files are
inputs of their pair tables (editing one reruns exactly its tables)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from neurospec.tables import read_metadata, read_table
from workflow_utils import ROOT, dry_runs, effective_config, effective_configs, job_counts, snakemake

CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def with_defaults(cfg: dict) -> dict:
    """The file's values and the schema's defaults, nothing else."""
    from snakemake.utils import validate

    cfg = copy.deepcopy(cfg)
    validate(cfg, str(SCHEMA), set_default=True)
    return cfg


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def leaves(cfg: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_shipped_configs_are_listed():
    names = {p.name for p in CONFIGS}
    assert {"config.yaml", "ec40-aya23.yaml", "flores-plus-aya23.yaml", "gemma3-270m.yaml"} <= names


def test_the_demo_config_lists_every_key():
    """config/config.yaml is the reference of every key: none is left to the schema's defaults."""
    demo = load(ROOT / "config" / "config.yaml")
    assert sorted(set(leaves(with_defaults(demo))) - set(leaves(demo))) == []


@pytest.fixture(scope="module")
def shipped_effective(tmp_path_factory):
    """The config the workflow runs with, for every shipped config (one Snakemake process for all)."""
    workdir = tmp_path_factory.mktemp("effective")
    return dict(zip(CONFIGS, effective_configs([(workdir, [path]) for path in CONFIGS])))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_a_configfile_is_complete_on_its_own(path, shipped_effective):
    """The config the workflow runs with is exactly the file plus the schema's defaults."""
    assert shipped_effective[path] == with_defaults(load(path))


def test_no_demo_value_leaks_into_the_reference_config(tmp_path):
    """Every key whose demo value differs from the schema's default, deleted from a copy of
    config/ec40-aya23.yaml: the schema's default is used, never the demo's value."""
    demo, reference = load(ROOT / "config" / "config.yaml"), load(ROOT / "config" / "ec40-aya23.yaml")
    defaults = leaves(with_defaults({"pairs": ["en-de"]}))
    differing = [k for k, v in leaves(demo).items() if k != "pairs" and k in defaults and defaults[k] != v]
    assert "dataset.max_samples" in differing  # the demo keeps 200 sentences per pair; the default all
    trimmed = copy.deepcopy(reference)
    for key in differing:
        *parents, last = key.split(".")
        node = trimmed
        for part in parents:
            node = node.get(part, {})
        node.pop(last, None)
    path = tmp_path / "ec40-trimmed.yaml"
    path.write_text(yaml.safe_dump(trimmed))
    got = leaves(effective_config(tmp_path, path))
    for key in differing:
        assert got[key] == defaults[key], (key, got[key], leaves(demo)[key])
    # and the demo is what `snakemake` alone runs
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    assert effective_config(tmp_path) == with_defaults(demo)


@pytest.fixture(scope="module")
def shipped_dry_runs(tmp_path_factory):
    """`snakemake -n --configfile config/X.yaml` of every shipped config, each in its own folder, with the
    hub unreachable; one Snakemake process answers them all (dry_runs; CI runs each on the command line)."""
    cases = [(tmp_path_factory.mktemp(f"shipped-{path.stem}"), path) for path in CONFIGS]
    return {path: (workdir, proc) for (workdir, path), proc in zip(cases, dry_runs(cases, env=OFFLINE))}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_dry_run_offline(path, shipped_dry_runs):
    """`snakemake -n --configfile config/X.yaml`, with the hub unreachable: the plan needs no download."""
    cfg = with_defaults(load(path))
    tmp_path, proc = shipped_dry_runs[path]
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = job_counts(proc.stderr)
    n_pairs = len(cfg["pairs"])
    assert counts["collect_activations"] == n_pairs * cfg["collect"]["shards"]
    assert counts["pair_table"] >= n_pairs
    assert ("build_demo_model" in counts) == (cfg["model"]["id"] == "demo")
    assert not (tmp_path / "results").exists()


def write_ec40_pair(root: Path, n: int) -> None:
    for side in ("en", "de"):
        path = root / "Ntrex-eval-set" / f"test.en-de.{side}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"Sentence {i} in {side} .\n" for i in range(n)), encoding="utf-8")


def test_deleting_max_samples_from_the_reference_config_reads_every_sentence(tmp_path):
    """The issue's case through the user's command: without dataset.max_samples the reference
    experiment reads the whole file (the schema's null), not the demo's 200 sentences."""
    write_ec40_pair(tmp_path / "ec40", 250)
    cfg = load(ROOT / "config" / "ec40-aya23.yaml")
    del cfg["dataset"]["max_samples"]
    cfg["dataset"]["local_dir"] = str(tmp_path / "ec40")
    path = tmp_path / "ec40-no-max.yaml"
    path.write_text(yaml.safe_dump(cfg))
    target = "results/data/ec40/validation/en-de.parquet"
    snakemake(tmp_path, target, configfile=path, env=OFFLINE)
    table = read_table(tmp_path / target)
    assert len(table) == 250 and read_metadata(tmp_path / target)["max_samples"] is None


def test_editing_a_local_corpus_file_reruns_its_pair_tables(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang, text in (("en", "Hello"), ("de", "Hallo"), ("fr", "Bonjour")):
        (corpus / f"dev.{lang}").write_text("".join(f"{text} {i}\n" for i in range(20)), encoding="utf-8")
    cfg = {"pairs": ["en-de", "de-en", "en-fr"],
           "dataset": {"name": "files", "split": "dev", "files": {"path": "corpus/{split}.{lang}"}},
           "evaluate": {"split": "dev2"}}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    targets = [f"results/data/files/dev/{p}.parquet" for p in cfg["pairs"]]
    snakemake(tmp_path, *targets, configfile=path)
    assert read_table(tmp_path / targets[1])["src"].iloc[3] == "Hallo 3"
    assert "Nothing to be done" in snakemake(tmp_path, *targets, "--dry-run", configfile=path).stdout
    (corpus / "dev.de").write_text("".join(f"Servus {i}\n" for i in range(20)), encoding="utf-8")
    out = snakemake(tmp_path, *targets, "--dry-run", configfile=path).stdout
    assert job_counts(out) == {"pair_table": 2}  # en-de and de-en, not en-fr
    assert "output: results/data/files/dev/en-fr.parquet" not in out
    assert "output: results/data/files/dev/de-en.parquet" in out


def test_flores_config_through_the_stand_in_hub(tmp_path):
    """config/flores-plus-aya23.yaml as shipped, its dataset id served by the stand-in hub: the pair
    table rule reads FLORES+'s layout, matches the languages by id and records the resolved commit."""
    from fake_hub import FakeHub
    from test_corpus import write_flores

    commit = "f" * 40
    cfg = load(ROOT / "config" / "flores-plus-aya23.yaml")
    cfg["pairs"] = ["en-hi", "de-en"]
    path = tmp_path / "flores.yaml"
    path.write_text(yaml.safe_dump(cfg))
    root = write_flores(tmp_path / "hub" / "flores_plus")
    targets = ["results/data/flores_plus/dev/en-hi.parquet", "results/data/flores_plus/dev/de-en.parquet"]
    with FakeHub() as hub:
        hub.add_repo(cfg["dataset"]["hf"]["id"], root, repo_type="dataset", commit=commit)
        env = {**hub.env(tmp_path / "hf-cache"), "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache")}
        snakemake(tmp_path, *targets, configfile=path, env=env)
    en_hi = read_table(tmp_path / targets[0])
    assert en_hi["tgt"].tolist() == ["नमस्ते दुनिया।", "बिल्ली सोती है।", "शुभ रात्रि।"]
    meta = read_metadata(tmp_path / targets[1])
    assert meta["dataset_revision"] == commit and meta["dataset_id"] == "openlanguagedata/flores_plus"
    assert meta["detokenize"] is False and meta["split"] == "dev"


BAD_DATASETS = [  # the library's checks: tests/unit/data/test_corpus.py
    ({"name": "files", "files": {"path": "c/{language}.txt"}}, "key 'dataset.files.path' has unknown placeholder "
                                                              "{language}"),
    ({"name": "hf", "hf": {"id": "a/b"}, "rows": {"layout": "rows"}}, "key 'dataset.rows.layout': 'rows' is not one of"),
    ({"name": "files", "files": {"path": "c/{split}.{lang}", "encoding": "klingon"}},
     "key 'dataset.files.encoding': 'klingon' is not a text encoding Python knows"),
]


@pytest.fixture(scope="module")
def bad_dataset_dry_runs(tmp_path_factory):
    """Each bad dataset's dry run in its own folder, offline, all answered by one Snakemake process."""
    cases = []
    for i, (dataset, _) in enumerate(BAD_DATASETS):
        path = tmp_path_factory.mktemp(f"bad-dataset-{i}") / "bad.yaml"
        path.write_text(yaml.safe_dump({"pairs": ["en-de"], "dataset": dataset, "evaluate": {"split": "other"}}))
        cases.append((path.parent, path))
    return [(workdir, proc) for (workdir, _), proc in zip(cases, dry_runs(cases, env=OFFLINE))]


@pytest.mark.parametrize("case", range(len(BAD_DATASETS)), ids=[m[:30] for _, m in BAD_DATASETS])
def test_bad_dataset_config_is_one_line_before_anything_runs(bad_dataset_dry_runs, case):
    """Wired in at parse time: the schema and neurospec.data.pairs.check_dataset, before any job."""
    tmp_path, proc = bad_dataset_dry_runs[case]
    message = BAD_DATASETS[case][1]
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert proc.returncode != 0 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "results").exists()
