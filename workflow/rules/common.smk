"""Config validation and the helpers every rule file uses (paths, pair lists, parameters)."""

import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "workflow" / "scripts"))
from neurospec import pairs as pair_sources  # noqa: E402
from neurospec.errors import NeurospecError  # noqa: E402
from neurospec.languages import non_english, parse_pair  # noqa: E402
from neurospec.tables import COUNT_SCHEMA_VERSION  # noqa: E402
from neurospec.workers import (  # noqa: E402
    enter_run,
    shutdown_run,
    start_model_worker_early,
)

# Jobs hand their tasks to workers that belong to this Snakemake process (neurospec/workers.py)
# and exit with it; inside a SLURM job, to the Snakemake process of that SLURM job.
enter_run()


def schema_error_line(text):
    """'key 'scoring.k': 150 is greater than the maximum of 100' from jsonschema's report."""
    cause = re.search(r"ValidationError: (.*)", text)
    where = re.search(r"On instance((?:\[[^\]]*\])*)", text)
    key = (
        ".".join(k.strip("'\"") for k in re.findall(r"\[([^\]]*)\]", where.group(1)))
        if where
        else ""
    )
    message = cause.group(1) if cause else text.strip().splitlines()[-1]
    return f"key {key!r}: {message}" if key else message


def config_error(message):
    """One clear line and a non-zero exit: the DAG is never built from a bad config."""
    sys.exit(f"neurospec: config error: {message}")


try:
    validate(config, "../schemas/config.schema.yaml", set_default=True)
except WorkflowError as exc:
    config_error(schema_error_line(str(exc.args[0] if exc.args else exc)))

try:
    for _pair in config["pairs"]:
        parse_pair(_pair)
except NeurospecError as exc:
    config_error(str(exc))

PAIRS = list(config["pairs"])
DATASET = pair_sources.dataset_folder(config["dataset"])
SPLIT = config["dataset"]["split"]
try:
    pair_sources.check_dataset(config["dataset"], PAIRS, SPLIT)
except NeurospecError as exc:
    config_error(str(exc))
NULL_WEIGHTS = config["model"]["null_weights"]
# a null model (model.null_weights) gets its own results folder: never mistaken for the model's
MODEL = config["model"]["name"] + ("-null" if NULL_WEIGHTS != "none" else "")
DEMO_MODEL_DIR = "results/models/demo"
GEMMA3_MODEL_DIR = "results/models/gemma3-270m"
# model.id values that name a model the workflow builds itself, and the directory it builds
BUILT_MODELS = {"demo": DEMO_MODEL_DIR, "gemma3-270m": GEMMA3_MODEL_DIR}
RESULTS = f"results/{MODEL}/{DATASET}/{SPLIT}"
LOGS = f"results/logs/{MODEL}/{DATASET}/{SPLIT}"
SHARDS = config["collect"]["shards"]


wildcard_constraints:
    pair=r"[a-z]{2,3}-[a-z]{2,3}",
    shard=r"\d+",
    split=r"[A-Za-z0-9_.]+",


def pair_table(pair, split=SPLIT):
    """The pair table (id, src_lang, tgt_lang, src, tgt) of one direction in ``split``."""
    return f"results/data/{DATASET}/{split}/{pair}.parquet"


# The held-out split of the evaluation stage: sentences never used for selection.
OTHER_SPLIT = {"validation": "test", "test": "validation"}
EVAL_SPLIT = config["evaluate"]["split"] or OTHER_SPLIT.get(SPLIT)
if EVAL_SPLIT is None:
    config_error(
        f"key 'evaluate.split': dataset.split {SPLIT!r} has no default held-out split; set evaluate.split"
    )
if EVAL_SPLIT == SPLIT:
    config_error(
        f"key 'evaluate.split': {EVAL_SPLIT!r} is the split neurons are selected on (dataset.split); "
        "evaluation needs held-out sentences"
    )


def eval_pair_table(pair):
    """The pair table of one direction in the held-out evaluation split."""
    return pair_table(pair, EVAL_SPLIT)


