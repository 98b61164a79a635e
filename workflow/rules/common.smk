"""Config validation and the helpers every rule file uses (paths, pair lists, parameters)."""

import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))
from neurospec.data import pairs as pair_sources  # noqa: E402
from neurospec.atomic import check_writable as check_writable_paths  # noqa: E402
from neurospec.config_checks import (  # noqa: E402
    check_model_id,
    check_model_keys,
    check_prompts,
    check_schema,
    model_blocks,
)
from neurospec.errors import NeurospecError  # noqa: E402
from neurospec.data.holdout import SUFFIX as HOLDOUT_SUFFIX  # noqa: E402
from neurospec.lang_codes import configure as configure_languages  # noqa: E402
from neurospec.lang_codes import export as export_languages  # noqa: E402
from neurospec.overlays import check_overlay  # noqa: E402
from neurospec.overlays import coerce as coerce_config  # noqa: E402
from neurospec.languages import non_english, parse_pair  # noqa: E402
from neurospec.run.runs import (  # noqa: E402
    claim_workdir,
    clear_stale_locks,
    release_workdir,
)
from neurospec.tables import COUNT_SCHEMA_VERSION  # noqa: E402
from neurospec.variants import (  # noqa: E402
    base_method,
    check_variants,
    selections,
)
from neurospec.variants import describe as describe_selection  # noqa: E402
from neurospec.variants import split as split_selection  # noqa: E402
from neurospec.variants import wildcard_pattern as variant_pattern  # noqa: E402
from neurospec.run.workers import (  # noqa: E402
    enter_run,
    run_dir,
    shutdown_run,
    start_model_worker_early,
    workers_enabled,
)

# Jobs hand their tasks to workers that belong to this Snakemake process (neurospec/run/workers.py)
# and exit with it; inside a SLURM job, to the Snakemake process of that SLURM job. A Snakemake
# process started for jobs (a SLURM job's, a job's own) joins or starts its run here; the main
# process becomes the run at its start (onstart: start_early), so that only reading the
# Snakefile (--lint, -n, --report, the API) leaves the environment as it was.
if not workflow.is_main_process:
    enter_run()

# The Snakemake lock of a run that is proven gone (killed: same host, no process of it left) is
# removed before Snakemake checks it, with one line (neurospec/run/runs.py); any other lock stays.
if workflow.is_main_process:
    for _line in clear_stale_locks():
        print(_line, file=sys.stderr)


SCHEMA_FILE = "schemas/config.schema.yaml"


def load_yaml(path):
    import yaml

    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def config_error(message):
    """One clear line and a non-zero exit: the DAG is never built from a bad config."""
    sys.exit(f"neurospec: config error: {message}")


# Nested --config values arrive as strings ('scoring={k: 20}': '20'): typed by the schema where
# unambiguous (neurospec.overlays); a lone --configfile lacking pairs: one line saying the form to use.
try:
    for _key, _value in coerce_config(
        dict(config), load_yaml(Path(workflow.basedir) / SCHEMA_FILE)
    ).items():
        config[_key] = _value
    check_overlay(config, [str(f) for f in workflow.overwrite_configfiles or []])
    check_model_keys(config)
except NeurospecError as exc:
    config_error(str(exc))

try:
    validate(config, "../schemas/config.schema.yaml", set_default=True)
except WorkflowError as exc:
    # the line names the key at fault from jsonschema's own error paths (neurospec.config_checks)
    try:
        check_schema(config, Path(workflow.basedir) / SCHEMA_FILE)
    except NeurospecError as schema_exc:
        config_error(str(schema_exc))
    config_error(str(exc.args[0] if exc.args else exc).strip().splitlines()[-1])

try:
    # the config's `languages:` reach every job through the environment (neurospec.lang_codes)
    configure_languages(config["languages"])
    for _pair in config["pairs"]:
        parse_pair(_pair)
except NeurospecError as exc:
    config_error(str(exc))

