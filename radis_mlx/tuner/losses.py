"""The RaDis loss, per segment, and its validation twin.

    L = (w_ref * sum_ref CE + w_rat * sum_rat CE + w_ref * sum_eot CE) / normaliser

normalize=tokens divides by the summed weights of the target tokens (w_rat=0 is exactly
mlx-lm's masked default_loss); normalize=segments averages the answer (ref + end-of-turn) and
the rationale separately and mixes the two means by weight, so long rationales can't drown
the translation. The weights are computed in numpy from the *global* batch, so gradient
accumulation and data parallelism give exactly the full-batch gradient; logits are computed
only where a loss is taken (head_split).
"""

from __future__ import annotations

import sys

import numpy as np

from ..runtime.kernels import fast_cross_entropy
from .batching import batch_arrays
from ..targets import EOT, RAT, REF


def segment_counts(exs: list) -> np.ndarray:
    """Target tokens per segment (a token's segment is that of the token it predicts)."""
    c = np.zeros(4, np.int64)
    for e in exs:
        c += np.bincount(np.asarray(e.segments[1:], np.int64), minlength=4)
    return c


def segment_weights(counts: np.ndarray, w_ref: float, w_rat: float, normalize: str) -> np.ndarray:
    """Per-token loss weight of each segment so that sum(weight * CE) over the global batch is L."""
    out = np.zeros(4, np.float64)
    if normalize == "tokens":
        w = np.array([0.0, w_ref, w_rat, w_ref])
        denom = float((w * counts).sum())
        return w / denom if denom > 0 else out
    groups = [(w_ref, counts[1] + counts[3], [REF, EOT]), (w_rat, counts[2], [RAT])]
    present = [(wg, n, s) for wg, n, s in groups if n > 0 and wg > 0]
    total = sum(wg for wg, _, _ in present)
    for wg, n, s in present:
        out[s] = wg / (n * total)
    return out


def head_split(model):
    """(body, head) with model(x) == head(body(x)) exactly, so the head (the vocab projection, the
    biggest matmul of a small model) runs only where a loss is taken; None if this model differs
    (soft-capping, scaled logits, ...)."""
    import mlx.core as mx
    inner = getattr(model, "model", None)
    if inner is None or not callable(inner):
        return _not_sliced("the model has no .model body")
    if "lm_head" in model:
        head = lambda h: model.lm_head(h)  # noqa: E731 (looked up at call time: LoRA may wrap it)
    elif getattr(getattr(model, "args", None), "tie_word_embeddings", False) and hasattr(inner, "embed_tokens"):
        head = lambda h: inner.embed_tokens.as_linear(h)  # noqa: E731
    else:
        return _not_sliced("neither an lm_head nor tied embeddings")
    was_training = model.training
    model.eval()
    try:
        x = mx.array([[1, 2, 3, 4, 5, 6, 7, 8]])
        full, split = model(x), head(inner(x))
        ok = bool(mx.array_equal(full, split).item())
        why = "" if ok else f"max |difference| {mx.abs(full.astype(mx.float32) - split).max().item():.3g}"
    except Exception as e:  # noqa: BLE001 (whatever the head raised: the loss then uses the model's own logits)
        ok, why = False, f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"
    model.train(was_training)
    return (inner, head) if ok else _not_sliced(f"{why} from the model's logits")


def _not_sliced(why: str) -> None:
    """Loud, not silent: the fallback computes the full vocabulary head at every token (slower, more
    memory), and a quantized or tied head that fails the check is a bug to see."""
    print(f"warning: the head is not sliced ({why}): the loss takes every position's logits; "
          "--no-slice-head silences this", file=sys.stderr, flush=True)


def make_loss(split, fast_ce: bool = False):
    import mlx.core as mx
    import mlx.nn as nn
    ce_fn = fast_cross_entropy if fast_ce else nn.losses.cross_entropy

    def loss_fn(model, inputs, targets, weights, segs, pos):
        if split is not None:
            body, head = split
            h = body(inputs)
            logits = head(h.reshape(-1, h.shape[-1])[pos])
        else:
            logits = model(inputs)
            logits = logits.reshape(-1, logits.shape[-1])[pos]
        ce = ce_fn(logits, targets).astype(mx.float32)
        seg_sums = mx.stack([(ce * (segs == s)).sum() for s in (REF, RAT, EOT)])
        return (ce * weights).sum(), seg_sums

    return loss_fn


def validation_losses(model, eval_fn, val: list, cfg, world, pad: int = 8, head_pad: int = 8) -> dict:
    """Validation CE per segment over the whole validation set, and the training objective on it."""
    import mlx.core as mx
    bs = cfg.val_batch_size or cfg.batch_size
    order = sorted(range(len(val)), key=lambda i: len(val[i]))
    ones = np.array([0.0, 1.0, 1.0, 1.0])
    sums = mx.zeros(3)
    counts = np.zeros(4, np.int64)
    model.eval()
    for i in range(0, len(order), bs):
        glob = [val[j] for j in order[i:i + bs]]
        counts += segment_counts(glob)
        shard = glob[world.rank()::world.size()]
        if not shard:
            continue
        arrays, _ = batch_arrays(shard, ones, 1.0, pad, cfg.max_seq_len, head_pad)
        sums = sums + eval_fn(*arrays)
        mx.eval(sums)
    model.train()
    if world.size() > 1:
        sums = mx.distributed.all_sum(sums, stream=mx.cpu)
    s = np.array([0.0, *sums.tolist()])
    mean = lambda k: float(s[k] / counts[k]) if counts[k] else None  # noqa: E731
    w = segment_weights(counts, cfg.w_ref, cfg.w_rat, cfg.normalize)
    return {"val_loss": float((w * s).sum()), "val_ref_loss": mean(REF), "val_rat_loss": mean(RAT),
            "val_eot_loss": mean(EOT), "val_tokens": int(counts[1:].sum())}
