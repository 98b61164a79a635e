"""Translation quality with sacrebleu: chrF++ and BLEU per direction, baseline and with neurons ablated.

Scores are corpus-level, as sacrebleu's command line computes them (``sacrebleu REF -i HYP -m chrf
--chrf-word-order 2`` and ``-m bleu``): chrF++ is chrF with word bigrams (``word_order=2``), BLEU is
sacrebleu's default (13a tokenization, exponential smoothing).  Their signatures go into the table's
metadata.  ``chrf_copy`` is the chrF++ of copying the source sentence as the hypothesis: the floor a
model that does not translate reaches (high between languages that share a script and names).

Every output (baseline and ablated) is language-identified with heliport (``neurospec.lid``): its label
goes into a companion table (``lid.parquet``: pair, condition, method, id, hyp, lid, on_target), and
each score row gets ``lid_covered`` (heliport has a label for the target language), ``n_identified``
(outputs heliport gave a language label, not ``und``/``zxx``) and ``off_target`` (the share of those
identified as another language than the target; NaN when the target is not covered or nothing was
identified).  ``delta_chrf_low``/``delta_chrf_high`` bound ``delta_chrf`` (ablated minus baseline
chrF++) with a paired percentile bootstrap over the direction's sentences: the same resampled indices
for both conditions, corpus chrF++ recomputed per resample from per-sentence chrF++ statistics summed
(sacrebleu's sufficient statistics, equal to ``corpus_score`` on the full set).

``plot_quality`` draws chrF++ per direction and, when ablated translations exist, the change of chrF++
per direction and method.  ``score_to_file`` and ``draw_quality`` are the rule scripts' entry points.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import matplotlib

from .. import plots  # noqa: E402, F401  (matplotlib's Agg backend, chosen in neurospec/plots/__init__.py)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..plots import style  # noqa: E402
from .. import languages as L  # noqa: E402
from .. import lid as LID  # noqa: E402
from ..errors import NeurospecError  # noqa: E402
from ..atomic import save_png, with_formats  # noqa: E402
from ..tables import read_metadata, read_table, write_table  # noqa: E402

logger = logging.getLogger("neurospec")

HYPOTHESIS_COLUMNS = ("id", "src", "ref", "hyp")
SCORE_COLUMNS = ("pair", "src_lang", "tgt_lang", "direction", "lang", "condition", "method", "group", "n_neurons",
                 "n", "chrf", "bleu", "chrf_copy", "delta_chrf", "delta_bleu", "delta_chrf_low", "delta_chrf_high",
                 "lid_covered", "n_identified", "off_target")
LID_COLUMNS = ("pair", "tgt_lang", "condition", "method", "id", "hyp", "lid", "on_target")
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


def chrf_statistics(hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Per-sentence chrF++ sufficient statistics (sentences x 3 * orders: hyp, ref and matched n-grams per
    order), as sacrebleu's ``corpus_score`` collects them before summing."""
    chrf, _ = metrics()
    if not len(hyps):
        return np.zeros((0, 3 * (chrf.char_order + chrf.word_order)), np.int64)
    stats = chrf._extract_corpus_statistics([str(h) for h in hyps], [[str(r) for r in refs]])
    return np.asarray(stats, dtype=np.int64)


