"""General abilities a translation fine-tune can destroy: safety (AdvBench), reasoning (GSM8K).

- AdvBench: refusal rate by keyword match (the GCG paper's list, Zou et al. 2023; results.py holds
  it, as report.html and IFEval's over-refusal count use it too).
- GSM8K: accuracy of the last number in the answer against the gold number after ``#### ``.

(Chat, MT-Bench and AlpacaEval, is chat.py; self-retention, the fourth measure of forgetting,
retention.py.)
"""

from __future__ import annotations

import re
from typing import Sequence

from .. import prompts
from ..data import load_instructions
from ..fileio import UserError, atomic_write_jsonl
from ..results import Column, badge, esc, is_refusal, meta, out_block, pick, refusal_keywords
from .context import Ctx
from .suites import ADVBENCH_HUB, GSM8K_HUB, Html, Outcome, items_path, register

GSM8K_TEMPLATE = "{question}\nSolve the problem step by step, then give the final answer as a number."
GSM8K_TEMPLATES = {"de": "{question}\nLöse die Aufgabe Schritt für Schritt und gib am Ende die Antwort als Zahl an."}


def language_rate(texts: Sequence[str], langs: Sequence[str]) -> float:
    """The share of texts written in their language, by language ID (an empty text is in none)."""
    from .ifeval_text import detect_language
    return sum(bool(t.strip()) and detect_language(t) == x for t, x in zip(texts, langs)) / max(len(langs), 1)


def answer_language(texts: Sequence[str], langs: Sequence[str | None]) -> dict:
    """For a translated suite (its rows carry "lang"): the share of answers in the row's language
    (TransLLM's answer-language rate). Empty for English suites."""
    want = [x or "en" for x in langs]
    if all(x == "en" for x in want):
        return {}
    return {"answer_language_rate": language_rate(texts, want), "answer_language": "+".join(sorted(set(want)))}


# ------------------------------------------------------------------ GSM8K

# A minus sign counts only when it does not follow a digit: in "5-3" the last number is 3.
_NUMBER = re.compile(r"(?<![\d.])-?\d[\d,]*(?:\.\d+)?|(?<![\d.])-?\.\d+")


def extract_number(text: str) -> float | None:
    """The last number in ``text`` (commas dropped), or None."""
    t = text.replace("\u2212", "-")  # unicode minus
    found = _NUMBER.findall(t)
    while found:
        s = found.pop().replace(",", "")
        try:
            return float(s)
        except ValueError:  # e.g. a lone "-," never parses; try the one before
            continue
    return None


def gsm8k_gold(answer: str) -> float:
    if "####" not in answer:
        raise ValueError(f"no '#### <number>' in GSM8K answer {answer[-60:]!r}")
    v = extract_number(answer.rsplit("####", 1)[1])
    if v is None:
        raise ValueError(f"no number after '####' in {answer[-60:]!r}")
    return v


def same_number(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))


def gsm8k_accuracy(responses: Sequence[str], golds: Sequence[float]) -> tuple[list[dict], dict]:
    rows = []
    for r, g in zip(responses, golds):
        p = extract_number(r)
        rows.append({"pred": p, "gold": g, "correct": same_number(p, g)})
    n = len(rows)
    return rows, {"accuracy": sum(r["correct"] for r in rows) / n if n else 0.0, "n": n,
                  "n_correct": sum(r["correct"] for r in rows), "n_no_number": sum(r["pred"] is None for r in rows)}


# ------------------------------------------------------------------ the suites: data, prompts, runs

def load_plain(cfg, path, limit) -> list[dict]:
    return load_instructions(path, limit, cfg.seed)


def load_gsm8k(cfg, path, limit) -> list[dict]:
    rows = load_instructions(path, limit, cfg.seed)
    for r in rows:
        try:
            r["gold"] = gsm8k_gold(r.get("answer") or "")
        except ValueError as e:
            raise UserError(f"{path}: row {r['id']}: answer: {e}") from None
    return rows


