"""EC40 (ShaomuTan/EC40 on the hub) -> pair tables.

Layout of the dataset repository (and of a local copy given as ``dataset.local_dir``):

- validation: ``Ntrex-eval-set/test.en-{xx}.{en,xx}`` (NTREX-128: 1997 lines; ast 109, kab 792, oc 842)
- test: ``Flores200-test-set/en-test-set/test.en-{xx}.{en,xx}`` (FLORES-200: 2009 lines)
- train: ``EC40-train-set/en-{xx}.{en,xx}`` (up to 5M lines: streamed, never loaded whole)

The text is Moses-tokenized (``@-@``, spaced punctuation); it is detokenized with sacremoses before
the model sees it unless ``detokenize`` is off.  ``xx-en`` reads the same files with the sides swapped.
Reading (lines split at ``\\n`` only, every byte decoded as UTF-8), the integrity check (both files' line
counts, in full) and assembly are ``corpus``'s.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .corpus import assemble
from .hashing import file_hash
from .readers import aligned_lines, scan_parallel, text_report
from ..errors import NeurospecError
from ..languages import EC40_LANGUAGES, PIVOT, parse_pair

REPO_ID = "ShaomuTan/EC40"
REVISION = "93f0ec4fbc6ac1198668871b3e7a411c57c1c260"
# EC40's files are UTF-8: a byte that does not decode means a damaged copy
ENCODING_FIX = ("EC40's files are UTF-8: this copy is damaged; download it again (or set dataset.local_dir to a "
                "good copy)")
SPLITS = {
    "validation": "Ntrex-eval-set/test.en-{xx}.{side}",
    "test": "Flores200-test-set/en-test-set/test.en-{xx}.{side}",
    "train": "EC40-train-set/en-{xx}.{side}",
}


def remote_path(split: str, xx: str, side: str) -> str:
    if split not in SPLITS:
        raise NeurospecError(
            f"dataset.split {split!r}: EC40 has no such split; choose one of {', '.join(SPLITS)}"
        )
    if xx not in EC40_LANGUAGES:
        raise NeurospecError(f"language {xx!r} is not one of the 40 EC40 languages")
    return SPLITS[split].format(xx=xx, side=side)


def fetch_files(split: str, lang: str, *, local_dir: str | os.PathLike | None = None,
                repo_id: str = REPO_ID, revision: str = REVISION,
                cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The English and ``lang`` files of one EC40 language: from ``local_dir``, else the hub."""
    names = [remote_path(split, lang, side) for side in (PIVOT, lang)]
    if local_dir is not None:
        paths = [Path(local_dir) / name for name in names]
        for p in paths:
            if not p.is_file():
                raise NeurospecError(f"dataset file {p} is missing (dataset.local_dir={local_dir})")
        return paths[0], paths[1]
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                       RepositoryNotFoundError, RevisionNotFoundError)

    out = []
    for name in names:
        try:
            out.append(Path(hf_hub_download(repo_id, name, repo_type="dataset", revision=revision,
                                            cache_dir=cache_dir, token=os.environ.get("HF_TOKEN"))))
        except EntryNotFoundError:
            raise NeurospecError(f"dataset file {name} is missing from {repo_id}@{revision}") from None
        except GatedRepoError:
            raise NeurospecError(f"dataset {repo_id!r} is gated on the hub: accept its terms there and set "
                                 f"HF_TOKEN") from None
        except RevisionNotFoundError:
            raise NeurospecError(f"dataset.revision {revision!r} does not exist in {repo_id}") from None
        except RepositoryNotFoundError:
            raise NeurospecError(f"dataset.repo_id {repo_id!r}: no such dataset on the hub") from None
        except (HfHubHTTPError, OSError) as exc:
            raise NeurospecError(f"cannot download {name} from {repo_id}@{revision}: {exc}".splitlines()[0]) from None
    return out[0], out[1]


