"""Rationale generation speed: per-row mlx_lm.generate loop vs mlx_lm.batch_generate vs radis-mlx generate.

Same model, prompts (explain mode), max tokens and backend, in one run; prints tokens/s and ratios.
    python bench/bench_generate.py --rows 64 --max-tokens 64 --loop-rows 8 --repeats 2 [--model qwen2.5-coder-0.5b]
On Linux it re-executes itself with OpenBLAS preloaded, as the CLI does.
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
    ap.add_argument("--model", default=None, help="hub id, mlx-lm dir, .gguf or offline short name")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from radis_mlx.backend import maybe_reexec_with_openblas
    maybe_reexec_with_openblas()

    import mlx.core as mx
    from mlx_lm import batch_generate, stream_generate
    from radis_mlx import backend, prompts
    from radis_mlx.data import load_pairs
    from radis_mlx.runtime.decode import DecodeConfig, decode
    from radis_mlx.models import load
    from radis_mlx.generate import GenerateConfig, generate

    print(json.dumps(backend.info(measure=True)))
    L = load(args.model)
    pairs = load_pairs(args.data, "de-en", limit=args.rows, seed=0)
    toks = [prompts.encode(L.tokenizer, prompts.explain_prompt(L.tokenizer, p)) for p in pairs]
    print(f"{len(toks)} prompts, mean {sum(map(len, toks)) / len(toks):.0f} tokens, max_tokens {args.max_tokens}")
    ap_rep = args.repeats
    res: dict[str, list[float]] = {}

    peak: dict[str, float] = {}

    def record(name, tokens, seconds):
        # MLX's own peak since the last record: this tool's activations, caches and logits on top of
        # the model (the same weights for every tool); the whole-stage runs measure their own process.
        peak[name] = max(peak.get(name, 0.0), mx.get_peak_memory() / 2**30)
        mx.reset_peak_memory()
        res.setdefault(name, []).append(tokens / seconds)
        print(f"  {name}: {tokens} tokens in {seconds:.1f} s = {tokens / seconds:.1f} tok/s, "
              f"peak {peak[name]:.2f} GB", flush=True)

    def loop():
        n, t = 0, time.perf_counter()
        for p in toks[: args.loop_rows]:
            for r in stream_generate(L.model, L.tokenizer, p, max_tokens=args.max_tokens):
                n += r.token not in L.tokenizer.eos_token_ids
        record("loop (mlx_lm stream_generate per row)", n, time.perf_counter() - t)

    def batch():
        t = time.perf_counter()
        out = batch_generate(L.model, L.tokenizer, toks, max_tokens=args.max_tokens)
        n = sum(len(L.tokenizer.encode(x, add_special_tokens=False)) for x in out.texts)
        record("mlx_lm.batch_generate", out.stats.generation_tokens or n, time.perf_counter() - t)

    def ours(fast):
        t = time.perf_counter()
        out = decode(L.model, L.tokenizer, toks, DecodeConfig(max_tokens=args.max_tokens, fast_exp=fast))
        record(f"radis_mlx decode (CPU kernels {'on' if fast else 'off'})", sum(len(c.tokens) for c in out),
               time.perf_counter() - t)

    def stage(workers):
        with tempfile.TemporaryDirectory() as d:
            cfg = GenerateConfig(data=args.data, pairs="de-en", limit=args.rows, seed=0, model=args.model,
                                 mode="rationale-explain", max_tokens=args.max_tokens, out=f"{d}/r.jsonl",
                                 workers=workers)
            s = generate(cfg, progress=False)
            # Timed from loading the model (in every worker process) to the last row written.
            n, run = s["generated_tokens_this_run"], s["runs"][-1]
            record(f"radis-mlx generate, whole stage ({run['workers']} process{'es' if run['workers'] > 1 else ''})",
                   n, run["seconds"])

    mx.reset_peak_memory()
    for rep in range(ap_rep):  # alternate the tools so drifting load hits all of them
        print(f"repeat {rep + 1}/{ap_rep}", flush=True)
        for fn in (loop, batch, lambda: ours(True), lambda: ours(False), lambda: stage(1), lambda: stage(0)):
            fn()

    print(f"\n{len(toks)} rows, {args.max_tokens} new tokens at most, {ap_rep} repeats; best (mean) tok/s; "
          "ratios of the best runs\n")
    print_table(res, peak)


def print_table(res: dict[str, list[float]], peak: dict[str, float]) -> None:
    base_loop, base_batch = max(res["loop (mlx_lm stream_generate per row)"]), max(res["mlx_lm.batch_generate"])
    print("| method | tokens/s best (mean) | vs loop | vs batch_generate | MLX peak GB (in this process) |\n"
          "|---|---:|---:|---:|---:|")
    for k, v in res.items():
        print(f"| {k} | {max(v):.1f} ({sum(v) / len(v):.1f}) | {max(v) / base_loop:.1f}x | "
              f"{max(v) / base_batch:.2f}x | {peak[k]:.2f} |")


if __name__ == "__main__":
    main()
