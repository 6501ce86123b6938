"""The judge of MT-Bench and AlpacaEval answers: MT-Bench's single-answer prompts (1-10), sent to an
OpenAI-compatible endpoint or to a local MLX model, every reply cached like any generation.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import prompts
from ..fileio import JsonlAppender, UserError, atomic_write_jsonl, iter_jsonl, read_json
from .context import Generator, model_key, read_cache, sha1


# FastChat llm_judge/data/judge_prompts.jsonl: "single-v1" and "single-v1-multi-turn". The
# reference-guided math variants are not used: the judge sees only prompts and answers.
_JUDGE_RULES = ("Please act as an impartial judge and evaluate the quality of the response provided by an AI "
                "assistant to the user question displayed below. Your evaluation should consider factors such "
                "as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
                "response. ")

_JUDGE_RATING = ("Be as objective as possible. After providing your explanation, you must rate the response "
                 "on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for example: "
                 "\"Rating: [[5]]\".")

JUDGE_SINGLE_SYSTEM = "You are a helpful assistant."

JUDGE_SINGLE = ("[Instruction]\n" + _JUDGE_RULES + "Begin your evaluation by providing a short explanation. "
                + _JUDGE_RATING + "\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
                "[The End of Assistant's Answer]")

JUDGE_MULTI_SYSTEM = (_JUDGE_RULES + "You evaluation should focus on the assistant's answer to the second user "
                      "question. Begin your evaluation by providing a short explanation. " + _JUDGE_RATING + "\n\n")

JUDGE_MULTI = ("<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
               "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
               "<|The End of Assistant A's Conversation with User|>")


def judge_single(question: str, answer: str) -> tuple[str, str]:
    return JUDGE_SINGLE_SYSTEM, JUDGE_SINGLE.format(question=question, answer=answer)


def judge_multi(q1: str, a1: str, q2: str, a2: str) -> tuple[str, str]:
    return JUDGE_MULTI_SYSTEM, JUDGE_MULTI.format(question_1=q1, answer_1=a1, question_2=q2, answer_2=a2)


def parse_rating(text: str) -> float | None:
    """FastChat's rating parser: ``[[x]]``, else ``[x]``; None when absent or off the 1-10 scale."""
    m = re.search(r"\[\[(\d+\.?\d*)\]\]", text) or re.search(r"\[(\d+\.?\d*)\]", text)
    if not m:
        return None
    v = float(m.group(1))
    return v if 1 <= v <= 10 else None


def chat_endpoint(url: str) -> str:
    u = url.rstrip("/")
    if u.endswith("/chat/completions"):
        return u
    return u + ("/chat/completions" if u.endswith("/v1") else "/v1/chat/completions")


def openai_chat(url: str, model: str, system: str, user: str, api_key: str | None = None,
                max_tokens: int = 2048, timeout: float = 300.0, retries: int = 3) -> str:
    """One greedy completion from an OpenAI-compatible server (llama.cpp, vLLM, mlx_lm.server, LM Studio,
    Ollama, OpenAI)."""
    body = json.dumps({"model": model, "temperature": 0, "max_tokens": max_tokens,
                       "messages": [{"role": "system", "content": system},
                                    {"role": "user", "content": user}]}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    endpoint = chat_endpoint(url)
    for attempt in range(retries + 1):
        try:
            req = urllib.request.Request(endpoint, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=timeout) as r:
                data = json.loads(r.read().decode("utf-8"))
            return data["choices"][0]["message"]["content"] or ""
        except urllib.error.HTTPError as e:
            if e.code in (429, 500, 502, 503, 504) and attempt < retries:
                time.sleep(2 ** attempt)
                continue
            raise UserError(f"judge {endpoint}: HTTP {e.code} {e.reason}{_server_says(e, model)}") from None
        except TimeoutError:
            # Not retried: a local server is still generating the reply that timed out, and a retry
            # would only queue the same work behind it.
            raise UserError(f"judge {endpoint}: no reply within {timeout:g} s") from None
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException) as e:
            if attempt < retries:
                time.sleep(2 ** attempt)
                continue
            raise UserError(f"judge {endpoint}: cannot connect ({getattr(e, 'reason', e)})") from None
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise UserError(f"judge {endpoint}: unexpected response ({type(e).__name__}: {e})") from None
    raise AssertionError("unreachable")


