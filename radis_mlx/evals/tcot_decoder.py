"""TCoT decoding for eval (``eval --tcot``): every suite's answers through the TCoT format of tcot.py,
with a re-prompt from each missing tag, and per suite the format's failures, its cost in tokens and
its answers' language.
"""

from __future__ import annotations

from ..tcot import EN, PLAIN, TCoT, continuation
from .general import language_rate

MAX_RETRIES = 3  # one per tag: each re-prompt adds the next missing tag


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
        rate = language_rate([r["text"] for r in rows], [self.fmt.lang] * len(rows))
        self.stats[suite] = {"n": len(rows), "format_failures_first": failed_first,
                             "format_failures": sum(r["tcot_missing"] is not None for r in rows),
                             "extra_tokens_mean": sum(r["tcot_extra_tokens"] for r in rows) / max(len(rows), 1),
                             "answer_language_rate": rate, "lang": self.fmt.lang, "zero_shot": self.zero_shot}
