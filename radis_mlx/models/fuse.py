"""Fusing: fold a model's LoRA/DoRA layers into its weights, as mlx_lm.fuse does, for finetune --fuse
(an mlx-lm model directory) and export --gguf (the fused weights written as GGUF).

Built on the layers' own ``fuse`` and mlx-lm's ``save``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fuse_adapters(model, dequantize: bool) -> list[str]:
    """Fold LoRA/DoRA layers into plain (or quantized) linears in place (mlx_lm.fuse's step); returns
    the fused layers' names."""
    from mlx.utils import tree_unflatten
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    return [n for n, _ in fused]


def quantize_fused(model, names: list[str], bits: int, config: dict) -> None:
    """Quantize the fused layers from their float weights, recorded per layer in config["quantization"]
    as mlx-lm's loader reads it (the base's group size; 64, mlx-lm's default, for a float base)."""
    import mlx.nn as nn
    base = dict(config.get("quantization") or {})
    q = {"group_size": base.get("group_size", 64), "bits": bits, "mode": base.get("mode", "affine")}
    keep = set(names)
    nn.quantize(model, class_predicate=lambda p, m: p in keep and hasattr(m, "to_quantized") and q)
    config["quantization"] = {**(base or q), **dict.fromkeys(names, q)}


def fuse_into(out_dir: Path, loaded, model, bits: int | None = None):
    """Fold the adapters into the weights and save an mlx-lm model dir (mlx_lm.fuse's steps).

    Always fused in float: an adapted layer of a quantized base becomes dequantize(W) + dW in the
    scales' dtype. mlx-lm's default re-quantizes that at the base's bits and group, and the 4-bit
    rounding step is larger than a LoRA delta, so the fused model lost the training (mlx-lm PR #1564;
    tests/test_mac_path.py). Layers without adapters stay quantized: mlx-lm's loader quantizes only
    the layers whose scales are stored, so the config keeps its ``quantization``. ``bits``: then
    quantize the fused layers from their float weights."""
    from mlx_lm.utils import save
    names = fuse_adapters(model, dequantize=True)
    config = dict(loaded.config)
    if loaded.dtype != "keep":  # the whole model was dequantized at load
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    if bits:
        quantize_fused(model, names, bits, config)
    tmp = out_dir.with_name(f".tmp-{os.getpid()}-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    # A hub id is saved from its local snapshot: mlx-lm's save would fetch the repo's model card,
    # which no load caches, so a fuse failed under HF_HUB_OFFLINE after the whole training.
    src = loaded.path if Path(loaded.path).exists() else _snapshot(loaded.path)
    save(tmp, src, model, loaded.tokenizer, config, donate_model=False)
    if src != loaded.path:
        _card_names_base(tmp / "README.md", loaded.path)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def _snapshot(repo: str) -> str:
    from mlx_lm.utils import hf_repo_to_path
    return str(hf_repo_to_path(repo))  # local_files_only: the load just put it there


def _card_names_base(readme: Path, repo: str) -> None:
    """The card mlx-lm writes for a local source, with the hub id it came from as base_model."""
    from huggingface_hub import ModelCard
    card = ModelCard.load(readme)
    card.data.base_model = repo
    card.save(readme)
