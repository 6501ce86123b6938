"""Stage 1 (`radis-mlx generate`): the model's own rationales, or a baseline's self-generated target.

The modes are declared in methods.py: each says its prompt, its own filter and how its rows
train. Rows are ``records.Record``s, the written contract between this stage and finetune.

The output JSONL is written append-only, one fsynced row at a time, in completion order;
a rerun skips finished ids. When every row is done the file is rewritten atomically in
input order, so an interrupted-and-resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from .. import memory, methods
from ..data import load_instructions, load_pairs
from ..fileio import UserError, atomic_write_json, atomic_write_text, check_writable_dir, json_line, read_json
from ..models import DEFAULT_MODEL
from ..outdir import check_out, claim_if_main
from . import auto, tcot_rows, workers
from .config import GenerateConfig
from .files import (check_meta, done_rows, done_rows_all, forget_if_empty, leftovers, meta_path, output_status,
                    part_file, summary_path)
from .rows import Run, generate_rows

__all__ = ["GenerateConfig", "format_summary", "generate", "output_status"]


# The composite modes' runners (methods.Mode.composite), by mode name: each is given this stage's
# ``generate`` to make the runs it is made of.
COMPOSITE = {"tcot": tcot_rows.generate_tcot}


def generate(cfg: GenerateConfig, progress: bool = True) -> dict:
    """Run the generate stage; returns the summary (also saved as ``<out>.summary.json``)."""
    cfg.validate()
    out = Path(cfg.out)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out names a .jsonl file")
    check_out(out)
    check_writable_dir(out.parent)
    with claim_if_main(out, is_file=True):  # one writer per output
        mode = methods.get_mode(cfg.mode)
        if mode.composite:  # a mode made of other stages (tcot: answers, then translations)
            return COMPOSITE[mode.name](cfg, generate, progress)
        return _generate(cfg, out, progress)


def _generate(cfg: GenerateConfig, out: Path, progress: bool) -> dict:
    t0 = time.perf_counter()
    # Fail on bad data before loading a model; the row ids need no tokenizer.
    if methods.get_mode(cfg.mode).reads == "pairs":
        ids = [p.id for p in load_pairs(cfg.data, cfg.pairs, limit=cfg.limit, seed=cfg.seed, ref=cfg.ref,
                                        split=cfg.split)]
    else:
        ids = [r["id"] for r in load_instructions(cfg.data, limit=cfg.limit, seed=cfg.seed)]
    ids = list(dict.fromkeys(ids))  # the same pair twice in the data is one row
    memory.require_fit("generate", cfg, cfg.teacher or cfg.model, "--batch-size")  # the model id checked here
    fresh = not meta_path(out).exists()
    check_meta(cfg, out)
    try:
        run = _run_rows(cfg, out, ids, progress)
    except BaseException:
        if fresh:  # a failed model load (or a kill before the first row) leaves no orphan .meta.json
            forget_if_empty(out)
        raise
    if run is None:  # an mlx.launch rank other than 0: rank 0 merges
        return {}

    done = done_rows_all(out)
    missing = [i for i in ids if i not in done]
    if missing:
        raise UserError(f"{out}: {len(missing)} rows missing after generation (first: {missing[0]})")
    rows = [done[i] for i in ids]
    # Canonical input order, so resumed and parallel runs give the same file as one straight run.
    atomic_write_text(out, "".join(json_line(r) + "\n" for r in rows))
    for p in leftovers(out):
        p.unlink(missing_ok=True)
    summary = _summarise(cfg, rows, run, time.perf_counter() - t0)
    if methods.get_mode(cfg.mode).tries is not None:  # a mode that picks per model: record its pick
        summary["auto"] = auto.chosen(out)
    # One entry per run that generated rows: a resumed or no-op rerun keeps the earlier runs' speed.
    old = read_json(summary_path(out)) if summary_path(out).exists() else {}
    summary["runs"] = old.get("runs", []) if old.get("settings") == summary["settings"] else []
    if run.rows:
        summary["runs"].append({"rows": run.rows, "generated_tokens": run.tokens, "seconds": round(run.seconds, 1),
                                "tokens_per_s": summary["tokens_per_s_this_run"], "workers": run.workers})
    atomic_write_json(summary_path(out), summary)
    return summary


def _concrete(cfg: GenerateConfig, out: Path, ids: list[str], rank: int, size: int, progress: bool):
    """``cfg`` with the mode its rows are generated in: a mode that picks per model (rationale-auto)
    probes once, on rank 0, and every rank takes its choice."""
    if size == 1:
        return auto.resolve(cfg, out, ids, generate_rows, progress)
    names = list(methods.MODES)
    picked = auto.resolve(cfg, out, ids, generate_rows, progress) if rank == 0 else cfg
    k = workers.all_sum([names.index(picked.mode) if rank == 0 else 0])[0]
    return replace(cfg, mode=names[k])


def _run_rows(cfg: GenerateConfig, out: Path, ids: list[str], progress: bool) -> Run | None:
    """Generate the rows of ``ids`` not done yet (this process, worker processes or mlx.launch ranks)."""
    rank, size = workers.distributed()
    cfg_rows = _concrete(cfg, out, ids, rank, size, progress)  # rationale-auto: the mode it picks for this model
    if size > 1:  # mlx.launch: each rank takes its own shard and writes its own part file
        part = part_file(out, rank, size)
        done = {**done_rows(out), **done_rows(part)}
        mine = [i for k, i in enumerate(ids) if k % size == rank]
        todo = [i for i in mine if i not in done]
        if rank == 0 and progress and len(todo) < len(mine):
            print(f"resuming: {len(mine) - len(todo)} of {len(mine)} rows already in {part}", flush=True)
        run = generate_rows(cfg_rows, todo, part, progress and rank == 0)
        rows_, tokens = workers.all_sum([run.rows, run.tokens])  # also the barrier before rank 0 merges
        return Run(rows_, tokens, run.seconds, size) if rank == 0 else None
    done = done_rows_all(out)
    todo = [i for i in ids if i not in done]
    if progress and done:
        print(f"resuming: {len(ids) - len(todo)} of {len(ids)} rows already done", flush=True)
    n = workers.n_workers(cfg, len(todo)) if todo else 1
    return workers.run_workers(cfg_rows, todo, n, progress) if n > 1 else generate_rows(cfg_rows, todo, out, progress)


def _summarise(cfg, rows, run: Run, wall) -> dict:
    reasons = Counter(r["reason"] or "kept" for r in rows)
    kept = [r for r in rows if r["kept"]]
    return {
        "out": str(cfg.out), "mode": cfg.mode, "model": cfg.teacher or cfg.model or DEFAULT_MODEL,
        "rows": len(rows), "kept": len(kept),
        "rejected": dict((k, v) for k, v in reasons.items() if k != "kept"),
        "unfinished": sum(r["finish"] == "length" for r in rows),
        "mean_tokens_kept": round(sum(r["n_tokens"] for r in kept) / max(len(kept), 1), 1),
        "generated_tokens_this_run": run.tokens,
        "tokens_per_s_this_run": round(run.tokens / run.seconds, 1) if run.seconds > 0 and run.tokens else None,
        "wall_s": round(wall, 1), "settings": asdict(cfg),
    }


def format_summary(s: dict) -> str:
    rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "none"
    speed = "nothing generated this run" if s["tokens_per_s_this_run"] is None \
        else f"{s['tokens_per_s_this_run']} tok/s this run"
    chose = f"{s['mode']} {auto.describe(s['auto'])}; " if s.get("auto") else ""
    return (f"{chose}{s['rows']} rows -> {s['out']}: kept {s['kept']}, rejected: {rej}; "
            f"unfinished {s['unfinished']}; mean tokens (kept) {s['mean_tokens_kept']}; {speed}; {s['wall_s']} s")
