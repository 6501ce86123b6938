"""Rationale generation speed: per-row mlx_lm.generate loop vs mlx_lm.batch_generate vs radis-mlx generate.

Same model, prompts (explain mode), max tokens and backend, in one run; prints tokens/s and ratios.
    python bench/bench_generate.py --rows 64 --max-tokens 64 --loop-rows 8
(the CLI sets up OpenBLAS itself; here run with LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libopenblas.so.0
on Linux, or python -m radis_mlx.backend is not needed on a Mac).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alma_human_parallel" / "deen" / "train.de-en.json"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--loop-rows", type=int, default=8, help="rows for the (slow) per-row loop")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    from mlx_lm import batch_generate, stream_generate
    from radis_mlx import backend, prompts
    from radis_mlx.data import load_pairs
    from radis_mlx.models import load
    from radis_mlx.rationale import GenerateConfig, generate

    print(json.dumps(backend.info(measure=True)))
    L = load(args.model)
    pairs = load_pairs(args.data, "de-en", limit=args.rows, seed=0)
    toks = [prompts.encode(L.tokenizer, prompts.explain_prompt(L.tokenizer, p)) for p in pairs]
    print(f"{len(toks)} prompts, mean {sum(map(len, toks)) / len(toks):.0f} tokens, max_tokens {args.max_tokens}")
    res = {}

    n, t = 0, time.perf_counter()
    for p in toks[: args.loop_rows]:
        for r in stream_generate(L.model, L.tokenizer, p, max_tokens=args.max_tokens):
            n = n + 1
    res["loop (mlx_lm.generate per row)"] = n / (time.perf_counter() - t)

    t = time.perf_counter()
    out = batch_generate(L.model, L.tokenizer, toks, max_tokens=args.max_tokens)
    res["mlx_lm.batch_generate"] = out.stats.generation_tokens / (time.perf_counter() - t)

    with tempfile.TemporaryDirectory() as d:
        cfg = GenerateConfig(data=args.data, pairs="de-en", limit=args.rows, seed=0, model=args.model,
                             mode="rationale-explain", max_tokens=args.max_tokens, out=f"{d}/r.jsonl")
        s = generate(cfg, progress=False)
    res["radis-mlx generate"] = s["tokens_per_s_this_run"]

    base_loop, base_batch = res["loop (mlx_lm.generate per row)"], res["mlx_lm.batch_generate"]
    print("\n| method | tokens/s | vs loop | vs batch_generate |\n|---|---|---|---|")
    for k, v in res.items():
        print(f"| {k} | {v:.1f} | {v / base_loop:.1f}x | {v / base_batch:.2f}x |")


if __name__ == "__main__":
    main()
