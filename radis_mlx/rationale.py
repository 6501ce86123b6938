"""Stage 1 (`radis-mlx generate`): the model's own rationales, or a baseline's self-generated target.

Modes
- rationale-continue: the assistant turn is prefilled with the reference; the model's
  continuation is the rationale (RaDis, continuation mode), stored verbatim.
- rationale-explain: a user turn shows source + reference and asks for an explanation.
- seqkd: the model's own translation (self-SeqKD).
- sdft: the model rewrites the reference in its own words (SDFT); rejected rewrites keep it.
- replay: the model's own answers to general instructions (TransLLM's recovery KD).

The output JSONL is written append-only, one fsynced row at a time, in completion order;
a rerun skips finished ids. When every row is done the file is rewritten atomically in
input order, so an interrupted-and-resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import __version__, prompts
from .data import Pair, load_instructions, load_pairs
from .decode import DecodeConfig, decode
from .io import JsonlAppender, UserError, atomic_write_json, atomic_write_text, check_writable_dir, \
    iter_jsonl, json_line, read_json, repair_jsonl_tail
from .progress import Progress

MODES = ("rationale-continue", "rationale-explain", "seqkd", "sdft", "replay")


@dataclass
class GenerateConfig:
    data: str
    out: str
    mode: str = "rationale-continue"
    model: str | None = None
    teacher: str | None = None  # generate with another model (the paper's teacher ablation)
    pairs: str | None = None
    ref: str | None = None  # reference file for a plain-text source file
    split: str = "train"
    limit: int | None = None
    seed: int = 0
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 64
    translate_template: str = prompts.TRANSLATE
    explain_template: str = prompts.EXPLAIN
    system: str | None = None
    thinking: bool = False
    # Quality controls: a rejected row keeps the reference-only target and records why.
    min_tokens: int = 1
    max_len: int | None = None
    max_repeat: float = 0.5  # reject when this share of 4-grams are repeats (degenerate loops)
    unfinished: str = "trim"  # keep | trim (to the last sentence end) | drop
    ratio: float = 1.0  # keep rationales for a seeded fraction of rows only
    dtype: str = "auto"
    trust_remote_code: bool = False

    def fingerprint(self) -> dict:
        """Settings that change what a row contains; a rerun must match them to resume."""
        skip = {"out", "limit", "batch_size", "trust_remote_code"}
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        d["version"] = __version__
        return d


def repeat_share(tokens: list[int], n: int = 4) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def trim_to_sentence(text: str) -> str:
    cut = max(text.rfind(c) for c in (". ", ".\n", "! ", "? ", "。", "\n\n"))
    if text.rstrip().endswith((".", "!", "?", "。")):
        return text.rstrip()
    return text[:cut + 1] if cut > 0 else text


def in_ratio(row_id: str, ratio: float, seed: int) -> bool:
    if ratio >= 1.0:
        return True
    h = int(hashlib.sha1(f"{seed}:{row_id}".encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < ratio


def judge(cfg: GenerateConfig, text: str, tokens: list[int], finish: str) -> tuple[str, bool, str | None]:
    """Apply the filters: (text to store, kept, reason)."""
    if cfg.mode == "seqkd":
        text, _ = prompts.cut_translation(text)
    if finish == "length" and cfg.mode != "seqkd":
        if cfg.unfinished == "drop":
            return text, False, "unfinished"
        if cfg.unfinished == "trim":
            text = trim_to_sentence(text)
    if not text.strip():
        return text, False, "empty"
    if len(tokens) < cfg.min_tokens:
        return text, False, "too-short"
    if cfg.max_len and len(tokens) > cfg.max_len:
        return text, False, "too-long"
    if repeat_share(tokens) > cfg.max_repeat:
        return text, False, "repetition"
    if cfg.mode == "sdft" and prompts.sdft_rejected(text):
        return text, False, "sdft-banned"
    return text, True, None


def _meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def _summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


@dataclass
class Item:
    id: str
    prompt: str
    base: dict = field(default_factory=dict)  # the row's fixed fields (src, ref, ... or instruction)


def build_items(cfg: GenerateConfig, tokenizer) -> list[Item]:
    t = prompts.Templates(translate=cfg.translate_template, explain=cfg.explain_template, system=cfg.system)
    if cfg.mode == "replay":
        rows = load_instructions(cfg.data, limit=cfg.limit, seed=cfg.seed)
        return [Item(r["id"], prompts.chat(tokenizer, r["instruction"], cfg.system, thinking=cfg.thinking),
                     {"instruction": r["instruction"]}) for r in rows]
    pairs: list[Pair] = load_pairs(cfg.data, cfg.pairs, limit=cfg.limit, seed=cfg.seed, ref=cfg.ref,
                                   split=cfg.split)
    items = []
    for p in pairs:
        if cfg.mode == "rationale-continue":
            text = prompts.translation_prompt(tokenizer, p, t, prefill=p.ref)
        elif cfg.mode == "rationale-explain":
            text = prompts.explain_prompt(tokenizer, p, t)
        elif cfg.mode == "seqkd":
            text = prompts.translation_prompt(tokenizer, p, t)
        else:
            text = prompts.sdft_prompt(tokenizer, p, t)
        items.append(Item(p.id, text, {"src": p.src, "ref": p.ref, "src_lang": p.src_lang,
                                       "tgt_lang": p.tgt_lang}))
    return items


def _check_meta(cfg: GenerateConfig, out: Path) -> None:
    meta_path = _meta_path(out)
    fp = cfg.fingerprint()
    if out.exists() and out.stat().st_size > 0:
        if not meta_path.exists():
            raise UserError(f"{out}: exists but has no {meta_path.name}; it was not written by "
                            "`radis-mlx generate` — choose another --out")
        old = read_json(meta_path).get("settings", {})
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {fp.get(k)!r}" for k in diff[:5])
            raise UserError(f"{out}: was written with different settings ({shown}); use another --out "
                            "or the original settings to resume")
    else:
        atomic_write_json(meta_path, {"tool": f"radis-mlx {__version__}", "settings": fp})


def _done_rows(out: Path) -> dict[str, dict]:
    if not out.exists():
        return {}
    repair_jsonl_tail(out)
    done: dict[str, dict] = {}
    for _, row in iter_jsonl(out):
        done.setdefault(row["id"], row)
    return done


def generate(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Run the generate stage; returns the summary (also saved as ``<out>.summary.json``)."""
    from .models import load

    if cfg.mode not in MODES:
        raise UserError(f"unknown --mode {cfg.mode!r} (choose {', '.join(MODES)})")
    if cfg.unfinished not in ("keep", "trim", "drop"):
        raise UserError(f"unknown --unfinished {cfg.unfinished!r} (keep, trim, drop)")
    if not 0.0 <= cfg.ratio <= 1.0:
        raise UserError(f"--ratio must be in [0, 1], got {cfg.ratio}")
    out = Path(cfg.out)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out names a .jsonl file")
    check_writable_dir(out.parent)
    t0 = time.perf_counter()
    # Fail on bad data before loading a model: readers only need a tokenizer-free pass first.
    if cfg.mode != "replay":
        load_pairs(cfg.data, cfg.pairs, limit=cfg.limit, seed=cfg.seed, ref=cfg.ref, split=cfg.split)
    else:
        load_instructions(cfg.data, limit=cfg.limit, seed=cfg.seed)
    _check_meta(cfg, out)

    rank, size = _distributed()
    loaded = load(cfg.teacher or cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    tok = loaded.tokenizer
    items = build_items(cfg, tok)
    seen, unique = set(), []
    for it in items:  # the same pair twice in the data is one row
        if it.id not in seen:
            seen.add(it.id)
            unique.append(it)
    items = unique
    part = out if size == 1 else out.with_name(f"{out.name}.part{rank}of{size}")
    done = _done_rows(out)
    done.update(_done_rows(part)) if part != out else None
    mine = [it for i, it in enumerate(items) if i % size == rank]
    todo = [it for it in mine if it.id not in done]

    def row(it: Item, text: str, tokens: list[int], finish: str, force_reason: str | None = None) -> dict:
        if force_reason:
            stored, kept, reason = "", False, force_reason
        else:
            stored, kept, reason = judge(cfg, text, tokens, finish)
        return {"id": it.id, **it.base, "mode": cfg.mode, "text": stored, "kept": kept, "reason": reason,
                "n_tokens": len(tokens), "finish": finish}

    skipped = [it for it in todo if not in_ratio(it.id, cfg.ratio, cfg.seed)]
    gen_items = [it for it in todo if in_ratio(it.id, cfg.ratio, cfg.seed)]
    bar = Progress(len(gen_items), desc=f"generate {cfg.mode}", enabled=progress)
    if rank == 0 and progress and len(todo) < len(mine):
        print(f"resuming: {len(mine) - len(todo)} of {len(mine)} rows already in {part}", flush=True)
    t_gen = time.perf_counter()
    with JsonlAppender(part) as w:
        for it in skipped:
            w.write(row(it, "", [], "skipped", force_reason="ratio"))
        token_lists = [prompts.encode(tok, it.prompt) for it in gen_items]
        dcfg = DecodeConfig(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            seed=cfg.seed, batch_size=cfg.batch_size)
        decode(loaded.model, tok, token_lists, dcfg, progress=bar,
               on_done=lambda c: w.write(row(gen_items[c.index], c.text, c.tokens, c.finish)))
    bar.close()
    gen_time = time.perf_counter() - t_gen

    if size > 1:
        _barrier()
        if rank != 0:
            return {}
        parts = [out.with_name(f"{out.name}.part{r}of{size}") for r in range(size)]
        for p in parts:
            done.update(_done_rows(p))
    else:
        done = _done_rows(out)
    missing = [it.id for it in items if it.id not in done]
    if missing:
        raise UserError(f"{out}: {len(missing)} rows missing after generation (first: {missing[0]})")
    rows = [done[it.id] for it in items]
    # Canonical input order, so resumed and distributed runs give the same file as one straight run.
    atomic_write_text(out, "".join(json_line(r) + "\n" for r in rows))
    if size > 1:
        for p in parts:
            p.unlink(missing_ok=True)
    summary = _summarise(cfg, rows, loaded, gen_time, bar.tokens, time.perf_counter() - t0)
    # One entry per run that generated rows: a resumed or no-op rerun keeps the earlier runs' speed.
    old = read_json(_summary_path(out)) if _summary_path(out).exists() else {}
    summary["runs"] = old.get("runs", []) if old.get("settings") == summary["settings"] else []
    if bar.done:
        summary["runs"].append({"rows": bar.done, "generated_tokens": bar.tokens, "seconds": round(gen_time, 1),
                                "tokens_per_s": summary["tokens_per_s_this_run"]})
    atomic_write_json(_summary_path(out), summary)
    return summary


def _summarise(cfg, rows, loaded, gen_time, gen_tokens, wall) -> dict:
    reasons = Counter(r["reason"] or "kept" for r in rows)
    kept = [r for r in rows if r["kept"]]
    return {
        "out": str(cfg.out), "mode": cfg.mode, "model": loaded.name, "rows": len(rows),
        "kept": len(kept), "rejected": dict((k, v) for k, v in reasons.items() if k != "kept"),
        "unfinished": sum(r["finish"] == "length" for r in rows),
        "mean_tokens_kept": round(sum(r["n_tokens"] for r in kept) / max(len(kept), 1), 1),
        "generated_tokens_this_run": gen_tokens,
        "tokens_per_s_this_run": round(gen_tokens / gen_time, 1) if gen_time > 0 and gen_tokens else None,
        "wall_s": round(wall, 1), "settings": asdict(cfg),
    }


def _distributed() -> tuple[int, int]:
    import mlx.core as mx
    try:
        g = mx.distributed.init()
        return g.rank(), g.size()
    except Exception:
        return 0, 1


def _barrier() -> None:
    import mlx.core as mx
    mx.eval(mx.distributed.all_sum(mx.array(1.0)))


def format_summary(s: dict) -> str:
    rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "none"
    return (f"{s['rows']} rows -> {s['out']}: kept {s['kept']}, rejected: {rej}; "
            f"unfinished {s['unfinished']}; mean tokens (kept) {s['mean_tokens_kept']}; "
            f"{s['tokens_per_s_this_run']} tok/s this run; {s['wall_s']} s")
