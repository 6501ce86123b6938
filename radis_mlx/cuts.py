"""Where a translation ends: the cut eval scores at, and the stop decoding halts at. One rule serves
both, so a stopped run and a run cut afterwards score the same.

A RaDis model may append an explanation after its translation. A cut finds where that starts:

- ``blank-line`` (the published study's cut): the first blank line after the first visible text;
- ``explanation``: the first blank line whose next paragraph opens like RaDis's own explanations
  ("The German text ...", "In this translation ...", "Explanation:"). A blank line *inside* a
  paragraph translation is kept. The decision on a blank line waits for the next paragraph's
  opening words (up to its first sentence, at most ``WINDOW`` characters, when they do not open an
  explanation), so decoding that stops on it runs a few tokens past the cut; those tokens are
  counted (``past_cut``), never kept.

``find(text, final)`` returns the index to cut at, or None: with ``final=False`` (decoding, text
still growing) only once the answer can no longer change, with ``final=True`` (the whole output)
on what is there. Both are monotone: a cut found on a prefix is the cut of every longer text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .fileio import UserError

BLANK_LINE = "\n\n"
DEFAULT_CUT = "blank-line"  # eval's default cut (the published study's): exports stop at it too
WINDOW = 80  # characters of a paragraph's opening that decide whether it explains


def _start(text: str) -> int:
    """Leading whitespace never ends a translation (eval strips it before cutting)."""
    return len(text) - len(text.lstrip())


@dataclass(frozen=True)
class StringCut:
    """Cut at the first occurrence of ``stop`` after the first visible text."""
    stop: str = BLANK_LINE
    name: str = "blank-line"

    def find(self, text: str, final: bool = True) -> int | None:
        if not self.stop:
            return None
        i = text.find(self.stop, _start(text))
        if i < 0 or (final and not text[i:].strip()):
            return None  # a stop in the trailing whitespace cuts nothing off (as eval always counted)
        return i

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """What an exported model's runtime (Ollama, llama.cpp, LM Studio) can stop on."""
        return (self.stop,) if self.stop else ()


# How RaDis explanations open: the explain prompt asks how "the meaning, key words and grammar of
# the {src} text are carried over into {tgt}", and the model's rationales answer in those words
# (199 of Qwen2.5-Coder-0.5B's 200 on the study's rows open "The German text"). Openers a
# translation also uses ("Here", "Note", "Overall") are left out: they opened 38 of 16,878 WMT22/23 English
# reference segments; what is left
# matches 8 of them ("The last sentence of the book ...", "In the long term ...").
_OPENERS = re.compile(
    r"""^\W{0,4}(?:
        explanation\b|
        (?:the|this|in\ the|in\ this)\s+(?:\w+\s+){0,2}?
            (?:text|sentence|phrase|translation|word|term|expression|reference)\b
    )""", re.I | re.X)


def explains(opening: str, complete: bool = True) -> bool:
    """Whether a paragraph that opens with ``opening`` is an explanation rather than translation.
    ``complete=False`` (text still growing): only if a character after the opener already ends its
    last word ("The German text" may yet become "The German textbook")."""
    first = re.split(r"(?<=[.!?:])\s", opening.strip(), maxsplit=1)[0]
    m = _OPENERS.match(first)
    return bool(m) and (complete or m.end() < len(first))


@dataclass(frozen=True)
class ExplanationCut:
    """Cut at the first blank line that an explanation follows (RaDis's own format)."""
    name: str = "explanation"

    def find(self, text: str, final: bool = True) -> int | None:
        i = text.find(BLANK_LINE, _start(text))
        while i >= 0:
            rest = text[i:].lstrip()
            nxt = rest.find(BLANK_LINE)
            opening = rest[:nxt] if nxt >= 0 else rest
            # An opener that matches stays matched as the text grows (it is anchored at the start and
            # holds no sentence end): cut at once. "Not an explanation" waits until the opening's first
            # sentence (or WINDOW characters of it) is all there.
            if opening and explains(opening[:WINDOW], complete=False):
                return i
            decided = final or nxt >= 0 or len(opening) >= WINDOW or re.search(r"[.!?:]\s", opening)
            if not decided:
                return None  # wait: the next paragraph's opening is not all there yet
            if opening and explains(opening[:WINDOW]):
                return i
            i = text.find(BLANK_LINE, i + len(BLANK_LINE))
        return None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        # A runtime's stop string cannot look ahead: exports stop at the blank line.
        return (BLANK_LINE,)


CUTS = {"blank-line": lambda stop: StringCut(stop), "explanation": lambda stop: ExplanationCut()}


def make_cut(rule: str = DEFAULT_CUT, stop: str = BLANK_LINE):
    """The cut named ``rule``; ``stop`` is the string the blank-line rule cuts at ('' = no cut)."""
    if rule not in CUTS:
        raise UserError(f"unknown cut {rule!r} (choose from {', '.join(CUTS)})")
    return CUTS[rule](stop)


def cut(text: str, rule) -> tuple[str, bool]:
    """(the translation, whether anything was cut off) of one whole output."""
    i = rule.find(text, final=True)
    if i is None:
        return text.strip(), False
    return text[:i].strip(), True
