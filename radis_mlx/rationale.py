"""Stage 1 (`radis-mlx generate`): the model's own rationales, or a baseline's self-generated target.

The modes are declared in methods.py: each says its prompt, its own filter and how its rows
train. Rows are ``records.Record``s, the written contract between this stage and finetune.

The output JSONL is written append-only, one fsynced row at a time, in completion order;
a rerun skips finished ids. When every row is done the file is rewritten atomically in
input order, so an interrupted-and-resumed run ends byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import __version__, methods, prompts
from .data import Pair, load_instructions, load_pairs
from .decode import DecodeConfig, decode
from .io import JsonlAppender, UserError, atomic_write_json, atomic_write_text, check_writable_dir, \
    iter_jsonl, json_line, read_json, repair_jsonl_tail
from .progress import Progress
from .records import Record


@dataclass
class GenerateConfig:
    data: str
    out: str
    mode: str = methods.DEFAULT_MODE
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
    workers: int = 0  # local processes on the CPU; 0: one per core when it pays (_n_workers)
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
        skip = {"out", "limit", "batch_size", "workers", "trust_remote_code"}
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        d["version"] = __version__
        return d

    def validate(self) -> "GenerateConfig":
        """Check the settings before any data or model is read (a recipe checks every stage first)."""
        methods.get_mode(self.mode, "mode")
        if self.unfinished not in ("keep", "trim", "drop"):
            raise UserError(f"unfinished: unknown value {self.unfinished!r} (keep, trim, drop)")
        if not 0.0 <= self.ratio <= 1.0:
            raise UserError(f"ratio: must be in [0, 1], got {self.ratio}")
        if self.workers < 0:
            raise UserError(f"workers: must be >= 0 (0: automatic), got {self.workers}")
        return self


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
    mode = methods.get_mode(cfg.mode)
    text = mode.clean(text)
    if finish == "length" and mode.trims_unfinished:
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
    reason = mode.rejected(text)
    return (text, False, reason) if reason else (text, True, None)


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
    """The rows to generate, in input order; without a tokenizer, their fixed fields only."""
    t = prompts.Templates(translate=cfg.translate_template, explain=cfg.explain_template, system=cfg.system)
    mode = methods.get_mode(cfg.mode)
    if mode.reads == "instructions":
        rows = load_instructions(cfg.data, limit=cfg.limit, seed=cfg.seed)
        return [Item(r["id"], prompts.chat(tokenizer, r["instruction"], cfg.system, thinking=cfg.thinking)
                     if tokenizer else "", {"instruction": r["instruction"]}) for r in rows]
    pairs: list[Pair] = load_pairs(cfg.data, cfg.pairs, limit=cfg.limit, seed=cfg.seed, ref=cfg.ref,
                                   split=cfg.split)
    items = []
    for p in pairs:
        text = mode.prompt(tokenizer, p, t) if tokenizer is not None else ""
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


def output_status(cfg: GenerateConfig) -> str:
    """What generating ``cfg.out`` has left: "done", "partial (resumes)", "stale (...)" or "to do"."""
    out = Path(cfg.out)
    if not out.exists() and not _parts(out):
        return "to do"
    meta = _meta_path(out)
    if meta.exists() and read_json(meta).get("settings") != cfg.fingerprint():
        return "stale (written with other settings: generate will refuse it)"
    return "done" if _summary_path(out).exists() and not _parts(out) else "partial (resumes)"


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
    cfg.validate()
    out = Path(cfg.out)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; --out names a .jsonl file")
    check_writable_dir(out.parent)
    t0 = time.perf_counter()
    # Fail on bad data before loading a model; the row ids need no tokenizer.
    if methods.get_mode(cfg.mode).reads == "pairs":
        ids = [p.id for p in load_pairs(cfg.data, cfg.pairs, limit=cfg.limit, seed=cfg.seed, ref=cfg.ref,
                                        split=cfg.split)]
    else:
        ids = [r["id"] for r in load_instructions(cfg.data, limit=cfg.limit, seed=cfg.seed)]
    ids = list(dict.fromkeys(ids))  # the same pair twice in the data is one row
    _check_meta(cfg, out)

    rank, size = _distributed()
    if size > 1:  # mlx.launch: each rank takes its own shard and writes its own part file
        part = _part(out, rank, size)
        done = {**_done_rows(out), **_done_rows(part)}
        mine = [i for k, i in enumerate(ids) if k % size == rank]
        todo = [i for i in mine if i not in done]
        if rank == 0 and progress and len(todo) < len(mine):
            print(f"resuming: {len(mine) - len(todo)} of {len(mine)} rows already in {part}", flush=True)
        run = _generate_rows(cfg, todo, part, progress and rank == 0)
        rows_, tokens = _all_sum([run.rows, run.tokens])  # also the barrier before rank 0 merges
        if rank != 0:
            return {}
        run = Run(rows_, tokens, run.seconds, size)
    else:
        done = _done_rows_all(out)
        todo = [i for i in ids if i not in done]
        if progress and done:
            print(f"resuming: {len(ids) - len(todo)} of {len(ids)} rows already done", flush=True)
        n = _n_workers(cfg, len(todo)) if todo else 1
        run = _run_workers(cfg, todo, n, progress) if n > 1 else _generate_rows(cfg, todo, out, progress)

    done = _done_rows_all(out)
    missing = [i for i in ids if i not in done]
    if missing:
        raise UserError(f"{out}: {len(missing)} rows missing after generation (first: {missing[0]})")
    rows = [done[i] for i in ids]
    # Canonical input order, so resumed and parallel runs give the same file as one straight run.
    atomic_write_text(out, "".join(json_line(r) + "\n" for r in rows))
    for p in _parts(out):
        p.unlink(missing_ok=True)
    summary = _summarise(cfg, rows, run, time.perf_counter() - t0)
    # One entry per run that generated rows: a resumed or no-op rerun keeps the earlier runs' speed.
    old = read_json(_summary_path(out)) if _summary_path(out).exists() else {}
    summary["runs"] = old.get("runs", []) if old.get("settings") == summary["settings"] else []
    if run.rows:
        summary["runs"].append({"rows": run.rows, "generated_tokens": run.tokens, "seconds": round(run.seconds, 1),
                                "tokens_per_s": summary["tokens_per_s_this_run"], "workers": run.workers})
    atomic_write_json(_summary_path(out), summary)
    return summary


@dataclass
class Run:
    rows: int = 0  # rows generated by this run (not ratio-skipped, not already done)
    tokens: int = 0
    seconds: float = 0.0
    workers: int = 1


def _generate_rows(cfg: GenerateConfig, ids: list[str], path: Path, progress: bool) -> Run:
    """Generate the rows with these ids, appending each to `path` as it finishes."""
    from .models import load

    skipped = [i for i in ids if not in_ratio(i, cfg.ratio, cfg.seed)]
    wanted = set(ids) - set(skipped)
    bar = Progress(len(wanted), desc=f"generate {cfg.mode}", enabled=progress)
    t = time.perf_counter()
    loaded = load(cfg.teacher or cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code) \
        if wanted else None
    tok = loaded.tokenizer if loaded else None
    items = {it.id: it for it in build_items(cfg, tok)}
    with JsonlAppender(path) as w:
        for i in skipped:
            w.write(Record(i, cfg.mode, "", False, "ratio", 0, "skipped", **items[i].base).to_row())
        if wanted:
            todo = [items[i] for i in ids if i in wanted]
            dcfg = DecodeConfig(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                seed=cfg.seed, batch_size=cfg.batch_size)
            decode(loaded.model, tok, [prompts.encode(tok, it.prompt) for it in todo], dcfg, progress=bar,
                   on_done=lambda c: w.write(_row(cfg, todo[c.index], c.text, c.tokens, c.finish)))
    bar.close()
    return Run(bar.done, bar.tokens, time.perf_counter() - t)


def _row(cfg: GenerateConfig, it: Item, text: str, tokens: list[int], finish: str) -> dict:
    stored, kept, reason = judge(cfg, text, tokens, finish)
    return Record(it.id, cfg.mode, stored, kept, reason, len(tokens), finish, **it.base).to_row()


def _part(out: Path, rank: int, size: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}of{size}")


def _parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{glob.escape(out.name)}.part*of*"))


def _done_rows_all(out: Path) -> dict[str, dict]:
    """Rows already in the output or in part files an interrupted parallel run left beside it."""
    done: dict[str, dict] = {}
    for p in [out, *_parts(out)]:
        for k, v in _done_rows(p).items():
            done.setdefault(k, v)
    return done


def _n_workers(cfg: GenerateConfig, n_rows: int) -> int:
    """Local worker processes for this many rows. On the CPU one process leaves a core idle
    through every single-threaded op (MLX's element-wise kernels, attention over small matrices),
    so by default each core gets a process of its own, with one BLAS thread, when there are rows
    enough to pay for starting it (loading the model again: a few seconds) and memory for a model
    per process. On a GPU, one process."""
    from .models import model_bytes, resolve
    path = resolve(cfg.teacher or cfg.model)  # a bad --model fails here, not in every worker
    if cfg.workers:
        return max(1, min(cfg.workers, n_rows))
    import mlx.core as mx
    if mx.default_device().type != mx.cpu or n_rows < 64:
        return 1
    n = min(_cores(), n_rows // 32)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        per_worker = model_bytes(path) * 2  # weights + caches, activations
    except (OSError, ValueError, UserError):
        return 1
    if not per_worker:  # a hub id not downloaded yet: one process, as before
        return 1
    return max(1, min(n, int(ram * 0.6 // per_worker)))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _run_workers(cfg: GenerateConfig, ids: list[str], n: int, progress: bool) -> Run:
    """Generate `ids` in n local processes (`python -m radis_mlx.rationale`), each appending to its
    own part file; this process shows their progress from the part files and waits."""
    out = Path(cfg.out)
    # Not an mlx.launch rank: without its MLX_* variables; the cores shared out among the BLAS pools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLX_") or k == "MLX_DISABLE_COMPILE"}
    env["OPENBLAS_NUM_THREADS"] = str(max(1, _cores() // n))
    wanted = {i for i in ids if in_ratio(i, cfg.ratio, cfg.seed)}
    bar = Progress(len(wanted), desc=f"generate {cfg.mode} ({n} processes)", enabled=progress)
    t = time.perf_counter()
    procs, tails, logs = [], [], []
    try:
        for r in range(n):
            part, log = _part(out, r, n), out.with_name(f"{out.name}.worker{r}.log")
            tails.append(_Tail(part))
            logs.append(log)
            with open(log, "wb") as f:
                p = subprocess.Popen([sys.executable, "-m", "radis_mlx.rationale"], stdin=subprocess.PIPE,
                                     stdout=f, stderr=subprocess.STDOUT, env=env)
            procs.append(p)
            try:
                job = {"config": asdict(cfg), "ids": ids[r::n], "part": str(part), "parent": os.getpid()}
                p.stdin.write(json.dumps(job).encode())
                p.stdin.close()
            except BrokenPipeError:  # it died before reading its job: reported below with its log
                pass
        while True:
            running = [p.poll() is None for p in procs]
            for tail in tails:
                for row in tail.new_rows():
                    if row.get("id") in wanted:
                        bar.update(1, tokens=row.get("n_tokens", 0))
            failed = [r for r, p in enumerate(procs) if p.returncode not in (None, 0)]
            if failed:
                r = failed[0]
                last = logs[r].read_text(errors="replace").strip().splitlines()[-8:]
                raise UserError(f"generate: worker {r + 1} of {n} failed (exit {procs[r].returncode}); rows "
                                f"done so far are kept, rerun to resume. Its log ({logs[r]}):\n" + "\n".join(last))
            if not any(running):
                break
            time.sleep(0.25)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        bar.close()
    for log in logs:
        log.unlink(missing_ok=True)
    return Run(bar.done, bar.tokens, time.perf_counter() - t, n)


class _Tail:
    """The complete rows appended to a JSONL file since this object was made."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = path.stat().st_size if path.exists() else 0
        self.buf = b""

    def new_rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
        self.pos += len(data)
        lines = (self.buf + data).split(b"\n")
        self.buf = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


def _worker_main() -> None:
    """A worker of _run_workers: reads its job (JSON) from stdin, writes its part file, exits."""
    from .backend import maybe_reexec_with_openblas
    maybe_reexec_with_openblas()
    job = json.loads(sys.stdin.read())

    def exit_with_parent():  # a killed parent must not leave workers running (its part stays resumable)
        while os.getppid() == job["parent"]:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=exit_with_parent, daemon=True).start()
    cfg = GenerateConfig(**job["config"])
    _generate_rows(cfg, job["ids"], Path(job["part"]), progress=False)


def _summarise(cfg, rows, run: Run, wall) -> dict:
    from .models import DEFAULT_MODEL
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


def _distributed() -> tuple[int, int]:
    import mlx.core as mx
    try:
        g = mx.distributed.init()
        return g.rank(), g.size()
    except Exception:
        return 0, 1


def _all_sum(values: list[int]) -> list[int]:
    import mlx.core as mx
    return mx.distributed.all_sum(mx.array(values, dtype=mx.int32)).tolist()


def format_summary(s: dict) -> str:
    rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "none"
    return (f"{s['rows']} rows -> {s['out']}: kept {s['kept']}, rejected: {rej}; "
            f"unfinished {s['unfinished']}; mean tokens (kept) {s['mean_tokens_kept']}; "
            f"{s['tokens_per_s_this_run']} tok/s this run; {s['wall_s']} s")


if __name__ == "__main__":
    _worker_main()