PAIRS = list(config["pairs"])
DATASET = pair_sources.dataset_folder(config["dataset"])
SPLIT = config["dataset"]["split"]
try:
    pair_sources.check_dataset(config["dataset"], PAIRS, SPLIT)
    check_prompts(config)
except NeurospecError as exc:
    config_error(str(exc))
# The run's models: results folder -> model block (models:' entries, or model:). A null model
# (null_weights) gets its own results folder, <name>-null: never mistaken for the model's. Every
# path of a model's results has the {model} wildcard, constrained to these folders.
try:
    MODELS = model_blocks(config)
except NeurospecError as exc:
    config_error(str(exc))
if "models" in config:
    # what reads one model's block reads the first entry's
    config["model"] = next(iter(MODELS.values()))
# the report's text (workflow/report/*.rst; --report only, as view.smk's _report_missing): every
# model, and which are the demo model (a figure's caption says its numbers are noise when its {model}
# is one of them)
if REPORT_MODE:
    config["_models"] = [{**block, "folder": m} for m, block in MODELS.items()]
    config["_demo_models"] = [m for m, block in MODELS.items() if block["id"] == "demo"]
DEMO_MODEL_DIR = "results/models/demo"
GEMMA3_MODEL_DIR = "results/models/gemma3-270m"
# model.id values that name a model the workflow builds itself, and the directory it builds
BUILT_MODELS = {"demo": DEMO_MODEL_DIR, "gemma3-270m": GEMMA3_MODEL_DIR}
try:
    for _i, _block in enumerate(MODELS.values()):
        check_model_id(
            _block["id"],
            BUILT_MODELS,
            f"models[{_i}]" if "models" in config else "model",
        )
except NeurospecError as exc:
    config_error(str(exc))
# a model's results and logs; {model} is one of MODELS (per_model fills it in for rule all)
RESULTS = f"results/{{model}}/{DATASET}/{SPLIT}"
LOGS = f"results/logs/{{model}}/{DATASET}/{SPLIT}"
SHARDS = config["collect"]["shards"]


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    pair=r"[a-z]{2,3}(?:_[A-Z][a-z]{3})?-[a-z]{2,3}(?:_[A-Z][a-z]{3})?",
    shard=r"\d+",
    split=r"[A-Za-z0-9_.]+",


# evaluate.holdout_fraction: the held-out sentences are a slice of dataset.split itself
# (neurospec.data.holdout): its pair tables are cut in two, "<split>.select" (neurons are selected on
# it) and "<split>.holdout" (evaluated on it), disjoint by sentence.
HOLDOUT = config["evaluate"]["holdout_fraction"]
if HOLDOUT is not None and config["evaluate"]["split"] is not None:
    config_error(
        "key 'evaluate.holdout_fraction': the held-out sentences come either from another split "
        "(evaluate.split) or from a slice of dataset.split (evaluate.holdout_fraction); set one of them"
    )
HOLDOUT_PARTS = (
    {f"{SPLIT}{suffix}": (part, SPLIT) for part, suffix in HOLDOUT_SUFFIX.items()}
    if HOLDOUT is not None
    else {}
)
SELECT_SPLIT = f"{SPLIT}{HOLDOUT_SUFFIX['select']}" if HOLDOUT is not None else SPLIT


def source_split(split):
    """The dataset split a pair table of ``split`` is read from (a holdout part: dataset.split)."""
    return HOLDOUT_PARTS[split][1] if split in HOLDOUT_PARTS else split


def holdout_params(split):
    """The part of the dataset.split cut a pair table of ``split`` keeps; None: the whole split."""
    if split not in HOLDOUT_PARTS:
        return None
    return {"fraction": HOLDOUT, "part": HOLDOUT_PARTS[split][0]}


def pair_table(pair, split=SELECT_SPLIT):
    """The pair table (id, src_lang, tgt_lang, src, tgt) of one direction in ``split``."""
    return f"results/data/{DATASET}/{split}/{pair}.parquet"


