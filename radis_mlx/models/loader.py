"""One loader for every stage: hub id, local mlx-lm dir, GGUF file, or an offline model's short name.

On the CPU, quantized matmul is ~100x slower than float32 with OpenBLAS, so quantized
models are dequantized to float32 at load unless asked otherwise; on Metal/CUDA they stay
quantized (QLoRA, less memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..backend import resolve_dtype
from ..fileio import UserError, check_adapter_dir
from . import offline
from .interpolate import check_scalable, scale_adapters
from .offline import DEFAULT_MODEL, REGISTRY


def check_model(model: str | None) -> str:
    """What kind of model ``model`` names ("offline", "gguf", "dir" or "hub"), checked as far as it can
    be without converting, downloading or loading anything: a recipe's --check calls it."""
    if offline.offline_model(model) is not None:
        offline.check_installed(model)
        return "offline"
    if not isinstance(model, str) or not model.strip():
        raise UserError(f"{model!r:.60}: expected a model name, directory, .gguf file or Hugging Face id")
    if model.endswith(".gguf"):
        if not Path(model).is_file():
            raise UserError(f"{model}: GGUF file not found")
        return "gguf"
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise UserError(f"{model}: not an mlx-lm model directory (no config.json)")
        return "dir"
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise UserError(f"{model}: no such model directory, not a Hugging Face id (owner/name), "
                        f"and not an offline model ({', '.join(REGISTRY)})")
    return "hub"


def resolve(model: str | None, dtype: str = "auto") -> str:
    """Map the user's --model to something mlx_lm.load opens (a local dir or a hub id); a GGUF is
    converted once, in the variant a load with ``dtype`` starts from (conversion_for)."""
    kind = check_model(model)
    if kind == "offline":
        return str(offline.converted_dir(offline.gguf_file(model), offline.conversion_for(dtype)))
    if kind == "gguf":
        return str(offline.converted_dir(model, offline.conversion_for(dtype)))
    return str(Path(model).expanduser()) if kind == "dir" else model



def stored_config(model: str | None) -> dict | None:
    """A model's config.json read without loading or downloading anything: a local mlx-lm dir or a
    hub id already in the Hugging Face cache; None otherwise (offline names and GGUF files are
    converted at load, a hub id not cached yet is fetched then)."""
    if not model or offline.offline_model(model) is not None or model.endswith(".gguf"):
        return None
    p = Path(model).expanduser() / "config.json"
    if not p.is_file() and model.count("/") == 1 and not model.startswith((".", "/", "~")):
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(model, "config.json")
        p = Path(cached) if isinstance(cached, str) else p
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def model_bytes(path: str) -> int:
    """About what one process holds for this model directory's weights on the CPU, where quantized
    models become float32 at load; 0 for a hub id not on disk yet."""
    p = Path(path)
    if not (p / "config.json").exists():
        return 0
    files = sorted(p.glob("*.safetensors"))
    bits = (json.loads((p / "config.json").read_text()).get("quantization") or {}).get("bits")
    if bits:
        return sum(f.stat().st_size for f in files) * 32 // bits
    # Unquantized: every element as float32, whatever the file stores (a converted K-quant model is
    # float32 on disk already; counting it as 16-bit weights doubled it and cost a worker process).
    from safetensors import safe_open
    n = 0
    for f in files:
        with safe_open(str(f), framework="numpy") as st:  # reads the header only
            n += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return 4 * n


@dataclass
class Loaded:
    model: object
    tokenizer: object
    name: str
    path: str
    adapter_path: str | None = None
    dtype: str = "keep"
    config: dict = field(default_factory=dict)


def to_float32(model) -> None:
    """Dequantize quantized layers and cast every float parameter to float32 (the fast CPU path)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_map, tree_unflatten
    from mlx_lm.utils import dequantize_model

    # mx.dequantize computes in the scales' dtype, and float16 arithmetic on the CPU is emulated:
    # 3.5 s for the default 135M model. Unpacked here in float32 (the same values as mx.dequantize
    # with float32 scales, without float16 rounding): 0.6 s. Other bit widths and modes, and
    # mlx-lm's switch layers, go through mlx-lm's dequantize_model.
    plain = []
    for name, mod in model.named_modules():
        if (isinstance(mod, (nn.QuantizedLinear, nn.QuantizedEmbedding)) and 32 % mod.bits == 0
                and getattr(mod, "mode", "affine") == "affine" and mod.biases is not None):
            w = _dequantize_f32(mod.weight, mod.scales, mod.biases, mod.group_size, mod.bits)
            if isinstance(mod, nn.QuantizedLinear):
                new = nn.Linear(w.shape[1], w.shape[0], bias="bias" in mod)
                if "bias" in mod:
                    new.bias = mod.bias
            else:
                new = nn.Embedding(*w.shape)
            new.weight = w
            plain.append((name, new))
    if plain:
        model.update_modules(tree_unflatten(plain))
    dequantize_model(model)
    model.update(tree_map(lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p,
                          model.parameters()))
    mx.eval(model.parameters())


def _dequantize_f32(w, scales, biases, group_size: int, bits: int):
    """mx.dequantize's affine mode (bits dividing 32) computed in float32."""
    import mlx.core as mx
    q = (w[..., None] >> mx.arange(0, 32, bits, dtype=mx.uint32)) & ((1 << bits) - 1)
    q = q.reshape(*w.shape[:-1], -1, group_size).astype(mx.float32)
    f32 = (q * scales.astype(mx.float32)[..., None] + biases.astype(mx.float32)[..., None])
    return f32.reshape(*w.shape[:-1], -1)


