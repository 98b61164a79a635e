"""Ablation: do the neurons a method selected matter for their language?

For every group a scoring method selected neurons for (a language, or a translation direction),
those neurons are intervened on at the input of ``down_proj`` (``interventions.intervene``) and the
mean next-token negative log-likelihood (NLL, nats per token) of held-out plain sentences of every
evaluated language is measured:

- ``zero``: the neurons are set to 0 on every token (LAPE's deactivation, Tang et al. 2024);
- ``mean``: the neurons are set to their mean activation over the *other* languages' tokens (the
  count tables' ``act_sum`` / ``n_tokens`` of the selection split, the group's own language left
  out), which removes what is specific to the language rather than the neuron's average output.

Controls: per group, ``random_sets`` random neuron sets, each drawn from its own seed (the ``seed``
column), so a rerun draws the same sets.  Each control neuron is matched to a selected one on its
layer AND its firing-rate decile within that layer (``interventions.matched_like``; the rate is the
score table's count criterion over n_tokens, pooled over the selection split's count tables), so a
method that picks the most active neurons is compared with equally active random ones; without
count tables, on the layer only (``interventions.random_like``).  The baseline (no intervention) runs once per language, not once per
condition.  Output, one table per method::

    group, eval_lang, condition ("selected" | "random"), seed (-1 for "selected"), n_neurons,
    n_tokens, nll, base_nll, delta_nll (= nll - base_nll), rel_delta_nll (= delta_nll / base_nll),
    delta_nll_low, delta_nll_high, p_controls

Uncertainty, for the selected sets (null on the controls' rows): ``delta_nll_low``/``_high``, a
sentence bootstrap (``N_BOOT`` resamples of the language's held-out sentences, the ratio-of-sums
delta NLL of each, percentile interval at ``LEVEL``, seeded per group and language); ``p_controls``,
the empirical p-value (1 + #{controls with delta NLL >= the selected set's}) / (1 + random_sets) on the
same language.  ``rel_delta_nll`` puts languages of different base NLL on one scale (specificity).

``controls_scope``: ``all`` (default) scores every control set on every evaluated language, like the
selection; ``own`` scores a group's controls (of its own selection and of its budgets) on the group's
own language only, the one language its p-value, specificity and dose-response read them on: a
control pass then costs that language's tokens, not every language's (with 20 controls and 9
languages, about 5x fewer tokens in all).  The own language's sentences are then batched on their own
(``Scorer`` of those sentences, with its own baseline), so their NLL equals the all-language pass's up
to floating-point batching differences (tested at 1e-6).  A group whose language is not evaluated
keeps its controls on every language.  The table then has control rows on the own language only.

Matched budgets (``budgets``, dose-response): per group and N, the top N neurons of the method's
score table ranked over all layers by ``score`` (|score| for diffmeans), ablated like a selection
with ``budget_random_sets`` matched controls of N neurons; their rows carry ``budget`` = N (null on
the method's own selection's rows).  A budget beyond a group's scored neurons is left out (metadata
``budgets_skipped``).

Held-out sentences: the evaluation split's pair tables (never the split neurons were selected on);
a language's plain sentences are its side of those tables (English's: the English sides), the
first ``max_sentences`` distinct ones in table order; the metadata lists which (pair, side, ids).

The NLL: every sentence is tokenized on its own (special tokens as the tokenizer adds them: BOS),
and each token after the first is predicted from the ones before it.  A sentence longer than
``max_length`` tokens (``evaluate.ablation.max_length``; the model's context when that is smaller)
keeps its first tokens; the metadata counts them per language (``n_truncated_by_language``).  Sentences are packed into
right-padded batches under a token budget (``batching``); the base model runs once per batch and
the LM head on chunks of ``chunk_tokens`` predicted positions, so a [tokens x vocabulary] logit
matrix of a whole batch never exists (Aya's vocabulary is 256k).  The head reproduces the LM's own
logits, output scaling included (``OutputHead``), and each job checks that on one sentence
against ``lm(...).logits`` before it measures anything.

Cost: (1 + groups x (1 + random_sets) + group budgets x (1 + budget_random_sets)) passes over every
evaluated sentence (LM head included); with ``controls_scope: own``, the controls' passes over their
own language's sentences only.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from neurospec.variants import label as variant_label
from ..architectures import n_neurons as model_neurons
from ..errors import NeurospecError
from ..interventions import (firing_rates, intervene, MeanPatchValues, MODES, rate_deciles, Selection, selection_size,
                             selections_from_scores)
from ..languages import group_language
from ..models import is_demo_model, LoadedModel
from ..progress import Progress
from ..tables import package_versions, PAIR_SCHEMA, read_counts, read_metadata, read_table, write_table
from .nll import held_out_by_language, HeldOut, Scorer
from .controls import (ABS_SCORE_METHODS, bootstrap_delta_ci, budget_selections, ci_rng, language_means, LEVEL,
                       matched_controls, N_BOOT, p_controls, random_controls)


log = logging.getLogger("neurospec")

ABLATION_SCHEMA = pa.schema(
    [
        ("group", pa.string()),  # the scoring group whose neurons (or their random control) were ablated
        ("eval_lang", pa.string()),  # the language whose held-out sentences were scored
        ("condition", pa.string()),  # "selected" | "random"
        ("seed", pa.int64()),  # the random control's seed; -1 for "selected"
        ("n_neurons", pa.int64()),  # neurons ablated (all layers)
        ("n_tokens", pa.int64()),  # predicted tokens of eval_lang
        ("nll", pa.float64()),  # mean NLL per token under the intervention (nats)
        ("base_nll", pa.float64()),  # mean NLL per token without intervention
        ("delta_nll", pa.float64()),  # nll - base_nll
        ("rel_delta_nll", pa.float64()),  # delta_nll / base_nll: comparable across languages
        ("delta_nll_low", pa.float64()),  # "selected": sentence-bootstrap CI of delta_nll (LEVEL); null for "random"
        ("delta_nll_high", pa.float64()),
        ("p_controls", pa.float64()),  # "selected": (1 + #controls with delta >= its delta) / (1 + #controls)
        ("budget", pa.int64()),  # null: the method's own selection; N: its top N neurons by score (and controls)
    ]
)
ABLATION_COLUMNS = tuple(ABLATION_SCHEMA.names)
CONTROLS_SCOPES = ("all", "own")  # evaluate.ablation.controls_scope: where the random controls are scored

# --------------------------------------------------------------------------------------------
# Conditions
# --------------------------------------------------------------------------------------------


def ablation_table(loaded: LoadedModel, selections: Mapping[str, Selection], held_out: HeldOut, *,
                   mode: str = "zero", random_sets: int = 20, seed: int = 0,
                   mean_values: Callable[[str], np.ndarray] | None = None, max_length: int = 512,
                   token_budget: int | None = None, chunk_tokens: int | None = None,
                   deciles: np.ndarray | None = None,
                   budgets: Mapping[str, Mapping[int, Selection]] | None = None,
                   budget_random_sets: int = 3, token_scope: str = "source",
                   controls_scope: str = "all") -> tuple[pd.DataFrame, dict]:
    """Rows of ABLATION_SCHEMA for every group of ``selections`` and its random controls.

    ``token_scope``: the selection's collect.token_scope, which says a pair group's language
    (``group_language``).

    ``mean_values(lang)``: [layers, neurons] values to patch with in ``mode`` "mean" for a group
    whose language is ``lang`` (its mean activation over the other languages).  ``deciles``:
    [layers, neurons] firing-rate deciles (``interventions.rate_deciles``): the controls are then
    matched on layer and decile (``matched_controls``), else on layer only (``random_controls``).
    ``budgets``: {group: {N: its top N neurons}} (``budget_selections``), each ablated with
    ``budget_random_sets`` controls of its own; their rows carry ``budget`` N.
    ``controls_scope``: ``all`` | ``own`` (the controls scored on the group's own language only).
    """
    if controls_scope not in CONTROLS_SCOPES:
        raise NeurospecError(f"evaluate.ablation.controls_scope {controls_scope!r}: choose one of "
                             f"{', '.join(CONTROLS_SCOPES)}")
    if mode not in MODES:
        raise NeurospecError(f"evaluate.ablation.mode {mode!r}: choose one of {', '.join(MODES)}")
    if random_sets < 0:
        raise NeurospecError(f"evaluate.ablation.random_sets must be at least 0, not {random_sets}")
    if mode == "mean" and mean_values is None:
        raise NeurospecError("ablation mode 'mean' needs the count tables' mean activations")
    order = held_out.languages
    texts = [t for lang in order for t in held_out.texts[lang]]
    langs = np.array([lang for lang in order for _ in held_out.texts[lang]])
    scorer = Scorer(loaded, texts, max_length=max_length, token_budget=token_budget, chunk_tokens=chunk_tokens)
    diff = scorer.check_head()
    n_tok = np.array([int(scorer.n_predicted[langs == lang].sum()) for lang in order])
    truncated = {lang: int(scorer.truncated[langs == lang].sum()) for lang in order}
    log.info("%d held-out sentences in %d languages, %d predicted tokens (%d truncated to %d%s), %d batches "
             "under %d tokens, LM head in chunks of %d positions (matches lm().logits to %.1e)",
             len(texts), len(order), scorer.n_tokens, scorer.n_truncated, scorer.max_length,
             "".join(f"; {lang} {n}" for lang, n in truncated.items() if n), len(scorer.batches),
             scorer.token_budget, scorer.chunk_tokens, diff)
    empty = [lang for lang, n in zip(order, n_tok) if n == 0]
    if empty:
        raise NeurospecError(f"no held-out sentence of {', '.join(empty)} has a token to predict")

    t0 = time.perf_counter()
    base_sums = scorer.nll()
    base = language_means(base_sums, scorer.n_predicted, langs, order)
    # the bootstrap's unit: each language's sentences with a token to predict
    units = {lang: np.flatnonzero((langs == lang) & (scorer.n_predicted > 0)) for lang in order}
    n_passes = 1
    log.info("baseline NLL: %s", ", ".join(f"{lang} {v:.3f}" for lang, v in zip(order, base)))
    n_neurons = model_neurons(loaded.model)
    seeds = [seed + j for j in range(random_sets)]
    rows = []
    own_lang = {g: group_language(g, token_scope) for g in selections}
    overlaps: dict[str, int] = {}
    budget_seeds = [seed + j for j in range(budget_random_sets)]
    sets = [(group, None, selection, seeds) for group, selection in selections.items()]
    sets += [(group, n, sel, budget_seeds) for group in selections for n, sel in (budgets or {}).get(group, {}).items()]
    # controls_scope "own": a group's controls are scored on its own language's sentences, batched alone
    scoped = {g: controls_scope == "own" and own_lang[g] in order for g in selections}
    own_tokens = dict(zip(order, (int(n) for n in n_tok)))
    own_scorers: dict[str, tuple[Scorer, np.ndarray, float]] = {}
    scored = scorer.n_tokens  # tokens scored so far (every pass), for tokens/s

    def own_scorer(lang: str) -> tuple[Scorer, np.ndarray, float]:
        """``lang``'s sentences as a Scorer of their own, their baseline sums and mean NLL (once)."""
        nonlocal scored
        if lang not in own_scorers:
            idx = np.flatnonzero(langs == lang)
            sc = Scorer(loaded, [texts[i] for i in idx], max_length=max_length, token_budget=scorer.token_budget,
                        chunk_tokens=scorer.chunk_tokens)
            b = sc.nll()
            scored += sc.n_tokens
            own_scorers[lang] = (sc, b, float(b.sum() / max(sc.n_tokens, 1)))
        return own_scorers[lang]

    def ablated(sc: Scorer, base_of_sc: np.ndarray, sel: Selection, values) -> np.ndarray:
        """Per-sentence NLL sums of ``sc``'s sentences with ``sel`` intervened on (its baseline when empty)."""
        nonlocal n_passes, scored
        progress.update(sc.n_tokens)
        if selection_size(sel) == 0:  # nothing to ablate: exactly the baseline
            return base_of_sc
        with intervene(loaded.model, sel, mode, values):
            sums = sc.nll()
        n_passes += 1
        scored += sc.n_tokens
        return sums

    def control_tokens(group: str) -> int:
        return own_tokens[own_lang[group]] if scoped[group] else scorer.n_tokens

    # tokens scored (each pass: its held-out tokens), tokens/s, ETA (neurospec.progress)
    progress = Progress(sum(scorer.n_tokens + len(ss) * control_tokens(g) for g, _, _, ss in sets), "tokens",
                        log, f"ablation ({len(sets)} neuron sets)")
    for group, budget, selection, set_seeds in sets:
        own = own_lang[group]
        values = mean_values(own) if mode == "mean" else None
        salt = () if budget is None else (budget,)
        if deciles is None:
            controls = random_controls(selection, n_neurons, group, set_seeds, salt)
        else:
            drawn = matched_controls(selection, deciles, group, set_seeds, salt)
            controls = [c for c, _ in drawn]
            if sum(o for _, o in drawn):
                name = group if budget is None else f"{group}@{budget}"
                overlaps[name] = sum(o for _, o in drawn)
                log.warning("%s: %d control neuron(s) over %d sets came from the selection: a (layer, decile) "
                            "cell had too few other neurons", name, overlaps[name], len(set_seeds))
        conditions = [("selected", -1, selection)] + [("random", s, sel) for s, sel in zip(set_seeds, controls)]
        # (condition, seed, size, per-sentence NLL sums, {language: (mean NLL, its baseline)})
        measured = []
        for condition, s, sel in conditions:
            size = selection_size(sel)
            if condition == "random" and scoped[group]:  # the own language's sentences only
                sc, sc_base, sc_mean = own_scorer(own)
                sums = ablated(sc, sc_base, sel, values)
                measured.append((condition, s, size, sums, {own: (float(sums.sum() / max(sc.n_tokens, 1)), sc_mean)}))
                continue
            sums = ablated(scorer, base_sums, sel, values)
            means = language_means(sums, scorer.n_predicted, langs, order)
            measured.append((condition, s, size, sums, {lang: (float(v), float(b))
                                                        for lang, v, b in zip(order, means, base)}))
        control_deltas = {lang: np.array([m[4][lang][0] - m[4][lang][1] for m in measured[1:] if lang in m[4]])
                          for lang in order}
        for condition, s, size, sums, nll in measured:
            for lang, (v, b) in nll.items():
                low = high = p = float("nan")
                if condition == "selected":
                    u = units[lang]
                    low, high = bootstrap_delta_ci(base_sums[u], sums[u], scorer.n_predicted[u],
                                                   ci_rng(seed, group, lang))
                    if not scoped[group] or lang == own:
                        p = p_controls(v - b, control_deltas[lang])
                rows.append((group, lang, condition, s, size, own_tokens[lang], v, b, v - b, (v - b) / b,
                             low, high, p, budget))
        if own in order:
            own_deltas = [f"{m[4][own][0] - m[4][own][1]:+.3f}" for m in measured]
            log.info("%s%s (%d neurons): delta NLL on %s %s (random: %s); %.0f tokens/s so far", group,
                     "" if budget is None else f" top {budget}", selection_size(selection), own, own_deltas[0],
                     ", ".join(own_deltas[1:]) or "none", scored / (time.perf_counter() - t0))
    progress.close()
    seconds = time.perf_counter() - t0
    df = pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))
    df["budget"] = pd.array(df["budget"].tolist(), dtype="Int64")
    meta = {
        "mode": mode,
        "random_sets": random_sets,
        "seeds": seeds,
        "controls": "layer" if deciles is None else "layer and firing-rate decile",
        "ci": {"unit": "sentences", "n": {lang: len(units[lang]) for lang in order}, "n_boot": N_BOOT,
               "level": LEVEL, "interval": "percentile of the ratio-of-sums delta NLL", "seed": seed},
        "p_controls": {"n_controls": random_sets, "formula": "(1 + #{controls: delta >= selected}) / (1 + n)"},
        "control_overlap": overlaps,
        "budget_random_sets": budget_random_sets,
        "eval_split": held_out.split,
        "eval_languages": order,
        "sentences": held_out.sources,
        "n_sentences": {lang: len(held_out.texts[lang]) for lang in order},
        "n_truncated": scorer.n_truncated,
        "n_truncated_by_language": truncated,
        "max_length": max_length,
        "max_tokens": scorer.max_length,  # max_length, or the model's context when smaller
        "group_lang": own_lang,
        "token_scope": token_scope,
        "n_passes": n_passes,
        "tokens_per_pass": scorer.n_tokens,
        "controls_scope": controls_scope,
        "tokens_scored": scored,
        "seconds": seconds,
        "tokens_per_second": scored / max(seconds, 1e-9),
        "token_budget": scorer.token_budget,
        "chunk_tokens": scorer.chunk_tokens,
        "head_check_relative_difference": diff,
    }
    return df, meta


