"""Batched decoding shared by generate and eval, on mlx-lm's BatchGenerator.

Prompts go in sorted by length. Where the model's caches are plain KV caches, the prompts are
prefilled here and handed to the BatchGenerator as per-row caches (its `caches=` argument), with
only the last prompt token left for it to process:

- the prompts' common prefix (system prompt, chat template, instruction) is computed once;
- rows are prefilled in groups cut by length, so a long outlier does not pad a whole group;
- new rows join the decoding batch in waves (a quarter of the batch or more at a time), and rows
  that ended their turn leave it the same way: each join or departure copies the whole batch
  cache, which on the CPU cost more than a decoding step.

Finished sequences go to ``on_done`` at once, so the caller can append them to its output
before the rest finish.

A row may carry a cut (cuts.py): its decoded text is checked after every token, and the row
finishes as soon as the cut is found, its text cut there. Matching is on decoded text, so a stop
that spans tokens matches; the tokens decoded past the cut are counted (``past_cut``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from .kernels import patch_cpu_kernels, patch_logsumexp, patch_rope
from ..fileio import UserError
from ..progress import Progress


@dataclass
class DecodeConfig:
    max_tokens: int = 256
    temperature: float = 0.0  # greedy by default: deterministic outputs
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 64
    # Padded tokens per prefill forward pass. Throughput per token was flat from 2 to 32 rows of
    # 150 tokens on the CPU, so this only bounds memory (activations, attention scores).
    prefill_tokens: int = 2048
    share_prefix: bool = True  # prefill the prompts' common prefix once
    fast_exp: bool | None = None  # the CPU kernels of runtime/kernels.py (SiLU, attention, logsumexp); None: on CPU


def context_length(model) -> int | None:
    """The positions the model was trained for (config max_position_embeddings), when it states them."""
    n = getattr(getattr(model, "args", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and n > 0 else None


def check_context(model, prompts: Sequence[list[int]], budgets: Sequence[int], names=None) -> None:
    """Refuse a prompt whose tokens plus its new-token budget exceed the model's context, before any
    decoding: the caches and rope tables are sized for the longest, and past the context MLX was
    asked for terabytes. ``names``: how the caller names each prompt (e.g. a row's file and id)."""
    n = context_length(model)
    if not n:
        return
    for i, (p, m) in enumerate(zip(prompts, budgets)):
        if len(p) + m > n:
            what = names[i] if names else f"prompt {i + 1} of {len(prompts)}"
            raise UserError(f"{what}: {len(p)} prompt tokens + max_tokens {m} exceed the model's context of "
                            f"{n} tokens; shorten the row or lower max_tokens")


@dataclass
class Completion:
    index: int
    text: str
    tokens: list[int]
    finish: str  # "stop" (end of turn), "cut" (its cut was found) or "length" (hit max_tokens)
    n_prompt: int
    past_cut: int = 0  # tokens decoded after the cut ("cut" rows): what the stop itself cost


def decode(model, tokenizer, prompts: Sequence[list[int]], cfg: DecodeConfig = DecodeConfig(),
           on_done: Callable[[Completion], None] | None = None, progress: Progress | None = None,
           max_tokens: Sequence[int] | None = None, cuts: Sequence | None = None) -> list[Completion]:
    """Greedy/sampled completions of ``prompts``; ``cuts`` (per row, None for none) stop rows early."""
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("decode: empty prompt")
    check_context(model, prompts, max_tokens or [cfg.max_tokens] * len(prompts))
    gen, restores, own_prefill = _generator(model, prompts, cfg, max_tokens)
    eos = set(tokenizer.eos_token_ids)
    pending = deque(sorted(range(len(prompts)), key=lambda i: len(prompts[i])))
    prefix = _prefill_prefix(model, prompts) if own_prefill and cfg.share_prefix else (0, None)
    index_of: dict[int, int] = {}
    live: dict[int, list[int]] = {}  # uid -> tokens so far
    zombies: set[int] = set()
    results: list[Completion | None] = [None] * len(prompts)
    refill = max(1, cfg.batch_size // 4)

    def feed(n: int):
        rows = [pending.popleft() for _ in range(min(n, len(pending)))]
        limits = [max_tokens[i] if max_tokens else cfg.max_tokens for i in rows]
        if own_prefill:
            # Room for one token more than the limit: the generator computes a step ahead.
            caches = _prefill_rows(model, [prompts[i] for i in rows], prefix, cfg.prefill_tokens,
                                   room=max(limits) + 1)
            uids = gen.insert([prompts[i][-1:] for i in rows], limits, caches=caches,
                              all_tokens=[list(prompts[i][:-1]) for i in rows])
        else:
            uids = gen.insert([list(prompts[i]) for i in rows], limits)
        for u, i in zip(uids, rows):
            index_of[u], live[u] = i, []

    lengths: dict[int, list[int]] = {}  # uid -> decoded length after each token (rows with a cut)

    def finish(uid: int, reason: str, text: str | None = None, past: int = 0):
        i, toks = index_of.pop(uid), live.pop(uid)
        lengths.pop(uid, None)
        text = tokenizer.decode(toks) if text is None else text
        results[i] = c = Completion(i, text, toks, reason, len(prompts[i]), past)
        if on_done:
            on_done(c)
        if progress:
            progress.update(1)

    def cut_found(uid: int) -> bool:
        """Finish a row whose text now holds its cut."""
        rule = cuts[index_of[uid]] if cuts else None
        found = rule is not None and _find_cut(rule, tokenizer.decode(live[uid]), lengths.setdefault(uid, []))
        if found:
            finish(uid, "cut", *found)
        return bool(found)

    try:
        while True:
            room = cfg.batch_size - len(live)
            if pending and (room >= refill or not live or not own_prefill):
                if zombies:
                    gen.remove(list(zombies))
                    zombies.clear()
                feed(room if own_prefill else len(pending))
            elif zombies and len(zombies) >= max(1, (len(zombies) + len(live)) // 4):
                gen.remove(list(zombies))
                zombies.clear()
            responses = gen.next_generated()
            if not responses:  # the generator is empty: every row fed so far is done
                if pending:
                    continue
                break
            n_new = _take(responses, live, zombies, eos, finish, cut_found)
            if progress:
                progress.update(0, tokens=n_new)
    finally:
        gen.close()
        for restore in restores:
            if restore:
                restore()
    return results  # type: ignore[return-value]


def _generator(model, prompts, cfg: DecodeConfig, max_tokens):
    """mlx-lm's BatchGenerator for these prompts, the CPU kernel swaps' undo functions, and whether
    decode prefills the rows itself (plain KV caches)."""
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    mx.random.seed(cfg.seed)
    sampler = make_sampler(temp=cfg.temperature, top_p=cfg.top_p if cfg.top_p < 1.0 else 0.0)
    fast = cfg.fast_exp if cfg.fast_exp is not None else mx.default_device().type == mx.cpu
    longest = max(map(len, prompts)) + max(max_tokens or [cfg.max_tokens]) + 2
    restores = ([patch_cpu_kernels(model, inference=True), patch_logsumexp(greedy=cfg.temperature == 0),
                 patch_rope(longest)] if fast else [])
    own_prefill = _plain_kv_caches(model)
    # No stop tokens for the generator: a row that ends its turn stays in the batch as a zombie
    # (its tokens ignored) until a quarter of the batch is done. Removing a row copies the whole
    # batch cache, which cost more than decoding the zombie to the end here.
    gen = BatchGenerator(model, max_tokens=cfg.max_tokens, sampler=sampler,
                         completion_batch_size=cfg.batch_size,
                         prefill_batch_size=cfg.batch_size if own_prefill else min(8, cfg.batch_size))
    return gen, restores, own_prefill


def _find_cut(rule, text: str, seen: list[int]) -> tuple[str, int] | None:
    """(the text kept, tokens decoded past the cut) once ``text`` holds ``rule``'s cut, else None.
    Checked on the whole decoded text, so a stop that spans tokens is found; ``seen`` gathers the
    text's length after each token, which says how many tokens the kept text needed."""
    seen.append(len(text))
    at = rule.find(text, final=False)
    if at is None:
        return None
    kept = next(k for k, n in enumerate(seen) if n >= at) + 1 if at else 0
    return text[:at], len(seen) - kept


def _take(responses, live: dict, zombies: set, eos: set, finish, cut_found) -> int:
    """One decoding step's tokens: appended to their rows, rows that end their turn, find their cut or
    reach their limit finished; a row that finished early stays a zombie until the generator drops it.
    -> new tokens."""
    n_new = 0
    for r in responses:
        if r.uid in zombies:
            if r.finish_reason is not None:
                zombies.discard(r.uid)
        elif r.token in eos:  # the end-of-turn token itself is not text
            finish(r.uid, "stop")
            if r.finish_reason is None:
                zombies.add(r.uid)
        else:
            live[r.uid].append(r.token)
            n_new += 1
            if cut_found(r.uid):
                if r.finish_reason is None:
                    zombies.add(r.uid)
            elif r.finish_reason is not None:
                finish(r.uid, "length")
    return n_new


def _plain_kv_caches(model) -> bool:
    """Own prefill only for plain KV caches: rotating/SSM/quantized caches have no cheap row views."""
    from mlx_lm.models.cache import KVCache, make_prompt_cache
    try:
        return all(type(c) is KVCache for c in make_prompt_cache(model))
    except Exception:
        return False


def _prefill_prefix(model, prompts):
    """(n, cache): the KV cache (batch 1) of the longest prefix all prompts share, each prompt
    keeping at least one token of its own for the generator."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    if n == 0:
        return 0, None
    cache = make_prompt_cache(model)
    model(mx.array([first[:n]]), cache=cache)
    mx.eval([c.state for c in cache])
    return n, cache


def _groups(lengths: list[int], budget: int) -> list[list[int]]:
    """Consecutive runs of the (ascending) lengths, each padded to its longest within `budget`
    tokens and with at most 1/8 of its tokens padding."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        g = out[-1] if out else None
        if g is not None and (len(g) + 1) * n <= max(budget, n) and \
                sum(n - lengths[j] for j in g) * 8 <= (len(g) + 1) * n:
            g.append(i)
        else:
            out.append([i])
    return out


class _RowCache:
    """One row's prefilled keys and values (views into its group's cache), in the shape of mlx-lm's
    KVCache. Merged into a batch cache with room for `room` more tokens: mlx-lm's own merge sizes
    it to the prompts, and the first decoding step then regrows it, copying all of it."""

    def __init__(self, keys=None, values=None, room: int = 0):
        self.keys, self.values, self.room = keys, values, room
        self.offset = 0 if keys is None else keys.shape[2]

    def size(self):
        return self.offset

    @property
    def nbytes(self):
        return 0 if self.keys is None else self.keys.nbytes + self.values.nbytes

    def merge(self, caches):
        import mlx.core as mx
        from mlx_lm.models.cache import BatchKVCache

        longest = max(c.offset for c in caches)
        pad = [longest - c.offset for c in caches]
        batch = BatchKVCache(pad)
        ref = next((c for c in caches if c.keys is not None), None)
        if ref is None:
            return batch
        room = max(c.room for c in caches)
        keys = mx.zeros((len(caches), ref.keys.shape[1], longest + room, ref.keys.shape[3]), ref.keys.dtype)
        values = mx.zeros((len(caches), ref.values.shape[1], longest + room, ref.values.shape[3]), ref.values.dtype)
        for i, (p, c) in enumerate(zip(pad, caches)):
            if c.keys is not None:
                keys[i:i + 1, :, p:longest] = c.keys
                values[i:i + 1, :, p:longest] = c.values
        batch.keys, batch.values, batch._idx = keys, values, longest
        batch.offset = batch.offset + longest
        return batch


def _prefill_rows(model, rows, prefix, budget: int, room: int):
    """Per-row KV caches of each row but its last token, as views into batched prefill caches."""
    import mlx.core as mx
    from mlx_lm.models.cache import BatchKVCache, make_prompt_cache

    n, prefix_cache = prefix
    lengths = [len(r) - 1 - n for r in rows]
    n_layers = len(prefix_cache) if prefix_cache else len(make_prompt_cache(model))
    order = sorted(range(len(rows)), key=lambda i: lengths[i])
    out: list = [None] * len(rows)
    for g in _groups([lengths[i] for i in order], budget):
        g = [order[j] for j in g]
        t = max(lengths[i] for i in g)
        cache = [BatchKVCache([0] * len(g)) for _ in range(n_layers)]
        for c in cache:
            # Every row starts at position n, so one RoPE offset serves all: an int, which mx.fast.rope
            # applies 2x faster than a per-row array.
            c.offset = 0
        if prefix_cache:
            for c, p in zip(cache, prefix_cache):
                # Sized to the group (mlx-lm's cache grows in steps of 256 positions): on a fresh
                # process every byte here is first-touched memory, which is slow on the CPU (BENCHMARKS.md).
                c.keys, c.values = (
                    mx.concatenate([mx.broadcast_to(a[..., :n, :], (len(g), a.shape[1], n, a.shape[3])),
                                    mx.zeros((len(g), a.shape[1], t, a.shape[3]), a.dtype)], axis=2)
                    for a in (p.keys, p.values))
                c._idx, c.offset = n, n
        if t:
            # Right padding: the causal mask keeps real tokens from seeing the pads after them.
            x = mx.array([list(rows[i][n:-1]) + [0] * (t - lengths[i]) for i in g])
            step = max(1, budget // len(g))
            for s in range(0, t, step):
                model(x[:, s:s + step], cache=cache)
                mx.eval([c.state for c in cache])
        for j, i in enumerate(g):
            end = n + lengths[i]
            out[i] = [_RowCache(c.keys[j:j + 1, :, :end], c.values[j:j + 1, :, :end], room) if end
                      else _RowCache(room=room) for c in cache]
    return out
