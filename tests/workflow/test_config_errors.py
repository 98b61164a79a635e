"""Config mistakes are refused when the Snakefile is read (a dry run already fails), with one line
naming the right key: unknown keys anywhere (the schema's additionalProperties: false), prompt
templates and the continuation, evaluate.split, a local model directory (neurospec.config_checks)."""

from __future__ import annotations

import pytest
import yaml

from neurospec.config_checks import schema_errors
from workflow_utils import ROOT, dry_runs, snakemake, write_config

SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


def _objects(node, path=""):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path or "<config>", node
        for key, value in node.items():
            yield from _objects(value, f"{path}.{key}" if path else key)


def test_every_object_of_the_schema_is_closed():
    objects = dict(_objects(SCHEMA))
    assert len(objects) >= 17
    open_ = {p for p, o in objects.items() if o.get("additionalProperties") is not False}
    # the maps whose keys are data: language code -> the data's code, language code -> its name, family,
    # script (keys: ISO 639 codes, an optional script); variant name -> its settings (keys: names that
    # can be file names; each value a closed object)
    variants = "properties.scoring.properties.variants"
    codes = {"properties.dataset.properties.rows.properties.code_map", "properties.languages"}
    assert open_ == codes | {variants}
    for path in codes:
        assert objects[path]["propertyNames"] == {"pattern": "^[a-z]{2,3}(_[A-Z][a-z]{3})?$"}
    assert objects["properties.languages"]["additionalProperties"]["additionalProperties"] is False
    assert objects[variants]["propertyNames"] == {"pattern": "^[A-Za-z0-9_-]+$"}
    assert objects[f"{variants}.additionalProperties"]["additionalProperties"] is False


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    assert schema_errors(yaml.safe_load(path.read_text()), SCHEMA) == []


def test_schema_errors_name_the_key_from_jsonschemas_own_path():
    lines = schema_errors({"pairs": ["en-de"], "evaluate": {"ablaton": {"mode": "zero"}},
                           "scoring": {"k": 150}}, SCHEMA)
    assert sorted(lines) == sorted([
        "key 'evaluate.ablaton': unknown key (a typo?); did you mean 'ablation'? evaluate takes: ablation, correlation, "
        "enabled, holdout_fraction, split, steering, translate, translation_scores",
        "key 'scoring.k': 150 is greater than the maximum of 100"])
    assert schema_errors({"pairs": ["en-de"], "scorng": {}}, SCHEMA)[0].startswith(
        "key 'scorng': unknown key (a typo?); did you mean 'scoring'? the config takes: browser, collect, compare, dataset, demo_model, "
        "evaluate, figures, languages, model, models, pairs, scoring")
    # nothing close: no guess
    assert "did you mean" not in schema_errors({"pairs": ["en-de"], "zzz": 1}, SCHEMA)[0]
    assert schema_errors({"pairs": ["en-de"]}, SCHEMA) == []


