"""TransLLM's translation chain-of-thought (TCoT): one generation that answers a target-language
query through English (Geng et al., 2024, arXiv 2405.13923; formats from hy5468/TransLLM).

    user:       <the query in the target language>
    assistant:  <EN> {English query} <RESPONSE> {English answer} <DE> {target-language answer}

Recovery-KD rows keep the English ability: user = the English query, assistant =
``<RESPONSE> {the original model's own English answer}``. The tags are plain text, one space
apart; the last one names the target language.

At inference the final answer is the text after the target tag. When the model breaks the
format (a tag missing), the missing tag is appended and the model continues from there, as the
paper's eval/mt_bench_generate.py does; a second turn is built from the English first turn.
This module is the format alone; eval decodes through it with evals/tcot_decoder.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .fileio import UserError

EN, RESPONSE = "<EN>", "<RESPONSE>"


def target_tag(lang: str) -> str:
    """``de`` -> ``<DE>``: the tag that opens the target-language answer."""
    if not re.fullmatch(r"[A-Za-z]{2,3}", lang or ""):
        raise UserError(f"TCoT target language {lang!r}: expected a 2- or 3-letter language code (e.g. de)")
    return f"<{lang.upper()}>"


@dataclass(frozen=True)
class TCoT:
    """The TCoT format for one target language."""
    lang: str = "de"

    @property
    def tags(self) -> tuple[str, str, str]:
        return (EN, RESPONSE, target_tag(self.lang))

    def answer(self, en_query: str, en_answer: str, tgt_answer: str) -> str:
        """The assistant text a TCoT training row teaches."""
        en, resp, tgt = self.tags
        return f"{en} {en_query.strip()} {resp} {en_answer.strip()} {tgt} {tgt_answer.strip()}"

    def recovery(self, en_answer: str) -> str:
        """The assistant text of a recovery-KD row (the English query is the user turn)."""
        return f"{RESPONSE} {en_answer.strip()}"

    def parse(self, text: str) -> "Parsed":
        return parse(text, self.tags)

    def check_tokenizer(self, tokenizer) -> None:
        """Tags must stay plain text: a tag that is one of the model's special tokens would be
        stripped or mean something else to it."""
        special = set(getattr(tokenizer, "all_special_tokens", None) or [])
        special |= set(getattr(tokenizer, "added_tokens_encoder", None) or {})
        clash = [t for t in self.tags if t in special]
        if clash:
            raise UserError(f"TCoT tag {clash[0]} is a special token of this model's tokenizer; "
                            "pick another target tag (the language code names it)")


@dataclass
class Parsed:
    """One TCoT output, split at its tags. ``missing``: the first tag absent, None when whole."""
    en_query: str = ""
    en_answer: str = ""
    answer: str = ""
    missing: str | None = None
    before: str = ""  # text the model wrote before <EN> (not part of the format)
    found: list = field(default_factory=list)


def parse(text: str, tags: tuple[str, str, str]) -> Parsed:
    """Split at the tags, in order. Each tag is looked for after the previous one, so a
    target-language answer that mentions "<EN>" does not confuse the split."""
    p, pos, parts = Parsed(), 0, []
    for tag in tags:
        i = text.find(tag, pos)
        if i < 0:
            p.missing = tag
            break
        parts.append((tag, i))
        p.found.append(tag)
        pos = i + len(tag)
    bounds = parts + [(None, len(text))]
    spans = {tag: text[i + len(tag):bounds[k + 1][1]].strip() for k, (tag, i) in enumerate(parts)}
    p.before = text[:parts[0][1]].strip() if parts else text.strip()
    p.en_query, p.en_answer = spans.get(tags[0], ""), spans.get(tags[1], "")
    p.answer = spans.get(tags[2], "")
    return p


def continuation(text: str, parsed: Parsed) -> str:
    """The assistant text to continue from after a format break: what was written so far, then the
    missing tag. A missing <EN> restarts the turn at <EN> (the paper's re-prompt prefills the tag)."""
    if parsed.missing is None:
        raise ValueError("the output is whole: nothing to continue")
    if parsed.missing == EN:
        return f"{EN} "
    return f"{text.rstrip()} {parsed.missing} "


# Decoded as asked, whatever the decoding: the base model's own English answers that retention
# scores, and translation requests (TCoT answers queries; a translation is the task itself).
PLAIN = {"retention", "translation"}
