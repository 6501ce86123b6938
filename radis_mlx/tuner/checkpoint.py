"""A run directory: checkpoints that resume exactly, the adapter files, and what the run has left.

A checkpoint is the trainable weights, the optimizer state, the RNG state and the data position;
its JSON is written last, so a checkpoint counts only once it is whole. Every file is written to a
temporary name, fsynced and renamed: a kill leaves the old file or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..fileio import UserError, atomic_write_json, read_json, read_yaml
from ..outdir import OWN, is_empty


def save_safetensors(path: Path, arrays: dict, metadata: dict | None = None):
    """mx.save_safetensors to a temp name, fsync, rename: a kill leaves the old file or the new one."""
    import mlx.core as mx
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    mx.save_safetensors(str(tmp), arrays, metadata=metadata or {})
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def trainable_weights(model) -> dict:
    from mlx.utils import tree_flatten
    return dict(tree_flatten(model.trainable_parameters()))


def save_checkpoint(out: Path, step: int, model, optimizer, info: dict, keep: int):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    d = out / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:07d}"
    save_safetensors(d / f"{name}.adapters.safetensors", trainable_weights(model))
    save_safetensors(d / f"{name}.optimizer.safetensors", dict(tree_flatten(optimizer.state)))
    hi, lo = mx.random.state[0].tolist()
    # The JSON is written last: a checkpoint counts only once it exists.
    atomic_write_json(d / f"{name}.json", {**info, "step": step, "rng": [hi, lo]})
    for old in list_checkpoints(out)[:-max(keep, 1)]:
        for suffix in (".json", ".adapters.safetensors", ".optimizer.safetensors"):
            (d / f"step-{old:07d}{suffix}").unlink(missing_ok=True)


def list_checkpoints(out: Path) -> list[int]:
    d = out / "checkpoints"
    steps = []
    for f in d.glob("step-*.json") if d.is_dir() else []:
        try:
            s = int(f.name[5:12])
        except ValueError:
            continue
        if all((d / f"step-{s:07d}{x}").exists() for x in (".adapters.safetensors", ".optimizer.safetensors")):
            steps.append(s)
    return sorted(steps)


def load_checkpoint(out: Path, step: int, model, optimizer) -> dict:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map_with_path
    d = out / "checkpoints"
    info = read_json(d / f"step-{step:07d}.json")
    w = mx.load(str(d / f"step-{step:07d}.adapters.safetensors"))
    want = trainable_weights(model)
    if set(w) != set(want):
        raise UserError(f"{d}: checkpoint step {step} holds other parameters than this run trains")
    model.load_weights(list(w.items()), strict=False)
    st = mx.load(str(d / f"step-{step:07d}.optimizer.safetensors"))
    optimizer.init(model.trainable_parameters())
    have = dict(tree_flatten(optimizer.state))
    if set(st) != set(have):
        raise UserError(f"{d}: checkpoint step {step}: optimizer state doesn't match this run's optimizer")
    # Update in place: the compiled step holds a reference to this very dict.
    new = tree_map_with_path(lambda path, _: st[path], optimizer.state)
    optimizer.state.update(new)
    hi, lo = info["rng"]
    mx.random.seed((int(hi) << 32) | int(lo))
    mx.eval(model.parameters(), optimizer.state)
    return info


def output_status(out) -> str:
    """What a run in ``out`` has left: "done", "partial (...)" (resumes from a checkpoint) or "to do"."""
    out = Path(out)
    if restart_settings(out) is None:
        return "done"
    steps = list_checkpoints(out)
    return f"partial (resumes at step {steps[-1]})" if steps else "to do"


def restart_settings(out) -> dict | None:
    """How a finetune into ``out`` goes on: None when it is complete, else the resume / overwrite
    settings (a run that died before its first checkpoint starts over)."""
    out = Path(out)
    if (out / "adapters.safetensors").exists() and (out / "summary.json").exists():
        return None
    resume = bool(list_checkpoints(out))
    return {"resume": resume, "overwrite": out.exists() and not resume}


def settings_changed(out, cfg) -> str | None:
    """For a finished run in ``out``: how ``cfg`` differs from the settings it was trained with
    (None when it does not, or there is no finished run). Keys an older version did not save are
    not compared."""
    f = Path(out) / "config.yaml"
    if restart_settings(out) is not None or not f.is_file():
        return None
    saved = read_yaml(f) or {}
    new = json.loads(json.dumps(cfg.trajectory(), default=str))
    old = {k: saved[k] for k in new if k in saved}
    return config_diff(old, {k: new[k] for k in old}) or None


def training_cost(run_dir) -> dict:
    """Tokens processed (non-pad positions, forward + backward) and wall time of the run that trained
    the adapters in ``run_dir``; a resumed run has its tokens (every step once) but no wall time."""
    f = Path(run_dir) / "summary.json" if run_dir else None
    if f is None or not f.is_file():
        return {}
    try:
        s = read_json(f)
    except UserError:
        return {}
    if not isinstance(s, dict):
        return {}
    if s.get("steps_this_run") != s.get("steps"):  # resumed: its tokens count every step once; no wall time
        return {"tokens": s["tokens"]} if isinstance(s.get("tokens"), int) else {}
    return {k: s[v] for k, v in (("tokens", "tokens_this_run"), ("wall_s", "wall_s"))
            if isinstance(s.get(v), (int, float))}


def prepare_out(out: Path, cfg):
    run_markers = ("config.yaml", "checkpoints", "adapters.safetensors", "metrics.jsonl", "adapter_config.json")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and not is_empty(out):
        if cfg.overwrite:
            if not any((out / m).exists() for m in run_markers):
                raise UserError(f"{out}: not empty and not a finetune run directory; refusing to delete it")
            for p in out.iterdir():  # all but the lock this process holds (outdir.claim)
                if p.name not in OWN:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif not cfg.resume:
            raise UserError(f"{out}: exists (pass --resume to continue that run, or --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise UserError(f"{out}: output directory is not writable")


def config_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys)
