"""Config validation and the helpers every rule file uses (paths, pair lists, parameters)."""

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))
from neurospec.errors import NeurospecError  # noqa: E402
from neurospec.languages import parse_pair  # noqa: E402


def config_error(message):
    """One clear line and a non-zero exit: the DAG is never built from a bad config."""
    sys.exit(f"neurospec: config error: {message}")


try:
    validate(config, "../schemas/config.schema.yaml", set_default=True)
except WorkflowError as exc:
    # The schema error's first line names the offending value; add the key's path.
    cause = exc.args[0] if exc.args else str(exc)
    cause = getattr(cause, "message", str(cause)).splitlines()[0]
    path = "/".join(str(p) for p in getattr(exc.args[0], "absolute_path", []) or [])
    config_error(f"{'key ' + repr(path) + ': ' if path else ''}{cause}")

try:
    for _pair in config["pairs"]:
        parse_pair(_pair)
except NeurospecError as exc:
    config_error(str(exc))

PAIRS = list(config["pairs"])
DATASET = config["dataset"]["name"]
SPLIT = config["dataset"]["split"]
MODEL = config["model"]["name"]
DEMO_MODEL_DIR = "results/models/demo"
RESULTS = f"results/{MODEL}/{DATASET}/{SPLIT}"
LOGS = f"results/logs/{MODEL}/{DATASET}/{SPLIT}"
SHARDS = config["collect"]["shards"]


wildcard_constraints:
    pair=r"[a-z]{2,3}-[a-z]{2,3}",
    shard=r"\d+",


def pair_table(pair):
    """The pair table (id, src_lang, tgt_lang, src, tgt) of one direction."""
    return f"results/data/{DATASET}/{SPLIT}/{pair}.parquet"


def activation_table(pair):
    return f"{RESULTS}/activations/{pair}.parquet"


def activation_tables():
    return [activation_table(p) for p in PAIRS]


def model_inputs(wildcards=None):
    """The demo model's directory when the workflow builds it; nothing for hub ids and local paths."""
    return [DEMO_MODEL_DIR] if config["model"]["id"] == "demo" else []


def model_path():
    return DEMO_MODEL_DIR if config["model"]["id"] == "demo" else config["model"]["id"]
