"""Finetune's settings: one dataclass, checked whole before any data or model is read.

defaults < YAML file < overrides (flags), through settings.build: unknown keys and wrong types are
a UserError naming the key and where it came from.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields

from .. import bounds, methods, prompts, settings, trackers
from ..fileio import UserError, check_adapter_dir
from ..settings import setting

FINE_TUNE_TYPES = ("lora", "dora", "full")

OPTIMIZERS = ("adamw", "adam", "sgd", "adafactor", "lion", "muon")


# Settings that don't change the weights a run ends at: they may differ on --resume.
_FREE_KEYS = {"out", "yes", "resume", "overwrite", "fuse", "fuse_bits", "steps_per_report", "steps_per_eval",
              "save_every", "keep_checkpoints", "grad_checkpoint", "memory_limit_gb", "compile", "slice_head",
              "fast_exp", "best_metric", "quiet",
              "trust_remote_code", "report_to", "project_name"}


@dataclass
class FinetuneConfig:
    model: str | None = setting(None, settings.MODEL_HELP)
    data: str | None = setting(None, "generate's JSONL (radis/seqkd/sdft/replay rows), or parallel data for "
                               "--method sft")
    out: str = setting("runs/finetune", "run directory")
    adapter_path: str | None = setting(None, "start from these adapters (same fine-tune type and rank)")
    method: str = setting(methods.DEFAULT_METHOD, "what to train on (radis-mlx methods)",
                          choices=tuple(methods.trained()))
    pairs: str | None = setting(None, "directions of plain parallel data, e.g. de-en")
    replay_data: str | None = setting(None, "generate's replay JSONL (or instruction+output rows)")
    replay_ratio: float | None = setting(None, "share of each epoch from --replay-data/--mix-data (default: the "
                                         "method's)")
    mix_data: str | None = setting(None, "second dataset for --method mix")
    separator: str = setting("\n\n", "between reference and explain-mode rationale", text=True)
    translate_template: str = setting(prompts.TRANSLATE, "translation instruction template ({src_name}, {tgt_name}, "
                                 "{src}); as generate's", text=True)
    system: str | None = setting(None, "system prompt (as in generate)", text=True)
    fine_tune_type: str = setting("lora", "what trains (or --lora, --dora, --full)", choices=FINE_TUNE_TYPES)
    lora_rank: int = setting(8, "LoRA/DoRA rank")
    lora_scale: float = setting(20.0, "LoRA/DoRA scale (mlx-lm's; a step grows with lr x scale)")
    lora_dropout: float = setting(0.0, "dropout on the adapters' input")
    num_layers: int = setting(-1, "train the last N blocks (-1: all)")
    lora_keys: list | None = setting(None, "comma-separated module keys, e.g. self_attn.q_proj,self_attn.v_proj "
                                "(default: every linear layer)")
    train_embeddings: bool = setting(False, "also train embed_tokens/lm_head in full (TransLLM); saved as "
                                "OUT/embeddings.safetensors (mlx-lm: use --fuse)")
    w_ref: float = setting(1.0, "loss weight of reference (and end-of-turn) tokens")
    w_rat: float = setting(1.0, "loss weight of rationale tokens")
    normalize: str = setting("tokens", "average the loss over tokens or over segments", choices=("tokens", "segments"))
    optimizer: str = setting("adamw", "optimizer (mlx-lm's)", choices=OPTIMIZERS)
    # mlx-lm's default, at its LoRA scale 20: a LoRA step grows with lr x scale, and 1e-4 at scale 20
    # (PEFT's 1e-3 at alpha 16) sent Qwen2.5-0.5B's loss from 2.2 to 6 in 25 steps (RESULTS.md).
    lr: float = setting(1e-5, "learning rate (mlx-lm's default at its LoRA scale 20)")
    lr_min: float = setting(0.0, "cosine decay floor")
    schedule: str = setting("cosine", "learning-rate schedule after the warm-up", choices=("cosine", "constant"))
    warmup: int = setting(0, "linear warm-up steps")
    weight_decay: float = setting(0.0, "decoupled weight decay (adamw)")
    max_grad_norm: float = setting(1.0, "clip the gradient norm (0: off)")
    grad_accum: int = setting(1, "batches per optimizer step")
    grad_checkpoint: bool = setting(False, "recompute activations in the backward pass (less memory, slower)")
    # Stop at the first step whose peak memory is over this (GB); None: on Metal, the GPU's working set
    # (past it a step swaps instead of failing), elsewhere no limit.
    memory_limit_gb: float | None = setting(None, "stop at the first step whose peak memory is over this (default: on "
                                       "Metal, the GPU's working set)")
    batch_size: int = setting(8, "rows per batch")
    epochs: float = setting(1.0, "passes over --data (a fraction is allowed)")
    iters: int | None = setting(None, "optimizer steps (overrides --epochs)")
    max_seq_len: int = setting(512, "tokens of a training row; longer rows lose rationale tokens, then are dropped")
    pad_multiple: int | None = setting(None, "pad batches to a multiple of this (default: 32 when compiled, else 1)")
    bucket: int = setting(16, "batches per length-sorted bucket (bigger: less padding, less shuffling)")
    seed: int = setting(0, "seed of the shuffling, the validation split and the adapters' initialisation")
    val_data: str | None = setting(None, "validation rows (as --data)")
    val_fraction: float = setting(0.0, "hold out this share of --data for validation")
    val_batch_size: int | None = setting(None, "validation batch size (default: --batch-size)")
    steps_per_eval: int = setting(100, "validate every N steps (0: never during training)")
    steps_per_report: int = setting(10, "report the training loss every N steps")
    save_every: int = setting(100, "checkpoint every N steps (0: only at the end)")
    keep_checkpoints: int = setting(2, "checkpoints kept (the newest ones)")
    best_metric: str = setting("val_loss", "validation loss that picks the best checkpoint",
                          choices=("val_loss", "val_ref_loss"))
    dtype: str = setting("auto", "weights' dtype (auto: float32 on CPU)", choices=bounds.LOAD_DTYPES)
    compile: bool | None = setting(None, "compile the step (default: on GPU only; on CPU it saves nothing and "
                              "JIT-compiles per shape)")
    slice_head: bool = setting(True, "logits only at loss positions (checked exact at start)")
    fast_exp: bool | None = setting(None, "the CPU kernels of runtime/kernels.py (default: on CPU)")
    fuse: bool = setting(False, "also write OUT/fused (a full model)")
    # At the base's 4 bits the rounding can erase what training changed (mlx-lm PR #1564).
    fuse_bits: int | None = setting(None, "quantize the fused layers to 4 or 8 bits (default: keep them in float; 4 "
                               "bits can erase the adapters)")
    resume: bool = setting(False, "continue a stopped run in --out")
    overwrite: bool = setting(False, "replace --out")
    quiet: bool = setting(False, "no progress lines")
    trust_remote_code: bool = setting(False, "run the model repository's own code (off unless given)")
    report_to: list | None = setting(None, "experiment trackers, e.g. wandb,tensorboard (offline, logs in --out; pip "
                                "install 'radis-mlx[tracking]')")
    project_name: str | None = setting(None, "W&B project (default radis-mlx)")
    yes: bool = setting(False, "allow a run of more optimizer steps than a day's worth (see bounds.MAX_ITERS)",
                   flag="--yes")

    OLD_NAMES = {"template": "translate_template"}  # old key -> setting (accepted with a note)

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
        need(self.memory_limit_gb is None or self.memory_limit_gb > 0, "memory_limit_gb",
             f"must be > 0, got {self.memory_limit_gb}")
        need(self.fuse_bits in (None, 4, 8), "fuse_bits", f"4, 8 or unset, got {self.fuse_bits}")
        need(self.warmup >= 0, "warmup", f"must be >= 0, got {self.warmup}")
        self._bounds()
        if self.report_to is not None:
            self.report_to = trackers.check(self.report_to)
        if self.adapter_path:
            check_adapter_dir(self.adapter_path)
        return self

    def _bounds(self) -> None:
        """The upper bounds (and the lower ones validate does not state): a size MLX cannot allocate
        or a run of days is refused here, not an hour into training."""
        bounds.batch(self)
        bounds.batch(self, "val_batch_size", optional=True)
        bounds.seed(self)
        bounds.dtype(self)
        bounds.directions(self)
        bounds.int_in(self, "grad_accum", 1, bounds.MAX_BATCH)
        bounds.int_in(self, "max_seq_len", 8, 1 << 17)
        bounds.int_in(self, "lora_rank", 1, 1 << 14)
        bounds.int_in(self, "num_layers", -1, 1 << 12)
        bounds.need(self.num_layers != 0, "num_layers", "must be -1 (all) or >= 1, got 0")
        bounds.int_in(self, "pad_multiple", 1, 1 << 12, optional=True)
        bounds.int_in(self, "bucket", 1, 1 << 16)
        bounds.int_in(self, "steps_per_eval", 0, 10**9)  # 0: no validation during training
        bounds.int_in(self, "steps_per_report", 1, 10**9)
        bounds.int_in(self, "save_every", 0, 10**9)
        bounds.int_in(self, "keep_checkpoints", 0, 10**6)  # 0 keeps one, as 1
        bounds.int_in(self, "warmup", 0, 10**9)
        bounds.float_in(self, "epochs", 0.0, bounds.MAX_EPOCHS, lo_open=True)
        bounds.int_in(self, "iters", 1, 10**9, optional=True)
        bounds.need((self.iters or 0) <= bounds.MAX_ITERS or self.yes, "iters",
                    f"{self.iters} steps is over {bounds.MAX_ITERS:,}, a run of days; pass --yes (recipe: "
                    "finetune.yes: true) if you mean it")

    def trajectory(self) -> dict:
        """The settings a resumed run must share with its checkpoint."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FREE_KEYS}


def fine_tune_type_flag(given: str | None, **switches: bool) -> str | None:
    """--lora/--dora/--full as --fine-tune-type; more than one type is an error."""
    picked = [name for name, on in switches.items() if on]
    if len(picked) > 1 or (picked and given and given != picked[0]):
        raise UserError(f"pick one fine-tune type (got {', '.join(picked + ([given] if given else []))})")
    return picked[0] if picked else given


def load_config(config_file=None, _where: str = "", **overrides) -> FinetuneConfig:
    """defaults < YAML file < overrides (CLI flags; None means 'not given'); ``_where``: the overrides'
    source name (settings.FLAGS for the command line)."""
    layers = [settings.file_layer(config_file)] if config_file else []
    layers.append((_where, {k: v for k, v in overrides.items() if v is not None}))
    return settings.build(FinetuneConfig, layers)


# A run's files hash its settings under the names they had when hashes were first written, so a run
# stopped before a rename still resumes after it.
_HASHED_AS = {new: old for old, new in FinetuneConfig.OLD_NAMES.items()}


def config_hash(obj) -> str:
    if isinstance(obj, dict):
        obj = {_HASHED_AS.get(k, k): v for k, v in obj.items()}
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
