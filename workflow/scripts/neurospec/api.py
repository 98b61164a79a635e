"""A Python API over a finished run, and neurospec's interventions on your own model.

    import neurospec
    run = neurospec.load_run("results/demo-cohere/demo/validation")
    run.scores("lape")                 # the score table (pandas): group, layer, neuron, score
    sel = run.selection("lape")        # {group: {layer: sorted neuron indices (int64)}}
    with neurospec.intervene(model, sel["de"], mode="zero"):
        model(**inputs)                # the German neurons zeroed; restored on exit

``load_run(path)``: ``path`` is a run's folder, ``results/{model}/{dataset}/{split}``, or a working
directory whose ``results/`` holds exactly one run.  Tables are read on demand (``Run`` methods);
what a run lacks (no ablation yet, the browser off) is one clear error naming the file.

``intervene(model, selection, mode, values, alpha)``: a context manager on any supported causal LM
or its base model (``neurospec.architectures``: Llama, Qwen, Gemma, Cohere, GPT-2, ...) that
changes the selected neurons (the input of ``down_proj``) on every token and removes its hooks on
exit, also after an exception.  ``selection``: {layer: neuron indices}, e.g. one group of
``Run.selection``.  Modes, h being the neurons' activation::

    zero:  h[idx] = 0
    mean:  h[idx] = values[layer, idx]              values: [layers, neurons], e.g. Run.mean_activations(exclude=["de"])
    set:   h[idx] = alpha * values                  values: a number or [layers, neurons]
    add:   h[idx] = h[idx] + alpha * values         values: a number (default 1) or [layers, neurons]

Export in the anchors' formats: ``Run.export_lape(method, path)`` writes LAPE's activation mask
(Tang et al. 2024, RUCAIBox/Language-Specific-Neurons: ``torch.save`` of a list over languages of
a list over layers of LongTensors, ``mask[i][j]`` the neurons of language i in layer j, every layer
present, empty where none) and ``Run.export_json(method, path)`` writes ``{group: {layer: [indices]}}``
(Tan et al. 2024 publish fairseq weight masks per direction, not a neuron list, so the JSON is
neurospec's own, documented layout).
"""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from neurospec import atomic
from neurospec.errors import NeurospecError
from neurospec.interventions import Selection, mean_activations, selections_from_scores
from neurospec.languages import sort_key, sort_pairs
from neurospec.tables import read_counts, read_metadata, read_table

MODES = ("zero", "mean", "set", "add")


def _find_run(path: Path) -> Path:
    if (path / "activations").is_dir() or (path / "scores").is_dir():
        return path
    runs = sorted(p.parent for p in path.glob("results/*/*/*/activations") if p.is_dir())
    if len(runs) == 1:
        return runs[0]
    if runs:
        raise NeurospecError(f"{path} holds {len(runs)} runs; load one of them: "
                             + ", ".join(str(r) for r in runs))
    raise NeurospecError(f"{path} is not a neurospec run: it has no activations/ or scores/ folder "
                         "(a run is results/{model}/{dataset}/{split}, or a working directory holding one)")


