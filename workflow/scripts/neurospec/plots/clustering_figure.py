"""The clustering figure: groups clustered by the IoU of their neurons (average linkage on 1 - IoU),
the dendrogram's clusters compared with the language families by the adjusted Rand index."""

from __future__ import annotations

import os
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import special
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from . import style
from .. import languages as L
from ..errors import NeurospecError
from ..score.scoring import iou_matrix
from .group_axes import empty_figure, family_legend, group_table, save_figure, tick_fontsize


def adjusted_rand_index(labels_a: Sequence, labels_b: Sequence) -> float:
    """Hubert & Arabie's adjusted Rand index of two partitions of the same items.

    From the contingency table (``scipy.stats.contingency.crosstab``) and pair counts
    (``scipy.special.comb``): (index - expected) / (maximum - expected), with index the pairs
    together in both partitions, maximum the mean of the pairs together in each, expected their
    product over all pairs.  scipy has no ARI and scikit-learn is not a dependency; where both
    partitions are trivial (one cluster, or all singletons) it is 1 when they agree, else 0.
    """
    a = np.asarray(labels_a, dtype=object)
    b = np.asarray(labels_b, dtype=object)
    if a.shape != b.shape or a.ndim != 1:
        raise NeurospecError("adjusted_rand_index needs two label sequences of the same length")
    from scipy.stats.contingency import crosstab  # here: scipy.stats takes ~0.5 s to import, for one figure

    n = len(a)
    if n < 2:
        return 1.0
    table = crosstab(a.astype(str), b.astype(str)).count

    def pairs(x):
        return float(special.comb(x, 2).sum())

    index = pairs(table)
    sum_a, sum_b = pairs(table.sum(axis=1)), pairs(table.sum(axis=0))
    expected = sum_a * sum_b / special.comb(n, 2)
    maximum = (sum_a + sum_b) / 2
    if maximum == expected:  # both partitions trivial (one cluster, or all singletons)
        return 1.0 if index == maximum else 0.0
    return (index - expected) / (maximum - expected)


def clustering_groups(groups: Sequence[str], token_scope: str = "source") -> pd.DataFrame:
    """The groups clustered, with their language: all languages, or the pairs whose counted tokens
    are the non-English language's: xx->en (en->xx pairs all count English), or with collection's
    ``token_scope`` "target" (the reference translation counted) en->xx."""
    info = group_table(groups)
    if (info["direction"] != "").any():
        counts_target = L.counted_language("en", "xx", token_scope) == "xx"
        # pairs without English (xx-yy) are filed under their source language: kept when it is counted
        keep = ("en-xx",) if counts_target else ("xx-en", "xx-yy")
        info = info[info["direction"].isin(keep)]
    return info.reset_index(drop=True)


def plot_clustering(iou_table: pd.DataFrame, groups: Sequence[str], path: str | os.PathLike,
                    title: str = "", token_scope: str = "source") -> dict[str, Any]:
    """Average-linkage clustering of the groups on 1 - IoU (pooled over layers), against families.

    The tree is cut into as many clusters as there are families among the groups; the title
    gives the adjusted Rand index of that cut against the families.  Returns the distance
    matrix, the clusters, the ARI and the leaf order.
    """
    info = clustering_groups(groups, token_scope)
    order = info["group"].tolist()
    n = len(order)
    if n < 3:
        empty_figure(path, title, f"clustering needs at least 3 groups, got {n}")
        return {"groups": order, "ari": float("nan"), "clusters": {}, "leaves": order}
    m = iou_matrix(iou_table, order)
    dist = 1.0 - np.nan_to_num(m, nan=0.0)
    np.fill_diagonal(dist, 0.0)
    dist = np.clip((dist + dist.T) / 2, 0.0, 1.0)
    link = hierarchy.linkage(squareform(dist, checks=False), method="average")
    families = info["family"].tolist()
    k = len(set(families))
    clusters = hierarchy.fcluster(link, t=k, criterion="maxclust")
    ari = adjusted_rand_index(clusters, families)
    fig, ax = plt.subplots(figsize=(float(np.clip(0.22 * n + 3, 6, 20)), 5))
    dendro = hierarchy.dendrogram(link, labels=info["label"].tolist(), ax=ax, leaf_rotation=90,
                                  leaf_font_size=tick_fontsize(n) + 1, color_threshold=0,
                                  above_threshold_color="#555555")
    fam_of = dict(zip(info["label"], families))
    for text in ax.get_xticklabels():
        family = fam_of.get(text.get_text())
        text.set_color(style.color_of_family(family) if family else "black")
    if k > 1:
        cut = link[-(k - 1), 2]
        ax.axhline(cut, color="grey", ls=":", lw=1)
    ax.set_ylabel("1 - IoU (average linkage)")
    family_legend(ax, families, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{title}\nclustering by neuron overlap (all layers); labels coloured by family\n"
                 f"adjusted Rand index of {k} clusters against {k} families: {ari:.2f}", fontsize=10)
    save_figure(fig, path)
    leaves = [order[i] for i in dendro["leaves"]]
    return {"groups": order, "distance": dist, "ari": float(ari), "leaves": leaves,
            "clusters": dict(zip(order, clusters.tolist()))}
