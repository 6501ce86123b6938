"""Batches: a deterministic, resumable stream of length-bucketed global batches, padded to few shapes.

Batches are deterministic functions of (seed, epoch, position), so a killed run resumes on
exactly the batch it would have seen next.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..fileio import UserError
from .datasets import Example


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def epoch_pool(n_main: int, n_extra: int, ratio: float, seed: int, epoch: int) -> np.ndarray:
    """Indices (into main + extra) used in one epoch: every main example once, plus k extra ones
    so extra examples make up ``ratio`` of the epoch, taken round-robin from a fixed seeded
    permutation (so every extra example is used before any repeats)."""
    pool = np.arange(n_main)
    if n_extra and ratio > 0:
        k = int(round(n_main * ratio / (1.0 - ratio))) if ratio < 1 else n_extra
        perm = np.random.default_rng([seed, 7]).permutation(n_extra)
        take = perm[(epoch * k + np.arange(k)) % n_extra]
        pool = np.concatenate([pool, n_main + take])
    return pool


def epoch_batches(lengths: np.ndarray, pool: np.ndarray, batch_size: int, seed: int, epoch: int,
                  bucket: int = 16) -> list[np.ndarray]:
    """Split one epoch's pool into batches: shuffle, cut into buckets of ``bucket`` batches, sort
    each bucket by length (so a batch holds similar lengths: little padding), shuffle the batch
    order. The remainder that doesn't fill a batch is left out (a different one each epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = pool[rng.permutation(len(pool))]
    n = len(order) // batch_size * batch_size
    order = order[:n]
    chunk = batch_size * max(1, bucket)
    batches = []
    for i in range(0, n, chunk):
        part = order[i:i + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


class BatchPlan:
    """The deterministic stream of global batches over (main + extra) examples.

    Position g (a global micro-batch counter) maps to (epoch, index) because every epoch has
    the same number of batches; ``batches(start)`` resumes exactly at g = start.
    """

    def __init__(self, examples: list[Example], batch_size: int, seed: int = 0,
                 extra: list[Example] | None = None, ratio: float = 0.0, bucket: int = 16):
        self.examples = list(examples) + list(extra or [])
        self.n_main, self.n_extra = len(examples), len(extra or [])
        self.batch_size, self.seed, self.ratio, self.bucket = batch_size, seed, ratio, bucket
        self.lengths = np.array([len(e) for e in self.examples], np.int64)
        n_pool = len(epoch_pool(self.n_main, self.n_extra, ratio, seed, 0))
        if n_pool < batch_size:
            raise UserError(f"only {n_pool} training examples for batch size {batch_size}: "
                            "lower --batch-size or add data")
        self.per_epoch = n_pool // batch_size
        self._cache: dict[int, list[np.ndarray]] = {}

    def epoch(self, e: int) -> list[np.ndarray]:
        if e not in self._cache:
            self._cache = {e: epoch_batches(self.lengths, epoch_pool(self.n_main, self.n_extra, self.ratio,
                                                                     self.seed, e),
                                            self.batch_size, self.seed, e, self.bucket)}
        return self._cache[e]

    def at(self, g: int) -> np.ndarray:
        return self.epoch(g // self.per_epoch)[g % self.per_epoch]

    def batches(self, start: int = 0):
        g = start
        while True:
            yield g, self.at(g)
            g += 1


def iterate_batches(examples: list[Example], batch_size: int, seed: int = 0, start: int = 0, **kw):
    """Yield (position, [Example, ...]) forever from ``start``; resumable at any position."""
    plan = BatchPlan(examples, batch_size, seed, **kw)
    for g, idx in plan.batches(start):
        yield g, [plan.examples[i] for i in idx]


@dataclass
class Batch:
    inputs: np.ndarray  # (B, T) int32: tokens[:-1], padded
    targets: np.ndarray  # (B, T) int32: tokens[1:]
    segments: np.ndarray  # (B, T) int8: the segment of each target; 0 = no loss (prompt, padding)
    n_tokens: int  # real (non-pad) input positions
    ids: list = field(default_factory=list)

    @property
    def padding(self) -> int:
        return self.inputs.size - self.n_tokens


def collate(examples: list[Example], pad_multiple: int = 32, max_len: int | None = None, rows: int | None = None,
            pad_id: int = 0) -> Batch:
    """Pad to a multiple of ``pad_multiple`` (few distinct shapes: the compiled step is reused);
    ``rows`` pads the batch with empty rows (evaluation's last batch)."""
    longest = max(len(e) for e in examples) - 1
    T = _round_up(max(longest, 1), pad_multiple)
    if max_len:
        T = max(min(T, max_len), longest)
    B = rows or len(examples)
    inputs = np.full((B, T), pad_id, np.int32)
    targets = np.full((B, T), pad_id, np.int32)
    segs = np.zeros((B, T), np.int8)
    n = 0
    for i, e in enumerate(examples):
        L = len(e) - 1
        inputs[i, :L] = e.tokens[:-1]
        targets[i, :L] = e.tokens[1:]
        segs[i, :L] = e.segments[1:]
        n += L
    return Batch(inputs, targets, segs, n, [e.id for e in examples])


def padding_share(plan: BatchPlan, epochs: int = 1, pad_multiple: int = 32, max_len: int | None = None) -> float:
    """Share of padded positions in the input batches over the first ``epochs`` epochs."""
    pad = total = 0
    for e in range(epochs):
        for idx in plan.epoch(e):
            L = plan.lengths[idx] - 1
            T = _round_up(int(L.max()), pad_multiple)
            T = max(min(T, max_len), int(L.max())) if max_len else T
            pad += T * len(idx) - int(L.sum())
            total += T * len(idx)
    return pad / max(total, 1)


def flat_positions(segments: np.ndarray, multiple: int = 256) -> tuple[np.ndarray, int]:
    """Flat indices (into B*T) of the positions that take a loss, and how many there are; padded
    with index 0 to a multiple of ``multiple`` so the head's input has few distinct shapes (the
    caller gives the padding zero weight)."""
    pos = np.flatnonzero(segments.reshape(-1) > 0).astype(np.int32)
    n = min(_round_up(max(len(pos), 1), multiple), segments.size)
    out = np.zeros(n, np.int32)
    out[:len(pos)] = pos
    return out, len(pos)


def shape_policy(cfg) -> tuple[bool, int, int]:
    """(compile?, sequence pad multiple, head-row pad multiple). mx.compile traces (and on CPU
    JIT-compiles C++) once per input shape, so a compiled step wants few shapes; on CPU the step
    is bound by matmuls and exp (which compiling doesn't speed up), so there fine padding wins."""
    import mlx.core as mx
    compiled = cfg.compile if cfg.compile is not None else mx.default_device().type == mx.gpu
    pad = cfg.pad_multiple or (32 if compiled else 1)
    return compiled, pad, 256 if compiled else 1


def batch_arrays(exs: list, seg_w: np.ndarray, scale: float, pad_multiple: int, max_len: int,
                 head_multiple: int = 256):
    """(inputs, flat targets, flat weights, flat segments, flat positions) as mx arrays, plus the
    Batch. Only the positions that take a loss are kept for the head."""
    import mlx.core as mx
    b = collate(exs, pad_multiple, max_len)
    pos, n = flat_positions(b.segments, head_multiple)
    segs = b.segments.reshape(-1)[pos].astype(np.int32)
    segs[n:] = 0
    tgt = b.targets.reshape(-1)[pos]
    w = (seg_w[segs] * scale).astype(np.float32)
    return (mx.array(b.inputs), mx.array(tgt), mx.array(w), mx.array(segs), mx.array(pos)), b
