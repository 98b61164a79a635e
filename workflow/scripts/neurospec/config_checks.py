"""Config checks made when the Snakefile is read, before any job runs (workflow/rules/common.smk).

Each raises a NeurospecError whose message names the config key at fault: the schema's errors (with
jsonschema's own error paths, not Snakemake's report text), prompt templates and the translation
continuation (their placeholders), and a local model directory (it exists and holds a config).
The dataset's splits are checked by ``neurospec.data.pairs.check_dataset``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import NeurospecError
from .messages import pair_hint
from .prompts import check_continuation, check_template


def _key(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path)


def schema_error_line(error) -> str:
    """One line for a jsonschema ValidationError: ``key 'a.b': <what is wrong>``."""
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = sorted((error.schema.get("properties") or {}))
        extra = sorted(k for k in error.instance if k not in known)
        where = key or "the config"
        name = f"{key}.{extra[0]}" if key else str(extra[0])
        if not extra:
            return f"key {where!r}: {error.message}"
        close = difflib.get_close_matches(str(extra[0]), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"key {name!r}: unknown key (a typo?); {hint}{where} takes: {', '.join(known)}"
    if error.validator == "pattern" and len(error.absolute_path) == 2 and error.absolute_path[0] == "pairs":
        return f"key {key!r}: {error.instance!r} is not a pair: {pair_hint(error.instance)}"
    if error.validator == "pattern" and key.split(".")[-1] == "split":
        return (f"key {key!r}: {error.instance!r} is not a split name: letters, digits, '_' and '.' only "
                "(it names a folder under results/)")
    return f"key {key!r}: {error.message}" if key else error.message


def schema_errors(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Every schema error of ``config``, one line each, the most relevant first (jsonschema's best_match)."""
    from jsonschema import validators
    from jsonschema.exceptions import best_match, relevance

    validator = validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(config))
    if not errors:
        return []
    first = best_match(errors)
    rest = sorted((e for e in errors if e is not first), key=relevance)
    return [schema_error_line(e) for e in [first, *rest]]


def check_schema(config: Mapping[str, Any], schema_path: str | Path) -> None:
    """The config against the schema file; the first error (of possibly several) as one line."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    lines = schema_errors(config, schema)
    if lines:
        more = f" (and {len(lines) - 1} more error(s))" if len(lines) > 1 else ""
        raise NeurospecError(lines[0] + more)


def check_prompts(config: Mapping[str, Any]) -> None:
    """collect.prompt_template and evaluate.translate.continuation: known placeholders only."""
    check_template(config["collect"]["prompt_template"])
    check_continuation(config["evaluate"]["translate"]["continuation"])


def check_model_id(model_id: str, built: Iterable[str] = (), key: str = "model") -> None:
    """A ``model.id`` that names a local directory (an existing directory, or a path starting with
    '.', '/' or '~') must exist and hold a saved model's config.json. Hub ids and the models the
    workflow builds itself (``built``) are left to the jobs."""
    if model_id in set(built):
        return
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise NeurospecError(f"key '{key}.id': local model directory {model_id!r} has no config.json "
                                 "(not a saved model?)")
    elif model_id.startswith((".", "/", "~")):
        raise NeurospecError(f"key '{key}.id': {model_id!r}: no such directory")


# results/<folder>/ names that the workflow's own folders take (results/data/, results/models/, ...)
RESERVED_FOLDERS = ("compare", "data", "logs", "models")


def check_model_keys(config: Mapping[str, Any]) -> None:
    """One model (``model:``) or a list of them (``models:``), not both (before the schema's defaults
    fill ``model:``)."""
    if "model" in config and "models" in config:
        raise NeurospecError("keys 'model' and 'models': give one model (model:) or a list of models "
                             "(models:), not both (an overlay with models: goes over a file without model:)")


def model_folder(block: Mapping[str, Any]) -> str:
    """A model's results folder under results/: its name, with "-null" for a null model."""
    return str(block["name"]) + ("-null" if block.get("null_weights", "none") != "none" else "")


def model_blocks(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """results folder -> model block, in the config's order: ``models:``' entries, or ``model:``.

    Two entries with the same name (and both null models, or both not) would write one folder: refused
    with one line; a null model (``null_weights``) may share its real model's name (its folder is
    ``<name>-null``, which the comparison pairs with ``<name>``)."""
    listed = "models" in config
    blocks = list(config["models"]) if listed else [config["model"]]
    out: dict[str, dict[str, Any]] = {}
    index: dict[str, int] = {}
    for i, block in enumerate(blocks):
        key = f"models[{i}]" if listed else "model"
        folder = model_folder(block)
        if folder in RESERVED_FOLDERS:
            raise NeurospecError(f"key '{key}.name': {block['name']!r} names a folder the workflow uses "
                                 f"itself (results/{folder}/); choose another name")
        if folder in out:
            raise NeurospecError(f"key '{key}.name': {block['name']!r} is also the name of models[{index[folder]}]"
                                 f" (both would write results/{folder}/); give each model its own name")
        out[folder], index[folder] = dict(block), i
    return out
