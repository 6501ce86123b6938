"""Stage 2 (`radis-mlx finetune`): LoRA / DoRA / full fine-tuning with the RaDis loss.

    L = (w_ref * sum_ref CE + w_rat * sum_rat CE + w_ref * sum_eot CE) / normaliser

normalize=tokens divides by the summed weights of the target tokens (w_rat=0 is exactly
mlx-lm's masked default_loss); normalize=segments averages the answer (ref + end-of-turn) and
the rationale separately and mixes the two means by weight, so long rationales can't drown
the translation.

Built on mlx-lm's tuner (linear_to_lora_layers, LoRA/DoRA layers, grad_checkpoint, the
adapter format, save for fusing). What is ours: per-token weights computed in numpy from the
*global* batch (so gradient accumulation and data parallelism give exactly the full-batch
gradient), logits only where a loss is taken, length-bucketed batches with few shapes for
the compiled step, a pow-based exp for the CPU (see _fast_fns), and checkpoints that resume
exactly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, fields

from pathlib import Path

import numpy as np

from . import __version__, methods, prompts, settings
from . import examples as ex
from .kernels import _fast_fns, fast_cross_entropy, patch_cpu_kernels  # noqa: F401 (re-exported)
from .io import (JsonlAppender, UserError, atomic_write_json, atomic_write_text, iter_jsonl, json_line, read_json,
                 read_yaml, repair_jsonl_tail)
from .progress import Progress

FINE_TUNE_TYPES = ("lora", "dora", "full")
OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor", "lion", "muon")
# Settings that don't change the weights a run ends at: they may differ on --resume.
_FREE_KEYS = {"out", "resume", "overwrite", "fuse", "steps_per_report", "steps_per_eval", "save_every",
              "keep_checkpoints", "grad_checkpoint", "compile", "slice_head", "fast_exp", "best_metric", "quiet",
              "trust_remote_code"}


@dataclass
class FinetuneConfig:
    model: str | None = None
    data: str | None = None
    out: str = "runs/finetune"
    adapter_path: str | None = None  # start from these adapters (same fine-tune type and rank)
    method: str = methods.DEFAULT_METHOD
    pairs: str | None = None  # directions for plain parallel data (e.g. de-en)
    replay_data: str | None = None
    replay_ratio: float | None = None  # share of the epoch from replay_data / mix_data; None: the method's
    mix_data: str | None = None
    separator: str = "\n\n"  # reference/rationale separator for rationale-explain rows
    template: str = prompts.TRANSLATE
    system: str | None = None
    fine_tune_type: str = "lora"
    lora_rank: int = 8
    lora_scale: float = 20.0
    lora_dropout: float = 0.0
    num_layers: int = -1  # last N blocks; -1: all
    lora_keys: list | None = None  # e.g. [self_attn.q_proj, self_attn.v_proj]; None: every linear layer
    w_ref: float = 1.0
    w_rat: float = 1.0
    normalize: str = "tokens"
    optimizer: str = "adamw"
    lr: float = 1e-4
    lr_min: float = 0.0
    schedule: str = "cosine"  # cosine | constant (after warmup)
    warmup: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0: no clipping
    grad_accum: int = 1
    grad_checkpoint: bool = False
    batch_size: int = 8
    epochs: float = 1.0
    iters: int | None = None  # optimizer steps; overrides epochs
    max_seq_len: int = 512
    pad_multiple: int | None = None  # None: 32 when compiled (few shapes), else 1 (no rounding)
    bucket: int = 16  # batches per length-sorting bucket (bigger: less padding, less shuffling)
    seed: int = 0
    val_data: str | None = None
    val_fraction: float = 0.0
    val_batch_size: int | None = None
    steps_per_eval: int = 100
    steps_per_report: int = 10
    save_every: int = 100
    keep_checkpoints: int = 2
    best_metric: str = "val_loss"  # val_loss | val_ref_loss
    dtype: str = "auto"
    compile: bool | None = None  # None: on GPU only (on CPU it saves nothing and JIT-compiles per shape)
    slice_head: bool = True  # logits only at loss positions (checked exact at start)
    fast_exp: bool | None = None  # None: on CPU (see _fast_fns)
    fuse: bool = False
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False
    trust_remote_code: bool = False

    def validate(self) -> "FinetuneConfig":
        """Check every setting; messages start with the setting's name (settings.build puts its
        source in front: a file or --set)."""
        def need(cond, key, msg):
            if not cond:
                raise UserError(f"{key}: {msg}")
        need(self.data, "data", "required")
        bad = [f.name for f in fields(self) if isinstance(getattr(self, f.name), float)
               and not math.isfinite(getattr(self, f.name))]
        need(not bad, ", ".join(bad), "must be a finite number")
        m = methods.get(self.method, "method")
        need(m.trains, "method", f"{self.method} trains nothing (choose from {', '.join(methods.trained())})")
        if self.replay_ratio is None:
            self.replay_ratio = m.extra.ratio
        need(self.fine_tune_type in FINE_TUNE_TYPES, "fine_tune_type",
             f"unknown {self.fine_tune_type!r} ({', '.join(FINE_TUNE_TYPES)})")
        need(self.normalize in ("tokens", "segments"), "normalize", f"tokens or segments, got {self.normalize!r}")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"unknown {self.optimizer!r} ({', '.join(OPTIMIZERS)})")
        need(self.w_ref > 0, "w_ref", f"must be > 0, got {self.w_ref}")
        need(self.w_rat >= 0, "w_rat", f"must be >= 0, got {self.w_rat}")
        need(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        need(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        need(self.iters is None or self.iters >= 1, "iters", f"must be >= 1, got {self.iters}")
        need(self.iters is not None or self.epochs > 0, "epochs", f"must be > 0, got {self.epochs}")
        need(self.max_seq_len >= 8, "max_seq_len", f"must be >= 8, got {self.max_seq_len}")
        need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        need(self.lr_min >= 0, "lr_min", f"must be >= 0, got {self.lr_min}")
        need(self.schedule in ("cosine", "constant"), "schedule", f"cosine or constant, got {self.schedule!r}")
        need(0 <= self.replay_ratio < 1, "replay_ratio", f"must be in [0, 1), got {self.replay_ratio}")
        need(0 <= self.val_fraction < 1, "val_fraction", f"must be in [0, 1), got {self.val_fraction}")
        need(self.lora_rank >= 1, "lora_rank", f"must be >= 1, got {self.lora_rank}")
        need(0 <= self.lora_dropout < 1, "lora_dropout", f"must be in [0, 1), got {self.lora_dropout}")
        need(self.best_metric in ("val_loss", "val_ref_loss"), "best_metric", "val_loss or val_ref_loss")
        need(not (self.resume and self.overwrite), "resume", "pass either resume or overwrite, not both")
        need(not m.extra.required or getattr(self, m.extra.setting), m.extra.setting,
             f"required by method {self.method}")
        need((self.pad_multiple or 1) >= 1, "pad_multiple", f"must be >= 1, got {self.pad_multiple}")
        need(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        return self

    def trajectory(self) -> dict:
        """The settings a resumed run must share with its checkpoint."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FREE_KEYS}


