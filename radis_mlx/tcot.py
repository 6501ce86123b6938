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


MAX_RETRIES = 3  # one per tag: each re-prompt adds the next missing tag
# Decoded as asked, whatever the decoding: the base model's own English answers that retention
# scores, and translation requests (TCoT answers queries; a translation is the task itself).
PLAIN = {"retention", "translation"}


class TCoTDecoder:
    """Generation through TCoT for every eval suite: wraps an eval Generator (and its cache).

    Each prompt is answered once; outputs with a tag missing are continued from the missing tag
    (up to three times, each through the cache), and the row handed to the suite carries the
    target-language answer as its ``text``. ``zero_shot``: every answer starts at ``<EN>`` (the
    untrained model's baseline: the format is forced by prefilling and re-prompting).
    Per suite it counts format failures before and after re-prompting, the tokens spent before
    the target tag (TCoT's cost), and how many answers are in the target language.
    """

    def __init__(self, gen, fmt: TCoT, tokenizer, zero_shot: bool = False):
        self.gen, self.fmt, self.tok, self.zero_shot = gen, fmt, tokenizer, zero_shot
        self.stats: dict[str, dict] = {}
        fmt.check_tokenizer(tokenizer)

    @property
    def generated_tokens(self) -> dict:
        """Per suite, the re-prompts included."""
        out: dict = {}
        for k, v in self.gen.generated_tokens.items():
            out[k.removesuffix(".tcot")] = out.get(k.removesuffix(".tcot"), 0) + v
        return out

    def __call__(self, suite: str, texts: list[str], max_tokens: int) -> list[dict]:
        return self.many([(suite, texts, max_tokens)])[0]

    def many(self, requests: list[tuple]) -> list[list[dict]]:
        start = f"{EN} " if self.zero_shot else ""
        plain = [r[0] in PLAIN for r in requests]
        firsts = self.gen.many([(s, texts if p else [t + start for t in texts], mt, *w)
                                for p, (s, texts, mt, *w) in zip(plain, requests)])
        out = []
        for keep, (suite, texts, mt, *where), rows in zip(plain, requests, firsts):
            if keep:
                out.append(rows)
                continue
            full = [start + r["text"] for r in rows]
            tokens = [r["n_tokens"] for r in rows]
            failed_first = sum(self.fmt.parse(f).missing is not None for f in full)
            for _ in range(MAX_RETRIES):
                broken = [i for i, f in enumerate(full) if self.fmt.parse(f).missing is not None]
                if not broken:
                    break
                conts = [continuation(full[i], self.fmt.parse(full[i])) for i in broken]
                again = self.gen.many([(f"{suite}.tcot", [texts[i] + c for i, c in zip(broken, conts)], mt,
                                        *where)])[0]
                for i, c, r in zip(broken, conts, again):
                    full[i], tokens[i] = c + r["text"], tokens[i] + r["n_tokens"]
            out.append([self._row(r, f, n) for r, f, n in zip(rows, full, tokens)])
            self._count(suite, out[-1], failed_first)
        return out

    def _row(self, first: dict, full: str, n_tokens: int) -> dict:
        p = self.fmt.parse(full)
        answer_tokens = len(self.tok.encode(p.answer, add_special_tokens=False)) if p.answer else 0
        return {**first, "text": p.answer, "raw": full, "n_tokens": n_tokens, "en_query": p.en_query,
                "en_answer": p.en_answer, "tcot_missing": p.missing, "tcot_extra_tokens": n_tokens - answer_tokens}

    def _count(self, suite: str, rows: list[dict], failed_first: int) -> None:
        from .evals.general import language_rate
        rate = language_rate([r["text"] for r in rows], [self.fmt.lang] * len(rows))
        self.stats[suite] = {"n": len(rows), "format_failures_first": failed_first,
                             "format_failures": sum(r["tcot_missing"] is not None for r in rows),
                             "extra_tokens_mean": sum(r["tcot_extra_tokens"] for r in rows) / max(len(rows), 1),
                             "answer_language_rate": rate, "lang": self.fmt.lang, "zero_shot": self.zero_shot}
