"""The steering rule's task: one scoring method's groups steered, every condition generated, measured,
and written as the result table and the outputs table beside it (both atomically)."""

from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from neurospec import interventions, lid
from neurospec.errors import NeurospecError
from neurospec.languages import PIVOT, group_language
from neurospec.models import LoadedModel, is_demo_model
from neurospec.tables import PAIR_SCHEMA, package_versions, read_counts, read_metadata, read_table, write_table

from . import measures
from .generate import generate, output_nll
from .prompts import build_prompts, parallel_sentences, prompt_limit, prompts_for
from .residual import parse_layers, residual_means, residual_vector
from .vectors import Condition, conditions_for, language_mean, random_controls

log = logging.getLogger("neurospec")


def check_settings(*, alphas: Sequence[float], modes: Sequence[str], prompt_kinds: Sequence[str], max_new_tokens: int,
                   n_prompts: int, random_sets: int, batch_size: int,
                   residual_alphas: Sequence[float] | None = None) -> None:
    """The keys of evaluate.steering that the schema cannot check alone, one line each."""
    for key, value in (("alphas", alphas), ("residual_alphas", residual_alphas)):
        if key == "residual_alphas" and value is None:
            continue
        if not value or any(isinstance(a, bool) or not isinstance(a, (int, float)) for a in value):
            raise NeurospecError(f"evaluate.steering.{key} must be a non-empty list of numbers, got {value!r}")
    for key, value, low in (("max_new_tokens", max_new_tokens, 1), ("n_prompts", n_prompts, 1),
                            ("random_sets", random_sets, 0), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NeurospecError(f"evaluate.steering.{key} must be an integer >= {low}, got {value!r}")
    if not modes or not prompt_kinds:
        raise NeurospecError("evaluate.steering.modes and prompt_kinds must not be empty")


def steer_to_file(loaded: LoadedModel, *, scores_path: str, pair_tables: Sequence[str], count_tables: Sequence[str],
                  out_path: str, outputs_path: str, token_scope: str = "source", rest: str = "balanced",
                  prompt_template: str, chat_template: bool | str = "auto", continuation: str = "\n{tgt_name}:",
                  alphas: Sequence[float] = (1.0, 3.0), modes: Sequence[str] = ("set", "add"),
                  prompt_kinds: Sequence[str] = ("continuation", "translation"), max_new_tokens: int = 24,
                  n_prompts: int = 50, random_sets: int = 1, residual_layers: str | Sequence[int] = "all",
                  residual_alphas: Sequence[float] | None = None, seed: int = 0, batch_size: int = 32,
                  enabled: bool = True) -> None:
    """The steering task of one scoring method (see docs/steering.md)."""
    from neurospec.evaluate.translation import use_chat_template

    check_settings(alphas=alphas, modes=modes, prompt_kinds=prompt_kinds, max_new_tokens=max_new_tokens,
                   n_prompts=n_prompts, random_sets=random_sets, batch_size=batch_size,
                   residual_alphas=residual_alphas)
    t_start = time.perf_counter()
    lm = loaded.require_lm("steering")
    scores = read_table(scores_path, required=("group", "layer", "neuron"))
    score_meta = read_metadata(scores_path)
    method = str(score_meta.get("method", "?"))
    selected = interventions.selections_from_scores(scores)
    groups = [str(g) for g in score_meta.get("groups", sorted(selected))]
    rate_column = score_meta.get("column") or "gate_active"
    tables = {}
    for p in count_tables:
        df, meta = read_counts(p, ["act_sum", rate_column])
        tables[str(meta.get("pair") or p)] = (df, meta)
    if not tables:
        raise NeurospecError("steering needs the count tables (act_sum, n_tokens, residual sums)")
    deciles = interventions.rate_deciles(interventions.firing_rates(tables, rate_column))
    per_lang_residual = residual_means({pair: meta for pair, (_, meta) in tables.items()})
    n_layers = deciles.shape[0]
    layers = parse_layers(residual_layers, n_layers)
    counted = {str(m.get("counted_lang")) for _, m in tables.values()}

    # the prompts: held-out sentences of the evaluation split, matched across languages by their English side
    parallel = parallel_sentences([(read_table(p, required=tuple(PAIR_SCHEMA.names)), read_metadata(p))
                                   for p in pair_tables])
    chat = use_chat_template(loaded.tokenizer, chat_template, loaded.info.get("model", "the model"))
    limit = prompt_limit(lm, loaded.tokenizer, max_new_tokens)
    prompts = build_prompts(loaded.tokenizer, parallel, prompt_kinds, n_prompts, template=prompt_template,
                            continuation=continuation, chat=chat, limit=limit)
    log.info("%d prompts (%s), %d truncated to %d tokens; %d new tokens each at most",
             len(prompts), ", ".join(f"{k} {sum(p.kind == k for p in prompts)}" for k in prompt_kinds),
             sum(p.truncated for p in prompts), limit, max_new_tokens)

    # the groups and what steers them
    plans: list[tuple[str, str, list[Condition]]] = []
    skipped: dict[str, str] = {}
    overlaps: dict[str, int] = {}
    for group in groups:
        lang = group_language(group, token_scope)
        selection = selected.get(group, {})
        if lang == PIVOT:
            skipped[group] = "its language is English, the language the prompts are in"
            continue
        if lang not in counted:
            skipped[group] = f"no count table counted {lang}"
            continue
        if interventions.selection_size(selection) == 0:
            log.info("%s: %s selected no neuron for group %s: neuron conditions left out", method, method, group)
        mean_x = language_mean(tables, lang)
        mean_rest = interventions.mean_activations(tables, exclude=[lang], rest=rest)
        controls, overlap = random_controls(selection, deciles, group, random_sets, seed) \
            if interventions.selection_size(selection) else ([], 0)
        overlaps[group] = overlap
        conds = conditions_for(group, lang, selection, modes=modes if interventions.selection_size(selection) else (),
                               alphas=alphas, mean_x=mean_x, mean_rest=mean_rest, controls=controls,
                               residual_vector=residual_vector(per_lang_residual, lang, rest),
                               residual_layers=layers, residual_alphas=residual_alphas)
        plans.append((group, lang, conds))
    for group, why in skipped.items():
        log.info("group %s not steered: %s", group, why)

    # generation: the unsteered outputs once for every prompt, each condition on its group's prompts
    ids = [p.ids for p in prompts]
    records: list[dict[str, Any]] = []
    tokens_of: list[list[int]] = []
    prompt_of: list[int] = []
    none_out = None
    n_new_tokens_total, gen_seconds = 0, 0.0
    for group, lang, conds in plans:
        mine = prompts_for(prompts, lang)
        for cond in conds:
            if cond.condition == "none":
                if none_out is None:
                    none_out = generate(loaded, ids, cond, max_new_tokens=max_new_tokens, batch_size=batch_size)
                    gen_seconds += none_out[2]
                    n_new_tokens_total += sum(len(t) for t in none_out[0])
                toks, texts = [none_out[0][i] for i in mine], [none_out[1][i] for i in mine]
            else:
                toks, texts, sec = generate(loaded, [ids[i] for i in mine], cond, max_new_tokens=max_new_tokens,
                                            batch_size=batch_size)
                gen_seconds += sec
                n_new_tokens_total += sum(len(t) for t in toks)
            for i, t, text in zip(mine, toks, texts):
                p = prompts[i]
                records.append({"group": group, "mode": cond.mode, "alpha": cond.alpha, "prompt_kind": p.kind,
                                "condition": cond.condition, "seed": cond.seed, "lang": lang, "id": p.id,
                                "key": p.key, "prompt_lang": p.src_lang, "prompt": p.text, "output": text,
                                "n_new_tokens": len(t), "n_neurons": cond.n_neurons})
                tokens_of.append(t)
                prompt_of.append(i)
        log.info("%s -> %s: %d conditions on %d prompts, %.0f new tokens/s so far", group, lang, len(conds),
                 len(mine), n_new_tokens_total / max(gen_seconds, 1e-9))

    # fluency under the unsteered model, and the outputs' language
    t0 = time.perf_counter()
    nll_sum, _ = output_nll(loaded, [ids[i] for i in prompt_of], tokens_of, batch_size=batch_size)
    nll_seconds = time.perf_counter() - t0
    out = pd.DataFrame(records, columns=[*measures.OUTPUT_COLUMNS[:-2], "key", "n_new_tokens", "n_neurons"])
    out["nll_sum"] = nll_sum
    out["lid_label"] = lid.identify(out["output"].astype(str).tolist()) if len(out) else []
    out["seed"] = pd.array([None if pd.isna(s) else int(s) for s in out["seed"]], dtype="Int64")
    n_neurons = {tuple(k): int(v) for k, v in
                 out.groupby(list(measures.KEY_COLUMNS), sort=False, dropna=False)["n_neurons"].first().items()}
    result = measures.summarize(out, parallel.by_lang, seed=seed, n_neurons=n_neurons)
    for row in result[result["condition"] != "random"].itertuples(index=False):
        log.info("%s %s %s alpha %g %s: success %.2f [%.2f, %.2f] (n %d), English %.2f, chrF++ %.1f, NLL %.2f",
                 row.group, row.prompt_kind, row.condition, row.alpha, row.mode, row.success, row.success_low,
                 row.success_high, row.n_outputs, row.prompt_lang_share, row.chrf, row.nll)
    seconds = time.perf_counter() - t_start
    meta = {
        "method": method, "group_kind": score_meta.get("group_kind"), "scoring_params": score_meta.get("params"),
        "token_scope": token_scope, "rest": rest, "alphas": [float(a) for a in alphas], "modes": list(modes),
        "prompt_kinds": list(prompt_kinds), "max_new_tokens": max_new_tokens, "n_prompts": n_prompts,
        "random_sets": random_sets, "residual_layers": layers,
        "residual_alphas": [float(a) for a in (alphas if residual_alphas is None else residual_alphas)], "seed": seed, "batch_size": batch_size,
        "controls": "random sets matched per layer and firing-rate decile (rate column " f"{rate_column})",
        "control_overlap": overlaps, "skipped_groups": skipped,
        "ci": {"unit": "prompts (one held-out sentence each)", "n": "n_outputs", "n_boot": measures.N_BOOT,
               "level": measures.LEVEL, "interval": "percentile bootstrap of the success share", "seed": seed},
        "lid": "heliport (threshold on); und/zxx count as not the language",
        "lid_not_covered": sorted(lid.NOT_COVERED), "prompt_language": PIVOT,
        "n_prompts_built": len(prompts), "n_truncated": int(sum(p.truncated for p in prompts)),
        "prompt_limit": limit, "chat_template": chat,
        "generation_seconds": gen_seconds, "n_new_tokens": n_new_tokens_total,
        "new_tokens_per_second": n_new_tokens_total / max(gen_seconds, 1e-9),
        "nll_seconds": nll_seconds, "seconds": seconds,
        **loaded.info, "demo_model": is_demo_model(loaded.info.get("model", "")), "versions": package_versions(),
    }
    outputs = out[[*measures.OUTPUT_COLUMNS]]
    write_table(outputs, outputs_path, metadata={"method": method, "result_table": str(out_path)})
    write_table(result, out_path, metadata=meta)
    log.info("%s: %d result rows, %d outputs in %.1f s (%.1f s generating %d tokens, %.1f s NLL)", method,
             len(result), len(outputs), seconds, gen_seconds, n_new_tokens_total, nll_seconds)
