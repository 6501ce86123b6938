"""The bounds every number in every stage's settings must keep, checked before any data or model is read.

A setting out of bounds is a one-line UserError that starts with the setting's name (settings.build
puts its source, a file or ``--set``, in front). The limits are here, in one place, so the configs'
``validate`` methods state *which* bound a setting has and the README can say what they are.
"""

from __future__ import annotations

import math

from .data.pairs import parse_directions  # the one parser of directions the readers use
from .fileio import UserError

# New tokens per answer. 32k is the context of the largest models the toolkit runs; more is never
# a real request, and a budget of 1e9 made the decoder allocate a rope table of 1e9 positions.
MAX_NEW_TOKENS = 32768
# Sequences decoded (or trained) together: a batch of 1e6 rows asks MLX for a cache it cannot make.
MAX_BATCH = 4096
# The byte limit of one input row is fileio.MAX_ROW_BYTES, beside the readers that enforce it.
# Optimizer steps a run may take without `--yes`: at the measured 1-5 steps/s of the models this
# toolkit trains on a laptop, 100k steps is a day or more (RESULTS.md's study: 6.5 h for ~3k steps).
MAX_ITERS = 100_000
MAX_EPOCHS = 1000.0
MAX_TEMPERATURE = 100.0
MAX_SEED = 2**32 - 1  # numpy/MLX seeds are 32-bit
MAX_WORKERS = 256


def need(cond, key: str, msg: str) -> None:
    """A UserError ``key: msg`` unless ``cond``."""
    if not cond:
        raise UserError(f"{key}: {msg}")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def int_in(obj, key: str, lo: int, hi: int, optional: bool = False) -> None:
    """``obj.key`` is a whole number in [lo, hi] (or None when ``optional``)."""
    v = getattr(obj, key)
    if v is None and optional:
        return
    need(_num(v) and float(v).is_integer(), key, f"expected a whole number, got {v!r:.60}")
    need(lo <= v <= hi, key, f"must be in [{lo}, {hi}], got {v}")


def float_in(obj, key: str, lo: float, hi: float, lo_open: bool = False, optional: bool = False) -> None:
    """``obj.key`` is a finite number in [lo, hi] ((lo, hi] when ``lo_open``), or None when ``optional``."""
    v = getattr(obj, key)
    if v is None and optional:
        return
    need(_num(v) and math.isfinite(v), key, f"must be a finite number, got {v!r:.60}")
    ok = (lo < v if lo_open else lo <= v) and v <= hi
    need(ok, key, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v:g}")


def seed(obj, key: str = "seed") -> None:
    int_in(obj, key, 0, MAX_SEED)


def batch(obj, key: str = "batch_size", optional: bool = False) -> None:
    int_in(obj, key, 1, MAX_BATCH, optional)


def new_tokens(obj, key: str = "max_tokens") -> None:
    int_in(obj, key, 1, MAX_NEW_TOKENS)


def limit(obj, key: str = "limit") -> None:
    int_in(obj, key, 1, 10**9, optional=True)


def sampling(obj) -> None:
    """temperature in [0, MAX_TEMPERATURE] (0: greedy) and top-p in (0, 1]: NaN once made every row
    'repetition'."""
    float_in(obj, "temperature", 0.0, MAX_TEMPERATURE)
    float_in(obj, "top_p", 0.0, 1.0, lo_open=True)


LOAD_DTYPES = ("auto", "keep", "float32", "float16", "bfloat16")


def dtype(obj, key: str = "dtype") -> None:
    v = getattr(obj, key)
    need(v in LOAD_DTYPES, key, f"unknown {v!r:.40} (choose from {', '.join(LOAD_DTYPES)})")


def directions(obj, key: str = "pairs") -> None:
    """``obj.key`` is None or translation directions such as 'de-en,en-de' (known language codes)."""
    v = getattr(obj, key)
    try:
        parse_directions(v if v is None else str(v))
    except UserError as e:
        raise UserError(f"{key}: {e}") from None