MISTAKES = [
    ({"figures": {"format": ["png", "eps"]}}, "key 'figures.format.1': 'eps' is not one of ['png', 'svg', 'pdf']"),
    ({"evaluate": {"ablaton": {"mode": "zero"}}},
     "key 'evaluate.ablaton': unknown key (a typo?); did you mean 'ablation'? evaluate takes: ablation, "),
    ({"collect": {"prompt_template": "Translate to {language}: {src}"}},
     "collect.prompt_template has unknown placeholder {language}; allowed: {src}, {src_name}"),
    ({"collect": {"prompt_template": "Translate to {tgt_name}:"}},
     "collect.prompt_template must contain {src} exactly once"),
    ({"evaluate": {"translate": {"continuation": "\n{src} ->"}}},
     "evaluate.translate.continuation has placeholder {src}; allowed: {src_name}, {tgt_name}"),
    ({"evaluate": {"translate": {"continuation": "\n{tgt_name"}}},
     "evaluate.translate.continuation '\\n{tgt_name' is malformed"),
    ({"evaluate": {"split": "train"}}, "evaluate.split 'train': the demo dataset has only validation, test"),
    ({"evaluate": {"split": "a/b"}},
     "key 'evaluate.split': 'a/b' is not a split name: letters, digits, '_' and '.' only"),
    ({"dataset": {"name": "demo", "split": "train"}, "evaluate": {"split": "validation"}},
     "dataset.split 'train': the demo dataset has only validation, test"),
    ({"dataset": {"name": "ec40", "split": "validation"}, "evaluate": {"split": "dev"}},
     "evaluate.split 'dev': EC40 has no such split; choose one of validation, test, train"),
    ({"model": {"id": "./no-such-model"}}, "key 'model.id': './no-such-model': no such directory"),
    ({"model": {"id": "empty-model-dir"}},
     "key 'model.id': local model directory 'empty-model-dir' has no config.json (not a saved model?)"),
    ({"dataset": {"name": "hf", "hf": {"id": "a/b"}, "rows": {"code_map": {"SR": "srp_Latn"}}},
      "evaluate": {"split": "test"}}, "key 'dataset.rows.code_map': 'SR' does not match"),
    # a folder name of dots would put results outside results/ (results/../demo/validation); models:
    # entries are the same schema block (&model)
    ({"model": {"name": ".."}}, "key 'model.name': '..' does not match"),
    # from test_workflow.py (test_bad_config_is_one_clear_line runs one more on the command line)
    ({"pairs": ["de-de"]}, "pair 'de-de' in 'pairs' has the same language on both sides"),
    ({"scoring": {"k": 150}}, "key 'scoring.k': 150 is greater than the maximum of 100"),
    ({"collect": {"token_scope": "everything"}}, "key 'collect.token_scope': 'everything' is not one of"),
    # from test_ablation_workflow.py
    ({"evaluate": {"split": "validation"}},
     "key 'evaluate.split': 'validation' is the split neurons are selected on"),
    ({"evaluate": {"ablation": {"mode": "half"}}},
     "key 'evaluate.ablation.mode': 'half' is not one of ['zero', 'mean']"),
    # from test_ablation_fair_workflow.py
    ({"pairs": ["en-de", "de-en", "en-ru", "ru-en"], "evaluate": {"ablation": {"budgets": [0]}}},
     "key 'evaluate.ablation.budgets.0': 0 is less than the minimum of 1"),
    ({"pairs": ["en-de", "de-en", "en-ru", "ru-en"], "evaluate": {"ablation": {"budgets": [10, 10]}}},
     "key 'evaluate.ablation.budgets': [10, 10] has non-unique elements"),
    # from test_translation_workflow.py
    ({"evaluate": {"translation_scores": {"level": 1.5}}},
     "key 'evaluate.translation_scores.level': 1.5 is greater than or equal to the maximum of 1"),
    # from test_null_workflow.py
    ({"pairs": ["en-de", "hi-en"], "model": {"id": "demo", "name": "demo-small", "dtype": "float32", "device": "cpu",
                                             "null_weights": "random"}},
     "key 'model.null_weights': 'random' is not one of ['none', 'reinit', 'shuffle']"),
]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
    """Each mistake's dry run in its own folder, all answered by one Snakemake process (dry_runs)."""
    cases = []
    for i, (override, _) in enumerate(MISTAKES):
        workdir = tmp_path_factory.mktemp(f"mistake-{i}")
        (workdir / "empty-model-dir").mkdir()
        cases.append((workdir, write_config(workdir, override)))
    return [(workdir, proc) for (workdir, _), proc in zip(cases, dry_runs(cases))]


@pytest.mark.parametrize("case", range(len(MISTAKES)), ids=[m[1][:40] for m in MISTAKES])
def test_config_mistakes_are_refused_at_parse_time_naming_the_key(refused, case):
    tmp_path, proc = refused[case]
    message = MISTAKES[case][1]
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "neurospec: config error" in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "MissingInputException" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_a_local_model_directory_with_a_config_is_accepted(tmp_path, small_model_dir):
    cfg = write_config(tmp_path, {"model": {"id": str(small_model_dir), "name": "local", "device": "cpu"}})
    proc = snakemake(tmp_path, "--dry-run", configfile=cfg)
    assert "collect_activations" in proc.stdout
