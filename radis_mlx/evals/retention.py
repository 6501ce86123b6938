"""Self-retention: how much of the base model's own behaviour a fine-tune forgot, without a judge.

The mean per-token NLL, under the evaluated model, of the BASE model's own greedy answers to
general prompts; its increase over the base model's own NLL is the forgetting. The base answers
and their NLLs are computed once per base model (OUT/_retention/<base>/) and shared by every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import prompts
from ..backend import resolve_dtype
from ..fileio import JsonlAppender, atomic_write_jsonl
from ..results import Column, meta, out_block
from .context import Ctx, Generator, ModelSpec, model_key, read_cache, run_name, sha1
from .general import load_plain
from .suites import ALPACAEVAL_HUB, Html, Outcome, items_path, register


def forward_batches(model, seqs: Sequence[tuple[list[int], int]], max_batch_tokens: int = 2048):
    """Yield ``(indices, logits, targets, mask)`` over batches of ``(ids, n_prompt)`` rows, where ``logits[r, t]``
    predicts token t+1 of row ``indices[r]`` and ``mask`` marks the answer's tokens (float32).

    Batched forward over right-padded rows: with a causal mask the padding at the end can't
    change the logits of earlier positions, so no attention mask is needed. Batches are capped
    by token count because the logits are (batch, length, vocab). Rows shorter than 2 tokens
    come as a batch with ``logits`` None (nothing to predict).
    """
    import mlx.core as mx
    import numpy as np

    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    i = 0
    while i < len(order):
        batch = [order[i]]
        while (i + len(batch) < len(order)
               and (len(batch) + 1) * len(seqs[order[i + len(batch)]][0]) <= max_batch_tokens):
            batch.append(order[i + len(batch)])
        i += len(batch)
        T = max(len(seqs[k][0]) for k in batch)
        x = np.zeros((len(batch), T), dtype=np.int32)
        mask = np.zeros((len(batch), max(T - 1, 1)), dtype=np.float32)
        for r, k in enumerate(batch):
            ids, n_prompt = seqs[k]
            x[r, :len(ids)] = ids
            mask[r, max(n_prompt - 1, 0):len(ids) - 1] = 1.0  # position t predicts token t+1
        if T < 2:
            yield batch, None, None, None
            continue
        yield batch, model(mx.array(x[:, :-1])).astype(mx.float32), mx.array(x[:, 1:]), mx.array(mask)


def sequence_nll(model, seqs: Sequence[tuple[list[int], int]], max_batch_tokens: int = 2048) -> list[tuple[float, int]]:
    """Summed NLL and count of the tokens after the prompt, for each ``(ids, n_prompt)``."""
    import mlx.core as mx
    import mlx.nn as nn

    out: list[tuple[float, int] | None] = [None] * len(seqs)
    for batch, logits, targets, m in forward_batches(model, seqs, max_batch_tokens):
        if logits is None:
            for k in batch:
                out[k] = (0.0, 0)
            continue
        ce = nn.losses.cross_entropy(logits, targets, reduction="none")
        sums, counts = (ce * m).sum(axis=1), m.sum(axis=1)
        mx.eval(sums, counts)
        for r, k in enumerate(batch):
            out[k] = (float(sums[r].item()), int(counts[r].item()))
    return out  # type: ignore[return-value]


def answer_ids(tokenizer, prompt_text: str, answer: str, finished: bool) -> tuple[list[int], int]:
    """Prompt + answer token ids (plus the end-of-turn token when the answer ended on its own)."""
    from .. import prompts

    p = prompts.encode(tokenizer, prompt_text)
    a = tokenizer.encode(answer, add_special_tokens=False) if answer else []
    if finished:
        eot = prompts.end_of_turn(tokenizer)
        a = a + (tokenizer.encode(eot, add_special_tokens=False) if eot else [])
    return p + a, len(p)


def mean_nll(parts: Sequence[tuple[float, int]]) -> float | None:
    n = sum(c for _, c in parts)
    return sum(s for s, _ in parts) / n if n else None


def retention_dir(cfg, base: str | None) -> tuple[Path, str, str]:
    from ..models import resolve

    path = resolve(base)
    bkey = model_key(path, None, resolve_dtype(cfg.dtype))
    return Path(cfg.out) / "_retention" / f"{run_name(ModelSpec(base))}-{bkey[:10]}", bkey, path


def retention_base(cfg, base: str | None, items: list, mt: int, loaded=None) -> list[dict]:
    """The base model's own greedy answers and their NLL under it, computed once per base model.

    ``mt``: max new tokens of an answer; ``loaded``: the base model when the caller already has it in memory.
    """
    from ..models import load

    d, bkey, _ = retention_dir(cfg, base)
    ikeys = [sha1(bkey, r["instruction"], mt) for r in items]
    ans_path = d / "answers.jsonl"
    have = read_cache(ans_path)
    missing = [i for i, k in enumerate(ikeys) if k not in have]
    if missing:
        loaded = loaded or load(base, dtype=cfg.dtype)
        tok = loaded.tokenizer
        gen = Generator(loaded, bkey, d / "cache", cfg.batch_size, cfg.seed, f"base {run_name(ModelSpec(base))}",
                        cfg.progress)
        texts = [prompts.chat(tok, items[i]["instruction"]) for i in missing]
        outs = gen("retention", texts, mt)
        nll = sequence_nll(loaded.model, [answer_ids(tok, t, o["text"], o["finish"] == "stop")
                                          for t, o in zip(texts, outs)], cfg.nll_batch_tokens)
        with JsonlAppender(ans_path) as w:
            for i, o, (s, n) in zip(missing, outs, nll):
                row = {"key": ikeys[i], "instruction": items[i]["instruction"], "answer": o["text"],
                       "finish": o["finish"], "base_nll_sum": s, "base_n": n}
                w.write(row)
                have[row["key"]] = row
    return [have[k] for k in ikeys]


def base_of(cfg, spec: ModelSpec) -> str | None:
    return cfg.base_model if cfg.base_model is not None else spec.model


def is_base(cfg, spec: ModelSpec) -> bool:
    """Is this model its own retention base (then its loaded copy answers for the base)?"""
    from ..models import resolve
    return not spec.adapter and resolve(spec.model) == resolve(base_of(cfg, spec))


def run_retention(ctx: Ctx, items: list) -> dict:
    cfg, spec = ctx.cfg, ctx.spec
    base = base_of(cfg, spec)
    # evaluate() built these before loading this model (or this model is the base), so two models
    # are never in memory at once
    answers = retention_base(cfg, base, items, ctx.max_tokens["retention"], ctx.loaded if is_base(cfg, spec) else None)
    tok = ctx.loaded.tokenizer
    keys = [sha1(ctx.key, a["key"]) for a in answers]
    cache = ctx.run_dir / "cache" / "retention_nll.jsonl"
    have = read_cache(cache)
    if retention_dir(cfg, base)[1] == ctx.key:  # the model is its own base: same forward, same numbers
        have.update({k: {"nll_sum": a["base_nll_sum"], "n": a["base_n"]} for k, a in zip(keys, answers)})
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        seqs = [answer_ids(tok, prompts.chat(tok, answers[i]["instruction"]), answers[i]["answer"],
                                   answers[i]["finish"] == "stop") for i in todo]
        nll = sequence_nll(ctx.loaded.model, seqs, cfg.nll_batch_tokens)
        with JsonlAppender(cache) as w:
            for i, (s, n) in zip(todo, nll):
                w.write({"key": keys[i], "nll_sum": s, "n": n})
                have[keys[i]] = {"nll_sum": s, "n": n}
    rows = [{"instruction": a["instruction"], "answer": a["answer"], "nll_sum": have[k]["nll_sum"],
             "n": have[k]["n"], "base_nll_sum": a["base_nll_sum"], "base_n": a["base_n"]}
            for a, k in zip(answers, keys)]
    atomic_write_jsonl(items_path(ctx.run_dir, "retention"), rows)
    nll = mean_nll([(r["nll_sum"], r["n"]) for r in rows])
    base_nll = mean_nll([(r["base_nll_sum"], r["base_n"]) for r in rows])
    out = {"nll": nll, "base_nll": base_nll,
           "nll_increase": nll - base_nll if nll is not None and base_nll is not None else None,
           "n": len(rows), "n_tokens": sum(r["n"] for r in rows), "base_model": base or "default",
           "base_model_path": retention_dir(cfg, base)[2]}
    if any(r["n"] != r["base_n"] for r in rows):
        out["note"] = ("the evaluated and base tokenizers split the answers differently: "
                       "per-token NLLs are not directly comparable")
    return out


def headline(s: dict) -> str:
    if s.get("nll") is None:
        return "no tokens"
    return f"NLL {s['nll']:.3f} (base {s['base_nll']:.3f}, increase {s['nll_increase']:+.3f})"


def item_head(r: dict) -> list[str]:
    """report.html: the instruction and the base model's answer (retention's and kl's items)."""
    return [f'{out_block(r["instruction"])}<div class="tag">the base model\'s answer, '
            f'scored under every run:</div>' + out_block(r["answer"])]


