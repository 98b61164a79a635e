"""What translating costs: generation throughput for a model shape, and sentence lengths in tokens.

    python -m neurospec.tools.translation_bench generate --shape aya-23-8b --device cuda --dtype bfloat16
    python -m neurospec.tools.translation_bench generate --shape aya-23-8b --layers 2 --device cpu --sentences 8
    python -m neurospec.tools.translation_bench lengths --ec40 ../shared/ec40 --tokenizer MODEL_DIR

``generate``: greedy decoding costs the same whatever the weights hold, so a model of the reference
shape with random weights (built on the device, never downloaded) measures what translating EC40 with
Aya-23-8B costs: prompts of ``--prompt-tokens`` random tokens, exactly ``--new-tokens`` new tokens
each (no stop), batches of ``--batch-size``, through ``translation.greedy_generate``.  It prints one
JSON line: prompts, new tokens, seconds, new tokens per second (prefill included).  Not covered: the
model load, tokenization, real length variation (sentences are sorted by length, so batches hold
similar lengths) and early stops (which only help).  ``--layers`` keeps the first N blocks (per-block
cost is equal, the LM head is not), for a quick check.

``--steer-neurons K``: the same under steering's ``set`` intervention on K random neurons of every
block (the hooks steering generates under), so steering's generation rate is measured the same way.

``lengths``: mean tokens per sentence of the first ``--sentences`` FLORES-200 sentences (EC40's test
split, detokenized) of English and of every EC40 language, with a tokenizer: greedy translations are
about as long as the references, so this sizes the generation work per condition.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..models import resolve_device, resolve_dtype
from ..evaluate.greedy import greedy_generate

SHAPES = {
    # CohereLabs/aya-23-8B's config.json
    "aya-23-8b": dict(vocab_size=256000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192),
    # the demo model (config/config.yaml's demo_model)
    "demo": dict(vocab_size=2000, hidden_size=64, intermediate_size=256, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
}


class NoStops:
    """A stand-in tokenizer: no end-of-sequence token, no line break, so every row runs to its cap."""

    pad_token_id, eos_token_id = 0, None

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    def __len__(self) -> int:
        return self.vocab_size

    def decode(self, ids, skip_special_tokens=True) -> str:
        return "x"


def random_model(shape: str, device: torch.device, dtype: torch.dtype, layers: int | None = None):
    """A Cohere causal LM of ``shape`` (Aya-23's class) with random weights, built on ``device``."""
    from transformers import CohereConfig, CohereForCausalLM

    dims = dict(SHAPES[shape])
    if layers:
        dims["num_hidden_layers"] = layers
    config = CohereConfig(**dims, tie_word_embeddings=True, use_cache=True)
    with device:  # weights initialised (transformers' default init) directly on the device
        model = CohereForCausalLM._from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


def generate(args) -> dict:
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    model = random_model(args.shape, device, dtype, args.layers)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    prompts = torch.randint(1, vocab, (args.sentences, args.prompt_tokens), generator=gen).tolist()
    caps = [args.new_tokens] * args.sentences
    tokenizer = NoStops(vocab)
    with steered(model, args.steer_neurons, args.seed):
        greedy_generate(model, tokenizer, prompts[: args.batch_size], caps[: args.batch_size],
                        batch_size=args.batch_size, eos_ids=[], device=device)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = greedy_generate(model, tokenizer, prompts, caps, batch_size=args.batch_size, eos_ids=[], device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
    new = sum(len(g.tokens) for g in out)
    return {
        "shape": args.shape, "layers": model.config.num_hidden_layers, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "sentences": args.sentences, "batch_size": args.batch_size,
        "prompt_tokens": args.prompt_tokens, "new_tokens_per_sentence": args.new_tokens, "new_tokens": new,
        "seconds": round(seconds, 3), "new_tokens_per_s": round(new / seconds, 1),
        "sentences_per_s": round(args.sentences / seconds, 2), "steer_neurons_per_layer": args.steer_neurons,
        "torch": torch.__version__,
    }


def steered(model, per_layer: int, seed: int):
    """Steering's ``set`` intervention on ``per_layer`` random neurons of every block (0: none), the
    hooks steering's generation runs under (``interventions.intervene``), values 1.0."""
    from contextlib import nullcontext

    import numpy as np

    from ..architectures import n_neurons, resolve_mlp_taps
    from ..interventions import intervene

    if per_layer <= 0:
        return nullcontext()
    n_layers, n = len(resolve_mlp_taps(model)), n_neurons(model)
    rng = np.random.default_rng(seed)
    selection = {layer: np.sort(rng.choice(n, size=min(per_layer, n), replace=False)) for layer in range(n_layers)}
    return intervene(model, selection, mode="set", values=np.ones((n_layers, n)))


def lengths(args) -> dict:
    from transformers import AutoTokenizer

    from ..data.ec40 import build_pair_table
    from ..languages import EC40_LANGUAGES, PIVOT

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    def mean_tokens(texts) -> float:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return round(sum(len(i) for i in ids) / max(len(ids), 1), 1)

    per_lang = {}
    for xx in EC40_LANGUAGES:
        table, _ = build_pair_table(f"{PIVOT}-{xx}", "test", local_dir=args.ec40, max_samples=args.sentences)
        per_lang[xx] = mean_tokens(table["tgt"])
        if PIVOT not in per_lang:
            per_lang[PIVOT] = mean_tokens(table["src"])
    others = [per_lang[x] for x in EC40_LANGUAGES]
    # every direction's output: en->xx generates xx, xx->en generates English
    new_tokens = args.sentences * (sum(others) + len(others) * per_lang[PIVOT])
    return {"tokenizer": args.tokenizer, "sentences": args.sentences, "mean_tokens": per_lang,
            "english": per_lang[PIVOT], "mean_other": round(sum(others) / len(others), 1),
            "new_tokens_per_condition_80_directions": round(new_tokens)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="greedy generation throughput of a random-weight model of a shape")
    g.add_argument("--shape", choices=sorted(SHAPES), default="aya-23-8b")
    g.add_argument("--layers", type=int, default=None, help="keep only the first N blocks")
    g.add_argument("--device", default="auto")
    g.add_argument("--dtype", default="auto")
    g.add_argument("--sentences", type=int, default=256)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--prompt-tokens", type=int, default=48, help="prompt length (template + a FLORES sentence)")
    g.add_argument("--new-tokens", type=int, default=48, help="new tokens per sentence")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steer-neurons", type=int, default=0,
                   help="steering's cost: set this many random neurons per block during generation (0: none)")
    n = sub.add_parser("lengths", help="mean tokens per FLORES-200 sentence per language")
    n.add_argument("--ec40", required=True, help="a local EC40 copy in the hub's layout (e.g. ../shared/ec40)")
    n.add_argument("--tokenizer", required=True, help="a model directory or hub id whose tokenizer to use")
    n.add_argument("--sentences", type=int, default=200)
    args = ap.parse_args(argv)
    print(json.dumps(generate(args) if args.command == "generate" else lengths(args)))


if __name__ == "__main__":
    main()
