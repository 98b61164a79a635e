"""Benchmark: the seed scripts' method, the collector, and the bare forward pass, side by side.

    python -m neurospec.tools.bench [--model aya-shaped|demo] [--layers 2] [--json]
    python -m neurospec.tools.bench --e2e 20 [--e2e-model demo|DIR] [--sentences 200] [--cores 1] [--e2e-baseline]
    python -m neurospec.tools.bench --demo [--cores 1]
    python -m neurospec.tools.bench --token-scope [--model demo] [--repeats 5] [--sentences 32]

All three run on the same model and the same sentences in one process, interleaved, so that their
ratios are measured under the same machine load:

(a) ``seed``: the seed scripts' method: one sentence at a time through the whole causal LM, LM head
    included, a hook on every ``down_proj`` copying its input to the host for ``nonzero`` + ``bincount``;
(b) ``collector``: ``neurospec.collect.collect`` (length-sorted batches under a token budget, base model only,
    on-device counting, one host sync);
(c) ``bare``: the same batches as (b) through the same base model with no hooks: the ceiling.

``--token-scope`` compares collection with ``token_scope: target`` (prompt + reference translation,
counting the reference) against ``source`` instead: the same model and sentence pairs, one warm-up
each, then ``--repeats`` runs alternating which scope goes first; it prints each run's seconds and
the ratio target / source (``compare_token_scopes``).

``--e2e N`` runs N pairs through the whole workflow instead (``neurospec.tools.bench_e2e``): model-load
time, forward time, wall time and their ratio.

Models: ``aya-shaped``, a random-init Cohere model with Aya-23-8B's exact shapes (hidden 4096,
intermediate 14336, 32 heads, 8 KV heads, vocab 256000) and ``--layers`` blocks; or ``demo``, the
workflow's demo model. Sentences: NTREX validation sentences from ``../shared/ec40`` when present
(real lengths), else the demo corpus; tokenized with the demo tokenizer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..collect import encoding
from ..collect.counting import COUNTING, run_counts
from .. import batching
from ..data import demo, ec40
from ..languages import EC40_LANGUAGES
from ..models import LoadedModel, build_demo_model, resolve_device, resolve_dtype

AYA_SHAPES = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
                  vocab_size=256000, layer_norm_eps=1e-5, logit_scale=0.0625, rope_theta=10000.0,
                  max_position_embeddings=8192, hidden_act="silu", tie_word_embeddings=True)
TEMPLATE = "Translate from {src_name} to {tgt_name}: {src}"
ROOT = Path(__file__).resolve().parents[4]


def _demo_tokenizer_dir() -> Path:
    """The workflow's demo model when built, else a small one built once into the temp dir."""
    built = ROOT / "results" / "models" / "demo"
    if (built / "tokenizer.json").is_file():
        return built
    cache = Path(tempfile.gettempdir()) / "neurospec-bench-demo-model"
    if not (cache / "tokenizer.json").is_file():
        build_demo_model(cache, demo.corpus_texts())
    return cache