def _server_says(e: urllib.error.HTTPError, model: str) -> str:
    """The server's own reason (OpenAI, Ollama, LM Studio and mlx_lm.server send one in the body):
    HTTP 404 alone does not tell a wrong URL from a model name the server does not serve."""
    try:
        raw = e.read(2000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        raw = ""
    try:
        err = json.loads(raw).get("error", raw)
        msg = err.get("message", err) if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = raw
    msg = " ".join(str(msg).split())[:300]
    hint = f" (is --judge-api-model {model!r} a model this server serves?)" if e.code == 404 else ""
    return (f": {msg}" if msg else "") + hint


def judge_fn(cfg, cache_dir: Path):
    """(system, user) prompts -> judge replies, cached like every other generation."""
    if cfg.judge_model:
        from ..models import load, resolve
        loaded = load(cfg.judge_model, dtype=cfg.dtype)
        gen = Generator(loaded, model_key(resolve(cfg.judge_model), None, loaded.dtype), cache_dir,
                        cfg.batch_size, cfg.seed, "judge", cfg.progress)
        return lambda items: [o["text"] for o in gen("judge", [prompts.chat(loaded.tokenizer, u, s) for s, u in items],
                                                     cfg.judge_max_tokens)]
    api_key = cfg.judge_api_key or os.environ.get("RADIS_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")

    def ask(items):
        path = cache_dir / "judge.jsonl"
        cached, out = read_cache(path), []
        with JsonlAppender(path) as w:
            for s, u in items:
                k = sha1(cfg.judge_url, cfg.judge_api_model, s, u, cfg.judge_max_tokens)
                if k not in cached:
                    text = openai_chat(cfg.judge_url, cfg.judge_api_model, s, u, api_key, cfg.judge_max_tokens)
                    cached[k] = {"key": k, "text": text}
                    w.write(cached[k])
                out.append(cached[k]["text"])
        return out
    return ask


def judge_run(cfg, run_dir: Path, res: dict, ask) -> None:
    judge_id = cfg.judge_model or f"{cfg.judge_url} ({cfg.judge_api_model})"
    mt = res["suites"].get("mtbench")
    if mt and Path(mt["answers"]).exists():
        recs = [row for _, row in iter_jsonl(mt["answers"])]
        from .suites import load_inputs
        qs = {str(r["id"]): r for r in load_inputs(cfg, "mtbench")}
        items, where = [], []
        for rec in recs:
            q, (a1, a2) = qs[str(rec["question_id"])]["turns"], rec["choices"][0]["turns"]
            items += [judge_single(q[0], a1), judge_multi(q[0], a1, q[1], a2)]
            where += [(rec["question_id"], 1), (rec["question_id"], 2)]
        replies = ask(items)
        rows = [{"question_id": qid, "turn": t, "judge": judge_id, "score": parse_rating(r), "judgment": r}
                for (qid, t), r in zip(where, replies)]
        atomic_write_jsonl(run_dir / "mt_bench" / "judgments.jsonl", rows)
        mt.update(_judged(rows, judge_id))
        for t in (1, 2):
            mt[f"score_turn{t}"] = _judged([r for r in rows if r["turn"] == t], judge_id)["score"]
    al = res["suites"].get("alpacaeval")
    if al and Path(al["outputs"]).exists():
        recs = read_json(al["outputs"])
        replies = ask([judge_single(r["instruction"], r["output"]) for r in recs])
        rows = [{"instruction": r["instruction"], "judge": judge_id, "score": parse_rating(x), "judgment": x}
                for r, x in zip(recs, replies)]
        atomic_write_jsonl(run_dir / "alpaca_eval" / "judgments.jsonl", rows)
        al.update(_judged(rows, judge_id))


def _judged(rows: list[dict], judge_id: str) -> dict:
    ok = [r["score"] for r in rows if r["score"] is not None]
    return {"score": sum(ok) / len(ok) if ok else None, "judged": True, "judge": judge_id,
            "n_judged": len(ok), "n_unparsed": len(rows) - len(ok),
            "note": "MT-Bench single-answer judge prompts (single-v1, single-v1-multi-turn), no reference answers"}
