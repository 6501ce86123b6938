"""Faster CPU kernels swapped into mlx-lm's model code while we train or decode.

MLX's CPU exp is a polynomial that calls libm's fmaf (no inlined FMA in the Linux wheel): ~19 ns
per element here, 3.5x std::pow. A small model on CPU spends as much time in exp (SiLU, attention
softmax, the vocab-wide cross-entropy) as in matmuls, so training computes exp(x) as
2**(x * log2 e) (the same value to ~1e-7), and inference uses a multiply-only polynomial
(exp_poly, to 2e-5), which the compiled kernel runs faster still. Attention against a KV cache
(prefill chunks, decoding steps) is rewritten too: masks as an added bias, causal blocks that skip
masked scores, decoding chunks that skip the batch cache's left padding. Each swap is checked
against the model's own output before use (patch_cpu_kernels) and undone by the function it returns.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable, NamedTuple

_LOG2E = 1.4426950408889634


class Kernels(NamedTuple):
    exp_shifted: Callable  # exp(x - m) from pow: training and sampling
    swiglu: Callable  # silu(gate) * x with its own backward pass
    causal_attention: Callable  # cache-free causal attention (training)
    cached_attention: Callable  # queries against a KV cache (prefill chunks, decoding steps)
    swiglu_infer: Callable  # silu(gate) * x from the multiply-only exp (inference)


@lru_cache(maxsize=None)
def _fast_fns() -> Kernels:
    return Kernels(*_elementwise_fns()[:2], *_attention_fns(), _elementwise_fns()[3])


@lru_cache(maxsize=None)
def _elementwise_fns():
    """(exp_shifted, swiglu, exp_shifted_infer, swiglu_infer)."""
    import mlx.core as mx

    @partial(mx.compile, shapeless=True)
    def exp_shifted(x, m):  # exp(x - m)
        return mx.power(2.0, (x - m) * _LOG2E)

    def exp_poly(y):
        # exp(y) for -20 <= y <= 0 from multiplies alone, which the compiled CPU kernel vectorises
        # (2x faster than pow): e^(y/32) by its Taylor series, squared 5 times. Relative error
        # < 2e-5; y below -20 counts as -20 (e^-20 = 2.1e-9). For inference only: training keeps
        # pow. No mx.where in these kernels: it stops the compiled loop from vectorising (2x).
        z = mx.maximum(y, -20.0) * (1 / 32)
        p = z * (1 / 40320) + 1 / 5040
        for c in (1 / 720, 1 / 120, 1 / 24, 1 / 6, 1 / 2, 1.0, 1.0):
            p = p * z + c
        for _ in range(5):
            p = p * p
        return p

    # Softmax weights: exactly 0 below e^-20, so masked and padded keys get none.
    exp_shifted_infer = mx.compile(lambda x, m: exp_poly(x - m) * (x - m > -20.0), shapeless=True)

    @partial(mx.compile, shapeless=True)
    def swiglu_infer(gate, x):  # silu(gate) * x; sigmoid(g) = s or e*s, with e = e^-|g|, s = 1/(1+e)
        e = exp_poly(-mx.abs(gate))
        s = 1 / (1 + e)
        return gate * x * s * (e + (gate >= 0) * (1 - e))

    @partial(mx.compile, shapeless=True)
    def sigmoid(x):  # clamped so 2**e stays finite (no inf * 0 = NaN downstream)
        return 1 / (1 + mx.power(2.0, mx.minimum(x * -_LOG2E, 126.0)))

    @partial(mx.compile, shapeless=True)
    def swiglu_grads(gate, x, g):
        s = sigmoid(gate)
        return g * x * s * (1 + gate * (1 - s)), g * gate * s

    @mx.custom_function
    def swiglu(gate, x):  # silu(gate) * x
        return gate * sigmoid(gate) * x

    @swiglu.vjp
    def swiglu_vjp(primals, cotangent, output):
        # Recomputing the sigmoid (cheap with pow) keeps only gate and x alive for the backward pass.
        return swiglu_grads(*primals, cotangent)

    return exp_shifted, swiglu, exp_shifted_infer, swiglu_infer


@lru_cache(maxsize=None)
def _attention_fns():
    """(causal_attention, cached_attention)."""
    import mlx.core as mx
    exp_shifted, _, exp_shifted_infer, _ = _elementwise_fns()

    @mx.custom_function
    def probs(qg, k, mask):  # softmax(qg @ k.T + mask)
        s = qg @ k.swapaxes(-1, -2) + mask
        e = exp_shifted(s, mx.stop_gradient(s.max(axis=-1, keepdims=True)))
        return e / e.sum(axis=-1, keepdims=True)

    @probs.vjp
    def probs_vjp(primals, cotangent, output):
        # From the saved probabilities: no second exp pass, and the scores aren't kept alive.
        qg, k, mask = primals
        ds = output * (cotangent - (cotangent * output).sum(axis=-1, keepdims=True))
        return ds @ k, ds.swapaxes(-1, -2) @ qg, mx.zeros_like(mask)

    def causal_attention(q, k, v, scale):
        # Query heads grouped by their KV head: one batched matmul, no repeated K/V copies.
        b, h, t, d = q.shape
        kv = k.shape[1]
        mask = mx.tile(mx.triu(mx.full((t, t), -mx.inf, dtype=q.dtype), 1), (h // kv, 1))
        p = probs((q * scale).reshape(b, kv, (h // kv) * t, d), k, mask)
        return (p @ v).reshape(b, h, t, d)

    last_mask: list = [None, None, False]  # the mask a forward pass gives every layer, its bias, causal?

    def cached_attention(q, k, v, scale, mask, window=None):
        # Queries (the last t positions) against a KV cache: prefill chunks and decoding steps.
        # mask: None, "causal" or a boolean array whose head axis is 1 (mlx-lm's batch caches:
        # causal and left padding together). window (rows from, rows to, first key): q, k and v
        # are that part of the batch, the mask is the whole batch's (its bias is made once per pass).
        t = q.shape[2]
        n = mask.shape[-1] if window else k.shape[2]
        if mask is None:
            return attend(q, k, v, scale, None, False)
        if isinstance(mask, str):
            mask = mx.arange(n - t, n)[:, None] >= mx.arange(n)[None]
        if last_mask[0] is not mask:
            # Added, not mx.where: where costs 10x an add on the CPU. A finite floor, not -inf: a row
            # with every key masked (padding) gets uniform weights instead of NaN.
            bias = mx.where(mask, 0.0, -1e30).astype(q.dtype)
            causal = t > 1 and not (mask & (mx.arange(n)[None] > mx.arange(n - t, n)[:, None])).any().item()
            last_mask[:] = mask, bias[:, :, None] if mask.ndim == 4 else bias, causal
        bias = last_mask[1]
        if window:
            bias = bias[window[0]:window[1], ..., window[2]:]
        return attend(q, k, v, scale, bias, last_mask[2])

    def attend(q, k, v, scale, bias, causal):
        b, h, t, d = q.shape
        kv, n = k.shape[1], k.shape[2]
        if causal and t >= 64:
            # The first half of the queries sees no key at or after n - t + t/2, so it skips them
            # (their scores would cost as much as real ones); halved again down to 32-63 queries:
            # 30% fewer scores at t = 150.
            m, cut = t // 2, n - t + t // 2
            first = attend(q[:, :, :m], k[:, :, :cut], v[:, :, :cut], scale, bias[..., :m, :cut], True)
            return mx.concatenate([first, attend(q[:, :, m:], k, v, scale, bias[..., m:, :], True)], axis=2)
        s = ((q * scale).reshape(b, kv, (h // kv) * t, d) @ k.swapaxes(-1, -2)).reshape(b, kv, h // kv, t, n)
        if bias is not None:
            s = s + bias
        e = exp_shifted_infer(s, s.max(axis=-1, keepdims=True))
        # Normalised after the product with V: a division over d columns instead of n.
        out = e.reshape(b, kv, (h // kv) * t, n) @ v
        return (out / e.sum(axis=-1).reshape(b, kv, (h // kv) * t, 1)).reshape(b, h, t, d)

    return causal_attention, cached_attention


def fast_cross_entropy(logits, targets):
    import mlx.core as mx
    exp_shifted = _fast_fns().exp_shifted
    m = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    lse = mx.log(exp_shifted(logits, m).sum(axis=-1)) + m.squeeze(-1)
    return lse - mx.take_along_axis(logits, targets[:, None], axis=-1).squeeze(-1)


class _Proxy:
    """A module (mlx.core, mlx.core.fast) as seen by one other module, with some names swapped."""

    def __init__(self, target, **swaps):
        self._target = target
        self.__dict__.update(swaps)

    def __getattr__(self, name):
        return getattr(self._target, name)


def patch_logsumexp(greedy: bool):
    """mlx-lm's BatchGenerator normalises every step's logits with a vocab-wide logsumexp (3x the
    cost of the head's matmul here). Greedy decoding takes the argmax, which the normalisation does
    not move, so it is skipped; sampling gets the pow-based one. Only mlx_lm.generate sees the
    swap; returns the function that undoes it."""
    import sys
    import mlx.core as mx
    from mlx_lm.generate import BatchGenerator  # noqa: F401 (loads the module)
    g = sys.modules["mlx_lm.generate"]  # the package's `generate` attribute is the function
    exp_shifted = _fast_fns().exp_shifted
    orig = mx.logsumexp

    def logsumexp(a, axis=None, keepdims=False, **kw):
        if kw or axis not in (-1, a.ndim - 1) or not keepdims or a.ndim != 2:
            return orig(a, axis=axis, keepdims=keepdims, **kw)
        if greedy:
            return mx.zeros((a.shape[0], 1), a.dtype)
        m = a.max(axis=-1, keepdims=True)
        return mx.log(exp_shifted(a, m).sum(axis=-1, keepdims=True)) + m

    saved = g.mx
    g.mx = _Proxy(mx, logsumexp=logsumexp)

    def restore():
        g.mx = saved
    return restore


def patch_rope(max_positions: int):
    """mx.fast.rope from a table of cosines and sines, for positions below `max_positions`.

    MLX has no CPU kernel for rope: each call builds the angles from scratch in ~20 small ops
    (arange, exp, cos, sin, ...), and a decoding step makes two calls per layer: ~8% of a 64-row
    step here. The table holds the same float32 values the fallback computes; a call gathers its
    rows and rotates in one compiled kernel. Swapped into the modules that call mx.fast.rope
    (mlx's RoPE and mlx-lm's variants); other frequencies, traditional rope and longer positions
    go to mx.fast.rope, and so does every 16-bit input: a table in bf16 rounds the angles (and
    the positions past 256), which moved a bf16 model's logits by 12% of their scale; the fallback
    computes them in float32. Returns the function that undoes the swap."""
    import math
    import sys
    import mlx.core as mx
    import mlx.nn.layers.positional_encoding  # noqa: F401 (loads the modules)
    import mlx_lm.models.rope_utils  # noqa: F401
    orig = mx.fast.rope
    tables: dict = {}
    rotate = mx.compile(lambda x1, x2, c, s: (x1 * c - x2 * s, x1 * s + x2 * c), shapeless=True)

    def rope(a, dims, *, traditional, base, scale, offset, freqs=None, **kw):
        simple = (freqs is None and base is not None and not traditional and not kw and a.ndim == 4
                  and dims % 2 == 0 and dims <= a.shape[-1] and a.dtype == mx.float32)
        t = a.shape[2] if simple else 0
        if simple and isinstance(offset, int):
            simple = offset + t <= max_positions
        elif simple:
            simple = isinstance(offset, mx.array) and offset.ndim == 1 and offset.shape[0] == a.shape[0]
        if not simple:
            return orig(a, dims, traditional=traditional, base=base, scale=scale, offset=offset,
                        freqs=freqs, **kw)
        half, key = dims // 2, (dims, float(base), float(scale), a.dtype)
        if key not in tables:  # the fallback's own arithmetic, for every position at once
            inv = mx.exp(mx.arange(0, -half, -1, dtype=a.dtype) * mx.array(math.log(base) / half, a.dtype))
            theta = (mx.arange(max_positions, dtype=a.dtype) * mx.array(scale, a.dtype))[:, None] * inv
            tables[key] = (mx.cos(theta), mx.sin(theta))
            mx.eval(tables[key])
        cos, sin = tables[key]
        if isinstance(offset, int):
            cos, sin = cos[offset:offset + t], sin[offset:offset + t]
        else:
            # Per-row offsets can't be checked without waiting for them; decode sizes the table for
            # every position its caches reach, and the clip keeps a stray one from reading past it.
            pos = mx.minimum(offset[:, None] + mx.arange(t), max_positions - 1)
            cos, sin = cos[pos][:, None], sin[pos][:, None]
        out = rotate(a[..., :half], a[..., half:dims], cos, sin)
        return mx.concatenate([*out, a[..., dims:]] if dims < a.shape[-1] else out, axis=-1)

    mods = [sys.modules[name] for name in ("mlx.nn.layers.positional_encoding", "mlx_lm.models.rope_utils")]
    saved = [m.mx for m in mods]
    for m in mods:
        m.mx = _Proxy(mx, fast=_Proxy(mx.fast, rope=rope))

    def restore():
        for m, s in zip(mods, saved):
            m.mx = s
    return restore


def _skip_left_padding(attend, q, k, v, scale, mask, cache, chunks: int = 8):
    """One decoding step of a batch cache, in row chunks that each start at their first unpadded
    position. mlx-lm's batch cache pads every row on the left to the longest; reading the padding
    costs as much as reading the keys (decoding here is bound by reading the KV cache), and with
    rows sorted by length the short ones carry the most of it."""
    import mlx.core as mx
    pads = getattr(cache, "left_padding", None)
    b = q.shape[0]
    if not isinstance(pads, mx.array) or pads.shape != (b,) or b < 2 * chunks:
        return attend(q, k, v, scale, mask)
    pads = pads.tolist()
    size = -(-b // chunks)
    starts = [(r, max(0, min(pads[r:r + size]))) for r in range(0, b, size)]
    if all(s < 32 for _, s in starts):  # not worth splitting the batched matmul
        return attend(q, k, v, scale, mask)
    return mx.concatenate([attend(q[r:r + size], k[r:r + size, :, s:], v[r:r + size, :, s:], scale, mask,
                                  window=(r, r + size, s)) for r, s in starts])


def patch_cpu_kernels(model, inference: bool = False):
    """Swap mlx-lm's swiglu and attention (causal cache-free for training; against a KV cache for
    prefill and decoding) in this model's module for the pow-based ones (for `inference`, SiLU
    from the multiply-only exp); returns a function that restores them, or None where the model
    uses neither or its output would change."""
    import sys
    import mlx.core as mx
    from mlx_lm.models import activations, base
    mod = sys.modules.get(type(model).__module__)
    _, swiglu, causal_attention, cached_attention, swiglu_infer = _fast_fns()
    orig_sdpa = base.scaled_dot_product_attention

    def attention(queries, keys, values, cache, scale, mask, sinks=None):
        if sinks is None and queries.shape[1] % keys.shape[1] == 0 and not hasattr(cache, "bits"):
            if (cache is None and isinstance(mask, str) and mask == "causal"
                    and queries.shape[2] == keys.shape[2]):
                return causal_attention(queries, keys, values, scale)
            if (mask is None or (isinstance(mask, str) and mask == "causal")
                    or (isinstance(mask, mx.array) and mask.dtype == mx.bool_
                        and (mask.ndim == 2 or (mask.ndim == 4 and mask.shape[1] == 1)))):
                if queries.shape[2] == 1 and isinstance(mask, mx.array) and mask.ndim == 4:
                    return _skip_left_padding(cached_attention, queries, keys, values, scale, mask, cache)
                return cached_attention(queries, keys, values, scale, mask)
        return orig_sdpa(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

    swaps = {name: new for name, old, new in (("swiglu", activations.swiglu,
                                                swiglu_infer if inference else swiglu),
                                               ("scaled_dot_product_attention", orig_sdpa, attention))
             if mod is not None and getattr(mod, name, None) is old}
    if not swaps:
        return None
    saved = {name: getattr(mod, name) for name in swaps}

    def restore():
        for name, fn in saved.items():
            setattr(mod, name, fn)
    was_training = model.training
    model.eval()
    ok = _swap_holds(model, mod, swaps, restore)
    model.train(was_training)
    if not ok:
        restore()
        return None
    return restore


def _probe(model) -> list:
    """The model's logits cache-free; prefilled in two chunks then a decoding step; the same for a batch
    as BatchGenerator runs it (right-padded prefill, then decoding with left padding)."""
    import mlx.core as mx
    x, y = mx.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]), mx.array([[13]])
    out = [model(x)]
    try:
        from mlx_lm.models.cache import BatchKVCache, KVCache, make_prompt_cache
        cache = make_prompt_cache(model)
        out += [model(x[:, :8], cache=cache), model(x[:, 8:], cache=cache), model(y, cache=cache)]
        if all(type(c) is KVCache for c in cache):
            cache = [BatchKVCache([0, 0]) for _ in cache]
            for c in cache:
                c.prepare(lengths=[9, 12], right_padding=[3, 0])
            xb = mx.concatenate([mx.pad(x[:, :9], [(0, 0), (0, 3)]), x])
            logits = model(xb, cache=cache)
            for c in cache:
                c.finalize()
            out += [logits[:1, :9], logits[1:], model(mx.concatenate([y, y]), cache=cache)]
    except Exception:  # a model without the usual caches: the checks that ran still hold
        pass
    return out


def _swap_holds(model, mod, swaps: dict, restore) -> bool:
    """Whether the swapped kernels give this model's logits (float32 rounding aside)."""
    import mlx.core as mx

    def agree() -> bool:
        restore()
        refs = _probe(model)
        for name, fn in swaps.items():
            setattr(mod, name, fn)
        # Float32 rounding differences grow through the layers: compare on the logits' scale.
        return all(mx.abs(o - r).max().item() <= 5e-4 * max(1.0, mx.abs(r).max().item())
                   for o, r in zip(_probe(model), refs))

    # Every layer runs the same code, so three of them show whether the swap holds, at a fraction of
    # the cost of a dozen passes through every layer in every process (BENCHMARKS.md, "kernel check on
    # 3 layers"). Models that do not run on a cut layer list get the full check.
    ok = None
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, list) and len(layers) > 3 and _same(getattr(model, "layers", None), layers):
        inner.layers = layers[:2] + layers[-1:]
        try:
            # Pipeline-ready models (qwen2, ...) run a slice of the list, a copy: check that the
            # cut reached it, or the probe would stream every layer's weights 12 times (4 s here).
            ok = agree() if _same(model.layers, inner.layers) else None
        except Exception:
            ok = None
        finally:
            inner.layers = layers
    return agree() if ok is None else ok


def _same(a, b) -> bool:
    """The same modules in the same order (modules are dicts: == would compare their weights)."""
    return isinstance(a, list) and len(a) == len(b) and all(x is y for x, y in zip(a, b))
