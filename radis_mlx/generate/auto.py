"""A mode that picks its mode per model (``rationale-auto``): continuation where it yields, else explain.

Continuation (the model's turn prefilled with the reference) gives the model's most natural
rationale, but some chat models end their turn right after the reference: on Qwen2.5-Coder-0.5B
it kept 11 of 200 rows, none of them an explanation (RESULTS.md, the dev phase). So the mode
tries continuation (``Mode.tries``) on the first rows and keeps it when at least
``auto_min_yield`` of them get a rationale; otherwise it generates in ``Mode.fallback``.

The choice is written into the output's meta (``OUT.meta.json``, key "auto") before any row, so
a resumed run keeps it without probing again, and every row carries the mode it was generated
with (what finetune trains on). When continuation wins, the probe's rows are the output's first
rows; otherwise they are dropped.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from .. import methods
from ..fileio import JsonlAppender, atomic_write_json, read_json
from .files import done_rows, meta_path
from .filters import in_ratio

AUTO_MIN_TOKENS = 8  # a rationale, not the closing full stop or quote mark Qwen continues with


def probe_path(out: Path) -> Path:
    return out.with_name(out.name + ".probe.jsonl")


def chosen(out: Path) -> dict | None:
    """The choice recorded in ``out``'s meta, or None."""
    meta = meta_path(out)
    return read_json(meta).get("auto") if meta.exists() else None


def resolve(cfg, out: Path, ids: list[str], generate_rows: Callable, progress: bool):
    """``cfg`` with its mode made concrete: as recorded for ``out``, else probed now and recorded.
    ``generate_rows(cfg, ids, path, progress)`` is the stage's own row generator."""
    mode = methods.get_mode(cfg.mode)
    if mode.tries is None:
        return cfg
    choice = chosen(out)
    if choice is None:
        choice, keep = _probe(cfg, mode, out, ids, generate_rows, progress)
        # The choice first, then its rows: a run killed in between resumes with the same choice.
        atomic_write_json(meta_path(out), {**read_json(meta_path(out)), "auto": choice})
        with JsonlAppender(out) as w:
            for row in keep:
                w.write(row)
        probe_path(out).unlink(missing_ok=True)
        if progress:
            print(f"{cfg.mode}: {describe(choice)}", flush=True)
    return dataclasses.replace(cfg, mode=choice["mode"])


def _probe(cfg, mode, out: Path, ids: list[str], generate_rows: Callable, progress: bool) -> tuple[dict, list]:
    """Try ``mode.tries`` on the first rows: (the choice, the probe rows to keep in the output)."""
    first = [i for i in ids if in_ratio(i, cfg.ratio, cfg.seed)][:cfg.auto_probe_rows]
    if not first:
        return {"mode": mode.fallback, "tried": mode.tries, "probe_rows": 0, "rationales": 0, "yield": None}, []
    path = probe_path(out)
    path.unlink(missing_ok=True)  # a probe killed half-way starts again
    generate_rows(dataclasses.replace(cfg, mode=mode.tries), first, path, progress)
    rows = done_rows(path)
    good = sum(1 for i in first if rows[i]["kept"] and rows[i]["n_tokens"] >= AUTO_MIN_TOKENS)
    share = good / len(first)
    pick = mode.tries if share >= cfg.auto_min_yield else mode.fallback
    choice = {"mode": pick, "tried": mode.tries, "probe_rows": len(first), "rationales": good, "yield": round(share, 4)}
    # When continuation wins, the probe's rows are what the full run would write first: kept.
    return choice, [rows[i] for i in first] if pick == mode.tries else []


def describe(choice: dict) -> str:
    if not choice["probe_rows"]:
        return f"chose {choice['mode']} (no rows to try {choice['tried']} on)"
    return (f"chose {choice['mode']} ({choice['tried']} gave {choice['rationales']} of {choice['probe_rows']} "
            f"first rows a rationale of {AUTO_MIN_TOKENS}+ tokens)")
