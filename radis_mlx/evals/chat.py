"""Chat: MT-Bench (two turns) and AlpacaEval answers, saved in FastChat / AlpacaEval formats for
judging, optionally scored 1-10 here by a judge with MT-Bench's single-answer prompts (judge.py).
"""

from __future__ import annotations

import time

from .. import prompts
from ..data import load_instructions
from ..fileio import UserError, atomic_write_json, atomic_write_jsonl
from ..results import Column, esc, out_block
from .context import Ctx
from .general import advbench_prompts, answer_language, load_plain
from .suites import ALPACAEVAL_HUB, MTBENCH_HUB, Html, items_path, register

alpacaeval_prompts = advbench_prompts  # both: the instruction as the one user turn


def mtbench_record(question_id, model_id: str, turns: list[str]) -> dict:
    """FastChat llm_judge model_answer row."""
    import hashlib

    aid = hashlib.sha1(f"{model_id}\x00{question_id}\x00{turns}".encode()).hexdigest()[:22]
    return {"question_id": question_id, "answer_id": aid, "model_id": model_id,
            "choices": [{"index": 0, "turns": turns}], "tstamp": time.time()}


def alpaca_record(instruction: str, output: str, generator: str, dataset: str | None) -> dict:
    return {"instruction": instruction, "output": output, "generator": generator,
            "dataset": dataset or "alpaca_eval"}


def load_mtbench(cfg, path, limit) -> list[dict]:
    rows = load_instructions(path, limit, cfg.seed)
    for r in rows:
        if len(r.get("turns") or []) < 2:
            raise UserError(f"{path}: question {r['id']}: turns: MT-Bench needs two turns")
    return rows


def mtbench_prompts(ctx: Ctx, items: list) -> list[str]:
    return [prompts.chat(ctx.loaded.tokenizer, r["turns"][0]) for r in items]


def run_mtbench(ctx: Ctx, items: list) -> dict:
    tok, mt = ctx.loaded.tokenizer, ctx.max_tokens["mtbench"]
    q1 = [r["turns"][0] for r in items]
    a1 = [o["text"].strip() for o in ctx.first("mtbench", mtbench_prompts(ctx, items))]
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a},
              {"role": "user", "content": r["turns"][1]}] for q, a, r in zip(q1, a1, items)]
    a2 = [o["text"].strip() for o in ctx.gen("mtbench", [prompts.chat_turns(tok, c) for c in convs], mt)]
    recs = [mtbench_record(_qid(r), ctx.name, [x, y]) for r, x, y in zip(items, a1, a2)]
    path = items_path(ctx.run_dir, "mtbench", ctx.name)
    atomic_write_jsonl(path, recs)
    return {"score": None, "judged": False, "n": len(recs), "answers": str(path),
            "note": "not judged: answers saved in FastChat llm_judge format for external judging",
            **answer_language(a1, [r.get("lang") for r in items])}


def _qid(r: dict):
    v = r.get("question_id", r["id"])
    return int(v) if isinstance(v, str) and v.isdigit() else v


def run_alpacaeval(ctx: Ctx, items: list) -> dict:
    outs = ctx.first("alpacaeval", alpacaeval_prompts(ctx, items))
    recs = [alpaca_record(r["instruction"], o["text"].strip(), ctx.name, r.get("dataset"))
            for r, o in zip(items, outs)]
    path = items_path(ctx.run_dir, "alpacaeval")
    atomic_write_json(path, recs)
    return {"score": None, "judged": False, "n": len(recs), "outputs": str(path),
            "note": "not judged: outputs saved in AlpacaEval format for external judging",
            **answer_language([o["text"] for o in outs], [r.get("lang") for r in items])}


def _score(suite: str):
    """A summary -> its report field: the judge's score, or "not judged" (answers saved, no judge)."""
    return lambda s: {suite: s["score"] if s.get("score") is not None else "not judged"}


def _mtbench_cell(r: dict) -> str:
    turns = r["choices"][0]["turns"]
    return "".join(f'<div class="tag">turn {i + 1}</div>' + out_block(t) for i, t in enumerate(turns))


register(
    name="mtbench", data="mt_bench/question.jsonl", hub=MTBENCH_HUB, max_tokens=512,
    load=load_mtbench, prompts=mtbench_prompts, run=run_mtbench,
    items="mt_bench/model_answer/*.jsonl",  # FastChat's layout: one file per model
    columns=(Column("mtbench", "MT-Bench", "f2", True),), summary=_score("mtbench"),
    html=Html("MT-Bench answers", ("question",), key=lambda r: str(r["question_id"]),
              head=lambda r: [f'<div class="tag">question {esc(r["question_id"])}</div>'], cell=_mtbench_cell),
)

register(
    name="alpacaeval", data="alpaca_eval/alpaca_eval_instructions.jsonl", hub=ALPACAEVAL_HUB, max_tokens=512,
    load=load_plain, prompts=alpacaeval_prompts, run=run_alpacaeval,
    items="alpaca_eval/model_outputs.json",  # AlpacaEval's format: one JSON list
    columns=(Column("alpacaeval", "AlpacaEval", "f2", True),), summary=_score("alpacaeval"),
    html=Html("AlpacaEval outputs", ("instruction",), key=lambda r: r["instruction"],
              head=lambda r: [out_block(r["instruction"])], cell=lambda r: out_block(r["output"])),
)