def _hub_error(repo: str, e: Exception) -> str:
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return (f"{repo}: not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 "
                "forbids downloading it")
    first = " ".join(str(e).split())[:200]
    return f"{repo}: cannot get it from the Hugging Face hub ({type(e).__name__}: {first})"


_SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
               "num_key_value_heads", "vocab_size")


def check_adapter_base(adapter: str, path: str, model: str) -> None:
    """Refuse adapters whose run names another base model of another shape, before loading: the
    weights might still load (same layer names) and translate as noise. Adapters whose base is not
    on this machine are left to the shape check of the load itself."""
    f = Path(adapter) / "adapter_config.json"
    if not f.is_file():
        raise UserError(f"{adapter}: no adapter_config.json (not an adapter directory)")
    try:
        base = json.loads(f.read_text()).get("model")
    except (ValueError, OSError) as e:
        raise UserError(f"{f}: unreadable ({e})") from None
    if not isinstance(base, str) or base == path or not (Path(base) / "config.json").is_file() \
            or not (Path(path) / "config.json").is_file():
        return
    a, b = (json.loads((Path(p) / "config.json").read_text()) for p in (base, path))
    differ = [k for k in _SHAPE_KEYS if a.get(k) != b.get(k)]
    if differ:
        k = differ[0]
        raise UserError(f"{adapter}: adapters for another base model: trained on {base} ({k} {a.get(k)}), "
                        f"not {model} ({k} {b.get(k)}); pass the --model they were trained on")


def load(model: str | None = None, adapter_path: str | None = None, *, dtype: str = "auto",
         trust_remote_code: bool = False, adapter_scale: float | None = None) -> Loaded:
    """Load a model + tokenizer. dtype: auto (float32 on CPU, as stored on GPU), keep, float32,
    float16, bfloat16. adapter_scale A: the base plus A x the LoRA adapter's delta (interpolate.py)."""

    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load as mlx_load
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if adapter_path:
        check_adapter_dir(adapter_path)  # before the model loads: a bad directory costs no load
    if adapter_scale is not None:
        adapter_scale = check_scalable(adapter_path, adapter_scale)  # before the load: a bad setting costs nothing
    path = resolve(model, dtype)
    if adapter_path:
        check_adapter_base(adapter_path, path, model or DEFAULT_MODEL)
    try:
        m, tok, config = mlx_load(path, tokenizer_config={"trust_remote_code": trust_remote_code},
                                  return_config=True, trust_remote_code=trust_remote_code)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, HfHubHTTPError) as e:  # before FileNotFoundError
        raise UserError(_hub_error(path, e)) from None
    except (FileNotFoundError, ValueError) as e:
        raise UserError(f"cannot load model {model or DEFAULT_MODEL}: {e}") from None
    dtype = resolve_dtype(dtype)
    if dtype == "float32":
        to_float32(m)
    elif dtype in ("float16", "bfloat16"):
        from mlx.utils import tree_map
        from mlx_lm.utils import dequantize_model
        dequantize_model(m)
        t = getattr(mx, dtype)
        m.update(tree_map(lambda p: p.astype(t) if mx.issubdtype(p.dtype, mx.floating) else p, m.parameters()))
    elif dtype != "keep":
        raise UserError(f"unknown dtype {dtype!r} (auto, keep, float32, float16, bfloat16)")
    if adapter_path:
        try:
            m = load_adapters(m, str(adapter_path))
            emb = Path(adapter_path) / "embeddings.safetensors"  # finetune --train-embeddings
            if emb.is_file():
                m.load_weights(list(mx.load(str(emb)).items()), strict=False)
        except (ValueError, KeyError) as e:  # adapters trained on another model (shapes or layer names)
            first = " ".join(str(e).split())[:160]
            raise UserError(f"{adapter_path}: these adapters do not fit {model or DEFAULT_MODEL} ({first})") from None
        if adapter_scale is not None and adapter_scale != 1:
            scale_adapters(m, adapter_scale)
    m.eval()
    return Loaded(m, tok, model or DEFAULT_MODEL, path, adapter_path, dtype, config)