def chrf_from_statistics(totals: np.ndarray) -> np.ndarray:
    """chrF++ of summed statistics (``[..., 3 * orders]``), vectorized over leading axes: sacrebleu's
    ``CHRF._compute_f_score`` (beta 2, chrF++.py's epsilon per order, averaged over effective orders)."""
    chrf, _ = metrics()
    t = np.asarray(totals, dtype=np.float64)
    n_hyp, n_ref, n_match = t[..., 0::3], t[..., 1::3], t[..., 2::3]
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(n_hyp > 0, n_match / np.where(n_hyp > 0, n_hyp, 1), 1e-16)
        rec = np.where(n_ref > 0, n_match / np.where(n_ref > 0, n_ref, 1), 1e-16)
    effective = (n_hyp > 0) & (n_ref > 0)
    k = effective.sum(axis=-1)
    avg_prec = np.where(k > 0, (prec * effective).sum(axis=-1) / np.maximum(k, 1), 0.0)
    avg_rec = np.where(k > 0, (rec * effective).sum(axis=-1) / np.maximum(k, 1), 0.0)
    factor = chrf.beta ** 2
    denom = factor * avg_prec + avg_rec
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(avg_prec + avg_rec > 0, (1 + factor) * avg_prec * avg_rec / np.where(denom > 0, denom, 1),
                         0.0)
    return 100 * score


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """The resampled sentence indices (n_boot x n), the same for every condition of a direction."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def paired_delta_interval(base_stats: np.ndarray, other_stats: np.ndarray, *, n_boot: int = 1000, seed: int = 0,
                          level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of corpus chrF++(other) - chrF++(base) over paired bootstrap resamples of the
    sentences (rows aligned: row i of both is sentence i).  NaN, NaN for no resample or no sentence."""
    n = len(base_stats)
    if len(other_stats) != n:
        raise NeurospecError(f"paired bootstrap of {n} baseline sentences against {len(other_stats)} others")
    if n_boot < 1 or n == 0:
        return float("nan"), float("nan")
    idx = bootstrap_indices(n, n_boot, seed)
    counts = np.zeros((n_boot, n), np.int64)  # how often each sentence is drawn in each resample
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), idx.ravel()), 1)
    deltas = chrf_from_statistics(counts @ other_stats) - chrf_from_statistics(counts @ base_stats)
    alpha = (1 - level) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return float(low), float(high)


def _scores_and_statistics(hyps: Sequence[str], refs: Sequence[str]) -> tuple[float, float, np.ndarray]:
    """(chrF++, BLEU, per-sentence chrF++ statistics): chrF++ from the summed statistics, which is sacrebleu's
    ``corpus_score`` (one chrF++ pass instead of two; tests/unit/core/test_lid.py checks they are equal)."""
    if len(hyps) != len(refs):
        raise NeurospecError(f"{len(hyps)} hypotheses for {len(refs)} references")
    if not len(hyps):
        return float("nan"), float("nan"), chrf_statistics([], [])
    stats = chrf_statistics(hyps, refs)
    _, bleu = metrics()
    bleu_score = float(bleu.corpus_score([str(h) for h in hyps], [[str(r) for r in refs]]).score)
    return float(chrf_from_statistics(stats.sum(axis=0))), bleu_score, stats


def _lid_summary(code: str, on_target: pd.Series) -> dict[str, Any]:
    """lid_covered, n_identified and off_target of one direction's outputs (``code``: the target language;
    ``on_target``: the LID table's column, NA where undetermined)."""
    if not LID.covered(code):
        return {"lid_covered": False, "n_identified": 0, "off_target": float("nan")}
    known = on_target.dropna().astype(bool).to_numpy()
    return {"lid_covered": True, "n_identified": len(known),
            "off_target": float(np.mean(~known)) if len(known) else float("nan")}


def _row(pair: str, n: int, chrf: float, bleu: float, chrf_copy: float, *, condition: str = "base",
         method: str = "", group: str = "", n_neurons: int = 0, delta_chrf: float = 0.0,
         delta_bleu: float = 0.0, delta_ci: tuple[float, float] = (float("nan"), float("nan")),
         lid: Mapping[str, Any] | None = None) -> dict[str, Any]:
    src, tgt = L.parse_pair(pair)
    lid = dict(lid or {"lid_covered": LID.covered(tgt), "n_identified": 0, "off_target": float("nan")})
    return {"pair": pair, "src_lang": src, "tgt_lang": tgt, "direction": L.direction(pair),
            "lang": L.non_english(pair), "condition": condition, "method": method, "group": group,
            "n_neurons": int(n_neurons), "n": int(n), "chrf": chrf, "bleu": bleu, "chrf_copy": chrf_copy,
            "delta_chrf": delta_chrf, "delta_bleu": delta_bleu, "delta_chrf_low": delta_ci[0],
            "delta_chrf_high": delta_ci[1], **lid}


