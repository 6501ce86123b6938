"""Batched decoding shared by generate and eval, on mlx-lm's BatchGenerator.

Continuous batching keeps up to ``batch_size`` sequences decoding at once; prompts go in
sorted by length so each prefill batch pads little; finished sequences are handed to
``on_done`` immediately so the caller can write them (append-only) before the rest finish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .kernels import patch_cpu_kernels
from .progress import Progress


@dataclass
class DecodeConfig:
    max_tokens: int = 256
    temperature: float = 0.0  # greedy by default: deterministic outputs
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 64
    prefill_batch_size: int = 8
    # Prefill the prompts' common prefix once and copy its KV cache. Off by default: on the MLX CPU
    # backend merging per-row caches into the batch cache cost more than it saved in a development run.
    share_prefix: bool = False
    fast_exp: bool | None = None  # pow-based exp in SiLU and attention (kernels.py); None: on CPU


@dataclass
class Completion:
    index: int
    text: str
    tokens: list[int]
    finish: str  # "stop" (end of turn) or "length" (hit max_tokens)
    n_prompt: int


def decode(model, tokenizer, prompts: Sequence[list[int]], cfg: DecodeConfig = DecodeConfig(),
           on_done: Callable[[Completion], None] | None = None, progress: Progress | None = None,
           max_tokens: Sequence[int] | None = None) -> list[Completion]:
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    if not prompts:
        return []
    mx.random.seed(cfg.seed)
    sampler = make_sampler(temp=cfg.temperature, top_p=cfg.top_p if cfg.top_p < 1.0 else 0.0)
    gen = BatchGenerator(model, max_tokens=cfg.max_tokens,
                         stop_tokens=[[t] for t in tokenizer.eos_token_ids], sampler=sampler,
                         completion_batch_size=cfg.batch_size,
                         prefill_batch_size=min(cfg.prefill_batch_size, cfg.batch_size))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    limits = [max_tokens[i] if max_tokens else cfg.max_tokens for i in order]
    prefix, prefix_cache = _prefill_shared_prefix(model, prompts) if cfg.share_prefix else ([], None)
    n = len(prefix)
    caches = [[_copy_cache(c) for c in prefix_cache] for _ in order] if prefix_cache else None
    uids = gen.insert([list(prompts[i][n:]) for i in order], limits, caches=caches,
                      all_tokens=[list(prefix) for _ in order] if n else None)
    index_of = dict(zip(uids, order))
    tokens: dict[int, list[int]] = {u: [] for u in uids}
    results: list[Completion | None] = [None] * len(prompts)
    fast = cfg.fast_exp if cfg.fast_exp is not None else mx.default_device().type == mx.cpu
    restore = patch_cpu_kernels(model) if fast else None
    try:
        while responses := gen.next_generated():
            n_new = 0
            for r in responses:
                if r.finish_reason != "stop":  # the end-of-turn token itself is not text
                    tokens[r.uid].append(r.token)
                    n_new += 1
                if r.finish_reason is not None:
                    i = index_of[r.uid]
                    toks = tokens.pop(r.uid)
                    c = Completion(i, tokenizer.decode(toks), toks, r.finish_reason, len(prompts[i]))
                    results[i] = c
                    if on_done:
                        on_done(c)
                    if progress:
                        progress.update(1)
            if progress:
                progress.update(0, tokens=n_new)
    finally:
        gen.close()
        if restore:
            restore()
    return results  # type: ignore[return-value]


def _prefill_shared_prefix(model, prompts):
    """KV cache of the longest prefix all prompts share (the system prompt and template)."""
    import mlx.core as mx
    from mlx_lm.models.cache import KVCache, make_prompt_cache

    first = prompts[0]
    n = min(len(p) for p in prompts) - 1  # each prompt keeps >= 1 token for the generator
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    if n < 8 or len(prompts) < 2:
        return [], None
    cache = make_prompt_cache(model)
    if not all(type(c) is KVCache for c in cache):  # rotating/SSM caches: no cheap copies
        return [], None
    model(mx.array([first[:n]]), cache=cache)
    mx.eval([c.state for c in cache])
    return first[:n], cache


def _copy_cache(c):
    from mlx_lm.models.cache import KVCache

    # MLX arrays are immutable values: copies share the prefix buffers until they are written.
    new = KVCache()
    new.state = c.state
    return new