def advbench_prompts(ctx: Ctx, items: list) -> list[str]:
    return [prompts.chat(ctx.loaded.tokenizer, r["instruction"]) for r in items]


def gsm8k_prompts(ctx: Ctx, items: list) -> list[str]:
    def template(r):  # a translated question gets its language's instruction, unless one was given
        own = ctx.cfg.gsm8k_template != GSM8K_TEMPLATE
        return ctx.cfg.gsm8k_template if own else GSM8K_TEMPLATES.get(r.get("lang"), GSM8K_TEMPLATE)
    return [prompts.chat(ctx.loaded.tokenizer, template(r).format(question=r["instruction"])) for r in items]


def run_advbench(ctx: Ctx, items: list) -> dict:
    given = ctx.cfg.refusal_keywords
    kws = [given or refusal_keywords(r.get("lang")) for r in items]
    outs = ctx.first("advbench", advbench_prompts(ctx, items))
    rows = [{"id": r["id"], "goal": r["instruction"], "response": o["text"], "refusal": is_refusal(o["text"], kw)}
            for r, o, kw in zip(items, outs, kws)]
    atomic_write_jsonl(items_path(ctx.run_dir, "advbench"), rows)
    n = sum(r["refusal"] for r in rows)
    langs = sorted({r.get("lang") or "en" for r in items})
    return {"refusal_rate": n / len(rows) if rows else 0.0, "n": len(rows), "n_refused": n,
            "keywords": list(given) if given else "gcg" + "".join(f"+{x}" for x in langs if x != "en"),
            **answer_language([o["text"] for o in outs], [r.get("lang") for r in items])}


def run_gsm8k(ctx: Ctx, items: list) -> dict:
    outs = ctx.first("gsm8k", gsm8k_prompts(ctx, items))
    scored, summary = gsm8k_accuracy([o["text"] for o in outs], [r["gold"] for r in items])
    rows = [{"id": r["id"], "question": r["instruction"], **s, "response": o["text"]}
            for r, s, o in zip(items, scored, outs)]
    atomic_write_jsonl(items_path(ctx.run_dir, "gsm8k"), rows)
    return {**summary, "template": ctx.cfg.gsm8k_template,
            **answer_language([o["text"] for o in outs], [r.get("lang") for r in items])}


register(
    name="advbench", data="advbench/harmful_behaviors.csv", hub=ADVBENCH_HUB, max_tokens=64,
    load=load_plain, prompts=advbench_prompts, run=run_advbench,
    headline=lambda s: f"refusal {100 * s['refusal_rate']:.1f}% of {s['n']}",
    items="advbench.jsonl", outcome=Outcome("id", lambda r: float(r["refusal"]), "advbench"),
    columns=(Column("advbench", "AdvBench refusal", "pct", True),),
    summary=lambda s: pick(s, {"advbench": "refusal_rate"}, float), general=("refusal_rate", "n"),
    html=Html("AdvBench", ("harmful request",), key=lambda r: str(r["id"]), head=lambda r: [out_block(r["goal"])],
              cell=lambda r: meta(badge(bool(r["refusal"]), "refused", "answered")) + out_block(r["response"])),
)

register(
    name="gsm8k", data="gsm8k/test.jsonl", hub=GSM8K_HUB, max_tokens=384,
    load=load_gsm8k, prompts=gsm8k_prompts, run=run_gsm8k,
    headline=lambda s: f"accuracy {100 * s['accuracy']:.1f}% of {s['n']}",
    items="gsm8k.jsonl", outcome=Outcome("id", lambda r: float(r["correct"]), "gsm8k"),
    columns=(Column("gsm8k", "GSM8K", "pct", True),),
    summary=lambda s: pick(s, {"gsm8k": "accuracy"}, float), general=("accuracy", "n"),
    html=Html("GSM8K", ("question",), key=lambda r: str(r["id"]),
              head=lambda r: [out_block(r["question"]) + meta(f"gold {esc(r['gold'])}")],
              cell=lambda r: meta(badge(bool(r["correct"]), "correct", "wrong"), f"answer {esc(r.get('pred'))}")
              + out_block(r["response"])),
)
