"""Loading models (hub id or local directory) and building the demo model.

``load_model`` loads the causal LM (``AutoModelForCausalLM``) once; collection runs its base model
(``LoadedModel.model``: no LM head is ever computed there), evaluation the whole LM
(``LoadedModel.lm``: next-token losses, generation).  Attention: the fastest implementation the
class supports on the device (flash attention 2 where installed and supported on CUDA, else SDPA,
else eager), recorded in ``LoadedModel.info``.
The demo model is a tiny Cohere-architecture model (the class Aya-23 uses): random init with a
fixed seed, a byte-level BPE tokenizer trained on the demo corpus with ``tokenizers``, saved with
``save_pretrained`` and loaded back through the same ``from_pretrained`` path as a hub model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .atomic import atomic_dir, write_json
from .errors import NeurospecError
from .model.nullmodel import apply_null_weights, check_null

log = logging.getLogger("neurospec")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64}
BOS, EOS, PAD = "<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>", "<PAD>"


def resolve_device(device: str = "auto") -> torch.device:
    if os.environ.get("NEUROSPEC_FAKE_GPUS") and device.startswith("cuda"):
        return torch.device("cpu")  # tests: a pretend GPU (see neurospec.devices) computes on the CPU
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise NeurospecError(f"model.device {device!r}: CUDA is not available on this machine")
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise NeurospecError(f"model.device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise NeurospecError(f"model.dtype {dtype!r}: choose auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class LoadedModel:
    model: torch.nn.Module  # the base model (no LM head), in eval mode, on ``device``
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    info: dict[str, Any] = field(default_factory=dict)  # provenance for table metadata
    lm: torch.nn.Module | None = None  # the causal LM around ``model`` (LM head included); None if absent

    def require_lm(self, what: str) -> torch.nn.Module:
        """The causal LM, or one clear error naming what needed it."""
        if self.lm is None:
            raise NeurospecError(f"{what} needs the model's LM head, and {self.info.get('model', 'this model')!r} "
                                 f"loads without one ({self.info.get('model_class', type(self.model).__name__)})")
        return self.lm


ATTENTION_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")
# Any of these in a local model directory: a tokenizer to load (fast, sentencepiece or BPE files)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


def choose_attention(model_class: type, device: torch.device, requested: str = "auto") -> str:
    """The attention implementation to load ``model_class`` with: the fastest it supports, or as asked.

    ``auto``: flash attention 2 on CUDA when the ``flash_attn`` package is installed and the class
    supports it, else SDPA when supported (on CUDA it runs flash/memory-efficient kernels itself),
    else eager.  A requested implementation the class lacks is one clear error.
    """
    import importlib.util

    supports = {
        "flash_attention_2": bool(getattr(model_class, "_supports_flash_attn", False)
                                  or getattr(model_class, "_supports_flash_attn_2", False)),
        "sdpa": bool(getattr(model_class, "_supports_sdpa", False)),
        "eager": True,
    }
    if requested == "auto":
        if device.type == "cuda" and supports["flash_attention_2"] and importlib.util.find_spec("flash_attn"):
            return "flash_attention_2"
        return "sdpa" if supports["sdpa"] else "eager"
    if requested not in supports:
        raise NeurospecError(f"model.attn_implementation {requested!r}: choose one of {', '.join(ATTENTION_CHOICES)}")
    if not supports[requested]:
        usable = [name for name, ok in supports.items() if ok]
        raise NeurospecError(f"model.attn_implementation {requested!r}: {model_class.__name__} does not support it "
                             f"(it supports {', '.join(usable)})")
    if requested == "flash_attention_2" and not importlib.util.find_spec("flash_attn"):
        raise NeurospecError("model.attn_implementation 'flash_attention_2' needs the flash_attn package")
    return requested


# what to do for a model this machine cannot fetch (gated, offline): a local copy
DOWNLOAD_FIRST = ("download it first where the hub is reachable (`hf download {model_id} --local-dir DIR`) "
                  "and set model.id to that directory")


def _load_error(model_id: str, revision: str, exc: Exception, what: str = "config") -> NeurospecError:
    """One line naming the real cause of a failed load (of its ``what``: config, tokenizer, weights)."""
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    text = " ".join(str(e) for e in chain).lower()
    if any(isinstance(e, GatedRepoError) for e in chain) or "gated repo" in text:
        return NeurospecError(
            f"model {model_id!r} is gated on the hub: accept its licence on its hub page and set "
            f"HF_TOKEN to a token of an account with access"
            + (" (HF_TOKEN is not set)" if not os.environ.get("HF_TOKEN") else " (HF_TOKEN has no access)")
            + f"; or {DOWNLOAD_FIRST.format(model_id=model_id)}"
        )
    offline = any(isinstance(e, (OfflineModeIsEnabled, LocalEntryNotFoundError)) for e in chain) or any(
        s in text for s in ("offline mode", "couldn't connect", "cannot find the requested files in the local cache"))
    if offline and not Path(model_id).expanduser().is_dir():
        why = ("HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache"
               if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
               else "the hub cannot be reached and it is not in the local Hugging Face cache")
        return NeurospecError(f"model {model_id!r}: {why}; {DOWNLOAD_FIRST.format(model_id=model_id)}")
    if any(isinstance(e, RevisionNotFoundError) for e in chain):
        return NeurospecError(f"model.revision {revision!r} does not exist for model {model_id!r}")
    if Path(model_id).expanduser().is_dir():
        return NeurospecError(f"cannot load the {what} of local model directory {model_id!r}: {_one_line(exc)}")
    if "repo id must be in the form" in text or "repo_id must be" in text:
        return NeurospecError(f"model.id {model_id!r} is neither a local directory nor a valid hub id")
    if any(isinstance(e, RepositoryNotFoundError) for e in chain) or "not a valid model identifier" in text:
        return NeurospecError(f"model.id {model_id!r} is neither a local directory nor a model on the hub")
    return NeurospecError(f"cannot load the {what} of model {model_id!r}: {_one_line(exc)}")


def _one_line(exc: Exception, limit: int = 400) -> str:
    """An exception's message as one line (transformers' messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def fingerprint(directory: str | os.PathLike) -> str:
    """A content hash of a local model directory (configs whole, weights by size and head/tail bytes)."""
    h = hashlib.sha256()
    for p in sorted(Path(directory).rglob("*")):
        if not p.is_file():
            continue
        h.update(p.relative_to(directory).as_posix().encode())
        size = p.stat().st_size
        h.update(str(size).encode())
        with open(p, "rb") as fh:
            if size <= 4 << 20:
                h.update(fh.read())
            else:
                h.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                h.update(fh.read())
    return "local-sha256:" + h.hexdigest()[:16]