def load_config(config_file=None, **overrides) -> FinetuneConfig:
    """defaults < YAML file < overrides (CLI flags; None means 'not given')."""
    layers = []
    if config_file:
        p = Path(config_file)
        if not p.is_file():
            raise UserError(f"{p}: config file not found")
        y = read_yaml(p) or {}
        if not isinstance(y, dict):
            raise UserError(f"{p}: expected a mapping of settings")
        layers.append((f"{p}:", y))
    layers.append(("", {k: v for k, v in overrides.items() if v is not None}))
    return settings.build(FinetuneConfig, layers)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- data

def load_data(cfg: FinetuneConfig, tokenizer, rank_print=print) -> dict:
    t = prompts.Templates(translate=cfg.template, system=cfg.system)
    method = methods.get(cfg.method)
    kw = dict(directions=cfg.pairs, separator=cfg.separator)
    st_main, st_extra, st_val = ex.BuildStats(), ex.BuildStats(), ex.BuildStats()
    targets = methods.load_targets(cfg.data, tokenizer, t, method.data, stats=st_main,
                                   what=f"--method {cfg.method}", **kw)
    val_targets = []
    if cfg.val_data:
        val_rule = dataclasses.replace(method.data, plain=("pairs", "instructions"))
        val_targets = methods.load_targets(cfg.val_data, tokenizer, t, val_rule, stats=st_val, what="--val-data", **kw)
    elif cfg.val_fraction > 0:
        k = max(1, int(round(len(targets) * cfg.val_fraction)))
        pick = set(np.random.default_rng([cfg.seed, 11]).permutation(len(targets))[:k].tolist())
        val_targets = [x for i, x in enumerate(targets) if i in pick]
        targets = [x for i, x in enumerate(targets) if i not in pick]
    extra_src = getattr(cfg, method.extra.setting)
    extra_targets = []
    if extra_src:
        extra_targets = methods.load_targets(extra_src, tokenizer, t, method.extra.rule, stats=st_extra,
                                             what=f"--{method.extra.setting.replace('_', '-')}", **kw)
    main = ex.build_examples(tokenizer, targets, cfg.max_seq_len, 0, st_main)
    extra = ex.build_examples(tokenizer, extra_targets, cfg.max_seq_len, 1, st_extra)
    val = ex.build_examples(tokenizer, val_targets, cfg.max_seq_len, 0, st_val)
    if not main:
        raise UserError(f"{cfg.data}: no training examples left (all rows dropped: "
                        f"{st_main.dropped_too_long} too long for --max-seq-len {cfg.max_seq_len})")
    if extra_src and not extra:
        raise UserError(f"{extra_src}: no usable rows")
    if cfg.val_data and not val:
        raise UserError(f"{cfg.val_data}: no validation examples left")
    meta = {}
    for src in (cfg.data, extra_src):
        mp = Path(str(src) + ".meta.json") if src else None
        if mp and mp.is_file():
            meta[str(src)] = hashlib.sha256(mp.read_bytes()).hexdigest()[:16]
            used = read_json(mp).get("settings", {}).get("translate_template")
            if used and used != cfg.template:
                rank_print(f"warning: {src} was generated with another translation template than --template; "
                           "training prompts will differ from generation prompts")
    return {"main": main, "extra": extra, "val": val, "meta_hashes": meta,
            "stats": {"main": st_main.as_dict(), "extra": st_extra.as_dict() if extra_src else None,
                      "val": st_val.as_dict() if val else None},
            "hash": ex.examples_hash(main, extra, val)}