# Switches (defaults: everything): evaluate.enabled turns the whole evaluation stage off,
# evaluate.ablation.enabled and evaluate.translate.enabled one part of it (translate: the
# translations, their scores and the correlation).
EVALUATE = config["evaluate"]["enabled"]
ABLATION_ON = EVALUATE and config["evaluate"]["ablation"]["enabled"]
TRANSLATION_ON = EVALUATE and config["evaluate"]["translate"]["enabled"]

# The held-out split of the evaluation stage: sentences never used for selection.
OTHER_SPLIT = {"validation": "test", "test": "validation"}
EVAL_SPLIT = config["evaluate"]["split"] or OTHER_SPLIT.get(SPLIT)
if HOLDOUT is not None:
    EVAL_SPLIT = f"{SPLIT}{HOLDOUT_SUFFIX['holdout']}"
elif not (ABLATION_ON or TRANSLATION_ON):
    pass  # nothing is evaluated: no held-out split is needed
elif EVAL_SPLIT is None:
    config_error(
        f"key 'evaluate.split': dataset.split {SPLIT!r} has no default held-out split; set evaluate.split"
    )
elif EVAL_SPLIT == SPLIT:
    config_error(
        f"key 'evaluate.split': {EVAL_SPLIT!r} is the split neurons are selected on (dataset.split); "
        "evaluation needs held-out sentences"
    )
else:
    try:
        pair_sources.check_dataset(
            config["dataset"], PAIRS, EVAL_SPLIT, "evaluate.split"
        )
    except NeurospecError as exc:
        config_error(str(exc))


def eval_pair_table(pair):
    """The pair table of one direction in the held-out evaluation split."""
    return pair_table(pair, EVAL_SPLIT)


def activation_table(pair):
    return f"{RESULTS}/activations/{pair}.parquet"


def activation_tables():
    return [activation_table(p) for p in PAIRS]


def per_model(targets):
    """``targets`` (paths with {model}) for every model of the run, model by model."""
    return [t.replace("{model}", m) for m in MODELS for t in targets]


def results_folder(path=None):
    """The results folder that ``path`` is in (the first model's when in none); without a path, the
    run's: one model's, or several as results/{a,b}/dataset/split (the terminal's last lines).
    """
    folders = {m: RESULTS.replace("{model}", m) for m in MODELS}
    if path is None and len(folders) > 1:
        return RESULTS.replace("{model}", f"{{{','.join(folders)}}}")
    path = str(path or "").strip("'\"")
    return next(
        (f for f in folders.values() if path.startswith(f"{f}/")),
        next(iter(folders.values())),
    )


def first_model(path):
    """``path`` (with {model}) of the config's first model (the report's landing page)."""
    return path.replace("{model}", next(iter(MODELS)))


def of_model(paths, wildcards):
    """``paths`` (with {model}) of the job's {model}: an input function's paths are taken as they are."""
    return [p.replace("{model}", wildcards.model) for p in paths]


def model_inputs(wildcards):
    """The {model}'s directory when the workflow builds it (BUILT_MODELS); nothing for hub ids and local paths."""
    built = BUILT_MODELS.get(MODELS[wildcards.model]["id"])
    return [built] if built else []


def model_path(model):
    """What jobs load: a built model's directory, else model.id (a hub id or a local directory)."""
    return BUILT_MODELS.get(model["id"], model["id"])


def model_params(wildcards):
    """The model that the {model}'s GPU jobs load (load_model's arguments, keys sorted); a change reruns them."""
    model = MODELS[wildcards.model]
    params = {
        "attn_implementation": model["attn_implementation"],
        "device": model["device"],
        "dtype": model["dtype"],
        "model_id": model_path(model),
        "revision": model["revision"],
    }
    # only then: the real model's jobs keep their parameters
    if model["null_weights"] != "none":
        params.update(null_seed=model["null_seed"], null_weights=model["null_weights"])
    return dict(sorted(params.items()))


