"""Memory on every backend: what MLX holds, the wired limit for training, and the check that stops a
batch that would swap.

On Metal, GPU memory is the Mac's RAM: a step needing more than the GPU's recommended working set
does not fail, it pages to disk and runs many times slower, for hours. So training wires its buffers
as mlx-lm's trainer does, and stops, with one line naming the settings to lower, at the first step
whose peak is over the limit. MLX's peak counts live arrays only; the buffer cache (freed arrays
kept for reuse) comes on top, so both are reported. Where the device names no working set (the
CPU) the same code runs, wires nothing, and has a limit only when one is set.
"""

from __future__ import annotations

from ..fileio import UserError

GB = 1e9


def memory_gb() -> dict:
    """MLX's memory now: live arrays, the buffer cache, and the peak of live arrays, in GB."""
    import mlx.core as mx
    return {"active_gb": round(mx.get_active_memory() / GB, 3), "cache_gb": round(mx.get_cache_memory() / GB, 3),
            "peak_gb": round(mx.get_peak_memory() / GB, 3)}


def device_limit() -> int | None:
    """Bytes the GPU holds without swapping (Metal's recommended working set); None where the device
    names none (the CPU)."""
    import mlx.core as mx
    size = mx.device_info().get("max_recommended_working_set_size")
    return int(size) if size else None


def wire_for_training(limit_gb: float | None) -> tuple[int | None, object]:
    """(the limit a step's peak must stay under, in bytes, or None; the function undoing the wiring).
    ``limit_gb`` None: the device's. The working set is wired as mlx-lm's trainer wires it (its
    maybe_set_recommended_wired_limit, a no-op where the device names no working set), so the
    model's buffers are not paged out between steps."""
    import mlx.core as mx
    from mlx_lm.utils import maybe_set_recommended_wired_limit
    device = device_limit()
    old = maybe_set_recommended_wired_limit()
    limit = int(limit_gb * GB) if limit_gb else device
    return limit, (lambda: None) if old is None else (lambda: mx.set_wired_limit(old))


def check_fits(limit: int | None, step: int, setting: str = "memory-limit-gb") -> None:
    """Stop at the first step whose peak is over ``limit``: on Metal the next one would swap."""
    import mlx.core as mx
    peak = mx.get_peak_memory()
    if limit and peak > limit:
        raise UserError(f"step {step} needed {peak / GB:.2f} GB, over the {limit / GB:.2f} GB limit (--{setting}; "
                        "on Metal the GPU's working set, past which it swaps): lower --batch-size, or --max-seq-len, "
                        "or turn on --grad-checkpoint")