def segment_counts(exs: list) -> np.ndarray:
    """Target tokens per segment (a token's segment is that of the token it predicts)."""
    c = np.zeros(4, np.int64)
    for e in exs:
        c += np.bincount(np.asarray(e.segments[1:], np.int64), minlength=4)
    return c


def segment_weights(counts: np.ndarray, w_ref: float, w_rat: float, normalize: str) -> np.ndarray:
    """Per-token loss weight of each segment so that sum(weight * CE) over the global batch is L."""
    out = np.zeros(4, np.float64)
    if normalize == "tokens":
        w = np.array([0.0, w_ref, w_rat, w_ref])
        denom = float((w * counts).sum())
        return w / denom if denom > 0 else out
    groups = [(w_ref, counts[1] + counts[3], [ex.REF, ex.EOT]), (w_rat, counts[2], [ex.RAT])]
    present = [(wg, n, s) for wg, n, s in groups if n > 0 and wg > 0]
    total = sum(wg for wg, _, _ in present)
    for wg, n, s in present:
        out[s] = wg / (n * total)
    return out


def shape_policy(cfg: FinetuneConfig) -> tuple[bool, int, int]:
    """(compile?, sequence pad multiple, head-row pad multiple). mx.compile traces (and on CPU
    JIT-compiles C++) once per input shape, so a compiled step wants few shapes; on CPU the step
    is bound by matmuls and exp (which compiling doesn't speed up), so there fine padding wins."""
    import mlx.core as mx
    compiled = cfg.compile if cfg.compile is not None else mx.default_device().type == mx.gpu
    pad = cfg.pad_multiple or (32 if compiled else 1)
    return compiled, pad, 256 if compiled else 1


def batch_arrays(exs: list, seg_w: np.ndarray, scale: float, pad_multiple: int, max_len: int,
                 head_multiple: int = 256):
    """(inputs, flat targets, flat weights, flat segments, flat positions) as mx arrays, plus the
    Batch. Only the positions that take a loss are kept for the head."""
    import mlx.core as mx
    b = ex.collate(exs, pad_multiple, max_len)
    pos, n = ex.flat_positions(b.segments, head_multiple)
    segs = b.segments.reshape(-1)[pos].astype(np.int32)
    segs[n:] = 0
    tgt = b.targets.reshape(-1)[pos]
    w = (seg_w[segs] * scale).astype(np.float32)
    return (mx.array(b.inputs), mx.array(tgt), mx.array(w), mx.array(segs), mx.array(pos)), b


# ---------------------------------------------------------------- model