def aya_shaped(n_layers: int, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """A causal LM with Aya-23-8B's shapes and random weights (std 0.02), built without a slow init."""
    from transformers import CohereConfig, CohereForCausalLM

    config = CohereConfig(num_hidden_layers=n_layers, **AYA_SHAPES)
    with torch.device("meta"):
        model = CohereForCausalLM(config)
    model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # layer norm weights
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
    # the rotary buffers are not parameters: rebuild them, since the meta-device init left them empty
    model.model.rotary_emb = type(model.model.rotary_emb)(config).to(device)
    model.tie_weights()
    return model.to(dtype).eval().requires_grad_(False)


def load_sentences(n: int) -> tuple[list[str], list[str], list[str], str]:
    """``n`` source sentences spread over languages and both directions, and where they come from."""
    src, sl, tl, _, origin = load_pairs(n)
    return src, sl, tl, origin


def load_pairs(n: int) -> tuple[list[str], list[str], list[str], list[str], str]:
    """``n`` sentence pairs spread over languages and both directions: sources, their languages,
    the target languages, the reference translations, and where they come from."""
    src, sl, tl, tgt = [], [], [], []
    shared = ROOT.parent / "shared" / "ec40"
    if (shared / "Ntrex-eval-set").is_dir():
        langs = list(EC40_LANGUAGES)
        per = max(1, n // (2 * len(langs)) + 1)
        for xx in langs:
            for pair in (f"en-{xx}", f"{xx}-en"):
                df, _ = ec40.build_pair_table(pair, "validation", local_dir=shared, max_samples=per)
                src += df["src"].tolist()
                sl += df["src_lang"].tolist()
                tl += df["tgt_lang"].tolist()
                tgt += df["tgt"].tolist()
        origin = f"NTREX-128 validation ({shared})"
    else:
        for xx in demo.available_languages():
            for pair in (f"en-{xx}", f"{xx}-en"):
                df, _ = demo.build_pair_table(pair, "validation", max_samples=max(1, n // 78 + 1))
                src += df["src"].tolist()
                sl += df["src_lang"].tolist()
                tl += df["tgt_lang"].tolist()
                tgt += df["tgt"].tolist()
        origin = "demo corpus (pycountry)"
    idx = np.random.default_rng(0).permutation(len(src))[:n]
    return [src[i] for i in idx], [sl[i] for i in idx], [tl[i] for i in idx], [tgt[i] for i in idx], origin


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bare(model, enc: encoding.Encoded, budget: int, pad_id: int, device) -> tuple[float, int]:
    """The collector's batches through the base model, no hooks: seconds and processed tokens."""
    t0 = time.perf_counter()
    n_real = 0
    with torch.inference_mode():
        for rows in batching.make_batches(enc.lengths, budget):
            ids, _, _, _ = encoding.batch_tensors(enc, rows, pad_id, device)
            model(input_ids=ids, use_cache=False)
            n_real += sum(enc.lengths[i] for i in rows)
    _sync(device)
    return time.perf_counter() - t0, n_real


def run_seed(causal_lm, enc: encoding.Encoded, device) -> tuple[float, int, np.ndarray]:
    """The seed scripts' method: one sentence at a time, LM head included, host-side nonzero + bincount."""
    from ..architectures import resolve_mlp_taps

    taps = resolve_mlp_taps(causal_lm)
    n_neurons = causal_lm.config.intermediate_size
    counts = np.zeros((len(taps), n_neurons), dtype=np.int64)
    current: dict[int, torch.Tensor] = {}

    def hook(layer):
        def fn(module, args):
            current[layer] = args[0].detach().cpu()
        return fn

    handles = [tap.down_input.register_forward_pre_hook(hook(tap.layer)) for tap in taps]
    t0 = time.perf_counter()
    n_tokens = 0
    try:
        with torch.no_grad():
            for ids in enc.input_ids:
                causal_lm(input_ids=torch.tensor([ids], device=device))
                for layer, act in current.items():
                    neuron = (act[0] != 0).nonzero()[:, 1]
                    counts[layer] += np.bincount(neuron.numpy(), minlength=n_neurons)
                n_tokens += len(ids)
    finally:
        for h in handles:
            h.remove()
    _sync(device)
    return time.perf_counter() - t0, n_tokens, counts


def compare_token_scopes(loaded: LoadedModel, src: list[str], sl: list[str], tl: list[str], tgt: list[str], *,
                         runs: int = 5, token_budget: int | None = None, max_length: int = 512,
                         counting: str = "auto", say=print) -> dict:
    """Collection of the same pairs with token_scope ``source`` and ``target``, timed side by side.

    Each scope is encoded once (outside the timing) and warmed up once; then ``runs`` rounds each run
    both, alternating which goes first (so that a drift in the machine's load hits both alike).
    A run's time is ``counting.run_counts``' seconds (the forward passes and the counting), and the
    process's CPU time over the same call (all threads: on a CPU shared with other work it varies
    less than the wall time, which counts the waits for a core; on CUDA it means little).  Returns
    the per-run seconds of each scope, their ratios (target / source), the CPU-time ratios, and the
    tokens each scope processed (prompt, plus the reference for target) and counted.
    """
    tok = loaded.tokenizer
    enc = {"source": encoding.encode(tok, src, sl, tl, template=TEMPLATE, token_scope="source",
                                    max_length=max_length),
           "target": encoding.encode(tok, src, sl, tl, template=TEMPLATE, token_scope="target",
                                    max_length=max_length, tgt=tgt)}
    budget = token_budget or batching.auto_token_budget(loaded, max(max(e.lengths) for e in enc.values()))
    stats = {}
    for scope, e in enc.items():  # warm-up (kernels, allocator, a compiled fused path)
        _, _, stats[scope] = run_counts(loaded, e, budget, progress_every_s=1e9, counting=counting)
    seconds: dict[str, list[float]] = {"source": [], "target": []}
    cpu: dict[str, list[float]] = {"source": [], "target": []}
    ratios, cpu_ratios = [], []
    for k in range(runs):
        for scope in (("source", "target") if k % 2 == 0 else ("target", "source")):
            c0 = time.process_time()
            _, _, st = run_counts(loaded, enc[scope], budget, progress_every_s=1e9, counting=counting)
            cpu[scope].append(time.process_time() - c0)
            seconds[scope].append(st["seconds"])
        ratios.append(seconds["target"][-1] / seconds["source"][-1])
        cpu_ratios.append(cpu["target"][-1] / max(cpu["source"][-1], 1e-9))
        say(f"run {k + 1}: source {seconds['source'][-1]:.3f} s, target {seconds['target'][-1]:.3f} s, "
            f"target / source {ratios[-1]:.3f} (CPU time: {cpu['source'][-1]:.3f} s, {cpu['target'][-1]:.3f} s, "
            f"{cpu_ratios[-1]:.3f})")
    return {
        "seconds": seconds,
        "ratios": ratios,
        "ratio_median": float(np.median(ratios)),
        "cpu_seconds": cpu,
        "cpu_ratios": cpu_ratios,
        "cpu_ratio_median": float(np.median(cpu_ratios)),
        "processed_tokens": {scope: st["n_real"] for scope, st in stats.items()},
        "counted_tokens": {scope: st["n_tokens"] for scope, st in stats.items()},
        "token_budget": budget,
        "counting": stats["target"]["counting"],
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m neurospec.tools.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["aya-shaped", "demo"], default="aya-shaped")
    ap.add_argument("--layers", type=int, default=2, help="blocks of the aya-shaped model (Aya-23-8B has 32)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", help="collector and bare pass (auto: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--seed-dtype", default="auto",
                    help="the seed's method (auto: float16 on CUDA as the seed scripts; on CPU the collector's "
                         "dtype, so that the ratio measures the method rather than the CPU's fp16 support)")
    ap.add_argument("--sentences", type=int, default=None, help="sentences for (b) and (c) (default: 32 on CPU, 4000 on CUDA)")
    ap.add_argument("--seed-sentences", type=int, default=None, help="sentences for (a) (default: 12 on CPU, 200 on CUDA)")
    ap.add_argument("--token-budget", type=int, default=None)
    ap.add_argument("--max-length", type=int, default=512, help="truncate prompts to this many tokens "
                    "(to measure how the cost grows with sequence length)")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of (b) and (c); the best of each counts")
    ap.add_argument("--counting", choices=COUNTING, default="auto",
                    help="the collector's counting implementation (auto: fused on CUDA, matmul elsewhere)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--e2e", type=int, metavar="N", help="end to end: N pairs through the workflow (neurospec.tools.bench_e2e)")
    ap.add_argument("--e2e-model", default="demo", help="--e2e: demo, gemma3-270m or a local model directory")
    ap.add_argument("--e2e-baseline", action="store_true", help="--e2e: also time the run without workers")
    ap.add_argument("--cores", type=int, default=1, help="--e2e, --demo: snakemake --cores")
    ap.add_argument("--demo", action="store_true", help="time the Quick-start demo from scratch (neurospec.tools.bench_e2e)")
    ap.add_argument("--token-scope", action="store_true",
                    help="compare collection with token_scope target against source, --repeats alternating runs")
    args = ap.parse_args(argv)
    if args.demo:
        from . import bench_e2e

        result = bench_e2e.demo(cores=args.cores)
        print(json.dumps(result, indent=1) if args.json else bench_e2e.demo_report(result))
        return result
    if args.e2e:
        from . import bench_e2e

        result = bench_e2e.run(args.e2e, model=args.e2e_model, sentences=args.sentences or 200, cores=args.cores,
                               baseline=args.e2e_baseline)
        print(json.dumps(result, indent=1) if args.json else bench_e2e.report(result))
        return result

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    seed_dtype = (torch.float16 if device.type == "cuda" else dtype) if args.seed_dtype == "auto" \
        else resolve_dtype(args.seed_dtype, device)
    n_sent = args.sentences or (4000 if device.type == "cuda" else 32)
    n_seed = args.seed_sentences or (200 if device.type == "cuda" else 12)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_demo_tokenizer_dir())
    if args.model == "demo":
        from transformers import AutoModelForCausalLM

        causal = AutoModelForCausalLM.from_pretrained(_demo_tokenizer_dir(), dtype=dtype).to(device).eval()
        model_name = "demo"
    else:
        causal = aya_shaped(args.layers, device, dtype)
        model_name = f"aya-shaped ({args.layers} layers)"
    base = causal.model
    if args.token_scope:
        src, sl, tl, tgt, origin = load_pairs(n_sent)
        say(f"{model_name} on {device} in {dtype}; {len(src)} sentence pairs from {origin}")
        result = compare_token_scopes(LoadedModel(base, tok, device, dtype, {}), src, sl, tl, tgt,
                                      runs=args.repeats, token_budget=args.token_budget, max_length=args.max_length,
                                      counting=args.counting, say=say)
        result.update(model=model_name, dtype=str(dtype).removeprefix("torch."), sentences=len(src),
                      sentence_source=origin, device=device_name(device))
        if args.json:
            print(json.dumps(result, indent=1))
        else:
            processed, counted = result["processed_tokens"], result["counted_tokens"]
            print(f"target / source per run: {', '.join(f'{r:.3f}' for r in result['ratios'])} "
                  f"(median {result['ratio_median']:.3f}; CPU time: "
                  f"{', '.join(f'{r:.3f}' for r in result['cpu_ratios'])}, median {result['cpu_ratio_median']:.3f}); "
                  f"tokens processed: source {processed['source']}, "
                  f"target {processed['target']}; counted: source {counted['source']}, target {counted['target']}; "
                  f"token budget {result['token_budget']}; {result['counting']} counting")
        return result
    src, sl, tl, origin = load_sentences(n_sent)
    enc = encoding.encode(tok, src, sl, tl, template=TEMPLATE, token_scope="source",
                         max_length=args.max_length)
    loaded = LoadedModel(base, tok, device, dtype, {})
    budget = args.token_budget or batching.auto_token_budget(loaded, max(enc.lengths))
    pad_id = tok.pad_token_id
    say(f"{model_name} on {device} in {dtype}; {len(src)} sentences ({sum(enc.lengths)} prompt tokens) "
        f"from {origin}; token budget {budget}")

    # warm-up (kernels, allocator) on a few sentences
    warm = encoding.Encoded(enc.input_ids[:8], enc.counted[:8], 0, 0)
    run_counts(loaded, warm, budget, counting=args.counting)  # (also compiles the fused path)
    run_bare(base, warm, budget, pad_id, device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best_c = best_b = float("inf")
    stats = {}
    for _ in range(args.repeats):
        _, _, stats = run_counts(loaded, enc, budget, progress_every_s=1e9, counting=args.counting)
        best_c = min(best_c, stats["seconds"])
        t, n_real = run_bare(base, enc, budget, pad_id, device)
        best_b = min(best_b, t)
    peak = peak_memory_mb(device)

    seed_enc = encoding.Encoded(enc.input_ids[:n_seed], enc.counted[:n_seed], 0, 0)
    causal.to(seed_dtype)
    run_seed(causal, encoding.Encoded(enc.input_ids[:2], enc.counted[:2], 0, 0), device)  # warm-up
    t_seed, n_seed_tokens, _ = run_seed(causal, seed_enc, device)
    causal.to(dtype)

    n_real = stats["n_real"]
    result = {
        "seed_style_tokens_per_s": n_seed_tokens / t_seed,
        "collector_tokens_per_s": n_real / best_c,
        "bare_forward_tokens_per_s": n_real / best_b,
        "padding_efficiency": stats["padding_efficiency"],
        "device": device_name(device),
        "model": model_name,
        "dtype": str(dtype).removeprefix("torch."),
        "seed_dtype": str(seed_dtype).removeprefix("torch."),
        "sentences": len(src),
        "seed_sentences": len(seed_enc.input_ids),
        "prompt_tokens": n_real,
        "token_budget": budget,
        "sentence_source": origin,
        "max_length": args.max_length,
        "layers": args.layers if args.model == "aya-shaped" else None,
        "peak_memory_mb": peak,
        "counting": stats["counting"],
    }
    result["collector_over_bare"] = result["collector_tokens_per_s"] / result["bare_forward_tokens_per_s"]
    result["collector_over_seed"] = result["collector_tokens_per_s"] / result["seed_style_tokens_per_s"]
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{'method':<34}{'tokens/s':>12}{'vs bare':>10}")
        for label, key in (("(a) seed scripts' method", "seed_style_tokens_per_s"),
                           ("(b) collector", "collector_tokens_per_s"),
                           ("(c) bare forward, same batches", "bare_forward_tokens_per_s")):
            print(f"{label:<34}{result[key]:>12.1f}{result[key] / result['bare_forward_tokens_per_s']:>10.3f}")
        print(f"collector / seed: {result['collector_over_seed']:.2f}x; collector / bare: "
              f"{result['collector_over_bare']:.3f}; padding efficiency {result['padding_efficiency']:.3f}; "
              f"peak memory {peak:.0f} MiB; {result['counting']} counting")
    return result


if __name__ == "__main__":
    main()
