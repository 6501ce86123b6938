"""Generate's output files: the resumable JSONL protocol, and whether an output is done, partial or stale.

``OUT`` holds one row per input, appended (fsynced) in completion order while generating, then
rewritten atomically in input order; ``OUT.meta.json`` holds the settings it was written with
(a rerun must match them to resume); ``OUT.summary.json`` exists once every row is done; parallel
runs write ``OUT.partRofN`` beside it, merged at the end.
"""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path

from .. import __version__
from ..fileio import UserError, atomic_write_json, iter_jsonl, read_json, repair_jsonl_tail, safe_join


def output_for(folder, settings: dict, common: dict) -> Path:
    """Where generating with ``settings`` (its mode included) writes in a run's ``folder``: MODE.jsonl,
    shared by every method that generates with the run's ``common`` settings; a method with settings of
    its own (a ratio, a teacher) gets a file of its own, named by their hash, as generate refuses to mix
    settings in one file."""
    tag = "-" + hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8] \
        if settings != common else ""
    return safe_join(folder, f"{settings['mode']}{tag}.jsonl")


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def part_file(out: Path, rank: int, size: int) -> Path:
    return out.with_name(f"{out.name}.part{rank}of{size}")


def part_files(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{glob.escape(out.name)}.part*of*"))


def worker_log(out: Path, rank: int) -> Path:
    return out.with_name(f"{out.name}.worker{rank}.log")


def leftovers(out: Path) -> list[Path]:
    """Part files and worker logs beside ``out``: a killed parallel run leaves them, and a rerun that
    needs fewer (or no) worker processes must still clear them once the output is whole."""
    return part_files(out) + sorted(out.parent.glob(f"{glob.escape(out.name)}.worker*.log"))


def check_meta(cfg, out: Path) -> None:
    meta = meta_path(out)
    fp = cfg.fingerprint()
    if out.exists() and out.stat().st_size > 0:
        if not meta.exists():
            raise UserError(f"{out}: exists but has no {meta.name}; it was not written by "
                            "`radis-mlx generate` — choose another --out")
        old = read_json(meta).get("settings", {})
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {fp.get(k)!r}" for k in diff[:5])
            raise UserError(f"{out}: was written with different settings ({shown}); use another --out "
                            "or the original settings to resume")
    else:
        atomic_write_json(meta, {"tool": f"radis-mlx {__version__}", "settings": fp})


def output_status(cfg) -> str:
    """What generating ``cfg.out`` has left: "done", "partial (resumes)", "stale (...)" or "to do"."""
    out = Path(cfg.out)
    if not out.exists() and not part_files(out):
        return "to do"
    meta = meta_path(out)
    if meta.exists() and read_json(meta).get("settings") != cfg.fingerprint():
        return "stale (written with other settings: generate will refuse it)"
    return "done" if summary_path(out).exists() and not part_files(out) else "partial (resumes)"


def done_rows(out: Path) -> dict[str, dict]:
    if not out.exists():
        return {}
    repair_jsonl_tail(out)
    done: dict[str, dict] = {}
    for _, row in iter_jsonl(out):
        done.setdefault(row["id"], row)
    return done


def done_rows_all(out: Path) -> dict[str, dict]:
    """Rows already in the output or in part files an interrupted parallel run left beside it."""
    done: dict[str, dict] = {}
    for p in [out, *part_files(out)]:
        for k, v in done_rows(p).items():
            done.setdefault(k, v)
    return done


def forget_if_empty(out: Path) -> None:
    """Remove the ``.meta.json`` (and the empty output) a run that wrote no row left: a failed model
    load must not leave a file that claims an output with settings nothing was generated with."""
    if part_files(out) or (out.exists() and out.stat().st_size > 0):
        return
    out.unlink(missing_ok=True)
    meta_path(out).unlink(missing_ok=True)
