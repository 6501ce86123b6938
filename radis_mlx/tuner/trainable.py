"""What trains: the model with its LoRA/DoRA layers (or unfrozen blocks), the optimizer, and the
adapter files in mlx-lm's format (adapter_config.json + adapters.safetensors; fusing as mlx_lm.fuse).

Built on mlx-lm's tuner: linear_to_lora_layers, its LoRA/DoRA layers, grad_checkpoint, save_config
and save for fusing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import __version__
from ..io import UserError, read_json
from .config import FinetuneConfig
from .losses import head_split


def setup_model(cfg: FinetuneConfig):
    import mlx.core as mx
    from mlx_lm.tuner.utils import linear_to_lora_layers
    from .. import models

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
    if cfg.train_embeddings:
        unfreeze_embeddings(model)
    if cfg.adapter_path:
        load_start_adapters(model, cfg)
    split = head_split(model) if cfg.slice_head else None
    if cfg.grad_checkpoint:
        from mlx_lm.tuner.trainer import grad_checkpoint
        grad_checkpoint(model.layers[0])  # patches the block class: every block recomputes in backward
    model.train()
    return loaded, model, split


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
    from .checkpoint import save_safetensors, trainable_weights
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


def fuse_adapters(model, dequantize: bool) -> None:
    """Fold LoRA/DoRA layers into plain (or quantized) linears in place (mlx_lm.fuse's step)."""
    from mlx.utils import tree_unflatten
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))


def fuse_into(out_dir: Path, loaded, model):
    """Fold the adapters into the weights and save an mlx-lm model dir (mlx_lm.fuse's steps)."""
    from mlx_lm.utils import save
    dequantize = loaded.dtype != "keep"  # trained against dequantized weights: re-quantizing would blur the delta
    fuse_adapters(model, dequantize)
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
