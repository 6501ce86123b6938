"""Generate's parallelism: local worker processes on the CPU, and mlx.launch ranks.

A worker is ``python -m radis_mlx.generate`` (``__main__``): it reads its job (settings, row ids, its
part file) from stdin (``read_job``) and appends its rows to its own part file, which ``files`` merges
at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from .. import models
from ..backend import maybe_reexec_with_openblas
from ..fileio import UserError
from ..outdir import adopt_tempdir
from ..progress import Progress
from .files import part_file, worker_log
from .filters import in_ratio
from .rows import Run


def n_workers(cfg, n_rows: int) -> int:
    """Local worker processes for this many rows. On the CPU one process leaves a core idle
    through every single-threaded op (MLX's element-wise kernels, attention over small matrices),
    so by default each core gets a process of its own, with one BLAS thread, when there are rows
    enough to pay for starting it (loading the model again: a few seconds) and memory for a model
    per process. On a GPU, one process."""
    path = models.resolve(cfg.teacher or cfg.model, cfg.dtype)  # a bad --model fails here, not in every worker
    if cfg.workers:
        return max(1, min(cfg.workers, n_rows))
    import mlx.core as mx
    if mx.default_device().type != mx.cpu or n_rows < 64:
        return 1
    n = min(_cores(), n_rows // 32)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        per_worker = models.model_bytes(path) * 2  # weights + caches, activations
    except (OSError, ValueError, UserError):
        return 1
    if not per_worker:  # a hub id not downloaded yet: one process, as before
        return 1
    return max(1, min(n, int(ram * 0.6 // per_worker)))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_workers(cfg, ids: list[str], n: int, progress: bool) -> Run:
    """Generate `ids` in n local processes (`python -m radis_mlx.generate`), each appending to its
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
            part, log = part_file(out, r, n), worker_log(out, r)
            tails.append(_Tail(part))
            logs.append(log)
            with open(log, "wb") as f:
                p = subprocess.Popen([sys.executable, "-m", "radis_mlx.generate"], stdin=subprocess.PIPE,
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
                                f"done so far are kept, rerun to resume. Its log ({logs[r]}) ends: " + " | ".join(last))
            if not any(running):
                break
            time.sleep(0.25)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        bar.close()
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


def read_job() -> dict:
    """In a worker process (``__main__``): its job from stdin, once this process runs as the parent's
    does (OpenBLAS preloaded), inside the parent's claim on --out, and bound to end with the parent."""
    maybe_reexec_with_openblas()
    job = json.loads(sys.stdin.read())
    adopt_tempdir()  # the parent's claim on --out: temporary files go inside it

    def exit_with_parent():  # a killed parent must not leave workers running (its part stays resumable)
        while os.getppid() == job["parent"]:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=exit_with_parent, daemon=True).start()
    return job


def distributed() -> tuple[int, int]:
    import mlx.core as mx
    try:
        g = mx.distributed.init()
        return g.rank(), g.size()
    except Exception:
        return 0, 1


def all_sum(values: list[int]) -> list[int]:
    import mlx.core as mx
    return mx.distributed.all_sum(mx.array(values, dtype=mx.int32)).tolist()
