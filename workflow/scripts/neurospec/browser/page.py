"""The neuron browser's page: one static ``index.html``, the data inlined as JSON, no server.

Per selected neuron (every neuron in the contexts table, i.e. selected by some method):

- ``l``, ``n``: its layer and index;
- ``m``: the selections that hold it, ``[method, group, score]``;
- ``p``: its activation probability per counted language, from the count tables: the criterion's
  count (``scoring.column``) over the counted tokens, summed over the tables of that language
  (the same probabilities LAPE scores); in the order of ``languages``;
- ``c``: its top contexts, largest activation first: ``[activation, pair, lang, sentence id,
  position, left, token, right]`` (``contexts.CONTEXT_COLUMNS``).

The page's script (``template.html``) draws the bars as SVG, lists the contexts with the token
highlighted, and filters by a text box (``L3``, ``N17``, ``3:17``, a method, a group, a token) and
by layer, language and method; the URL's ``?q=``, ``?layer=``, ``?lang=``, ``?method=`` preset them
(so a headless browser can run a search).  An exception in the script writes ``data-error`` on
``<body>`` and a visible line; a finished render writes ``data-ready`` (the number of matches).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from neurospec import atomic
from neurospec.errors import NeurospecError
from neurospec.languages import sort_key
from neurospec.tables import read_counts, read_metadata, read_table

TEMPLATE = Path(__file__).with_name("template.html")
DATA_MARKER = "/*NEUROSPEC_DATA*/"


def language_probabilities(count_tables: Sequence[tuple[pd.DataFrame, Mapping[str, Any]]],
                           column: str) -> tuple[list[str], np.ndarray]:
    """(languages, [layers, neurons, languages]): per counted language, sum(column) / sum(n_tokens)
    over its count tables (NaN for a language without counted tokens)."""
    sums: dict[str, np.ndarray] = {}
    tokens: dict[str, int] = {}
    for df, meta in count_tables:
        if column not in df.columns:
            raise NeurospecError(f"count table of {meta.get('pair')!r} lacks column {column!r}")
        d = df.sort_values(["layer", "neuron"], kind="stable")
        c = d[column].to_numpy(np.float64).reshape(int(d["layer"].max()) + 1, -1)
        lang = str(meta.get("counted_lang"))
        sums[lang] = sums[lang] + c if lang in sums else c.copy()
        tokens[lang] = tokens.get(lang, 0) + int(meta.get("n_tokens") or 0)
    languages = sorted(sums, key=sort_key)
    probs = np.stack([sums[g] / tokens[g] if tokens[g] else np.full_like(sums[g], np.nan) for g in languages],
                     axis=-1)
    return languages, probs


def _number(x: float, digits: int = 6) -> float | None:
    return None if not math.isfinite(x) else float(f"{x:.{digits}g}")


def page_data(contexts: pd.DataFrame, score_tables: Mapping[str, pd.DataFrame],
              count_tables: Sequence[tuple[pd.DataFrame, Mapping[str, Any]]], *, column: str,
              run: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON the page reads (module docstring): one entry per neuron of the contexts table and
    per neuron of a selection (a selected neuron without contexts gets an empty ``c``)."""
    languages, probs = language_probabilities(count_tables, column)
    selected: dict[tuple[int, int], list[list[Any]]] = {}
    for method, scores in score_tables.items():
        for row in scores.itertuples(index=False):
            score = float(row.score) if "score" in scores.columns else float("nan")
            selected.setdefault((int(row.layer), int(row.neuron)), []).append(
                [method, str(row.group), _number(score)])
    ctx: dict[tuple[int, int], list[list[Any]]] = {}
    for row in contexts.sort_values(["layer", "neuron", "rank"]).itertuples(index=False):
        ctx.setdefault((int(row.layer), int(row.neuron)), []).append(
            [float(row.activation), row.pair, row.lang, int(row.sentence_id), int(row.position), row.left,
             row.token, row.right])
    neurons = []
    for layer, neuron in sorted(set(selected) | set(ctx)):
        if layer >= probs.shape[0] or neuron >= probs.shape[1]:
            raise NeurospecError(f"neuron {layer}:{neuron} is outside the count tables' "
                                 f"{probs.shape[0]} layers x {probs.shape[1]} neurons")
        neurons.append({"l": layer, "n": neuron, "m": selected.get((layer, neuron), []),
                        "p": [_number(float(v), 4) for v in probs[layer, neuron]],
                        "c": ctx.get((layer, neuron), [])})
    return {"run": dict(run), "languages": languages, "methods": sorted(score_tables), "neurons": neurons}


def render(data: Mapping[str, Any]) -> str:
    """The page: the template with the data inlined (``</`` escaped, so no text closes the script)."""
    template = TEMPLATE.read_text(encoding="utf-8")
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("</", "<\\/").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if DATA_MARKER not in template:
        raise NeurospecError(f"the browser template {TEMPLATE} lacks its data marker")
    return template.replace(DATA_MARKER, text)


def write_page(contexts_path: str, scores_paths: Sequence[str], count_paths: Sequence[str], out_path: str, *,
               column: str, run: Mapping[str, Any]) -> None:
    """The browser page's task: read the tables, write ``index.html`` atomically."""
    contexts = read_table(contexts_path, required=("layer", "neuron", "rank", "activation"))
    meta = read_metadata(contexts_path)
    scores = {Path(p).stem: read_table(p, required=("group", "layer", "neuron")) for p in scores_paths}
    counts = [read_counts(p, [column]) for p in count_paths]
    info = {**dict(run), "top_k": meta.get("top_k"), "max_sentences": meta.get("max_sentences"),
            "n_sentences": sum((meta.get("n_sentences") or {}).values()), "token_scope": meta.get("token_scope"),
            "column": column, "model_revision": meta.get("model_revision")}
    atomic.write_text(out_path, render(page_data(contexts, scores, counts, column=column, run=info)))
