"""Translation quality with sacrebleu: chrF++ and BLEU per direction, baseline and with neurons ablated.

Scores are corpus-level, as sacrebleu's command line computes them (``sacrebleu REF -i HYP -m chrf
--chrf-word-order 2`` and ``-m bleu``): chrF++ is chrF with word bigrams (``word_order=2``), BLEU is
sacrebleu's default (13a tokenization, exponential smoothing).  Their signatures go into the table's
metadata.  ``chrf_copy`` is the chrF++ of copying the source sentence as the hypothesis: the floor a
model that does not translate reaches (high between languages that share a script and names).

``plot_quality`` draws chrF++ per direction and, when ablated translations exist, the change of chrF++
per direction and method.  ``score_to_file`` and ``draw_quality`` are the rule scripts' entry points.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import languages as L  # noqa: E402
from .errors import NeurospecError  # noqa: E402
from .atomic import save_png  # noqa: E402
from .tables import read_metadata, read_table, write_table  # noqa: E402

logger = logging.getLogger("neurospec")

HYPOTHESIS_COLUMNS = ("id", "src", "ref", "hyp")
SCORE_COLUMNS = ("pair", "src_lang", "tgt_lang", "direction", "lang", "condition", "method", "group", "n_neurons",
                 "n", "chrf", "bleu", "chrf_copy", "delta_chrf", "delta_bleu")
ARROW = "\u2192"


def metrics():
    """(chrF++, BLEU) sacrebleu metric objects, configured as the command line's defaults."""
    from sacrebleu.metrics import BLEU, CHRF

    return CHRF(word_order=2), BLEU()


def signatures() -> dict[str, str]:
    """sacrebleu's signature strings of both metrics, one reference per sentence."""
    chrf, bleu = metrics()
    for metric in (chrf, bleu):  # a signature records the number of references: score once to set it
        metric.corpus_score(["a"], [["a"]])
    return {"chrf": chrf.get_signature().format(), "bleu": bleu.get_signature().format()}


def corpus_scores(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, float]:
    """Corpus-level (chrF++, BLEU) of ``hyps`` against one reference each; NaN for no sentence."""
    if len(hyps) != len(refs):
        raise NeurospecError(f"{len(hyps)} hypotheses for {len(refs)} references")
    if not len(hyps):
        return float("nan"), float("nan")
    chrf, bleu = metrics()
    hyps, refs = [str(h) for h in hyps], [str(r) for r in refs]
    return float(chrf.corpus_score(hyps, [refs]).score), float(bleu.corpus_score(hyps, [refs]).score)


def _row(pair: str, n: int, chrf: float, bleu: float, chrf_copy: float, *, condition: str = "base",
         method: str = "", group: str = "", n_neurons: int = 0, delta_chrf: float = 0.0,
         delta_bleu: float = 0.0) -> dict[str, Any]:
    src, tgt = L.parse_pair(pair)
    return {"pair": pair, "src_lang": src, "tgt_lang": tgt, "direction": L.direction(pair),
            "lang": L.non_english(pair), "condition": condition, "method": method, "group": group,
            "n_neurons": int(n_neurons), "n": int(n), "chrf": chrf, "bleu": bleu, "chrf_copy": chrf_copy,
            "delta_chrf": delta_chrf, "delta_bleu": delta_bleu}


def score_translations(base: Mapping[str, pd.DataFrame], ablated: Mapping[str, tuple[pd.DataFrame, Mapping]]
                       ) -> pd.DataFrame:
    """The score table: one "base" row per direction, one "ablated" row per direction and method.

    ``base`` maps a pair to its hypotheses (id, src, ref, hyp); ``ablated`` maps a method to its
    ablated hypotheses (pair, group, n_neurons, id, src, ref, hyp) and their metadata.  An ablated
    direction is scored on the same sentences as its baseline (checked by id).  A direction whose group
    selected no neuron was not generated again: its row has n_neurons 0 and the baseline's scores
    (delta 0 by definition).
    """
    rows = []
    base_scores = {}
    for pair, df in base.items():
        chrf, bleu = corpus_scores(df["hyp"].tolist(), df["ref"].tolist())
        copy, _ = corpus_scores(df["src"].tolist(), df["ref"].tolist())
        base_scores[pair] = (chrf, bleu, copy)
        rows.append(_row(pair, len(df), chrf, bleu, copy))
    for method, (df, meta) in ablated.items():
        unablated = dict(meta.get("unablated") or {})
        for pair in base:
            chrf0, bleu0, copy = base_scores[pair]
            part = df[df["pair"] == pair]
            if part.empty:
                if pair not in unablated:
                    raise NeurospecError(f"ablated translations of method {method!r} lack direction {pair!r}: "
                                         "they were made for other pairs (rerun them)")
                rows.append(_row(pair, len(base[pair]), chrf0, bleu0, copy, condition="ablated", method=method,
                                 group=str(unablated[pair])))
                continue
            ids_base = base[pair]["id"].to_numpy(np.int64)
            if not np.array_equal(np.sort(part["id"].to_numpy(np.int64)), np.sort(ids_base)):
                raise NeurospecError(f"ablated translations of {pair!r} ({method}) are of other sentences than its "
                                     "baseline (different max_sentences or pair table): rerun them")
            chrf, bleu = corpus_scores(part["hyp"].tolist(), part["ref"].tolist())
            rows.append(_row(pair, len(part), chrf, bleu, copy, condition="ablated", method=method,
                             group=str(part["group"].iloc[0]), n_neurons=int(part["n_neurons"].iloc[0]),
                             delta_chrf=chrf - chrf0, delta_bleu=bleu - bleu0))
    out = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    return out.astype({"n_neurons": "int64", "n": "int64"})


