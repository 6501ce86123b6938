"""A faster exp for MLX's CPU backend, swapped into mlx-lm's model code while we train or decode.

MLX's CPU exp is a polynomial that calls libm's fmaf (no inlined FMA in the Linux wheel):
~27 ns per element, 4x slower than std::pow. A small model on CPU spends as much time in exp
(SiLU, attention softmax, the vocab-wide cross-entropy) as in matmuls, so there exp(x) is
computed as 2**(x * log2 e): the same value to ~1e-7, checked against the model's own output
before use (patch_cpu_kernels). Every swap is undone by the function it returns.
"""

from __future__ import annotations

from functools import lru_cache, partial

_LOG2E = 1.4426950408889634


@lru_cache(maxsize=None)
def _fast_fns():
    import mlx.core as mx

    @partial(mx.compile, shapeless=True)
    def exp_shifted(x, m):  # exp(x - m)
        return mx.power(2.0, (x - m) * _LOG2E)

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

    def decode_attention(q, k, v, scale, mask):
        # One new query per row against the KV cache; mask: None or boolean (left padding).
        b, h, _, d = q.shape
        kv = k.shape[1]
        s = (q * scale).reshape(b, kv, h // kv, d) @ k.swapaxes(-1, -2)
        if mask is not None:
            s = mx.where(mask, s, -mx.inf)
        e = exp_shifted(s, s.max(axis=-1, keepdims=True))
        return ((e / e.sum(axis=-1, keepdims=True)) @ v).reshape(b, h, 1, d)

    return exp_shifted, swiglu, causal_attention, decode_attention


def fast_cross_entropy(logits, targets):
    import mlx.core as mx
    exp_shifted = _fast_fns()[0]
    m = mx.stop_gradient(logits.max(axis=-1, keepdims=True))
    lse = mx.log(exp_shifted(logits, m).sum(axis=-1)) + m.squeeze(-1)
    return lse - mx.take_along_axis(logits, targets[:, None], axis=-1).squeeze(-1)


def patch_cpu_kernels(model):
    """Swap mlx-lm's swiglu and attention (causal cache-free for training, one query against a KV
    cache for decoding) in this model's module for the pow-based ones; returns a function that
    restores them, or None where the model uses neither or its output would change."""
    import sys
    import mlx.core as mx
    from mlx_lm.models import activations, base
    mod = sys.modules.get(type(model).__module__)
    _, swiglu, causal_attention, decode_attention = _fast_fns()
    orig_sdpa = base.scaled_dot_product_attention

    def attention(queries, keys, values, cache, scale, mask, sinks=None):
        if sinks is None and queries.shape[1] % keys.shape[1] == 0 and not hasattr(cache, "bits"):
            if (cache is None and isinstance(mask, str) and mask == "causal"
                    and queries.shape[2] == keys.shape[2]):
                return causal_attention(queries, keys, values, scale)
            if queries.shape[2] == 1 and (mask is None or (isinstance(mask, mx.array) and mask.dtype == mx.bool_
                                                          and mask.ndim == 4 and mask.shape[1:3] == (1, 1))):
                return decode_attention(queries, keys, values, scale, mask)
        return orig_sdpa(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)

    swaps = {name: new for name, old, new in (("swiglu", activations.swiglu, swiglu),
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
    x, y = mx.array([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]), mx.array([[13]])

    def outputs():  # a cache-free forward, then one cached decoding step
        out = [model(x)]
        try:
            from mlx_lm.models.cache import make_prompt_cache
            cache = make_prompt_cache(model)
            model(x, cache=cache)
            out.append(model(y, cache=cache))
        except Exception:  # a model without the usual cache: the cache-free check still holds
            pass
        return out
    refs = outputs()
    for name, fn in swaps.items():
        setattr(mod, name, fn)
    # Float32 rounding differences grow through the layers: compare on the logits' scale.
    ok = all(mx.abs(o - r).max().item() <= 1e-4 * max(1.0, mx.abs(r).max().item())
             for o, r in zip(outputs(), refs))
    model.train(was_training)
    if not ok:
        restore()
        return None
    return restore