def setup_model(cfg: FinetuneConfig):
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from . import models

    loaded = models.load(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    model = loaded.model
    n = len(model.layers)
    if cfg.num_layers > n or cfg.num_layers == 0 or cfg.num_layers < -1:
        raise UserError(f"--num-layers {cfg.num_layers}: the model has {n} blocks (use 1..{n}, or -1 for all)")
    mx.random.seed(cfg.seed)  # LoRA init, then dropout
    model.freeze()
    if cfg.fine_tune_type == "full":
        for layer in model.layers[-max(cfg.num_layers, 0):]:
            layer.unfreeze()
    else:
        try:
            linear_to_lora_layers(model, cfg.num_layers, lora_parameters(cfg), use_dora=cfg.fine_tune_type == "dora")
        except ValueError as e:
            raise UserError(f"cannot add {cfg.fine_tune_type} layers: {e}") from None
    if cfg.adapter_path:
        _load_start_adapters(model, cfg)
    split = head_split(model) if cfg.slice_head else None
    if cfg.grad_checkpoint:
        from mlx_lm.tuner.trainer import grad_checkpoint
        grad_checkpoint(model.layers[0])  # patches the block class: every block recomputes in backward
    model.train()
    return loaded, model, split


def lora_parameters(cfg) -> dict:
    p = {"rank": cfg.lora_rank, "dropout": cfg.lora_dropout, "scale": cfg.lora_scale}
    if cfg.lora_keys:
        p["keys"] = list(cfg.lora_keys)
    return p


def _load_start_adapters(model, cfg):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    p = Path(cfg.adapter_path)
    f = p / "adapters.safetensors" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"{cfg.adapter_path}: no adapters.safetensors")
    if p.is_dir() and (p / "adapter_config.json").exists():
        ft = read_json(p / "adapter_config.json").get("fine_tune_type", "lora")
        if ft != cfg.fine_tune_type:
            raise UserError(f"{cfg.adapter_path}: adapters are {ft}, but this run is {cfg.fine_tune_type}")
    want = dict(tree_flatten(model.trainable_parameters()))
    got = mx.load(str(f))
    bad = [k for k, v in got.items() if k not in want or want[k].shape != v.shape]
    if bad or not got:
        raise UserError(f"{cfg.adapter_path}: adapters don't fit this run's layers (rank/keys/num_layers?): "
                        f"{', '.join(bad[:3]) or 'empty file'}")
    model.load_weights(list(got.items()), strict=False)


def head_split(model):
    """(body, head) with model(x) == head(body(x)) exactly, so the head (the vocab projection, the
    biggest matmul of a small model) runs only where a loss is taken; None if this model differs
    (soft-capping, scaled logits, ...)."""
    import mlx.core as mx
    inner = getattr(model, "model", None)
    if inner is None or not callable(inner):
        return None
    if "lm_head" in model:
        head = lambda h: model.lm_head(h)  # noqa: E731 (looked up at call time: LoRA may wrap it)
    elif getattr(getattr(model, "args", None), "tie_word_embeddings", False) and hasattr(inner, "embed_tokens"):
        head = lambda h: inner.embed_tokens.as_linear(h)  # noqa: E731
    else:
        return None
    was_training = model.training
    model.eval()
    try:
        x = mx.array([[1, 2, 3, 4, 5, 6, 7, 8]])
        ok = bool(mx.array_equal(model(x), head(inner(x))).item())
    except Exception:
        ok = False
    model.train(was_training)
    return (inner, head) if ok else None


def make_loss(split, fast_ce: bool = False):
    import mlx.core as mx
    import mlx.nn as nn
    ce_fn = fast_cross_entropy if fast_ce else nn.losses.cross_entropy

    def loss_fn(model, inputs, targets, weights, segs, pos):
        if split is not None:
            body, head = split
            h = body(inputs)
            logits = head(h.reshape(-1, h.shape[-1])[pos])
        else:
            logits = model(inputs)
            logits = logits.reshape(-1, logits.shape[-1])[pos]
        ce = ce_fn(logits, targets).astype(mx.float32)
        seg_sums = mx.stack([(ce * (segs == s)).sum() for s in (ex.REF, ex.RAT, ex.EOT)])
        return (ce * weights).sum(), seg_sums

    return loss_fn


def build_optimizer(cfg: FinetuneConfig, total_steps: int):
    import mlx.optimizers as optim
    lr = cfg.lr
    if cfg.schedule == "cosine" or cfg.warmup:
        main = optim.cosine_decay(cfg.lr, max(total_steps - cfg.warmup, 1), cfg.lr_min) \
            if cfg.schedule == "cosine" else (lambda _: cfg.lr)
        if cfg.warmup:
            # Step 0 of the warm-up gets lr/(warmup+1), not 0: no wasted first update.
            warm = optim.linear_schedule(cfg.lr / (cfg.warmup + 1), cfg.lr, cfg.warmup)
            lr = optim.join_schedules([warm, main], [cfg.warmup])
        else:
            lr = main
    kw = {"learning_rate": lr}
    if cfg.optimizer in ("adamw", "lion", "sgd", "muon") and cfg.weight_decay:
        kw["weight_decay"] = cfg.weight_decay
    elif cfg.optimizer == "adamw":
        kw["weight_decay"] = 0.0  # mlx's AdamW defaults to 0.01: make 'weight_decay: 0' mean 0
    cls = {"adamw": optim.AdamW, "adam": optim.Adam, "sgd": optim.SGD, "adafactor": optim.Adafactor,
           "lion": optim.Lion, "muon": optim.Muon}[cfg.optimizer]
    return cls(**kw)