def activation_table(pair):
    return f"{RESULTS}/activations/{pair}.parquet"


def activation_tables():
    return [activation_table(p) for p in PAIRS]


def model_inputs(wildcards=None):
    """The model's directory when the workflow builds it (BUILT_MODELS); nothing for hub ids and local paths."""
    built = BUILT_MODELS.get(config["model"]["id"])
    return [built] if built else []


def model_path():
    """What jobs load: a built model's directory, else model.id (a hub id or a local directory)."""
    return BUILT_MODELS.get(config["model"]["id"], config["model"]["id"])


def model_params():
    """The model that GPU jobs load (load_model's arguments, keys sorted); a change reruns them."""
    model = config["model"]
    params = {
        "attn_implementation": model["attn_implementation"],
        "device": model["device"],
        "dtype": model["dtype"],
        "model_id": model_path(),
        "revision": model["revision"],
    }
    if NULL_WEIGHTS != "none":  # only then: the real model's jobs keep their parameters
        params.update(null_seed=model["null_seed"], null_weights=NULL_WEIGHTS)
    return dict(sorted(params.items()))


def start_early():
    """At the start of a local run that will load the model (onstart): start its model worker now,
    so that its imports overlap the jobs before the first model job (neurospec/workers.py). Not for
    a cluster's submitting process, --touch, or jobs deployed elsewhere (--use-conda, containers:
    their Python is not this one, so they would not use it)."""
    if not workflow.local_exec or not workflow.is_main_process or workflow.touch:
        return
    if workflow.deployment_settings.deployment_method:
        return
    if any("gpu" in job.rule.resources for job in workflow.dag.needrun_jobs()):
        start_model_worker_early(model_params())


def collect_params():
    """Everything collection reads from config (keys sorted: reordering them reruns nothing)."""
    return dict(sorted(config["collect"].items()))


SCORING = config["scoring"]
# method -> its parameters (scoring.METHODS in the library says which groups each method scores)
# (keys sorted: the same values in another order must not look like a parameter change)
SCORING_METHODS = {
    "frequency": {"k": SCORING["k"]},
    "frequency_language": {"k": SCORING["k"]},
    "lape": dict(sorted(SCORING["lape"].items())),
    "contrast": dict(sorted(SCORING["contrast"].items())),
    "diffmeans": dict(sorted(SCORING["diffmeans"].items())),
}


# {method} in every rule's paths is one of the selections (rules may narrow it, e.g. PAIR_METHODS)
wildcard_constraints:
    method="|".join(SCORING_METHODS),


def scores_table(method):
    return f"{RESULTS}/scores/{method}.parquet"


def iou_table(method):
    return f"{RESULTS}/scores/{method}_iou.parquet"


def stability_table(method):
    return f"{RESULTS}/scores/{method}_stability.parquet"


def scoring_targets():
    """Every method's score table, IoU table and split-half stability table."""
    return [
        f(m)
        for m in SCORING_METHODS
        for f in (scores_table, iou_table, stability_table)
    ]


# Methods whose groups are translation directions: they also get the direction figure.
PAIR_METHODS = ["frequency"]
METHOD_FIGURES = [
    "iou_layers",
    "specialized_counts",
    "family_iou",
    "clustering",
    "stability",
]


def figure_path(method, name):
    return f"{RESULTS}/figures/{method}/{name}.png"


def figure_targets():
    """Every PNG: five per method, the direction figure per pair method, one of activations."""
    return (
        [figure_path(m, f) for m in SCORING_METHODS for f in METHOD_FIGURES]
        + [figure_path(m, "direction_iou") for m in PAIR_METHODS]
        + [f"{RESULTS}/figures/activation_probability.png"]
    )


def dataset_params(split):
    """The dataset keys that shape a pair table of ``split``: the source's own, defaults resolved,
    keys sorted (neurospec.pairs.dataset_params)."""
    return pair_sources.dataset_params(config["dataset"], split)


