"""What every score and IoU figure shares: the groups in order with their family, tier and direction
(``group_table``; family, then resource tier, ``languages.sort_key``; pair groups en->xx, then xx->en,
then pairs without English), tick labels coloured by family, family legends and block lines
(``boundaries``), the method's title, an empty figure that says why, and the one save (``save_figure``)."""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import Patch

from neurospec.variants import label as variant_label
from . import style
from .. import languages as L
from ..atomic import save_png
from ..errors import NeurospecError


FAMILY_COLORS = style.FAMILY_COLORS  # one colour per family in every figure (neurospec.plots.style)


ARROW = "\u2192"


def is_pair(group: str) -> bool:
    return "-" in group


def group_table(groups: Sequence[str], langs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per group in figure order: group, label, lang, family, tier, direction, block.

    ``lang`` is the group itself for language groups, the non-English side for pairs;
    ``direction`` is "en-xx"/"xx-en" for pairs, "" for languages; ``block`` changes where a
    family (or the direction) changes, English being a block of its own.
    """
    groups = [str(g) for g in groups]
    langs = L.language_table({c for g in groups for c in g.split("-")}) if langs is None else langs
    info = langs.set_index("code")
    pairs = [is_pair(g) for g in groups]
    if any(pairs) and not all(pairs):
        raise NeurospecError(f"cannot mix pair and language groups in one figure: {', '.join(groups)}")
    if groups and all(pairs):
        ordered = L.sort_pairs(groups)
        lang = [L.non_english(g) for g in ordered]
        direction = [L.direction(g) for g in ordered]
        label = [g.replace("-", ARROW) for g in ordered]
    else:
        ordered = sorted(groups, key=L.sort_key)
        lang, direction, label = ordered, [""] * len(ordered), ordered
    unknown = [x for x in lang if x not in info.index]
    if unknown:
        raise NeurospecError(f"unknown language code(s) {', '.join(unknown)} in groups")
    out = pd.DataFrame({"group": ordered, "label": label, "lang": lang, "direction": direction})
    out["family"] = [info.loc[x, "family"] for x in lang]
    out["tier"] = [info.loc[x, "tier"] for x in lang]
    out["block"] = [f"{d}/{L.sort_key(x)[0]}" for d, x in zip(direction, lang)]
    return out


def boundaries(values: Sequence[str]) -> list[int]:
    """Indices i where values[i] differs from values[i - 1]."""
    return [i for i in range(1, len(values)) if values[i] != values[i - 1]]


def family_legend(ax_or_fig, families: Sequence[str], **kwargs) -> None:
    present = L.families_in_order(families)
    handles = [Patch(color=style.color_of_family(f), label=f) for f in present]
    ax_or_fig.legend(handles=handles, title="family", fontsize=8, title_fontsize=8, **kwargs)


def color_ticklabels(labels, families) -> None:
    for text, family in zip(labels, families):
        text.set_color(style.color_of_family(family))


def tick_fontsize(n: int) -> float:
    return style.tick_fontsize(n)  # never under 6 pt: the figure grows instead


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> None:
    save_png(fig, path, dpi=dpi)


def method_title(meta: Mapping[str, Any]) -> str:
    params = meta.get("params") or {}
    text = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{variant_label(meta)} ({meta.get('column', '?')}{', ' + text if text else ''})"


def empty_figure(path, title: str, message: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2.5))
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=10, wrap=True)
    save_figure(fig, path)