# ---------------------------------------------------------------- checkpoints and outputs

def _save_safetensors(path: Path, arrays: dict, metadata: dict | None = None):
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
    _save_safetensors(d / f"{name}.adapters.safetensors", trainable_weights(model))
    _save_safetensors(d / f"{name}.optimizer.safetensors", dict(tree_flatten(optimizer.state)))
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


def output_status(out) -> str:
    """What a run in ``out`` has left: "done", "partial (...)" (resumes from a checkpoint) or "to do"."""
    out = Path(out)
    if (out / "adapters.safetensors").exists() and (out / "summary.json").exists():
        return "done"
    steps = list_checkpoints(out)
    return f"partial (resumes at step {steps[-1]})" if steps else "to do"


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


def adapter_config(cfg: FinetuneConfig, model_path: str, total_steps: int) -> dict:
    """The keys mlx_lm.lora writes (vars(args)), so mlx_lm.load/generate --adapter-path read it."""
    return {
        "model": model_path, "train": True, "data": cfg.data, "fine_tune_type": cfg.fine_tune_type,
        "optimizer": cfg.optimizer, "optimizer_config": {cfg.optimizer: {}}, "mask_prompt": True,
        "num_layers": cfg.num_layers, "batch_size": cfg.batch_size, "iters": total_steps,
        "val_batches": -1, "learning_rate": cfg.lr, "steps_per_report": cfg.steps_per_report,
        "steps_per_eval": cfg.steps_per_eval, "resume_adapter_file": None, "adapter_path": cfg.out,
        "save_every": cfg.save_every, "test": False, "test_batches": 0, "max_seq_length": cfg.max_seq_len,
        "config": None, "grad_checkpoint": cfg.grad_checkpoint, "grad_accumulation_steps": cfg.grad_accum,
        "clear_cache_threshold": 0, "lr_schedule": None, "seed": cfg.seed, "report_to": None,
        "project_name": None, "trust_remote_code": cfg.trust_remote_code,
        "lora_parameters": lora_parameters(cfg) if cfg.fine_tune_type != "full" else None,
        "radis": {"version": __version__, "method": cfg.method, "w_ref": cfg.w_ref, "w_rat": cfg.w_rat,
                  "normalize": cfg.normalize},
    }


def write_adapter_config(out: Path, conf: dict):
    from mlx_lm.utils import save_config
    tmp = out / f".tmp-{os.getpid()}-adapter_config.json"
    save_config(dict(conf), tmp)
    os.replace(tmp, out / "adapter_config.json")


def fuse_into(out_dir: Path, loaded, model):
    """Fold the adapters into the weights and save an mlx-lm model dir (mlx_lm.fuse's steps)."""
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import save
    dequantize = loaded.dtype != "keep"  # trained against dequantized weights: re-quantizing would blur the delta
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    config = dict(loaded.config)
    if dequantize:
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    tmp = out_dir.with_name(f".tmp-{os.getpid()}-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp, loaded.path, model, loaded.tokenizer, config, donate_model=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def plot_losses(out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train, val = {}, {}
    for _, r in iter_jsonl(out / "metrics.jsonl"):
        if r.get("type") == "train":
            train[r["step"]] = r["loss"]
        elif r.get("type") == "val":
            val[r["step"]] = r
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(sorted(train), [train[s] for s in sorted(train)], label="train loss", lw=1)
    for key, label in (("val_ref_loss", "val ref"), ("val_rat_loss", "val rationale"), ("val_loss", "val")):
        pts = sorted((s, r[key]) for s, r in val.items() if r.get(key) is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out / f".tmp-{os.getpid()}-loss.png"
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, out / "loss.png")


def _prepare_out(out: Path, cfg: FinetuneConfig):
    run_markers = ("config.yaml", "checkpoints", "adapters.safetensors", "metrics.jsonl", "adapter_config.json")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if cfg.overwrite:
            if not any((out / m).exists() for m in run_markers):
                raise UserError(f"{out}: not empty and not a finetune run directory; refusing to delete it")
            shutil.rmtree(out)
        elif not cfg.resume:
            raise UserError(f"{out}: exists (pass --resume to continue that run, or --overwrite to replace it)")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise UserError(f"{out}: output directory is not writable")


def _config_diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in keys)


# ---------------------------------------------------------------- evaluation

