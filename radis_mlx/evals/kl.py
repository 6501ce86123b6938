"""KL(base ‖ model): forgetting measured so that sharpening cannot pass for retention.

Which KL, and why. The forward KL(p_base ‖ q_model) = sum_v p(v) log p(v)/q(v) at every answer
token of the BASE model's own greedy answers to general prompts (the retention suite's answers,
shared, so the items are disjoint by id from every training instruction as retention's are), then
the mean per token. Forward, under p: it is mass-covering, so it grows wherever the fine-tune takes
probability from anything the base would say, not only from the base's argmax token. It is >= 0
and 0 only where the model predicts as the base does. The retention NLL (-log q of the base's
greedy token) is not: a model that sharpens toward the base's own greedy voice (seqkd, replay)
scores *below* the base there. Under KL that sharpening is a change like any other.

Memory. The base's distribution at an answer token is kept as its top-k tokens and their
log-probs plus one bucket for the remaining mass; the model's is read at the same k tokens plus
its own remainder. The KL between these (k+1)-bucket coarsenings is >= 0, 0 when q = p, never
above the full-vocabulary KL (the log-sum inequality), and exact when the top k hold all the mass.
k = 64 keeps 64 of Qwen's 151,936 words per token. The base's top-k are computed once per base
model and prompts, one atomic .npz per answer under OUT/_retention/<base>/kl_topk/ (an interrupted
eval keeps what it finished).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import prompts
from ..fileio import JsonlAppender, atomic_write_bytes, atomic_write_jsonl
from ..results import Column, meta, pick
from . import retention
from .context import Ctx, read_cache, sha1
from .general import load_plain
from .suites import ALPACAEVAL_HUB, Html, Outcome, items_path, register

FLOOR = 1e-30  # the remainder mass never reaches log(0): top-k holding all the mass leaves ~0, not NaN


def _log_rest(logp_top):
    """log of the mass outside the top-k, from their log-probs (mlx, last axis)."""
    import mlx.core as mx
    return mx.log(mx.maximum(1.0 - mx.exp(logp_top).sum(axis=-1), FLOOR))


def _answer_span(seq: tuple[list[int], int]) -> slice:
    ids, n_prompt = seq
    return slice(max(n_prompt - 1, 0), len(ids) - 1)  # position t predicts token t+1, as retention's mask


def base_topk(model, seqs: Sequence[tuple[list[int], int]], k: int, max_batch_tokens: int = 2048) -> list[dict]:
    """Per ``(ids, n_prompt)``: at each answer token the top-k token ids, their log-probs and the log of
    the rest's mass (numpy: ``ids`` (n, k) int32, ``logp`` (n, k), ``log_rest`` (n,), float32)."""
    import mlx.core as mx
    import numpy as np

    out: list[dict | None] = [None] * len(seqs)
    for batch, logits, _, _ in retention.forward_batches(model, seqs, max_batch_tokens):
        if logits is None:
            for j in batch:
                out[j] = {"ids": np.zeros((0, k), np.int32), "logp": np.zeros((0, k), np.float32),
                          "log_rest": np.zeros((0,), np.float32)}
            continue
        V = logits.shape[-1]
        kk = min(k, V)
        ids = mx.argpartition(logits, V - kk, axis=-1)[..., V - kk:]  # the k largest, in no order: no negated copy
        logp = mx.take_along_axis(logits, ids, axis=-1) - mx.logsumexp(logits, axis=-1, keepdims=True)
        rest = _log_rest(logp)
        mx.eval(ids, logp, rest)
        ids, logp, rest = np.array(ids), np.array(logp), np.array(rest)
        for r, j in enumerate(batch):
            sp = _answer_span(seqs[j])
            out[j] = {"ids": ids[r, sp].astype(np.int32), "logp": logp[r, sp], "log_rest": rest[r, sp]}
    return out  # type: ignore[return-value]


def bucket_kl(p_logp, p_log_rest, q_logp, q_log_rest):
    """Per position: KL between the (k+1)-bucket coarsenings (numpy float64; arrays (n, k) and (n,))."""
    import numpy as np
    p, q = np.asarray(p_logp, np.float64), np.asarray(q_logp, np.float64)
    pr, qr = np.asarray(p_log_rest, np.float64), np.asarray(q_log_rest, np.float64)
    return (np.exp(p) * (p - q)).sum(axis=-1) + np.exp(pr) * (pr - qr)


def model_kl(model, seqs: Sequence[tuple[list[int], int]], tops: Sequence[dict],
             max_batch_tokens: int = 2048) -> list[tuple[float, int]]:
    """Summed KL(base ‖ model) over each sequence's answer tokens, and their count."""
    import mlx.core as mx
    import numpy as np

    out: list[tuple[float, int] | None] = [None] * len(seqs)
    for batch, logits, _, _ in retention.forward_batches(model, seqs, max_batch_tokens):
        if logits is None:
            for j in batch:
                out[j] = (0.0, 0)
            continue
        k = tops[batch[0]]["ids"].shape[1]
        ids = np.zeros((*logits.shape[:2], k), np.int32)  # padding reads token 0, then is never summed
        for r, j in enumerate(batch):
            ids[r, _answer_span(seqs[j])] = tops[j]["ids"]
        q = mx.take_along_axis(logits, mx.array(ids), axis=-1) - mx.logsumexp(logits, axis=-1, keepdims=True)
        rest = _log_rest(q)
        mx.eval(q, rest)
        q, rest = np.array(q), np.array(rest)
        for r, j in enumerate(batch):
            sp, t = _answer_span(seqs[j]), tops[j]
            kl = bucket_kl(t["logp"], t["log_rest"], q[r, sp], rest[r, sp])
            out[j] = (float(kl.sum()), int(kl.shape[0]))
    return out  # type: ignore[return-value]


