"""Adapter interpolation (WiSE-FT style): the base model plus A x the adapter's weight delta, no new training.

A LoRA layer computes ``W x + s (x A) B``: its delta to the base is ``s B^T A^T``, linear in its
``scale`` s. Multiplying every LoRA layer's scale by A therefore gives exactly base + A x delta,
unfused (A = 0 is the base model, A = 1 the adapter; a fused model with A x the delta gives the same
logits: tests/models/test_interpolate.py). It is the cheapest way to trade a fine-tune's translation gain
against its forgetting, so a method must beat the path it traces, not only its end point.

DoRA renormalises each row by a learned magnitude, so its delta is not linear in its scale; a full
fine-tune or trained embeddings keep no delta apart from the base: those are refused, not guessed.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..fileio import UserError, read_json


def check_scalable(adapter_path, scale) -> float:
    """The scale as a float, after checking that this adapter's delta can be scaled (one-line errors)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise UserError(f"adapter scale must be a finite number, got {scale!r}")
    if not adapter_path:
        raise UserError(f"adapter scale {scale:g} needs an adapter (this model has none)")
    conf = Path(adapter_path) / "adapter_config.json"
    ft = read_json(conf).get("fine_tune_type", "lora") if conf.is_file() else "lora"
    if ft != "lora":
        raise UserError(f"{adapter_path}: adapter scale works on LoRA adapters only, these are {ft} "
                        "(DoRA's delta is not linear in its scale; a full fine-tune keeps no delta)")
    if (Path(adapter_path) / "embeddings.safetensors").is_file():
        raise UserError(f"{adapter_path}: adapter scale cannot scale trained embeddings (train_embeddings), "
                        "which replace the base's instead of adding a delta")
    return float(scale)


def scale_adapters(model, scale: float) -> int:
    """Multiply every LoRA layer's output by ``scale`` in place; returns how many layers were scaled."""
    from mlx_lm.tuner.dora import DoRAEmbedding, DoRALinear
    from mlx_lm.tuner.lora import LoRAEmbedding, LoRALinear, LoRASwitchLinear

    n = 0
    for _, m in model.named_modules():
        if isinstance(m, (DoRALinear, DoRAEmbedding)):
            raise UserError("adapter scale works on LoRA adapters only, not DoRA")
        if isinstance(m, (LoRALinear, LoRASwitchLinear, LoRAEmbedding)):
            m.scale = m.scale * scale
            n += 1
    if n == 0:
        raise UserError("adapter scale: the model has no LoRA layers to scale")
    return n


def scale_suffix(scale: float | None) -> str:
    """A run's name tag for its scale: ``@0.5`` (sft-s0@0.5); none for the adapter as trained."""
    return "" if scale is None or scale == 1 else f"@{scale:g}"
