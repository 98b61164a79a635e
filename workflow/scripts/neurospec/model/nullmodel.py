"""Null-weights models: the same architecture and tokenizer with no learned structure (``model.null_weights``).

A number of neurospec (how many neurons specialize, how stable the selection is, how much ablating
them hurts) means little without the same number on a model that learned nothing.  Two nulls, both
applied by ``models.load_model`` right after the pretrained weights are read and before the model
moves to its device (so the same seed gives the same weights on a CPU and on a GPU):

``reinit``
    every parameter and buffer re-initialised by the model class's own initialiser
    (``PreTrainedModel.init_weights``, i.e. the class's ``_init_weights``), exactly as
    ``from_config`` would build it, seeded with ``null_seed``: the random-init model of the
    architecture (norm gains back to their initial value, biases to zero).
``shuffle``
    the entries of every parameter tensor of two or more dimensions (the weight matrices,
    embeddings included; a tied LM head is the embedding, shuffled once) permuted uniformly at
    random, each tensor with its own permutation drawn from one generator seeded with
    ``null_seed``: each matrix keeps its value distribution (scale, outliers, sparsity) and loses
    every learned arrangement.  One-dimensional tensors (norm gains, biases) are kept as they are:
    once the matrices around them are permuted, which channel a gain or bias sits on carries no
    learned alignment any more, so shuffling them too would change nothing in distribution, and
    keeping them keeps each norm's learned scale.

Cost: ``reinit`` draws every parameter once (as building the model from its config does);
``shuffle`` needs, for its largest tensor, a permutation index (int32 below 2**31 entries) and one
copy of the tensor (for an 8B model with a 256k x 8192 bf16 embedding: 8 GiB and 4 GiB of host
memory at once, beside the model).
"""

from __future__ import annotations

import torch

from ..errors import NeurospecError

NULL_CHOICES = ("none", "reinit", "shuffle")
_SAMPLE = 4096  # entries per tensor compared before/after to list the tensors a null left unchanged


def check_null(mode: str, seed: int) -> None:
    """One clear error for a null mode or seed the config schema would also refuse."""
    if mode not in NULL_CHOICES:
        raise NeurospecError(f"model.null_weights {mode!r}: choose one of {', '.join(NULL_CHOICES)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise NeurospecError(f"model.null_seed {seed!r}: must be an integer from 0 to 2**63 - 1")


def _sample(t: torch.Tensor) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    return flat[:: max(1, flat.numel() // _SAMPLE)].clone()


def _targets(model: torch.nn.Module, mode: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters a null changes (tied ones once): all for reinit, those of 2+ dims for shuffle."""
    return [(name, p) for name, p in model.named_parameters()
            if p.numel() > 1 and (mode == "reinit" or p.dim() >= 2)]


def reinitialise(model: torch.nn.Module, seed: int) -> None:
    """Re-run the class's own initialiser on every parameter and buffer, seeded (global RNG restored)."""
    if not hasattr(model, "init_weights"):
        raise NeurospecError(f"model.null_weights 'reinit': {type(model).__name__} has no initialiser "
                             "(init_weights); use null_weights 'shuffle'")
    # from_pretrained marks what it loaded as initialised, and transformers' initialiser skips
    # whatever is marked: clear the marks so that everything is drawn afresh.
    for t in (*model.parameters(), *model.buffers()):
        if getattr(t, "_is_hf_initialized", False):
            t._is_hf_initialized = False
    for m in model.modules():
        if getattr(m, "_is_hf_initialized", False):
            m._is_hf_initialized = False
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(seed)
        model.init_weights()


def shuffle(model: torch.nn.Module, seed: int) -> None:
    """Permute the entries of every parameter tensor of 2+ dimensions, each with its own permutation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in _targets(model, "shuffle"):
            flat = p.detach().reshape(-1)
            n = flat.numel()  # int32 indices where they fit: half the memory of int64 ones
            perm = torch.randperm(n, generator=g, dtype=torch.int32 if n < 2**31 else torch.int64)
            perm = perm.to(flat.device)
            p.copy_(flat[perm].view_as(p))  # indexing copies: the source is not overwritten while read


def apply_null_weights(model: torch.nn.Module, mode: str, seed: int = 0) -> list[str]:
    """Turn ``model`` into the null ``mode`` in place (``none``: leave it); the names of the tensors
    the null should have changed and left equal (sampled), for the log: empty when all changed."""
    check_null(mode, seed)
    if mode == "none":
        return []
    targets = _targets(model, mode)
    before = {name: _sample(p) for name, p in targets}
    try:
        (reinitialise if mode == "reinit" else shuffle)(model, seed)
    except NeurospecError:
        raise
    except Exception as exc:  # an initialiser that fails on this class: the user's choice of model
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise NeurospecError(f"model.null_weights {mode!r}: cannot apply it to {type(model).__name__}: "
                             f"{text[:300]}") from None
    return [name for name, p in targets if torch.equal(_sample(p), before[name])]