def start_early():
    """At the start of a run (onstart), before any job: make this process the run that its jobs'
    workers belong to (neurospec/run/workers.py: enter_run), record the run in its working directory
    (refused when another live run has lost its lock there: neurospec/run/runs.py) and check its
    workers' directory (private, or refused). For a local run that will load the model, start its
    model worker now, so that its imports overlap the jobs before the first model job
    (neurospec/run/workers.py). Not for a cluster's submitting process, --touch, or jobs deployed
    elsewhere (--use-conda, containers: their Python is not this one, so they would not use it).
    """
    if not workflow.is_main_process:
        return
    export_languages()  # the config's languages: reach the jobs and workers through their environment
    enter_run()
    try:
        claim_workdir(getattr(workflow.persistence, "_lockfile", {}).values())
        if workflow.local_exec and workers_enabled():
            run_dir()
    except NeurospecError as exc:
        release_workdir()
        sys.exit(f"neurospec: error: {exc}")
    if not workflow.local_exec or workflow.touch:
        return
    if workflow.deployment_settings.deployment_method:
        return
    gpu_jobs = [j for j in workflow.dag.needrun_jobs() if "gpu" in j.rule.resources]
    # the first model job's model (with several models, the others load later)
    if gpu_jobs:
        start_model_worker_early(model_params(gpu_jobs[0].wildcards))


def check_writable():
    """At the start of a run (onstart), before any job: every folder its jobs write outputs and logs
    into must be writable; a read-only or unwritable one is one line naming it (neurospec.atomic).
    """
    paths = [
        str(f) for job in workflow.dag.needrun_jobs() for f in [*job.output, *job.log]
    ]
    try:
        check_writable_paths(paths)
    except NeurospecError as exc:
        sys.exit(f"neurospec: error: {exc}")


def end_run():
    """The end of a run (onsuccess, onerror): its workers exit, its record in the directory goes."""
    shutdown_run()
    release_workdir()


def language_overrides(pairs=None):
    """The config's `languages:` entries of these pairs' languages (all pairs by default): a
    renamed language reruns what its name is in (prompts); nothing when the config names none.
    """
    codes = {code for pair in (pairs or PAIRS) for code in parse_pair(pair)}
    return {
        c: dict(sorted(v.items()))
        for c, v in sorted(config["languages"].items())
        if c in codes
    }


def collect_params():
    """Everything collection reads from config (keys sorted: reordering them reruns nothing)."""
    params = dict(config["collect"])
    if language_overrides():
        params["languages"] = language_overrides()
    return dict(sorted(params.items()))


SCORING = config["scoring"]
# selection -> its parameters: each method of scoring.methods ("lape"), and each scoring.variants
# entry for each method it changes ("lape@strict"; neurospec.variants). Keys sorted: the same values
# in another order must not look like a parameter change.
try:
    check_variants(SCORING)
except NeurospecError as exc:
    config_error(str(exc))
SCORING_METHODS = selections(SCORING)


# {method} in every rule's paths is one of the selections (rules may narrow it, e.g. PAIR_METHODS)
wildcard_constraints:
    method=variant_pattern(SCORING_METHODS),


def selection_method(wildcards):
    """The scoring method of the {method} wildcard: "lape" for "lape" and "lape@strict"."""
    return base_method(wildcards.method)


def selection_variant(wildcards):
    """The variant of the {method} wildcard ("strict" for "lape@strict"), None for the default."""
    return split_selection(wildcards.method)[1]


def selection_options(wildcards):
    """The parameters of the {method} wildcard's selection."""
    return SCORING_METHODS[wildcards.method]


def selection_rest(wildcards):
    """scoring.rest as the {method} wildcard's selection sees it (a variant may change it)."""
    variant = selection_variant(wildcards)
    return (SCORING["variants"][variant] if variant else {}).get(
        "rest", SCORING["rest"]
    )