def score_to_file(base_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                  ablated_paths: Sequence[str | os.PathLike] = ()) -> None:
    """Rule entry point: read every direction's hypotheses (and the ablated ones), write the score table."""
    base, base_meta = {}, {}
    for path in base_paths:
        meta = read_metadata(path)
        pair = str(meta.get("pair") or os.path.basename(str(path)).removesuffix(".parquet"))
        base[pair] = read_table(path, required=HYPOTHESIS_COLUMNS)
        base_meta[pair] = meta
    ablated = {}
    for path in ablated_paths:
        meta = read_metadata(path)
        method = str(meta.get("method") or os.path.basename(str(path)).removesuffix(".parquet"))
        ablated[method] = (read_table(path, required=("pair", "group", "n_neurons", *HYPOTHESIS_COLUMNS)), meta)
    scores = score_translations(base, ablated)
    for r in scores[scores["condition"] == "base"].itertuples():
        logger.info("%s: chrF++ %.2f, BLEU %.2f (copying the source: chrF++ %.2f), %d sentences", r.pair, r.chrf,
                    r.bleu, r.chrf_copy, r.n)
    any_meta = next(iter(base_meta.values()), {})
    meta = {
        "signatures": signatures(),
        "split": any_meta.get("split"),
        "model": any_meta.get("model"),
        "prompt_mode": any_meta.get("prompt_mode"),
        "generation": any_meta.get("generation"),
        "ablation_mode": {m: mt.get("mode") for m, (_, mt) in ablated.items()},
    }
    write_table(scores, out_path, metadata=meta)


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def family_color(code: str):
    """A tab10 colour per EC40 family (black for English)."""
    lang = L.language(code)
    return "black" if code == L.PIVOT else plt.get_cmap("tab10")(L.FAMILIES.index(lang.family))


def plot_quality(scores: pd.DataFrame, path: str | os.PathLike, demo: bool = False) -> dict[str, Any]:
    """chrF++ per direction (bars; tick: copying the source) and, if any, delta chrF++ per direction x method.

    Returns what was drawn: ``order`` (directions, top to bottom), ``chrf``, ``chrf_copy`` and ``delta``
    (a directions x methods DataFrame, empty without ablations).
    """
    base = scores[scores["condition"] == "base"].set_index("pair")
    if base.empty:
        raise NeurospecError("the translation score table has no baseline row")
    order = L.sort_pairs(list(base.index))
    abl = scores[scores["condition"] == "ablated"]
    delta = (abl.pivot(index="pair", columns="method", values="delta_chrf").reindex(order)
             if not abl.empty else pd.DataFrame(index=order))
    n_neurons = (abl.pivot(index="pair", columns="method", values="n_neurons").reindex(order)
                 if not abl.empty else None)
    height = max(3.0, 0.28 * len(order) + 1.5)
    ncols = 2 if delta.shape[1] else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 + 1.2 * delta.shape[1] * (ncols - 1), height), squeeze=False,
                             gridspec_kw={"width_ratios": [3, max(1.0, 0.6 * delta.shape[1])][:ncols]})
    ax = axes[0, 0]
    y = np.arange(len(order))
    chrf = base.loc[order, "chrf"].to_numpy(np.float64)
    copy = base.loc[order, "chrf_copy"].to_numpy(np.float64)
    colors = [family_color(L.non_english(p)) for p in order]
    ax.barh(y, chrf, color=colors, alpha=0.85, label="chrF++")
    ax.scatter(copy, y, marker="|", s=140, color="black", label="copy the source", zorder=3)
    ax.set_yticks(y, [p.replace("-", ARROW) for p in order], fontsize=8)
    for text, color in zip(ax.get_yticklabels(), colors):
        text.set_color(color)
    ax.invert_yaxis()
    ax.set_xlabel("chrF++ (held-out sentences)")
    ax.set_xlim(0, max(5.0, float(np.nanmax(np.r_[chrf, copy])) * 1.1))
    ax.legend(fontsize=7, loc="lower right")
    n = int(base["n"].max())
    ax.set_title(f"translation quality, {n} sentences per direction", fontsize=10)
    if ncols == 2:
        ax2 = axes[0, 1]
        values = delta.to_numpy(np.float64)
        lim = max(1.0, float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0)
        im = ax2.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
        ax2.set_xticks(range(delta.shape[1]), list(delta.columns), rotation=45, ha="right", fontsize=8)
        ax2.set_yticks(y, [])
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if np.isfinite(values[i, j]):
                    k = int(n_neurons.iloc[i, j]) if n_neurons is not None else -1
                    ax2.text(j, i, f"{values[i, j]:+.1f}" if k else "n=0", ha="center", va="center", fontsize=6)
        ax2.set_title(f"{chr(0x394)} chrF++, target's neurons ablated", fontsize=10)
        fig.colorbar(im, ax=ax2, shrink=0.6, label=f"{chr(0x394)} chrF++ (ablated - baseline)")
    if demo:
        fig.suptitle("demo model (random init): these numbers are noise", color="crimson", fontsize=10)
    save_png(fig, path, dpi=110)
    return {"order": order, "chrf": chrf, "chrf_copy": copy, "delta": delta}


def draw_quality(scores: str | os.PathLike, output: str | os.PathLike, demo: bool = False) -> None:
    """Rule entry point of the translation-quality figure."""
    plot_quality(read_table(scores, required=SCORE_COLUMNS), output, demo=demo)