# --------------------------------------------------------------------------------------------
# The rule's task
# --------------------------------------------------------------------------------------------


def ablate_to_file(loaded: LoadedModel, *, scores_path: str, pair_tables: Sequence[str], out_path: str,
                   count_tables: Sequence[str] = (), mode: str = "zero", random_sets: int = 20,
                   max_sentences: int | None = 200, seed: int = 0, max_length: int = 512,
                   token_budget: int | None = None, budgets: Sequence[int] = (),
                   budget_random_sets: int = 3, token_scope: str = "source", rest: str = "pooled",
                   controls_scope: str = "all") -> None:
    """The ablation task of one scoring method: its score table, the held-out pair tables, (for mode
    "mean") the selection split's count tables; writes ``out_path`` atomically."""
    scores = read_table(scores_path, required=("group", "layer", "neuron"))
    score_meta = read_metadata(scores_path)
    selected = selections_from_scores(scores)
    groups = [str(g) for g in score_meta.get("groups", sorted(selected))]
    selections = {g: selected.get(g, {}) for g in groups}
    held_out = held_out_by_language([(read_table(p, required=tuple(PAIR_SCHEMA.names)), read_metadata(p))
                                   for p in pair_tables], max_sentences)
    patch = MeanPatchValues(count_tables, "evaluate.ablation", rest=rest) if mode == "mean" else None
    mean_values = (lambda lang: patch.excluding([lang])) if patch is not None else None
    rate_column = score_meta.get("column") or "gate_active"
    deciles = None
    if count_tables:  # controls matched on firing-rate decile: the rate of the scores' own criterion
        deciles = rate_deciles(firing_rates(
            {str(p): read_counts(p, [rate_column]) for p in count_tables}, rate_column))
    method = score_meta.get("method", "?")
    tops, skipped = budget_selections(scores, budgets, method) if budgets else ({}, {})
    if skipped:
        log.warning("budgets beyond a group's scored neurons are left out: %s",
                    "; ".join(f"{g}: {', '.join(map(str, n))}" for g, n in skipped.items()))
    log.info("%s: %d groups (%d with neurons), mode %s, %d random sets each", method, len(groups),
             sum(selection_size(s) > 0 for s in selections.values()), mode, random_sets)
    df, meta = ablation_table(loaded, selections, held_out, mode=mode, random_sets=random_sets, seed=seed,
                              mean_values=mean_values, max_length=max_length, token_budget=token_budget,
                              deciles=deciles, budgets=tops, budget_random_sets=budget_random_sets,
                              token_scope=token_scope, controls_scope=controls_scope)
    meta.update({
        "budgets": sorted({int(b) for b in budgets}),
        "budgets_skipped": skipped,
        "budget_rank": "|score|" if method in ABS_SCORE_METHODS else "score",
        "rate_column": rate_column if deciles is not None else None,
        "method": variant_label(score_meta),  # lape@strict for a scoring.variants entry
        "group_kind": score_meta.get("group_kind"),
        "scoring_params": score_meta.get("params"),
        "scoring_column": score_meta.get("column"),
        "mean_rest": rest if mode == "mean" else None,
        "max_sentences": max_sentences,
        "seed": seed,
        **loaded.info,
        "demo_model": is_demo_model(loaded.info.get("model", "")),
        "versions": package_versions(),
    })
    write_table(df, out_path, ABLATION_SCHEMA, metadata=meta)
