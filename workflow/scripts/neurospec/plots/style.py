"""The one style of every figure: a colour per language family, a marker per script, fonts and sizes
that scale with the number of groups, and how a figure is saved.

Every figure module (figures, ablation_figures, correlation, translation_quality, stability) takes its
family colours and script markers from here, so that Romance is the same red in the IoU heatmaps,
the clustering, the stability figure, the translation-quality bars and the correlation scatter.
The colours are Okabe & Ito's colour-blind-safe palette; English (the pivot) is black.
"""

from __future__ import annotations

import math

from .. import languages as L

# family -> colour (Okabe & Ito 2008): distinguishable with the common colour-vision deficiencies
FAMILY_COLORS: dict[str, str] = dict(zip(L.FAMILIES, ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7")))
PIVOT_COLOR = "#000000"  # English
OTHER_COLOR = "#000000"  # a group that is neither a language nor a pair
UNKNOWN_FAMILY_COLOR = "#7f7f7f"  # a family no table knows ("Other", or one a config names): grey
# every other family of the shipped language table (languages.family_order) its own colour, in that order
MORE_FAMILY_COLORS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
                      "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#9c9ede", "#cedb9c",
                      "#e7ba52", "#e7969c", "#de9ed6", "#6baed6", "#fd8d3c", "#74c476", "#9e9ac8", "#fdae6b")

# script -> marker: every script of EC40 + English its own shape
SCRIPT_MARKERS: dict[str, str] = {
    "Latin": "o", "Cyrillic": "s", "Devanagari": "^", "Bengali": "v", "Arabic": "D", "Hebrew": "P",
    "Gujarati": "<", "Kannada": ">", "Ethiopic": "X",
}


def color_of_family(family: str) -> str:
    """The colour of a family: EC40's five, one each for the shipped table's other families, grey for
    a family no table knows."""
    if family in FAMILY_COLORS:
        return FAMILY_COLORS[family]
    order = L.family_order()
    if family not in order or family == order[-1]:
        return UNKNOWN_FAMILY_COLOR
    return MORE_FAMILY_COLORS[(order.index(family) - len(L.FAMILIES)) % len(MORE_FAMILY_COLORS)]


def _language_of(group: str):
    """The language of a code, or of a pair's non-English side (any language neurospec resolves);
    None for anything else (a group that is not a language or pair, English)."""
    code = group
    if "-" in group:
        try:
            code = L.non_english(group)
        except Exception:  # not a pair of known codes
            return None
    if code == L.PIVOT:
        return None
    try:
        return L.language(code)
    except Exception:  # not a language code
        return None


def family_of(group: str) -> str | None:
    """The family of a language code or of a pair's non-English language; None for anything else."""
    lang = _language_of(group)
    return lang.family if lang is not None else None


def family_color(group: str) -> str:
    """The colour of a language code or pair (its non-English language's family); English black."""
    if group == L.PIVOT:
        return PIVOT_COLOR
    family = family_of(group)
    return color_of_family(family) if family else OTHER_COLOR


def script_marker(group: str) -> str:
    """The marker of a language code or pair (its non-English language's script)."""
    lang = _language_of(group)
    return SCRIPT_MARKERS.get(lang.script, "o") if lang is not None else "o"


# Tick labels of many groups: the font shrinks with their number down to MIN_TICK_PT, then the
# figure grows instead (``tick_fontsize``, ``cell_inches``): 80 directions stay legible.
MIN_TICK_PT = 6.0
MAX_TICK_PT = 9.0


def tick_fontsize(n: int) -> float:
    """Font size (pt) of ``n`` tick labels on one axis: 9 pt up to 20, never under 6 pt."""
    if n <= 20:
        return MAX_TICK_PT
    return max(MIN_TICK_PT, MAX_TICK_PT - 3.0 * (n - 20) / 40.0)


def cell_inches(n: int) -> float:
    """Inches per row/column of a heatmap of ``n`` groups: room for a tick label of ``tick_fontsize``
    (1.4 line heights per label)."""
    return 1.4 * tick_fontsize(n) / 72.0


def heatmap_inches(n: int, minimum: float = 3.2) -> float:
    """The side of a square heatmap panel of ``n`` groups."""
    return max(minimum, n * cell_inches(n))


def dpi_for(width_in: float, height_in: float, dpi: int = 150, max_pixels: int = 12_000_000) -> int:
    """``dpi``, lowered so that the saved image holds at most ``max_pixels`` pixels (never under 72)."""
    pixels = width_in * height_in * dpi * dpi
    if pixels <= max_pixels:
        return dpi
    return max(72, int(dpi * math.sqrt(max_pixels / pixels)))