def resolved_commit(model_id: str, revision: str) -> str | None:
    """The commit a hub revision resolved to, read off the cached snapshot's path."""
    from transformers.utils.hub import cached_file, extract_commit_hash

    try:
        path = cached_file(model_id, "config.json", revision=revision, token=os.environ.get("HF_TOKEN"))
    except (OSError, ValueError):
        return None
    return extract_commit_hash(path, None) if path else None


def _model_class(config, auto_class) -> type | None:
    """The class ``auto_class`` would instantiate for ``config``; None when it maps none."""
    mapping = getattr(auto_class, "_model_mapping", None)
    try:
        return mapping[type(config)] if mapping is not None else None
    except KeyError:
        return None


def load_model(model_id: str, revision: str = "main", dtype: str = "auto", device: str = "auto",
               attn_implementation: str = "auto", require_fast_tokenizer: bool = False,
               with_lm_head: bool = True, null_weights: str = "none", null_seed: int = 0) -> LoadedModel:
    """Load a model and its tokenizer from a local directory or a hub id.

    The causal LM (``AutoModelForCausalLM``) is loaded when its class exists (``with_lm_head``),
    else the base model (``AutoModel``).  ``require_fast_tokenizer`` fails before the (slow) model
    load when the tokenizer cannot give character offsets (needed by ``token_scope: source``).
    ``null_weights`` (``reinit`` | ``shuffle``, seeded with ``null_seed``) replaces the loaded
    weights by a null model's before the model moves to its device (``neurospec.model.nullmodel``).
    """
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    check_null(null_weights, null_seed)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = Path(model_id).expanduser()
    local = path.is_dir()
    if not local and model_id.startswith((".", "/", "~")):
        raise NeurospecError(f"model.id {model_id!r}: no such directory")
    if local and not (path / "config.json").is_file():
        raise NeurospecError(f"local model directory {model_id!r} has no config.json (not a saved model?)")
    source = str(path) if local else model_id
    kwargs: dict[str, Any] = {} if local else {"revision": revision, "token": os.environ.get("HF_TOKEN")}
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(model_id, revision, exc) from None
    auto = AutoModelForCausalLM if with_lm_head and _model_class(config, AutoModelForCausalLM) else AutoModel
    model_class = _model_class(config, auto)
    if model_class is None:
        raise NeurospecError(f"model.id {model_id!r}: transformers has no model class for its config "
                             f"({type(config).__name__}, model_type {getattr(config, 'model_type', '?')!r})")
    attention = choose_attention(model_class, dev, attn_implementation)
    if local and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise NeurospecError(f"cannot load the tokenizer of local model directory {model_id!r}: it has no "
                             f"tokenizer files ({', '.join(TOKENIZER_FILES)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(model_id, revision, exc, what="tokenizer") from None
    if require_fast_tokenizer and not getattr(tokenizer, "is_fast", False):
        raise NeurospecError(f"collect.token_scope 'source' needs a fast tokenizer (character offsets); "
                             f"{model_id!r} has a slow one: use token_scope 'all'")
    try:
        model = auto.from_pretrained(source, config=config, dtype=torch_dtype, attn_implementation=attention,
                                     **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        raise _load_error(model_id, revision, exc, what="weights") from None
    t0 = time.perf_counter()
    unchanged = apply_null_weights(model, null_weights, null_seed)
    if null_weights != "none":
        log.info("model.null_weights %r (seed %d): the loaded weights replaced in %.1f s", null_weights, null_seed,
                 time.perf_counter() - t0)
    if unchanged:
        log.warning("model.null_weights %r left %d tensor(s) equal to the loaded ones (already at their "
                    "initial value?): %s", null_weights, len(unchanged), ", ".join(unchanged[:20]))
    try:
        model.to(dev).eval()
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        raise NeurospecError(f"cannot place model {model_id!r} on {dev} in {torch_dtype}: "
                             f"{str(exc).splitlines()[0]}") from None
    model.requires_grad_(False)
    lm = model if auto is AutoModelForCausalLM else None
    base = model.base_model if lm is not None else model
    resolved = None if local else resolved_commit(model_id, revision)
    info = {
        "model": model_id,
        "model_class": type(model).__name__,
        "model_revision": fingerprint(path) if local else (resolved or revision),
        "model_requested_revision": None if local else revision,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "device": str(dev),
        "device_requested": device,
        "attn_implementation": getattr(base.config, "_attn_implementation", attention),
        # a null model (neurospec.model.nullmodel): "none" for the loaded weights themselves
        "null_weights": null_weights,
        "null_seed": None if null_weights == "none" else null_seed,
    }
    if null_weights != "none":
        info["null_unchanged"] = unchanged
    return LoadedModel(base, tokenizer, dev, torch_dtype, info, lm=lm)


def build_demo_model(out_dir: str | os.PathLike, texts: Sequence[str], *, seed: int = 0,
                     vocab_size: int = 2000, hidden_size: int = 64, intermediate_size: int = 256,
                     num_hidden_layers: int = 4, num_attention_heads: int = 4,
                     num_key_value_heads: int = 2, max_position_embeddings: int = 1024) -> None:
    """Train the demo tokenizer on ``texts`` and save a seeded random Cohere model to ``out_dir``.

    Deterministic: the same inputs give byte-identical files (single-threaded BPE training,
    ``torch.manual_seed``, safetensors without timestamps).
    """
    os.environ["RAYON_NUM_THREADS"] = "1"  # BPE merges are deterministic single-threaded
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import CohereConfig, CohereForCausalLM, PreTrainedTokenizerFast

    if hidden_size % num_attention_heads or num_attention_heads % num_key_value_heads:
        raise NeurospecError(
            "demo_model: hidden_size must divide by num_attention_heads, and num_attention_heads "
            "by num_key_value_heads"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD)

    config = CohereConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads, max_position_embeddings=max_position_embeddings,
        pad_token_id=tok.token_to_id(PAD), bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS), tie_word_embeddings=True, hidden_act="silu",
    )
    torch.manual_seed(seed)
    model = CohereForCausalLM(config)
    # transformers' default init (std 0.02) leaves a tiny model's activations near zero; a larger
    # init gives the demo varied, input-dependent activation patterns.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / p.shape[1] ** 0.5 if "embed" not in name else 1.0)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise NeurospecError(f"demo model directory {out} exists and is not empty")
    # written to a temporary directory beside it and renamed when complete (crash safety)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        fast.save_pretrained(tmp)
        write_json(tmp / "neurospec_demo.json", {
            "seed": seed, "n_texts": len(texts), "built_by": "neurospec.models.build_demo_model"
        }, indent=1, sort_keys=True)


def is_demo_model(model_id: str) -> bool:
    return (Path(model_id) / "neurospec_demo.json").is_file()
