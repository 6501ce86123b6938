"""Token examples for finetune: targets -> (tokens, segment ids) -> length-bucketed batches.

(How a generated row or a file becomes a ``Target`` is each method's business: methods.py.)

Every example is one string, prompt + target + end-of-turn, tokenised ONCE (so the tokens
are exactly what the model sees at inference), and each token gets a segment id from its
character offsets:

    0 prompt (no loss)   1 reference   2 rationale   3 end-of-turn

The loss weights (w_ref, w_rat) and the normalisation are applied per segment in train.py.
Batches are deterministic functions of (seed, epoch, position), so a killed run resumes on
exactly the batch it would have seen next.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from . import prompts
from .io import UserError

PROMPT, REF, RAT, EOT = 0, 1, 2, 3


@dataclass
class Example:
    tokens: list[int]
    segments: list[int]  # one per token
    id: str
    source: int = 0  # 0: main data, 1: the replay/mix dataset

    def __len__(self):
        return len(self.tokens)


@dataclass
class Target:
    """One row as text pieces: the prompt and the (text, segment) pieces of the answer."""
    id: str
    prompt: str
    pieces: list[tuple[str, int]]


@dataclass
class BuildStats:
    rows: int = 0
    examples: int = 0
    truncated: int = 0  # rationale shortened to fit max_len
    dropped_too_long: int = 0  # even without the rationale it didn't fit
    dropped_rejected: int = 0  # replay rows the generate filters rejected (no reference to fall back on)
    reference_only: int = 0  # rationale rows with kept=false: reference-only target
    tokens: dict = field(default_factory=lambda: {"prompt": 0, "ref": 0, "rationale": 0, "eot": 0})

    def as_dict(self) -> dict:
        return dict(self.__dict__)


# ---------------------------------------------------------------- targets -> token examples

def _hf(tokenizer):
    return getattr(tokenizer, "_tokenizer", tokenizer)


def _add_special(tokenizer, text: str) -> bool:
    # prompts.encode's rule: the chat template already wrote the BOS, so don't add another.
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def tokenize_segments(tokenizer, prompt: str, pieces: list[tuple[str, int]], eot: str):
    """Tokenise prompt + pieces + eot once; each token's segment comes from its character span.

    A token that straddles a boundary gets the lowest non-prompt segment it touches: a token
    that is half prompt, half reference is a reference token (it must be predicted), and one
    that is half reference, half rationale is a reference token (w_rat=0 still trains on it).
    """
    texts = [(prompt, PROMPT), *pieces, (eot, EOT)]
    full = "".join(t for t, _ in texts)
    char_seg = np.empty(len(full), np.int8)
    pos = 0
    for t, s in texts:
        char_seg[pos:pos + len(t)] = s
        pos += len(t)
    add = _add_special(tokenizer, full)
    try:
        enc = _hf(tokenizer)(full, return_offsets_mapping=True, add_special_tokens=add)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    except (TypeError, NotImplementedError, KeyError):
        # Slow (Python) tokenizers have no offsets: tokenise piece by piece (boundaries may differ
        # by a token from the joint tokenisation, which is fine for training).
        ids, segs = [], []
        for i, (t, s) in enumerate(texts):
            part = tokenizer.encode(t, add_special_tokens=add and i == 0) if t else []
            ids += part
            segs += [s] * len(part)
        return ids, segs
    segs = []
    for a, b in offsets:
        if b <= a:  # special tokens added by the tokenizer (BOS) have empty spans
            segs.append(PROMPT if a == 0 else int(char_seg[min(a, len(full) - 1)]))
            continue
        span = char_seg[a:b]
        nz = span[span > 0]
        segs.append(int(nz.min()) if len(nz) else PROMPT)
    return ids, segs


def fit_length(tokens: list[int], segments: list[int], max_len: int | None):
    """Truncation policy: never cut the prompt; shorten the rationale first (the end-of-turn
    stays); if it still doesn't fit, return None (the row is dropped). -> (tokens, segs, truncated)"""
    if not max_len or len(tokens) <= max_len:
        return tokens, segments, False
    over = len(tokens) - max_len
    rat = [i for i, s in enumerate(segments) if s == RAT]
    if len(rat) < over:
        return None
    cut = set(rat[len(rat) - over:])
    keep = [i for i in range(len(tokens)) if i not in cut]
    return [tokens[i] for i in keep], [segments[i] for i in keep], True


def build_examples(tokenizer, targets: list[Target], max_len: int | None, source: int = 0,
                   stats: BuildStats | None = None) -> list[Example]:
    stats = stats if stats is not None else BuildStats()
    eot = prompts.end_of_turn(tokenizer)
    out = []
    for t in targets:
        ids, segs = tokenize_segments(tokenizer, t.prompt, t.pieces, eot)
        fitted = fit_length(ids, segs, max_len)
        if fitted is None:
            stats.dropped_too_long += 1
            continue
        ids, segs, cut = fitted
        stats.truncated += cut
        counts = np.bincount(np.asarray(segs, np.int64), minlength=4)
        for k, name in enumerate(("prompt", "ref", "rationale", "eot")):
            stats.tokens[name] += int(counts[k])
        out.append(Example(ids, segs, t.id, source))
    stats.examples += len(out)
    return out


def examples_hash(*groups: list[Example]) -> str:
    h = hashlib.sha256()
    for g in groups:
        h.update(b"\x01")
        for e in g:
            h.update(e.id.encode("utf-8", "replace") + b"\x00")
            h.update(np.asarray(e.tokens, np.int64).tobytes())
            h.update(np.asarray(e.segments, np.int8).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- batching

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