def _save_npz(path: Path, top: dict) -> None:
    import io

    import numpy as np
    buf = io.BytesIO()
    np.savez(buf, **top)
    atomic_write_bytes(path, buf.getvalue())


def _load_npz(path: Path) -> dict:
    import numpy as np
    with np.load(path) as z:
        return {k: z[k] for k in ("ids", "logp", "log_rest")}


def kl_base(cfg, base: str | None, items: list, mt: int, loaded=None) -> list[tuple[dict, dict]]:
    """The base model's answers (retention's, shared) and its top-k at each answer token, computed
    once per base model and prompts. Loads the base at most once, and only when something is missing."""
    from ..models import load

    d, bkey, _ = retention.retention_dir(cfg, base)
    k = cfg.kl_top_k
    # retention_base's answer keys, so the path names are known before any answer exists
    paths = [d / "kl_topk" / f"{sha1(sha1(bkey, r['instruction'], mt), k)}.npz" for r in items]
    if loaded is None and not all(p.is_file() for p in paths):
        loaded = load(base, dtype=cfg.dtype)
    answers = retention.retention_base(cfg, base, items, mt, loaded)
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    if todo:
        tok = loaded.tokenizer
        seqs = [_seq(tok, answers[i]) for i in todo]
        for i, top in zip(todo, base_topk(loaded.model, seqs, k, cfg.nll_batch_tokens)):
            _save_npz(paths[i], top)
    return [(a, _load_npz(p)) for a, p in zip(answers, paths)]


def _seq(tok, answer: dict) -> tuple[list[int], int]:
    return retention.answer_ids(tok, prompts.chat(tok, answer["instruction"]), answer["answer"],
                                answer["finish"] == "stop")


def prepare(cfg, base, items, mt, loaded=None) -> None:
    kl_base(cfg, base, items, mt, loaded)


def run_kl(ctx: Ctx, items: list) -> dict:
    cfg, spec = ctx.cfg, ctx.spec
    base = retention.base_of(cfg, spec)
    # the harness computed the base's part before loading this model (or this model is the base)
    based = kl_base(cfg, base, items, ctx.max_tokens["kl"], ctx.loaded if retention.is_base(cfg, spec) else None)
    keys = [sha1(ctx.key, a["key"], cfg.kl_top_k) for a, _ in based]
    cache = ctx.run_dir / "cache" / "kl.jsonl"
    have = read_cache(cache)
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        seqs = [_seq(ctx.loaded.tokenizer, based[i][0]) for i in todo]
        kls = model_kl(ctx.loaded.model, seqs, [based[i][1] for i in todo], cfg.nll_batch_tokens)
        with JsonlAppender(cache) as w:
            for i, (s, n) in zip(todo, kls):
                w.write({"key": keys[i], "kl_sum": s, "n": n})
                have[keys[i]] = {"kl_sum": s, "n": n}
    rows = [{"id": it["id"], "instruction": a["instruction"], "answer": a["answer"], "kl_sum": have[k]["kl_sum"],
             "n": have[k]["n"]} for it, (a, _), k in zip(items, based, keys)]
    atomic_write_jsonl(items_path(ctx.run_dir, "kl"), rows)
    n = sum(r["n"] for r in rows)
    return {"kl": sum(r["kl_sum"] for r in rows) / n if n else None, "n": len(rows), "n_tokens": n,
            "top_k": cfg.kl_top_k, "base_model": base or "default",
            "base_model_path": retention.retention_dir(cfg, base)[2]}


def headline(s: dict) -> str:
    return "no tokens" if s.get("kl") is None else f"KL(base||model) {s['kl']:.4f} per token of {s['n']} answers"


register(
    name="kl", data="alpaca_eval/alpaca_eval_instructions.jsonl", hub=ALPACAEVAL_HUB, data_from="alpacaeval",
    max_tokens=256, load=load_plain, run=run_kl, base_prep=prepare, headline=headline,
    settings=lambda cfg: {"base_model": cfg.base_model, "top_k": cfg.kl_top_k},
    items="kl.jsonl", outcome=Outcome("id", lambda r: r["kl_sum"] / max(r["n"], 1), "kl"),
    columns=(Column("kl", "KL(base‖model)", "f4", False, plot="KL(base ‖ model) per token (lower = less forgetting)"),),
    summary=lambda s: pick(s, {"kl": "kl"}),
    html=Html("KL(base ‖ model)", ("instruction",), key=lambda r: str(r["id"]), head=retention.item_head,
              cell=lambda r: meta(f"KL/token {r['kl_sum'] / max(r['n'], 1):.4f}", f"{r['n']} tokens")),
)