def dataset_files(wildcards):
    """A pair's local dataset files, as inputs, so that editing one reruns its table (EC40's
    local_dir, dataset.files.path, a local Hugging Face dataset directory).

    Missing files are left out here: the rule then fails with one line naming the file.
    """
    return pair_sources.dataset_files(
        config["dataset"], wildcards.pair, wildcards.split
    )


# --------------------------------------------------------------------------------------------
# Evaluation: ablation
# --------------------------------------------------------------------------------------------


def ablation_params():
    """Everything ablation reads from config (keys sorted): a change reruns ablation only."""
    return dict(sorted(config["evaluate"]["ablation"].items()))


def eval_language_tables():
    """The held-out pair table of each non-English language (the first pair in `pairs` that has
    it): their two sides are the held-out sentences of every evaluated language, English included.
    """
    first = {}
    for pair in PAIRS:
        first.setdefault(non_english(pair), pair)
    return [eval_pair_table(pair) for pair in first.values()]


def ablation_count_tables(wildcards=None):
    """The count tables: their firing rates match the random controls on decile, their act_sum
    gives the values of mode 'mean'."""
    return activation_tables()


def ablation_table(method):
    return f"{RESULTS}/ablation/{method}.parquet"


def ablation_targets():
    """Every method's ablation table and heatmap, and the figure comparing the methods."""
    return (
        [ablation_table(m) for m in SCORING_METHODS]
        + [figure_path(m, "ablation") for m in SCORING_METHODS]
        + [f"{RESULTS}/figures/ablation_specificity.png"]
        + (
            [figure_path(m, "ablation_budget") for m in SCORING_METHODS]
            if config["evaluate"]["ablation"]["budgets"]
            else []
        )
    )


# --------------------------------------------------------------------------------------------
# Evaluation: translation quality and its correlation with specialization (held-out split)
# --------------------------------------------------------------------------------------------
TRANSLATE = config["evaluate"]["translate"]
TRANSLATION = f"{RESULTS}/translation"
# evaluate.translate keys that only the ablated translations read
TRANSLATE_ABLATION_KEYS = ("ablate", "ablation_mode")
IS_DEMO_MODEL = config["model"]["id"] == "demo"


def translate_params():
    """What translation reads: evaluate.translate minus the ablation keys, and the collection prompt.

    Keys sorted; a change reruns translation (and what depends on it), never collection.
    """
    params = {
        key: value
        for key, value in TRANSLATE.items()
        if key not in TRANSLATE_ABLATION_KEYS
    }
    params["prompt_template"] = config["collect"]["prompt_template"]
    return dict(sorted(params.items()))


def translation_table(pair):
    """One direction's baseline hypotheses (id, src, ref, hyp, ...)."""
    return f"{TRANSLATION}/{pair}.parquet"


def ablated_translation_table(method):
    """Every direction's hypotheses with the target's neurons of ``method`` ablated."""
    return f"{TRANSLATION}/ablated/{method}.parquet"


def ablated_translation_tables():
    return (
        [ablated_translation_table(m) for m in SCORING_METHODS]
        if TRANSLATE["ablate"]
        else []
    )


def ablation_activation_tables(wildcards=None):
    """Mean patching takes each neuron's mean activation from the count tables."""
    return activation_tables() if TRANSLATE["ablation_mode"] == "mean" else []


def correlation_params():
    return dict(sorted(config["evaluate"]["correlation"].items()))


TRANSLATION_SCORES = f"{TRANSLATION}/scores.parquet"
CORRELATION_TABLE = f"{TRANSLATION}/correlation.parquet"
MEASURES_TABLE = f"{TRANSLATION}/measures.parquet"


def translation_figure(name):
    return f"{RESULTS}/figures/translation/{name}.png"


def translation_targets():
    """The translation scores, the correlation tables and both figures (the hypotheses come with them)."""
    return [
        TRANSLATION_SCORES,
        CORRELATION_TABLE,
        MEASURES_TABLE,
        translation_figure("quality"),
        translation_figure("correlation"),
    ]