def _item_cell(r: dict) -> str:
    nll, base = r["nll_sum"] / max(r["n"], 1), r["base_nll_sum"] / max(r["base_n"], 1)
    return meta(f"NLL/token {nll:.3f}", f"base {base:.3f}", f"{nll - base:+.3f}")


def _summary(s: dict) -> dict:
    if s.get("nll") is None:
        return {}
    return {"retention_nll": s["nll"], "retention_base_nll": s.get("base_nll"),
            "retention_increase": s.get("nll_increase")}


register(
    name="retention", data="alpaca_eval/alpaca_eval_instructions.jsonl", hub=ALPACAEVAL_HUB, data_from="alpacaeval",
    max_tokens=256, load=load_plain, run=run_retention, base_prep=retention_base, headline=headline,
    settings=lambda cfg: {"base_model": cfg.base_model},
    items="retention.jsonl",
    outcome=Outcome("instruction", lambda r: r["nll_sum"] / max(r["n"], 1), "retention_nll",
                    note="NLL per token of each base answer (lower is better)"),
    columns=(Column("retention_nll", "retention NLL", "f3", False),
             Column("retention_increase", "NLL increase", "f3", False,
                    plot="self-retention NLL increase (lower = less forgetting)")),
    summary=_summary,
    html=Html("Self-retention", ("instruction",), key=lambda r: r["instruction"], head=item_head, cell=_item_cell),
)
