"""Degenerate output: the share of a sequence's n-grams that repeat an earlier one.

Generate's filter rejects a row above ``max_repeat`` (on its tokens), and a TCoT translation is
refused as degenerate above one half (on its words): one measure, below both.
"""

from __future__ import annotations


def repeat_share(tokens: list, n: int = 4) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)