def selection_label(wildcards):
    """The report's subcategory of a selection's figures: "lape", "lape@strict (lape.top_rate=0.005)"."""
    return describe_selection(wildcards.method, SCORING)


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
# ... and their variants
PAIR_SELECTIONS = [s for s in SCORING_METHODS if base_method(s) in PAIR_METHODS]
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
        + [figure_path(m, "direction_iou") for m in PAIR_SELECTIONS]
        + [f"{RESULTS}/figures/activation_probability.png"]
    )


def dataset_params(split):
    """The dataset keys that shape a pair table of ``split``: the source's own, defaults resolved,
    keys sorted (neurospec.data.pairs.dataset_params)."""
    return pair_sources.dataset_params(config["dataset"], source_split(split))


def dataset_files(wildcards):
    """A pair's local dataset files, as inputs, so that editing one reruns its table (EC40's
    local_dir, dataset.files.path, a local Hugging Face dataset directory).

    Missing files are left out here: the rule then fails with one line naming the file.
    """
    return pair_sources.dataset_files(
        config["dataset"], wildcards.pair, source_split(wildcards.split)
    )


# --------------------------------------------------------------------------------------------
# Evaluation: ablation
# --------------------------------------------------------------------------------------------


def ablation_params():
    """Everything ablation reads from config (keys sorted): a change reruns ablation only."""
    return dict(
        sorted(
            (k, v) for k, v in config["evaluate"]["ablation"].items() if k != "enabled"
        )
    )


def eval_language_tables():
    """The held-out pair table of each language of `pairs` (the first pair that has it; English
    comes with its first English-centric pair): their two sides are the held-out sentences of
    every evaluated language.
    """
    first = {}
    for pair in PAIRS:
        for lang in sorted(parse_pair(pair), key=lambda code: code == "en"):
            first.setdefault(lang, pair)
    return [eval_pair_table(pair) for pair in dict.fromkeys(first.values())]


def ablation_count_tables(wildcards):
    """The {model}'s count tables: their firing rates match the random controls on decile, their
    act_sum gives the values of mode 'mean'."""
    return of_model(activation_tables(), wildcards)


def ablation_table(method):
    return f"{RESULTS}/ablation/{method}.parquet"


def ablation_targets():
    """Every method's ablation table and heatmap, and the figure comparing the methods."""
    if not ABLATION_ON:
        return []
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
# evaluate.translate keys that translation itself does not read (the ablated translations and the switch)
TRANSLATE_ABLATION_KEYS = ("ablate", "ablation_mode", "enabled")


def is_demo_model(wildcards):
    """Whether the {model} is the demo model (random weights: its figures say so)."""
    return MODELS[wildcards.model]["id"] == "demo"


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
    if language_overrides():  # names in the prompts (neurospec.lang_codes)
        params["languages"] = language_overrides()
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


def ablation_activation_tables(wildcards):
    """Mean patching takes each neuron's mean activation from the {model}'s count tables."""
    if TRANSLATE["ablation_mode"] != "mean":
        return []
    return of_model(activation_tables(), wildcards)


def correlation_params():
    return dict(sorted(config["evaluate"]["correlation"].items()))


TRANSLATION_SCORES = f"{TRANSLATION}/scores.parquet"
CORRELATION_TABLE = f"{TRANSLATION}/correlation.parquet"
MEASURES_TABLE = f"{TRANSLATION}/measures.parquet"


def translation_figure(name):
    return f"{RESULTS}/figures/translation/{name}.png"


def translation_targets():
    """The translation scores, the correlation tables and both figures (the hypotheses come with them)."""
    if not TRANSLATION_ON:
        return []
    return [
        TRANSLATION_SCORES,
        CORRELATION_TABLE,
        MEASURES_TABLE,
        translation_figure("quality"),
        translation_figure("correlation"),
    ]


# --------------------------------------------------------------------------------------------
# The neuron browser (browser.smk)
# --------------------------------------------------------------------------------------------
BROWSER_CONTEXTS = f"{RESULTS}/browser/contexts.parquet"
BROWSER_PAGE = f"{RESULTS}/browser/index.html"


def browser_params():
    """What the browser's second pass reads from browser.* (keys sorted; enabled is not one)."""
    return {k: config["browser"][k] for k in ("max_sentences", "top_k")}