def evaluate(model, eval_fn, val: list, cfg: FinetuneConfig, world, pad: int = 8, head_pad: int = 8) -> dict:
    """Val CE per segment over the whole val set, and the training objective on it."""
    import mlx.core as mx
    bs = cfg.val_batch_size or cfg.batch_size
    order = sorted(range(len(val)), key=lambda i: len(val[i]))
    ones = np.array([0.0, 1.0, 1.0, 1.0])
    sums = mx.zeros(3)
    counts = np.zeros(4, np.int64)
    model.eval()
    for i in range(0, len(order), bs):
        glob = [val[j] for j in order[i:i + bs]]
        counts += segment_counts(glob)
        shard = glob[world.rank()::world.size()]
        if not shard:
            continue
        arrays, _ = batch_arrays(shard, ones, 1.0, pad, cfg.max_seq_len, head_pad)
        sums = sums + eval_fn(*arrays)
        mx.eval(sums)
    model.train()
    if world.size() > 1:
        sums = mx.distributed.all_sum(sums, stream=mx.cpu)
    s = np.array([0.0, *sums.tolist()])
    mean = lambda k: float(s[k] / counts[k]) if counts[k] else None  # noqa: E731
    w = segment_weights(counts, cfg.w_ref, cfg.w_rat, cfg.normalize)
    return {"val_loss": float((w * s).sum()), "val_ref_loss": mean(ex.REF), "val_rat_loss": mean(ex.RAT),
            "val_eot_loss": mean(ex.EOT), "val_tokens": int(counts[1:].sum())}


# ---------------------------------------------------------------- training

def finetune(cfg: FinetuneConfig, on_step=None) -> dict:
    """Train; returns a summary dict. ``on_step(step, metrics)`` is called after every optimizer
    step (tests use it to simulate a kill)."""
    import mlx.core as mx

    cfg.validate()
    t_start = time.perf_counter()
    world = mx.distributed.init()
    if cfg.batch_size % world.size():
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the {world.size()} processes")
    if world.rank() == 0:
        _prepare_out(Path(cfg.out), cfg)

    loaded, model, split = setup_model(cfg)
    fast = cfg.fast_exp if cfg.fast_exp is not None else mx.default_device().type == mx.cpu
    restore = patch_cpu_kernels(model) if fast else None
    try:
        return _train(cfg, on_step, t_start, world, loaded, model, split, fast, restore is not None)
    finally:
        if restore:
            restore()