def _identified(pair: str, df: pd.DataFrame, condition: str, method: str, threshold: bool) -> pd.DataFrame:
    """The LID table rows of one direction's outputs."""
    tgt = L.parse_pair(pair)[1]
    labels = LID.identify(df["hyp"].tolist(), threshold=threshold)
    return pd.DataFrame({"pair": pair, "tgt_lang": tgt, "condition": condition, "method": method,
                         "id": df["id"].to_numpy(np.int64), "hyp": df["hyp"].astype(str).to_numpy(),
                         "lid": labels, "on_target": pd.array(LID.on_target(labels, tgt), dtype="boolean")},
                        columns=list(LID_COLUMNS))


def score_translations_with_lid(base: Mapping[str, pd.DataFrame],
                                ablated: Mapping[str, tuple[pd.DataFrame, Mapping]], *, n_boot: int = 1000,
                                seed: int = 0, level: float = 0.95, lid_threshold: bool = True
                                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The score table and the LID table (one row per output: its heliport label and whether it is the target).

    ``base`` maps a pair to its hypotheses (id, src, ref, hyp); ``ablated`` maps a method to its
    ablated hypotheses (pair, group, n_neurons, id, src, ref, hyp) and their metadata.  An ablated
    direction is scored on the same sentences as its baseline (checked by id; rows aligned by id for the
    paired bootstrap, seeded with ``seed`` per comparison so every method of a direction sees the same
    resamples).  A direction whose group selected no neuron was not generated again: its row has
    n_neurons 0 and the baseline's scores and LID (delta 0 and its interval [0, 0] by definition).
    """
    if not 0 < level < 1:
        raise NeurospecError(f"evaluate.translation_scores.level must lie in (0, 1), got {level!r}")
    if int(n_boot) != n_boot or n_boot < 0:
        raise NeurospecError(f"evaluate.translation_scores.n_boot must be an integer >= 0, got {n_boot!r}")
    rows, lid_parts = [], []
    base_scores, base_stats, base_lid = {}, {}, {}
    for pair, df in base.items():
        chrf, bleu, stats = _scores_and_statistics(df["hyp"].tolist(), df["ref"].tolist())
        copy, _ = corpus_scores(df["src"].tolist(), df["ref"].tolist())
        base_scores[pair] = (chrf, bleu, copy)
        base_stats[pair] = pd.DataFrame(stats, index=df["id"].to_numpy(np.int64))
        lid = _identified(pair, df, "base", "", lid_threshold)
        lid_parts.append(lid)
        base_lid[pair] = _lid_summary(L.parse_pair(pair)[1], lid["on_target"])
        rows.append(_row(pair, len(df), chrf, bleu, copy, lid=base_lid[pair]))
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
                                 group=str(unablated[pair]), delta_ci=(0.0, 0.0), lid=base_lid[pair]))
                continue
            ids_base = base[pair]["id"].to_numpy(np.int64)
            if not np.array_equal(np.sort(part["id"].to_numpy(np.int64)), np.sort(ids_base)):
                raise NeurospecError(f"ablated translations of {pair!r} ({method}) are of other sentences than its "
                                     "baseline (different max_sentences or pair table): rerun them")
            chrf, bleu, stats = _scores_and_statistics(part["hyp"].tolist(), part["ref"].tolist())
            stats = pd.DataFrame(stats, index=part["id"].to_numpy(np.int64)).loc[ids_base].to_numpy()
            ci = paired_delta_interval(base_stats[pair].to_numpy(), stats, n_boot=int(n_boot), seed=seed,
                                       level=level)
            lid = _identified(pair, part, "ablated", method, lid_threshold)
            lid_parts.append(lid)
            rows.append(_row(pair, len(part), chrf, bleu, copy, condition="ablated", method=method,
                             group=str(part["group"].iloc[0]), n_neurons=int(part["n_neurons"].iloc[0]),
                             delta_chrf=chrf - chrf0, delta_bleu=bleu - bleu0, delta_ci=ci,
                             lid=_lid_summary(L.parse_pair(pair)[1], lid["on_target"])))
    out = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    out = out.astype({"n_neurons": "int64", "n": "int64", "n_identified": "int64", "lid_covered": "bool"})
    lid_table = (pd.concat(lid_parts, ignore_index=True) if lid_parts
                 else pd.DataFrame(columns=list(LID_COLUMNS)))
    return out, lid_table


def score_translations(base: Mapping[str, pd.DataFrame], ablated: Mapping[str, tuple[pd.DataFrame, Mapping]],
                       **options: Any) -> pd.DataFrame:
    """The score table: one "base" row per direction, one "ablated" row per direction and method
    (see ``score_translations_with_lid``, which also returns every output's language label)."""
    return score_translations_with_lid(base, ablated, **options)[0]


def score_to_file(base_paths: Sequence[str | os.PathLike], out_path: str | os.PathLike,
                  ablated_paths: Sequence[str | os.PathLike] = (), *, lid_path: str | os.PathLike | None = None,
                  options: Mapping[str, Any] | None = None) -> None:
    """Rule entry point: read every direction's hypotheses (and the ablated ones), write the score table
    (and, with ``lid_path``, every output's language label).  ``options``: evaluate.translation_scores
    (n_boot, seed, level, lid_threshold)."""
    options = dict(options or {})
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
    n_boot, seed = options.get("n_boot", 1000), options.get("seed", 0)
    level, threshold = options.get("level", 0.95), bool(options.get("lid_threshold", True))
    scores, lid_table = score_translations_with_lid(base, ablated, n_boot=n_boot, seed=seed, level=level,
                                                    lid_threshold=threshold)
    for r in scores[scores["condition"] == "base"].itertuples():
        off = (f"{r.off_target:.1%} of {r.n_identified} identified outputs" if np.isfinite(r.off_target)
               else "n/a (heliport has no label for the target)" if not r.lid_covered else "n/a (none identified)")
        logger.info("%s: chrF++ %.2f, BLEU %.2f (copying the source: chrF++ %.2f), %d sentences; off-target %s",
                    r.pair, r.chrf, r.bleu, r.chrf_copy, r.n, off)
    any_meta = next(iter(base_meta.values()), {})
    meta = {
        "signatures": signatures(),
        "split": any_meta.get("split"),
        "model": any_meta.get("model"),
        "prompt_mode": any_meta.get("prompt_mode"),
        "generation": any_meta.get("generation"),
        "ablation_mode": {m: mt.get("mode") for m, (_, mt) in ablated.items()},
        "delta_chrf_interval": {"method": "paired percentile bootstrap", "unit": "sentences",
                                "n": "column n (sentences per direction)", "n_boot": int(n_boot), "seed": int(seed),
                                "level": float(level)},
        "lid": lid_metadata(threshold),
    }
    if lid_path is not None:
        write_table(lid_table, lid_path, metadata={"lid": lid_metadata(threshold), "split": any_meta.get("split")})
    write_table(scores, out_path, metadata=meta)


def lid_metadata(threshold: bool) -> dict[str, Any]:
    """What the LID columns mean, for the tables' metadata."""
    from importlib.metadata import version

    return {"identifier": f"heliport {version('heliport')}", "confidence_threshold": bool(threshold),
            "undetermined": list(LID.UNDETERMINED), "not_covered": list(LID.NOT_COVERED),
            "macrolanguage": dict(LID.MACROLANGUAGE),
            "off_target": "share of the outputs heliport identified (not und/zxx) labelled another language than "
                          "the target; NaN where heliport has no label for the target (lid_covered false) or "
                          "identified nothing"}


# --------------------------------------------------------------------------------------------
# Figure
# --------------------------------------------------------------------------------------------


def family_color(code: str):
    """The colour of the language's family, as in every figure (neurospec.plots.style); English black."""
    L.language(code)  # an unknown code is the caller's error, as before
    return style.family_color(code)


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


@with_formats
def draw_quality(scores: str | os.PathLike, output: str | os.PathLike, demo: bool = False) -> None:
    """Rule entry point of the translation-quality figure."""
    plot_quality(read_table(scores, required=SCORE_COLUMNS), output, demo=demo)