def build_pair_table(pair: str, split: str, *, local_dir=None, repo_id: str = REPO_ID,
                     revision: str = REVISION, max_samples: int | None = None,
                     detokenize: bool = True, cache_dir=None) -> tuple[pd.DataFrame, dict]:
    """The pair table of one direction and its stats.

    Pairs where either side is empty or whitespace-only are dropped and counted; ``max_samples``
    keeps the first N remaining pairs in file order (deterministic). ``id`` is the line index.
    """
    src_lang, tgt_lang = parse_pair(pair)
    if PIVOT not in (src_lang, tgt_lang):
        return _build_pivot_pair_table(pair, split, local_dir=local_dir, repo_id=repo_id, revision=revision,
                                       max_samples=max_samples, detokenize=detokenize, cache_dir=cache_dir)
    xx = tgt_lang if src_lang == PIVOT else src_lang
    en_path, xx_path = fetch_files(split, xx, local_dir=local_dir, repo_id=repo_id,
                                   revision=revision, cache_dir=cache_dir)
    src_path, tgt_path = (en_path, xx_path) if src_lang == PIVOT else (xx_path, en_path)
    # both files are read in full first (every byte decoded, line counts compared), whatever max_samples is
    scans = scan_parallel(src_path, tgt_path, fix=ENCODING_FIX)
    df, read = assemble(aligned_lines(src_path, tgt_path), src_lang, tgt_lang, detokenize=detokenize,
                        max_samples=max_samples, where=f"dataset files {src_path} and {tgt_path}")
    files = [en_path, xx_path]
    return df, _stats(split, files, scans, read, local_dir=local_dir, repo_id=repo_id, revision=revision,
                      max_samples=max_samples, detokenize=detokenize)


def _stats(split: str, files: list, scans: list, read: dict, *, local_dir, repo_id: str, revision: str,
           max_samples: int | None, detokenize: bool, **extra) -> dict:
    """A pair table's metadata: where its lines came from and what reading them found."""
    return {
        "dataset": "ec40",
        "split": split,
        "source": str(local_dir) if local_dir is not None else f"{repo_id}@{revision}",
        # a local copy: a hash of the files' content; the hub: the pinned commit
        "dataset_revision": file_hash(files) if local_dir is not None else revision,
        "detokenize": detokenize,
        **extra,
        **read,
        "max_samples": max_samples,
        **text_report(scans),
    }


def pivot_records(src_en: list[str], src: list[str], tgt_en: list[str], tgt: list[str]) -> list[tuple[int, str, str]]:
    """A pair without English from two English-centric files: ``(id, src, tgt)`` for every line of the
    source language whose English original occurs exactly once in each of the two English files
    (NTREX-128 and FLORES-200 are multi-way parallel: the same English sentences for every language;
    EC40 sampled fewer lines for ast, kab and oc). ``id`` is the source file's line index."""
    def unique(lines):
        seen: dict[str, int] = {}
        for i, line in enumerate(lines):
            seen[line] = -1 if line in seen else i
        return {line: i for line, i in seen.items() if i >= 0 and line.strip()}

    in_src, in_tgt = unique(src_en), unique(tgt_en)
    return [(i, src[i], tgt[in_tgt[en]]) for en, i in sorted(in_src.items(), key=lambda kv: kv[1])
            if en in in_tgt]


def _build_pivot_pair_table(pair: str, split: str, *, local_dir, repo_id: str, revision: str,
                            max_samples: int | None, detokenize: bool, cache_dir) -> tuple[pd.DataFrame, dict]:
    from .readers import iter_lines

    src_lang, tgt_lang = parse_pair(pair)
    paths, scans, sides = [], [], []
    for lang in (src_lang, tgt_lang):
        en_path, xx_path = fetch_files(split, lang, local_dir=local_dir, repo_id=repo_id, revision=revision,
                                       cache_dir=cache_dir)
        scans += scan_parallel(en_path, xx_path, fix=ENCODING_FIX)
        sides.append((list(iter_lines(en_path, fix=ENCODING_FIX)), list(iter_lines(xx_path, fix=ENCODING_FIX))))
        paths += [en_path, xx_path]
    recs = pivot_records(sides[0][0], sides[0][1], sides[1][0], sides[1][1])
    if not recs:
        raise NeurospecError(f"pair {pair!r}: EC40's {split} files of {src_lang!r} and {tgt_lang!r} share no "
                             f"English sentence, so no {src_lang}-{tgt_lang} pairs can be matched")
    df, read = assemble(recs, src_lang, tgt_lang, detokenize=detokenize, max_samples=max_samples,
                        where=f"dataset files {paths[1]} and {paths[3]} (matched by their English lines)")
    return df, _stats(split, paths, scans, read, local_dir=local_dir, repo_id=repo_id, revision=revision,
                      max_samples=max_samples, detokenize=detokenize, pivot="en")