def _train(cfg, on_step, t_start, world, loaded, model, split, fast, patched):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.nn.utils import average_gradients
    import mlx.optimizers as optim
    from mlx.utils import tree_map

    rank, size = world.rank(), world.size()
    main_rank = rank == 0
    say = (lambda *a: print(*a, flush=True)) if main_rank and not cfg.quiet else (lambda *a: None)
    out = Path(cfg.out)
    tok = loaded.tokenizer
    data = load_data(cfg, tok, say)
    plan = ex.BatchPlan(data["main"], cfg.batch_size, cfg.seed, extra=data["extra"],
                        ratio=cfg.replay_ratio if data["extra"] else 0.0, bucket=cfg.bucket)
    total = cfg.iters or max(1, math.ceil(cfg.epochs * plan.per_epoch / cfg.grad_accum))
    optimizer = build_optimizer(cfg, total)
    optimizer.init(model.trainable_parameters())
    traj = cfg.trajectory()
    info = {"config_hash": _hash(traj), "config": traj, "data_hash": data["hash"], "version": __version__}

    start, position, best = 0, 0, {"value": None, "step": None}
    ckpts = list_checkpoints(out) if cfg.resume else []
    if ckpts:
        saved = read_json(out / "checkpoints" / f"step-{ckpts[-1]:07d}.json")
        if saved.get("config_hash") != info["config_hash"]:
            raise UserError(f"cannot resume {out}: settings differ from the checkpoint's: "
                            f"{_config_diff(saved.get('config', {}), traj)}")
        if saved.get("data_hash") != info["data_hash"]:
            raise UserError(f"cannot resume {out}: the training data (or tokenizer/template) changed since the "
                            f"checkpoint (data hash {saved.get('data_hash')} -> {info['data_hash']})")
        saved = load_checkpoint(out, ckpts[-1], model, optimizer)
        start, position, best = saved["step"], saved["position"], saved.get("best", best)
        say(f"resuming {out} from step {start}/{total}")

    n_train = sum(v.size for v in trainable_weights(model).values())
    compiled, pad, head_pad = shape_policy(cfg)
    pad_share = ex.padding_share(plan, 1, pad, cfg.max_seq_len)
    summary = {"out": str(out), "method": cfg.method, "fine_tune_type": cfg.fine_tune_type, "steps": total,
               "batches_per_epoch": plan.per_epoch, "epochs": round(total * cfg.grad_accum / plan.per_epoch, 3),
               "examples": len(data["main"]), "extra_examples": len(data["extra"]), "val_examples": len(data["val"]),
               "data": data["stats"], "data_hash": data["hash"], "generate_meta_hashes": data["meta_hashes"],
               "trainable_parameters": n_train, "padding_share": round(pad_share, 4),
               "head_sliced": split is not None, "fast_exp": fast, "kernels_patched": patched,
               "compiled": compiled, "pad_multiple": pad, "processes": size}
    if main_rank:
        import yaml
        atomic_write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False,
                                                              allow_unicode=True))
        write_adapter_config(out, adapter_config(cfg, loaded.path, total))
    d = data["stats"]["main"]
    n_extra = f" + {len(data['extra'])} extra" if data["extra"] else ""
    say(f"finetune {cfg.method}/{cfg.fine_tune_type}: {len(data['main'])} examples{n_extra}, "
        f"{len(data['val'])} val; {d['truncated']} truncated, {d['dropped_too_long']} dropped (too long); "
        f"{total} steps; padding {pad_share:.1%}; {n_train / 1e6:.2f}M trainable; head sliced: {split is not None}")

    # ---- the compiled step
    loss_fn = make_loss(split, fast_ce=fast)
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def grad_step(*arrays):
        (loss, seg), grads = loss_and_grad(model, *arrays)
        return loss, seg, grads

    def apply_step(grads, loss):
        # Each rank's weights are pre-scaled by the world size, so the average is the global gradient.
        grads = average_gradients(grads)
        loss = mx.distributed.all_sum(loss) / size if size > 1 else loss
        if cfg.max_grad_norm:
            grads, norm = optim.clip_grad_norm(grads, cfg.max_grad_norm)
        else:
            norm = mx.array(0.0)
        optimizer.update(model, grads)
        return loss, norm

    def eval_step(*arrays):
        return loss_fn(model, *arrays)[1]

    if compiled:
        grad_step = mx.compile(grad_step, inputs=state, outputs=state)
        apply_step = mx.compile(apply_step, inputs=state, outputs=state)
        eval_step = mx.compile(eval_step, inputs=state, outputs=state)

    if main_rank and start and (out / "metrics.jsonl").exists():
        # Steps logged after the checkpoint we resume from are about to run again: drop them, so
        # the log (and loss.png) holds each step once.
        repair_jsonl_tail(out / "metrics.jsonl")
        keep = [json_line(r) + "\n" for _, r in iter_jsonl(out / "metrics.jsonl") if int(r.get("step", 0)) <= start]
        atomic_write_text(out / "metrics.jsonl", "".join(keep))
    metrics = JsonlAppender(out / "metrics.jsonl", fsync=False) if main_rank else None
    last_plot = [time.perf_counter()]

    def log(row):
        if metrics:
            metrics.write(row)

    def run_eval(step):
        nonlocal best
        if not data["val"]:
            return None
        r = {"step": step, **evaluate(model, eval_step, data["val"], cfg, world, pad, head_pad)}
        log({"type": "val", **r})
        v = r[cfg.best_metric]
        if main_rank and v is not None and (best["value"] is None or v < best["value"]):
            best = {"value": v, "step": step, "metric": cfg.best_metric}
            _save_safetensors(out / "best_adapters.safetensors", trainable_weights(model))
        say(f"step {step}: val loss {r['val_loss']:.4f} | ref {_f(r['val_ref_loss'])} | "
            f"rationale {_f(r['val_rat_loss'])}")
        if main_rank and time.perf_counter() - last_plot[0] > 120:  # drawing costs ~1 s: not at every eval
            plot_losses(out)
            last_plot[0] = time.perf_counter()
        return r

    def checkpoint(step):
        if main_rank:
            save_checkpoint(out, step, model, optimizer,
                            {**info, "position": position, "best": best, "time": time.time()},
                            cfg.keep_checkpoints)

    prog = Progress(total - start, desc="finetune" + (f" (from step {start})" if start else ""), unit="steps",
                    enabled=main_rank and not cfg.quiet)
    win = {"loss": 0.0, "steps": 0, "tokens": 0, "trained": 0, "time": 0.0}
    totals = {"tokens": 0, "trained": 0, "time": 0.0}
    first_loss = last_loss = last_val = None
    step = last_saved = start
    clean = True  # between steps: model, optimizer, step and position agree (safe to checkpoint)
    try:
        log({"type": "event", "event": "resume" if start else "start", "step": start, "time": time.time()})
        mx.eval(model.parameters(), optimizer.state)
        mx.reset_peak_memory()
        if start == 0:
            last_val = run_eval(0)
        while step < total:
            tic = time.perf_counter()
            clean = False
            micro = []
            for _ in range(cfg.grad_accum):
                micro.append([plan.examples[i] for i in plan.at(position)])
                position += 1
            counts = segment_counts([e for m in micro for e in m])
            seg_w = segment_weights(counts, cfg.w_ref, cfg.w_rat, cfg.normalize)
            acc = loss_acc = None
            n_tok = 0
            for m in micro:
                arrays, _ = batch_arrays(m[rank::size], seg_w, float(size), pad, cfg.max_seq_len, head_pad)
                loss, _, grads = grad_step(*arrays)
                acc = grads if acc is None else tree_map(lambda a, g: a + g, acc, grads)
                loss_acc = loss if loss_acc is None else loss_acc + loss
                n_tok += sum(len(e) - 1 for e in m)
                if cfg.grad_accum > 1:
                    mx.eval(acc, loss_acc)
            loss, norm = apply_step(acc, loss_acc)
            mx.eval(state, loss, norm)
            lv = loss.item()
            step += 1
            if not math.isfinite(lv):
                good = list_checkpoints(out)
                raise UserError(f"loss is {lv} at step {step}: training stopped; the last good checkpoint is "
                                + (f"{out}/checkpoints/step-{good[-1]:07d}" if good else "none (none saved yet)")
                                + "; lower --lr, raise --warmup or set --max-grad-norm")
            clean = True
            dt = time.perf_counter() - tic
            trained = int(counts[1:].sum())
            first_loss = lv if first_loss is None else first_loss
            last_loss = lv
            for k, v in (("loss", lv), ("steps", 1), ("tokens", n_tok), ("trained", trained), ("time", dt)):
                win[k] += v
            for k, v in (("tokens", n_tok), ("trained", trained), ("time", dt)):
                totals[k] += v
            peak = mx.get_peak_memory() / 1e9
            prog.update(1, tokens=n_tok, loss=lv, peak_gb=round(peak, 2))
            if step % cfg.steps_per_report == 0 or step == total:
                log({"type": "train", "step": step, "loss": win["loss"] / win["steps"],
                     "lr": float(optimizer.learning_rate.item()), "grad_norm": float(norm.item()),
                     "tokens": win["tokens"], "trained_tokens": win["trained"],
                     "tok_s": win["tokens"] / win["time"], "trained_tok_s": win["trained"] / win["time"],
                     "peak_mem_gb": peak, "epoch": round(position / plan.per_epoch, 3)})
                win = dict.fromkeys(win, 0)
            if cfg.steps_per_eval and step % cfg.steps_per_eval == 0 and step < total:
                last_val = run_eval(step)
            if cfg.save_every and step % cfg.save_every == 0:
                checkpoint(step)
                last_saved = step
            if on_step is not None:
                on_step(step, {"loss": lv})
        prog.close()
        if data["val"] and (last_val is None or last_val["step"] != step):
            last_val = run_eval(step)
        if last_saved != step:
            checkpoint(step)
            last_saved = step
    except KeyboardInterrupt:
        prog.close()
        if size == 1 and clean and step > last_saved and main_rank:
            checkpoint(step)
            say(f"interrupted at step {step}: checkpoint saved; rerun with --resume to continue")
        raise
    finally:
        if metrics:
            metrics.close()

    if main_rank:
        _save_safetensors(out / "adapters.safetensors", trainable_weights(model))
        plot_losses(out)
    fused = None
    if cfg.fuse and main_rank:
        fused = out / "fused"
        fuse_into(fused, loaded, model)
    summary.update({
        "steps_this_run": step - start, "train_loss_first": first_loss, "train_loss_last": last_loss,
        "val": last_val, "best": best, "tokens_this_run": totals["tokens"],
        "trained_tokens_this_run": totals["trained"],
        "tok_s": round(totals["tokens"] / totals["time"], 1) if totals["time"] else None,
        "trained_tok_s": round(totals["trained"] / totals["time"], 1) if totals["time"] else None,
        "peak_mem_gb": round(mx.get_peak_memory() / 1e9, 3), "wall_s": round(time.perf_counter() - t_start, 1),
        "adapters": str(out / "adapters.safetensors"), "fused": str(fused) if fused else None})
    if main_rank:
        atomic_write_json(out / "summary.json", summary)
    return summary


def _f(v):
    return "n/a" if v is None else f"{v:.4f}"


def format_summary(s: dict) -> str:
    val = s.get("val") or {}
    return (f"trained {s['steps_this_run']} steps ({s['epochs']} epochs) -> {s['adapters']}; "
            f"loss {_f(s['train_loss_first'])} -> {_f(s['train_loss_last'])}; "
            f"val ref {_f(val.get('val_ref_loss'))}, rationale {_f(val.get('val_rat_loss'))}; "
            f"{s['tok_s'] or 0:.0f} tok/s; peak {s['peak_mem_gb']:.2f} GB; padding {s['padding_share']:.1%}"
            + (f"; fused -> {s['fused']}" if s.get("fused") else ""))
