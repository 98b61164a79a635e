"""Sources -> the pair table of one direction (``id, src_lang, tgt_lang, src, tgt``).

``dataset.name`` picks the source: ``demo`` (neurospec.data.demo), ``ec40`` (neurospec.data.ec40), ``hf`` (a
Hugging Face dataset) and ``files`` (local TSV / JSONL / Parquet / text files) (neurospec.data.corpus).
``dataset_params`` is what the pair_table rule passes (only the keys of the source in use, so that
editing another source's keys reruns nothing), ``dataset_files`` the local files it reads (rule
inputs: editing one reruns its tables), ``check_dataset`` the config checks done before anything runs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from . import corpus, demo, ec40
from ..errors import NeurospecError
from ..languages import parse_pair
from ..tables import PAIR_SCHEMA, write_table

DATASETS = ("demo", "ec40", "hf", "files")
# the dataset keys each source reads, besides name, split and max_samples
SOURCE_KEYS = {
    "demo": (),
    "ec40": ("local_dir", "repo_id", "revision", "detokenize"),
    "hf": ("hf", "rows", "detokenize"),
    "files": ("files", "rows", "detokenize"),
}


def _sorted(value: Any) -> Any:
    """Dicts key-sorted at every level: the same values in another order are the same params."""
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def detokenize_default(name: str) -> bool:
    """``dataset.detokenize: null``: on for EC40 (Moses-tokenized text), off for everything else."""
    return name == "ec40"


def dataset_folder(dataset: Mapping[str, Any]) -> str:
    """The ``{dataset}`` folder under results/: ``dataset.folder``, else the name (hf: the last part of
    its id, so that two Hugging Face datasets never share a folder)."""
    if dataset.get("folder"):
        return dataset["folder"]
    hf_id = (dataset.get("hf") or {}).get("id")
    if dataset.get("name") == "hf" and hf_id:
        name = Path(str(hf_id).rstrip("/")).name
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "hf"
    return dataset.get("name") or "demo"


def dataset_params(dataset: Mapping[str, Any], split: str) -> dict[str, Any]:
    """The dataset keys that shape a pair table of ``split``, defaults resolved, keys sorted."""
    name = dataset.get("name")
    if name not in SOURCE_KEYS:
        raise NeurospecError(f"dataset.name {name!r}: choose one of {', '.join(DATASETS)}")
    params = {"name": name, "split": split, "max_samples": dataset.get("max_samples")}
    for key in SOURCE_KEYS[name]:
        params[key] = dataset.get(key)
    if "detokenize" in params and params["detokenize"] is None:
        params["detokenize"] = detokenize_default(name)
    return _sorted(params)


def check_dataset(dataset: Mapping[str, Any], pairs: list[str], split: str,
                  split_key: str = "dataset.split") -> None:
    """Config errors of the dataset keys, raised before anything runs: unknown keys and templates,
    a required key left out, a split or language the source cannot have. ``split_key`` is the key
    that gave ``split`` (``evaluate.split`` for the held-out split), named in its errors."""
    params = dataset_params(dataset, split)
    name = params["name"]
    if name == "demo" and split not in demo.SPLITS:
        raise NeurospecError(f"{split_key} {split!r}: the demo dataset has only {', '.join(demo.SPLITS)}")
    if name == "ec40":
        if split not in ec40.SPLITS:
            raise NeurospecError(f"{split_key} {split!r}: EC40 has no such split; choose one of "
                                 f"{', '.join(ec40.SPLITS)}")
        for pair in pairs:
            for lang in parse_pair(pair):
                if lang != "en":
                    ec40.remote_path(split, lang, "en")
    elif name == "files":
        rows = corpus.Rows.from_config(params["rows"])
        for pair in pairs:
            corpus.file_paths(params["files"] or {}, pair, split, rows)
        corpus.check_encoding((params["files"] or {}).get("encoding"))
    elif name == "hf":
        rows = corpus.Rows.from_config(params["rows"])
        hf = params["hf"] or {}
        if not hf.get("id"):
            raise NeurospecError("key 'dataset.hf.id' is required when dataset.name is 'hf'")
        if hf.get("config"):
            for pair in pairs:
                corpus.fill(hf["config"], "dataset.hf.config", pair, split, rows)


def dataset_files(dataset: Mapping[str, Any], pair: str, split: str) -> list[str]:
    """The local files a pair table of ``split`` reads (existing ones; a missing one fails in the job,
    with one line naming it).  A local Hugging Face dataset directory: all its files."""
    params = dataset_params(dataset, split)
    try:
        if params["name"] == "ec40" and params["local_dir"]:
            paths = [Path(params["local_dir"]) / ec40.remote_path(split, xx, side)
                     for xx in parse_pair(pair) if xx != "en" for side in ("en", xx)]
        elif params["name"] == "files":
            found = corpus.file_paths(params["files"], pair, split, corpus.Rows.from_config(params["rows"]))
            paths = list(found.values()) if isinstance(found, dict) else [found]
        elif params["name"] == "hf" and Path(str((params["hf"] or {}).get("id"))).expanduser().is_dir():
            paths = corpus.directory_files(Path(params["hf"]["id"]).expanduser())
        else:
            return []
    except NeurospecError:
        return []
    return [str(p) for p in paths if p.is_file()]


def build_pair_table(pair: str, dataset: Mapping[str, Any]):
    """Dispatch on ``dataset['name']``; returns (table, metadata)."""
    params = dataset_params(dataset, dataset["split"])
    name, split, max_samples = params["name"], params["split"], params["max_samples"]
    parse_pair(pair)
    if name == "demo":
        return demo.build_pair_table(pair, split, max_samples=max_samples)
    if name == "ec40":
        return ec40.build_pair_table(
            pair, split, local_dir=params["local_dir"], repo_id=params["repo_id"] or ec40.REPO_ID,
            revision=params["revision"] or ec40.REVISION, max_samples=max_samples, detokenize=params["detokenize"],
        )
    if name == "hf":
        return corpus.build_hf_pair_table(pair, split, hf=params["hf"] or {}, rows=params["rows"],
                                          max_samples=max_samples, detokenize=params["detokenize"])
    return corpus.build_files_pair_table(pair, split, files=params["files"] or {}, rows=params["rows"],
                                         max_samples=max_samples, detokenize=params["detokenize"])


DROP_LABELS = {"empty_src": "empty source", "empty_tgt": "empty target", "empty_both": "both sides empty",
               "blank_line": "blank JSON line"}


def log_lines(pair: str, n_pairs: int, stats: Mapping[str, Any]) -> list[tuple[int, str]]:
    """What a pair table's job log says about its source: pairs kept, rows dropped by cause, and what
    reading the text files found (a BOM stripped, in-line separators replaced, ``\\r\\n`` endings)."""
    dropped = stats.get("dropped") or {}
    causes = ", ".join(f"{n} {DROP_LABELS.get(c, c)}" for c, n in dropped.items()) or "none"
    out = [(logging.INFO, f"{pair}: {n_pairs} sentence pairs ({stats['n_lines_read']} lines read; dropped: "
                          f"{causes}) from {stats['source']}")]
    for path, scan in (stats.get("text_files") or {}).items():
        if scan["bom_stripped"]:
            out.append((logging.WARNING, f"dataset file {path}: a byte order mark (BOM) at its start was stripped"))
        if scan["crlf_lines"]:
            out.append((logging.INFO, f"dataset file {path}: {scan['crlf_lines']} of {scan['lines']} lines end in "
                                      f"\\r\\n (the \\r stripped)"))
        if scan["separator_lines"]:
            first = ", ".join(map(str, scan["first_separator_lines"]))
            more = ", ..." if scan["separator_lines"] > len(scan["first_separator_lines"]) else ""
            out.append((logging.WARNING, f"dataset file {path}: {scan['separator_lines']} line(s) hold a line "
                                         f"separator other than \\n (\\r, \\v, \\f, U+0085, U+2028, ...) inside the "
                                         f"line, each replaced by a space (line {first}{more})"))
    if stats.get("bom_stripped_sentences"):
        out.append((logging.WARNING, f"{stats['bom_stripped_sentences']} sentence(s) started with a byte order mark "
                                     f"(U+FEFF), stripped"))
    return out


def write_pair_table(pair: str, dataset: Mapping[str, Any], out_path: str,
                     holdout: Mapping[str, Any] | None = None) -> None:
    """``holdout`` ({fraction, part}): keep one part of the table cut by evaluate.holdout_fraction
    (neurospec.holdout): the selection rows or the held-out rows."""
    df, stats = build_pair_table(pair, dataset)
    log = logging.getLogger("neurospec")
    for level, line in log_lines(pair, len(df), stats):
        log.log(level, "%s", line)
    if holdout:
        from neurospec.holdout import holdout_slice

        df, stats["holdout"] = holdout_slice(df, float(holdout["fraction"]), str(holdout["part"]))
        h = stats["holdout"]
        log.info("%s: evaluate.holdout_fraction %s: %d rows to select on, %d held out (%d dropped: a text also in "
                 "the selection rows); this table: the %s part, %d rows", pair, h["fraction"], h["n_select"],
                 h["n_holdout"], h["n_holdout_dropped_duplicates"], h["part"], len(df))
    write_table(df, out_path, PAIR_SCHEMA, metadata={"pair": pair, **stats})