class Run:
    """One run's tables (``results/{model}/{dataset}/{split}``), read as pandas on demand."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_dir():
            raise NeurospecError(f"run folder {path} does not exist")
        self.path = _find_run(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}: methods {self.methods}, {len(self.pairs)} pairs)"

    def _file(self, *parts: str) -> Path:
        f = self.path.joinpath(*parts)
        if not f.exists():
            raise NeurospecError(f"this run has no {'/'.join(parts)} ({f} does not exist): "
                                 "run the workflow's target for it first")
        return f

    @property
    def methods(self) -> list[str]:
        """The methods with a score table."""
        return sorted(p.stem for p in (self.path / "scores").glob("*.parquet")
                      if not p.stem.endswith(("_iou", "_stability")))

    @property
    def pairs(self) -> list[str]:
        """The pairs with a count table."""
        return sort_pairs([p.stem for p in (self.path / "activations").glob("*.parquet")])

    def _method(self, method: str) -> str:
        if method not in self.methods:
            raise NeurospecError(f"this run has no scores of method {method!r}; it has: "
                                 f"{', '.join(self.methods) or 'none'}")
        return method

    def scores(self, method: str) -> pd.DataFrame:
        """The method's score table: group, layer, neuron, score (the selected neurons)."""
        return read_table(self._file("scores", f"{self._method(method)}.parquet"))

    def selection(self, method: str) -> dict[str, Selection]:
        """{group: {layer: sorted neuron indices}} of one method."""
        return selections_from_scores(self.scores(method))

    def iou(self, method: str) -> pd.DataFrame:
        return read_table(self._file("scores", f"{self._method(method)}_iou.parquet"))

    def stability(self, method: str) -> pd.DataFrame:
        return read_table(self._file("scores", f"{self._method(method)}_stability.parquet"))

    def counts(self, pair: str) -> pd.DataFrame:
        """One pair's count table (one row per layer and neuron); its metadata in ``.attrs``."""
        df, meta = read_counts(self._file("activations", f"{pair}.parquet"))
        df.attrs.update(meta)
        return df

    def probabilities(self, column: str = "gate_active") -> pd.DataFrame:
        """Activation probability per language: [layer, neuron] rows, one column per counted language
        (the criterion's count over the counted tokens of that language's count tables)."""
        from neurospec.browser.page import language_probabilities

        tables = [read_counts(self._file("activations", f"{p}.parquet"), [column]) for p in self.pairs]
        languages, probs = language_probabilities(tables, column)
        n_layers, n_neurons, _ = probs.shape
        index = pd.MultiIndex.from_product([range(n_layers), range(n_neurons)], names=["layer", "neuron"])
        return pd.DataFrame(probs.reshape(-1, len(languages)), index=index, columns=languages)

    def mean_activations(self, exclude: Sequence[str] = (), rest: str = "balanced") -> np.ndarray:
        """[layers, neurons]: each neuron's mean activation over the count tables of the languages not
        in ``exclude`` (``interventions.mean_activations``): the values of mode "mean"."""
        tables = {p: read_counts(self._file("activations", f"{p}.parquet"), ["act_sum"]) for p in self.pairs}
        return mean_activations(tables, exclude=exclude, rest=rest)

    @property
    def n_layers(self) -> int:
        if not self.pairs:
            raise NeurospecError(f"this run has no count table under {self.path / 'activations'}")
        return int(read_table(self._file("activations", f"{self.pairs[0]}.parquet"), columns=["layer"])["layer"].max()) + 1

    def ablation(self, method: str) -> pd.DataFrame:
        """The method's ablation table (group x evaluated language x condition); metadata in ``.attrs``."""
        f = self._file("ablation", f"{method}.parquet")
        df = read_table(f)
        df.attrs.update(read_metadata(f))
        return df

    def translation_scores(self) -> pd.DataFrame:
        return read_table(self._file("translation", "scores.parquet"))

    def correlation(self) -> pd.DataFrame:
        return read_table(self._file("translation", "correlation.parquet"))

    def contexts(self) -> pd.DataFrame:
        """The neuron browser's top activating contexts (browser.enabled)."""
        return read_table(self._file("browser", "contexts.parquet"))

    def export_lape(self, method: str, path: str | Path, groups: Sequence[str] | None = None) -> list[str]:
        """Write the method's selection as LAPE's activation mask (module docstring); returns the group
        of each entry, in order (default: every group, languages in the figures' order), also written
        beside it as ``{path}.json``."""
        import torch

        selection = self.selection(method)
        order = list(groups) if groups is not None else sorted(
            selection, key=lambda g: sort_key(g) if "-" not in g else (99, 0, g))
        unknown = [g for g in order if g not in selection]
        if unknown:
            raise NeurospecError(f"method {method!r} selected nothing for {', '.join(unknown)}; its groups: "
                                 f"{', '.join(sorted(selection))}")
        n_layers = self.n_layers
        mask = [[torch.as_tensor(selection[g].get(layer, np.array([], np.int64)), dtype=torch.long)
                 for layer in range(n_layers)] for g in order]
        buffer = io.BytesIO()
        torch.save(mask, buffer)
        atomic.write_bytes(path, buffer.getvalue())
        atomic.write_json(f"{path}.json", {"format": "LAPE activation mask: mask[i][j] = LongTensor of the neurons "
                                                     "of groups[i] in layer j", "method": method, "groups": order,
                                           "n_layers": n_layers, "run": str(self.path)}, indent=1)
        return order

    def export_json(self, method: str, path: str | Path) -> None:
        """Write the method's selection as ``{group: {layer: [neuron indices]}}`` (JSON; layers as strings)."""
        selection = self.selection(method)
        atomic.write_json(path, {g: {str(layer): [int(i) for i in idx] for layer, idx in sorted(s.items())}
                                 for g, s in sorted(selection.items())}, indent=1)


def load_run(path: str | Path) -> Run:
    """A finished run's tables: ``path`` is ``results/{model}/{dataset}/{split}`` or a working
    directory holding exactly one run."""
    return Run(path)


def _values(values: Any, alpha: float, shape: tuple[int, int], mode: str) -> np.ndarray:
    if values is None:
        if mode == "set":
            raise NeurospecError("intervene mode 'set' needs values (a number or [layers, neurons])")
        values = 1.0
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if arr.shape != shape:
        raise NeurospecError(f"intervene values have shape {arr.shape}; the model's is {shape} (layers, neurons)")
    return alpha * arr


@contextmanager
def intervene(model: Any, selection: Mapping[int, Any], mode: str = "zero", values: Any = None,
              alpha: float = 1.0) -> Iterator[None]:
    """Within the block, ``selection``'s neurons of ``model`` are changed on every token (module docstring)."""
    from neurospec import interventions
    from neurospec.architectures import n_neurons, resolve_mlp_taps

    if mode not in MODES:
        raise NeurospecError(f"intervene mode {mode!r}: choose one of {', '.join(MODES)}")
    if any(isinstance(v, Mapping) for v in selection.values()):
        raise NeurospecError("intervene takes one group's selection, {layer: indices}: e.g. "
                             "run.selection('lape')['de'], not the whole {group: {layer: indices}}")
    sel = {int(layer): np.asarray(idx, dtype=np.int64) for layer, idx in selection.items()}
    if mode == "zero":
        with interventions.intervene(model, sel, "zero"):
            yield
        return
    taps = resolve_mlp_taps(model)
    shape = (len(taps), n_neurons(model))
    if mode == "mean":
        if values is None:
            raise NeurospecError("intervene mode 'mean' needs values: run.mean_activations(exclude=[...])")
        with interventions.intervene(model, sel, "mean", _values(values, alpha, shape, mode)):
            yield
        return
    # set: h[..., idx] = alpha * values[idx]; add: h[..., idx] += alpha * values[idx] (interventions' hooks)
    with interventions.intervene(model, sel, mode, _values(values, alpha, shape, mode)):
        yield
