"""Steering's measures: language of each output, success rate with its bootstrap CI, chrF++, NLL.

Per method x group x mode x alpha x prompt kind x condition x seed, over its outputs (one per
prompt, i.e. per held-out sentence: the unit that varies):

- ``success``: the share of outputs that heliport (``lid``) identifies as the group's language X
  (``und``/``zxx`` outputs count as not X); NaN with ``lid_covered`` false for the languages
  heliport does not cover (``lid.NOT_COVERED``), never counted as a failure;
- ``success_low``, ``success_high``: percentile bootstrap interval (``LEVEL``, ``N_BOOT``
  resamples of the outputs, i.e. of the prompts' sentences, n = ``n_outputs``);
- ``prompt_lang_share``: the share identified as English, the language the unsteered prompt
  continues in (continuation) or asks for (translation xx->en);
- ``chrf``: corpus chrF++ (sacrebleu, word_order 2) of the outputs against X's reference of the
  same sentence (the corpus is multi-parallel), over the ``n_chrf`` outputs whose sentence X has;
- ``nll``: nats per output token under the unsteered model, the outputs' summed NLL over their
  summed tokens (``generate.output_nll``).
"""

from __future__ import annotations

import logging
import zlib
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from neurospec import lid

log = logging.getLogger("neurospec")

N_BOOT = 1000
LEVEL = 0.95
KEY_COLUMNS = ("group", "mode", "alpha", "prompt_kind", "condition", "seed")
RESULT_COLUMNS = (*KEY_COLUMNS, "lang", "n_neurons", "n_outputs", "success", "success_low", "success_high",
                  "lid_covered", "prompt_lang_share", "chrf", "n_chrf", "nll", "n_output_tokens")
OUTPUT_COLUMNS = (*KEY_COLUMNS, "lang", "id", "prompt_lang", "prompt", "output", "lid_label", "n_new_tokens",
                  "nll_sum")


def bootstrap_share(hits: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT,
                    level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``hits`` (0/1 per output), resampling outputs."""
    hits = np.asarray(hits, dtype=np.float64)
    if len(hits) == 0 or n_boot < 1:
        return float("nan"), float("nan")
    idx = rng.integers(0, len(hits), size=(n_boot, len(hits)))  # [n_boot, n]
    means = hits[idx].mean(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def ci_rng(seed: int, key: Sequence) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(repr(tuple(key)).encode())])


def identified_as(labels: Sequence[str], lang: str) -> np.ndarray:
    """Per output label: whether it is ``lang`` (heliport's labels that count as it, ``lid.TARGET_LABELS``)."""
    accepted = set(lid.target_labels(lang))
    return np.array([lab in accepted for lab in labels], dtype=bool)


def chrf_score(hyps: Sequence[str], refs: Sequence[str]) -> float:
    from neurospec.evaluate.translation_quality import chrf_from_statistics, chrf_statistics

    if not len(hyps):
        return float("nan")
    return float(chrf_from_statistics(chrf_statistics(hyps, refs).sum(axis=0)))


def summarize(outputs: pd.DataFrame, references: Mapping[str, Mapping[str, str]], *, seed: int = 0,
              n_boot: int = N_BOOT, level: float = LEVEL, n_neurons: Mapping[tuple, int] | None = None,
              keys: Sequence[str] | None = None) -> pd.DataFrame:
    """The result table from the outputs table (``OUTPUT_COLUMNS`` and ``key``, the sentence key
    into ``references[lang]``): one row per ``KEY_COLUMNS`` combination."""
    rows = []
    uncovered: set[str] = set()
    for key, df in outputs.groupby(list(KEY_COLUMNS), sort=False, dropna=False):
        lang = str(df["lang"].iloc[0])
        covered = lid.covered(lang)
        hits = identified_as(df["lid_label"].tolist(), lang)
        if covered:
            success = float(hits.mean()) if len(hits) else float("nan")
            low, high = bootstrap_share(hits, ci_rng(seed, key), n_boot, level)
        else:
            uncovered.add(lang)
            success = low = high = float("nan")
        refs = references.get(lang, {})
        have = [k in refs for k in df["key"]]
        sub = df[have]
        chrf = chrf_score(sub["output"].astype(str).tolist(), [refs[k] for k in sub["key"]])
        n_tok = int(df["n_new_tokens"].sum())
        rows.append({**dict(zip(KEY_COLUMNS, key)), "lang": lang,
                     "n_neurons": int((n_neurons or {}).get(key, 0)),
                     "n_outputs": len(df), "success": success, "success_low": low, "success_high": high,
                     "lid_covered": covered,
                     "prompt_lang_share": float(identified_as(df["lid_label"].tolist(), "en").mean()) if len(df) else float("nan"),
                     "chrf": chrf, "n_chrf": int(len(sub)),
                     "nll": float(df["nll_sum"].sum() / n_tok) if n_tok else float("nan"), "n_output_tokens": n_tok})
    if uncovered:
        log.info("heliport does not cover %s: their success rates are left out (NaN, lid_covered false)",
                 ", ".join(sorted(uncovered)))
    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    out["seed"] = pd.array([None if pd.isna(s) else int(s) for s in out["seed"]], dtype="Int64")
    return out
