"""What trains: the model with its LoRA/DoRA layers (or unfrozen blocks), the optimizer, and the
adapter files in mlx-lm's format (adapter_config.json + adapters.safetensors). Folding them into the
weights (--fuse) is the models' business: models/fuse.py.

Built on mlx-lm's tuner: linear_to_lora_layers, its LoRA/DoRA layers, grad_checkpoint and save_config.
"""

from __future__ import annotations

import os
from pathlib import Path

from .. import __version__, models
from ..backend import resolve_dtype
from ..fileio import UserError, read_json
from .checkpoint import save_safetensors, trainable_weights
from .config import FinetuneConfig
from .losses import head_split


def setup_model(cfg: FinetuneConfig):
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers

    loaded = models.load(cfg.model, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    model = loaded.model
    check_quantized_base(cfg, quantized_bits(model))  # finetune checked the files, if it could read them
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
    if cfg.train_embeddings:
        unfreeze_embeddings(model)
    if cfg.adapter_path:
        load_start_adapters(model, cfg)
    split = head_split(model) if cfg.slice_head else None
    model.train()
    return loaded, model, split


def quantized_bits(model) -> int | None:
    """The bits of the model's first quantized layer; None if nothing is quantized."""
    import mlx.nn as nn
    return next((m.bits for _, m in model.named_modules()
                 if isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding))), None)


def check_quantized_base(cfg: FinetuneConfig, bits: int | None) -> None:
    """Refuse what cannot train on weights kept quantized (``bits``: the base's, None if it is not),
    in one line naming the way out: a quantized weight is packed integers with no gradient, and DoRA
    dequantizes each adapted weight in every step (a 16-bit copy of the model held for backward)."""
    if not bits:
        return
    base = f"{cfg.model} is quantized ({bits}-bit) and --dtype {cfg.dtype} keeps it so"
    way_out = "pass --dtype bfloat16 (or float32) to train a dequantized copy"
    if cfg.fine_tune_type == "full":
        raise UserError(f"fine_tune_type full: {base}; packed weights cannot be trained: {way_out}, or use lora")
    if cfg.fine_tune_type == "dora":
        raise UserError(f"fine_tune_type dora: {base}; DoRA would dequantize every adapted weight in every "
                        f"step (a 16-bit copy of the model): use lora, or {way_out}")
    if cfg.train_embeddings:
        raise UserError(f"train_embeddings: {base}; its packed embeddings cannot be trained: {way_out}")


def preflight_quantized_base(cfg: FinetuneConfig) -> None:
    """check_quantized_base from the model's stored config, before anything is loaded or written."""
    if resolve_dtype(cfg.dtype) == "keep":
        check_quantized_base(cfg, ((models.stored_config(cfg.model) or {}).get("quantization") or {}).get("bits"))


def checkpoint_blocks(model):
    """Recompute every block in backward with mlx-lm's grad_checkpoint, which patches the block
    *class*; returns the function that puts the class back. Without it a second finetune in one
    process (a pipeline run) nested another checkpoint, and eval after training ran the wrapper."""
    from mlx_lm.tuner.trainer import grad_checkpoint
    cls = type(model.layers[0])
    original = cls.__call__
    if getattr(original, "_radis_checkpointed", False):  # wrapped by a run still going: wrap once
        return lambda: None
    grad_checkpoint(model.layers[0])
    cls.__call__._radis_checkpointed = True

    def restore():
        cls.__call__ = original
    return restore


def unfreeze_embeddings(model) -> None:
    """The input embedding and the output head train in full beside the adapters, as TransLLM does
    (there for a new vocabulary). They are saved apart (embeddings.safetensors): mlx-lm's
    load_adapters takes adapter tensors only, so mlx-lm users need the fused model (--fuse)."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "embed_tokens"):
        raise UserError("train_embeddings: this model has no model.embed_tokens to train")
    inner.embed_tokens.unfreeze()
    if "lm_head" in model:  # untied; a tied head is the embedding itself
        model.lm_head.unfreeze()


ADAPTER_LEAVES = {"lora_a", "lora_b", "m"}  # what mlx-lm's load_adapters accepts from a LoRA/DoRA file


def save_adapters(out: Path, model, fine_tune_type: str, prefix: str = "") -> None:
    """adapters.safetensors as mlx-lm reads it; full tensors trained beside LoRA/DoRA layers
    (train_embeddings) go to embeddings.safetensors, which models.load applies after the adapters."""
    w = trainable_weights(model)
    extra = {} if fine_tune_type == "full" else {k: v for k, v in w.items()
                                                 if k.rsplit(".", 1)[-1] not in ADAPTER_LEAVES}
    save_safetensors(out / f"{prefix}adapters.safetensors", {k: v for k, v in w.items() if k not in extra})
    if extra:
        save_safetensors(out / f"{prefix}embeddings.safetensors", extra)


def lora_parameters(cfg) -> dict:
    p = {"rank": cfg.lora_rank, "dropout": cfg.lora_dropout, "scale": cfg.lora_scale}
    if cfg.lora_keys:
        p["keys"] = list(cfg.lora_keys)
    return p


def load_start_adapters(model, cfg):
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
