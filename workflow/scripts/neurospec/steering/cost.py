"""What collecting the residual sums costs: collection of the same pair table with and without them,
interleaved (A B A B ...) so that a busy machine slows both alike; the ratio of the medians.

    python -m neurospec.steering.cost MODEL_DIR PAIR_TABLE [--runs 5] [--max-rows 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Sequence

import numpy as np


def measure(loaded, pairs, *, runs: int = 5, template: str = "Translate from {src_name} to {tgt_name}: {src}",
            token_budget: int | None = None) -> dict[str, float]:
    from neurospec.collect import collect

    enc = collect.encode(loaded.tokenizer, pairs["src"].tolist(), pairs["src_lang"].tolist(),
                         pairs["tgt_lang"].tolist(), template=template)
    enc.even = pairs["id"].to_numpy(np.int64)[enc.kept] % 2 == 0
    collect.run_counts(loaded, enc, token_budget, residual=True)  # warm-up (allocations, kernels)
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}  # CPU seconds of the process (all threads)
    for r in range(runs):
        for residual in ((True, False) if r % 2 == 0 else (False, True)):
            t0, c0 = time.perf_counter(), time.process_time()
            collect.run_counts(loaded, enc, token_budget, residual=residual)
            times[residual].append(time.perf_counter() - t0)
            cpu[residual].append(time.process_time() - c0)
    with_, without = statistics.median(times[True]), statistics.median(times[False])
    cpu_with, cpu_without = statistics.median(cpu[True]), statistics.median(cpu[False])
    return {"runs": runs, "tokens": int(sum(enc.lengths)), "median_with_s": with_, "median_without_s": without,
            "ratio": with_ / without, "with_s": times[True], "without_s": times[False],
            "median_cpu_with_s": cpu_with, "median_cpu_without_s": cpu_without, "cpu_ratio": cpu_with / cpu_without}


def main(argv: Sequence[str] | None = None) -> int:
    from neurospec import models
    from neurospec.tables import read_table

    parser = argparse.ArgumentParser(prog="python -m neurospec.steering.cost", description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("pairs")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=200)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    loaded = models.load_model(args.model, device=args.device)
    pairs = read_table(args.pairs).sort_values("id").head(args.max_rows)
    out = measure(loaded, pairs, runs=args.runs)
    print(f"{out['tokens']} prompt tokens, {out['runs']} runs each, interleaved, on {loaded.device}: "
          f"with residual sums median {out['median_with_s']:.3f} s, without {out['median_without_s']:.3f} s, "
          f"ratio {out['ratio']:.3f}; CPU time (all threads) medians {out['median_cpu_with_s']:.3f} and "
          f"{out['median_cpu_without_s']:.3f} s, ratio {out['cpu_ratio']:.3f}")
    print("with:", " ".join(f"{t:.3f}" for t in out["with_s"]), "| without:", " ".join(f"{t:.3f}" for t in out["without_s"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