def browser_targets():
    """The browser's contexts table and page, when browser.enabled."""
    return [BROWSER_CONTEXTS, BROWSER_PAGE] if config["browser"]["enabled"] else []


# --------------------------------------------------------------------------------------------
# Evaluation: steering (workflow/rules/steering.smk, docs/steering.md)
# --------------------------------------------------------------------------------------------
STEERING = config["evaluate"]["steering"]


def steering_params():
    """Everything steering reads from evaluate.steering (keys sorted): a change reruns steering only."""
    return dict(sorted(STEERING.items()))


def steering_prompt_params():
    """The prompt that translation prompts are rendered with (the collection template, and
    evaluate.translate's chat template and continuation), keys sorted."""
    return {
        "chat_template": TRANSLATE["chat_template"],
        "continuation": TRANSLATE["continuation"],
        "prompt_template": config["collect"]["prompt_template"],
    }


def steering_table(method):
    return f"{RESULTS}/steering/{method}.parquet"


def steering_outputs_table(method):
    return f"{RESULTS}/steering/{method}_outputs.parquet"


STEERING_FIGURES = ["steering_success", "steering_quality"]


def steering_targets():
    """Every method's steering tables and figures, and the figure comparing the methods (when enabled)."""
    if not STEERING["enabled"]:
        return []
    return (
        [steering_table(m) for m in SCORING_METHODS]
        + [figure_path(m, f) for m in SCORING_METHODS for f in STEERING_FIGURES]
        + [f"{RESULTS}/figures/steering_methods.png"]
    )


# --------------------------------------------------------------------------------------------
# Models side by side (compare.smk): this run's models and compare.models' result folders
# --------------------------------------------------------------------------------------------
COMPARE = config["compare"]
COMPARE_MODELS = list(dict.fromkeys([*MODELS, *COMPARE["models"]]))
COMPARE_DIR = f"results/compare/{DATASET}/{SPLIT}"


def model_results(name):
    """A compared model's results folder (same dataset and split as this run)."""
    return f"results/{name}/{DATASET}/{SPLIT}"


def compare_params():
    """What the comparison reads from compare.* (keys sorted; the model list is its inputs)."""
    return {k: COMPARE[k] for k in ("level", "n_boot", "n_perm", "seed")}


def compare_inputs(kind):
    """The compared models' tables of ``kind`` for the {method} wildcard, in COMPARE_MODELS order
    (this run's models' are made by this run; the others' must exist: checked at parse time).
    """

    def inputs(wildcards):
        name = {
            "scores": "{m}.parquet",
            "stability": "{m}_stability.parquet",
            "ablation": "{m}.parquet",
        }[kind].format(m=wildcards.method)
        folder = "ablation" if kind == "ablation" else "scores"
        if kind == "ablation" and not COMPARE_ABLATION:
            return []
        return [f"{model_results(m)}/{folder}/{name}" for m in COMPARE_MODELS]

    return inputs


# the folders of earlier runs (compare.models' names that are not this run's models)
COMPARE_EARLIER = [m for m in COMPARE_MODELS if m not in MODELS]
COMPARE_ABLATION = ABLATION_ON and all(
    Path(model_results(m), "ablation").is_dir() for m in COMPARE_EARLIER
)
if COMPARE["models"]:
    for _name in COMPARE_EARLIER:
        if not Path(model_results(_name), "scores").is_dir():
            config_error(
                f"key 'compare.models': {model_results(_name)}/scores does not exist: run model "
                f"{_name!r} on the same pairs and dataset into this working directory first"
            )


def compare_targets():
    """Every method's comparison tables and figures (when the run has two models or more, its own
    and compare.models')."""
    if len(COMPARE_MODELS) < 2:
        return []
    return [
        f"{COMPARE_DIR}/{m}_{t}"
        for m in SCORING_METHODS
        for t in ("depth.parquet", "depth.png", "summary.png")
    ]
