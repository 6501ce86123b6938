"""Generate's filters: what of a model's own output is kept as a training target, and why not.

Each mode cleans its text and adds its own rejection rule (methods.Mode.clean / rejected); the
rules here apply to every mode: unfinished text, length limits and degenerate repetition.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from .. import methods
from ..repetition import repeat_share

if TYPE_CHECKING:
    from .config import GenerateConfig


def trim_to_sentence(text: str) -> str:
    cut = max(text.rfind(c) for c in (". ", ".\n", "! ", "? ", "。", "\n\n"))
    if text.rstrip().endswith((".", "!", "?", "。")):
        return text.rstrip()
    return text[:cut + 1] if cut > 0 else text


def in_ratio(row_id: str, ratio: float, seed: int) -> bool:
    if ratio >= 1.0:
        return True
    h = int(hashlib.sha1(f"{seed}:{row_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < ratio


def rationale_filter(cfg: "GenerateConfig", text: str, tokens: list[int], finish: str) -> tuple[str, bool, str | None]:
    """Keep or reject one generated text: (text to store, kept, reason). A rejected row still
    trains on its reference (finetune's ref-only target); the reason is recorded in the row."""
    mode = methods.get_mode(cfg.mode)
    text = mode.clean(text)
    if finish == "length" and mode.trims_unfinished:
        if cfg.unfinished == "drop":
            return text, False, "unfinished"
        if cfg.unfinished == "trim":
            text = trim_to_sentence(text)
    if not text.strip():
        return text, False, "empty"
    if len(tokens) < cfg.min_tokens:
        return text, False, "too-short"
    if cfg.max_len and len(tokens) > cfg.max_len:
        return text, False, "too-long"
    if repeat_share(tokens) > cfg.max_repeat:
        return text, False, "repetition"
    reason = mode.rejected(text)
    return (text, False, reason) if reason else (text, True, None)
