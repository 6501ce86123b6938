"""Convert a GGUF file (llama.cpp) into an mlx-lm model directory.

Two readers. MLX reads GGUF itself (``mx.load``) when every tensor is F32/F16/Q4_0/Q4_1/Q8_0: the
quantized ones arrive as MLX affine triplets (weight/scales/biases, group size 32) that hold the
same values exactly, so they stay quantized. Everything else (K-quants, Q5_*, BF16) goes through
the ``gguf`` package, llama.cpp's own Python reader and dequantizer. Architectures map to mlx-lm's
model classes through ARCHS, each saying which of llama.cpp's conventions to undo (the q/k row
permutation of llama, gemma's ``1 + w`` norms). The tokenizer is rebuilt from the metadata
(byte-level BPE only, in tokenizer.py). The directory is written under a temporary name, loaded back strictly
through mlx-lm, and only then renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import mlx.core as mx

from ..fileio import UserError, atomic_write_json
from .tokenizer import build_tokenizer

GROUP_SIZE = 32
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
# "exact" is what a CPU load asks for: MLX-native quantized tensors stay quantized (they dequantize
# exactly at load), every other quantized tensor is dequantized to float32 here.
CONVERT_DTYPES = ("keep", "exact", *DTYPES)
# The types MLX's own GGUF loader reads exactly. It reads BF16 too, but through float16, which
# loses small values and overflows large ones; with any other type it fails on the whole file.
NATIVE_TYPES = ("F32", "F16", "Q4_0", "Q4_1", "Q8_0")
# The types read through the gguf package, and the MLX affine width each becomes under dtype=keep.
# No MLX format holds a K-quant's super-blocks, and mx.quantize keeps zero exact, which shifts the
# grid: requantized to 4 bits a Q4_K tensor moves by up to a whole 4-bit step; at 8 bits it stays
# within 1/255 of each group's range (~9 bits a weight instead of ~4.5).
REQUANT_BITS = dict.fromkeys(("Q2_K", "Q3_K", "Q4_0", "Q4_1", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_0"), 8)
SUPPORTED_TYPES = ("F32", "F16", "BF16", *REQUANT_BITS)

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GEMMA_LAYER_NAMES = {**_LAYER_NAMES, "ffn_norm": "pre_feedforward_layernorm",
                      "post_attention_norm": "post_attention_layernorm",
                      "post_ffw_norm": "post_feedforward_layernorm"}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# ------------------------------------------------------------------ architectures
def _common_config(meta: dict, arch: str) -> dict:
    def g(key, default=None):
        return meta.get(f"{arch}.{key}", default)

    n_heads, hidden = int(g("attention.head_count")), int(g("embedding_length"))
    cfg = {
        "hidden_size": hidden,
        "num_hidden_layers": int(g("block_count")),
        "intermediate_size": int(g("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(g("attention.head_count_kv", n_heads)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(g("context_length", 4096)),
        "head_dim": int(g("attention.key_length", g("rope.dimension_count", hidden // n_heads))),
    }
    scaling = g("rope.scaling.type")
    if scaling not in (None, "none"):
        if scaling != "linear":
            raise ValueError(f"rope scaling {scaling!r} (supported: linear)")
        cfg["rope_scaling"] = {"type": "linear", "rope_type": "linear",
                               "factor": float(g("rope.scaling.factor"))}
    return cfg


def _llama_config(meta: dict) -> dict:
    cfg = _common_config(meta, "llama")
    cfg["head_dim"] = int(meta.get("llama.rope.dimension_count", cfg["head_dim"]))
    return {**cfg, "attention_bias": False, "mlp_bias": False}


def _gemma3_config(meta: dict) -> dict:
    cfg = _common_config(meta, "gemma3")
    # llama.cpp: 1/sqrt(hidden/heads) for the 27B model (62 blocks), 1/sqrt(head_dim) otherwise.
    big = cfg["num_hidden_layers"] == 62
    return {**cfg, "query_pre_attn_scalar": cfg["hidden_size"] // cfg["num_attention_heads"] if big
            else cfg["head_dim"], "sliding_window": int(meta.get("gemma3.attention.sliding_window", 512)),
            "sliding_window_pattern": 6, "rope_local_base_freq": 10000.0}


@dataclass(frozen=True)
class Arch:
    model_type: str  # mlx-lm's module name
    config: Callable[[dict], dict]
    layer_names: dict = field(default_factory=lambda: _LAYER_NAMES)
    permute_qk: bool = False  # llama.cpp's HF->GGUF converter permuted the q/k rows (llama only)
    norm_offset: float = 0.0  # gemma: llama.cpp stores RMSNorm weights as 1 + w
    exports: bool = False  # export --gguf writes it back (models/gguf_export.py)


# The one architecture table: GGUF import reads it, and export --gguf writes its exportable rows.
ARCHS = {
    "llama": Arch("llama", _llama_config, permute_qk=True, exports=True),
    "qwen2": Arch("qwen2", lambda m: _common_config(m, "qwen2"), exports=True),
    "qwen3": Arch("qwen3", lambda m: _common_config(m, "qwen3")),
    "gemma3": Arch("gemma3_text", _gemma3_config, _GEMMA_LAYER_NAMES, norm_offset=1.0),
}


def get_arch(meta: dict, path="GGUF") -> tuple[str, Arch]:
    name = meta.get("general.architecture")
    if name not in ARCHS:
        raise UserError(f"{path}: unsupported GGUF architecture {name!r} (supported: {', '.join(ARCHS)})")
    return name, ARCHS[name]


def gguf_config(meta: dict, path="GGUF") -> dict:
    name, arch = get_arch(meta, path)
    try:
        cfg = {"model_type": arch.model_type, **arch.config(meta)}
    except (TypeError, ValueError) as e:  # a missing or malformed hyperparameter
        raise UserError(f"{path}: {name} metadata: {e}") from None
    tokens = meta.get("tokenizer.ggml.tokens")
    cfg["vocab_size"] = int(meta.get(f"{name}.vocab_size", len(tokens) if tokens else 0))
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = meta.get(f"tokenizer.ggml.{k.replace('pad_', 'padding_')}")
        if v is not None:
            cfg[k] = int(v)
    return cfg


# ------------------------------------------------------------------ reading
def _read_native(path: Path) -> dict:
    try:
        return mx.load(str(path))
    except (RuntimeError, ValueError) as e:
        raise UserError(f"{path}: not a readable GGUF file, truncated or corrupt ({e})") from None


def _open_reader(path: Path):
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, IndexError, KeyError, OSError) as e:
        raise UserError(f"{path}: not a readable GGUF file, truncated or corrupt "
                        f"({type(e).__name__}: {str(e)[:120]})") from None
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    bad = sorted({f"{t.tensor_type.name} ({t.name})" for t in reader.tensors
                  if t.tensor_type.name not in SUPPORTED_TYPES})
    if bad:
        raise UserError(f"{path}: unsupported GGUF tensor type {bad[0]} "
                        f"(supported: {', '.join(SUPPORTED_TYPES)})")
    return reader, meta


def read_gguf(path):
    """(MLX-native weights or None, gguf reader, metadata as plain Python values). The reader lists
    the tensor types; mx.load reads the file when every type is one it reads exactly."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: GGUF file not found")
    reader, meta = _open_reader(path)
    native = {t.tensor_type.name for t in reader.tensors} <= set(NATIVE_TYPES)
    return (_read_native(path) if native else None), reader, meta


# ------------------------------------------------------------------ weights
def _unpermute_rows(w: mx.array, n_heads: int) -> mx.array:
    # llama.cpp stored  W.reshape(h, 2, d/2, ...).swapaxes(1, 2);  invert that row order.
    # Rows are output features for weight, scales and biases alike, so the packed
    # quantized tensors are permuted without dequantizing.
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str, path, layer_names: dict = _LAYER_NAMES) -> str:
    base, _, suffix = name.rpartition(".")
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if m and m.group(2) in layer_names:
        return f"model.layers.{m.group(1)}.{layer_names[m.group(2)]}.{suffix}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    if base == "rope_freqs":
        return ""  # checked against the config's rope scaling in _check_rope_freqs
    raise UserError(f"{path}: unsupported GGUF tensor {name!r}")


def _undo_conventions(hf: str, w: mx.array, cfg: dict, arch: Arch) -> mx.array:
    """One tensor in HF's layout: llama.cpp's q/k row permutation and gemma's 1 + w undone."""
    qk = re.fullmatch(r"model\.layers\.\d+\.self_attn\.([qk])_proj\.(weight|scales|biases|bias)", hf)
    if arch.permute_qk and qk:
        w = _unpermute_rows(w, cfg["num_attention_heads" if qk.group(1) == "q" else "num_key_value_heads"])
    if arch.norm_offset and hf.endswith("norm.weight"):
        w = w - arch.norm_offset  # exact: the stored 1 + w lies in [0.5, 2] or near it
    return w


def _check_rope_freqs(factors, cfg: dict, path) -> None:
    """Llama 3.1+ files carry their rope scaling as per-frequency factors; map them back to mlx-lm's
    llama3 rope settings, and refuse a file whose factors those settings do not reproduce."""
    import numpy as np

    factors = np.asarray(factors, dtype=np.float64).ravel()
    dims, base = cfg["head_dim"], cfg["rope_theta"]
    scaling = {"rope_type": "llama3", "factor": float(factors.max()), "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    wavelen = 2 * np.pi * base ** (np.arange(0, dims, 2) / dims)
    low, high = (scaling["original_max_position_embeddings"] / scaling[k]
                 for k in ("low_freq_factor", "high_freq_factor"))
    smooth = (scaling["original_max_position_embeddings"] / wavelen - 1.0) / (4.0 - 1.0)
    expect = np.where(wavelen < high, 1.0, np.where(
        wavelen > low, scaling["factor"], 1 / ((1 - smooth) / scaling["factor"] + smooth)))
    if expect.shape != factors.shape or not np.allclose(expect, factors, rtol=1e-4):
        raise UserError(f"{path}: rope_freqs holds a rope scaling that is not llama3's (unsupported)")
    cfg["rope_scaling"] = scaling


def _quantization_entry(quant: dict) -> dict | None:
    """mlx-lm's config entry: the commonest width as the default, per-module entries for the rest."""
    if not quant:
        return None
    widths = [q["bits"] for q in quant.values()]
    default_bits = max(set(widths), key=widths.count)
    entry = {"group_size": GROUP_SIZE, "bits": default_bits}
    entry.update({mod: q for mod, q in quant.items() if q["bits"] != default_bits})
    return entry


def _native_weights(weights: dict, cfg: dict, arch: Arch, dtype: str, path):
    """mx.load's tensors: quantized ones are already MLX triplets; dequantized unless kept."""
    out = {}
    for name, w in weights.items():
        hf = _hf_name(name, path, arch.layer_names)
        if hf:
            out[hf] = _undo_conventions(hf, w, cfg, arch)
        elif name.startswith("rope_freqs"):
            _check_rope_freqs(w.astype(mx.float32).tolist(), cfg, path)
    quant: dict = {}
    for k in [k for k in out if k.endswith(".scales")]:
        mod = k[: -len(".scales")]
        w, scales, biases = out[f"{mod}.weight"], out[k], out.get(f"{mod}.biases")
        if biases is None:
            raise UserError(f"{path}: quantized tensor {mod} has no biases (unsupported tensor type)")
        bits = w.shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
        if dtype in ("keep", "exact"):
            quant[mod] = {"group_size": GROUP_SIZE, "bits": bits}
        else:
            # Dequantize in float32 so float16 scales don't cost precision, then cast.
            out[f"{mod}.weight"] = mx.dequantize(w, scales.astype(mx.float32), biases.astype(mx.float32),
                                                 group_size=GROUP_SIZE, bits=bits)
            del out[k], out[f"{mod}.biases"]
    if dtype in DTYPES:
        out = {k: v.astype(DTYPES[dtype]) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in out.items()}
    return out, _quantization_entry(quant), {}


def _reader_weights(reader, cfg: dict, arch: Arch, dtype: str, path):
    """The gguf package's tensors, dequantized to float32 (exactly its reference dequantization);
    under keep, requantized to MLX affine REQUANT_BITS."""
    import numpy as np
    from gguf.quants import dequantize

    out, quant, requant = {}, {}, {}
    for t in reader.tensors:
        hf = _hf_name(t.name, path, arch.layer_names)
        kind = t.tensor_type.name
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if not hf:
            _check_rope_freqs(w, cfg, path)
            continue
        w = _undo_conventions(hf, mx.array(w.reshape(tuple(int(d) for d in reversed(t.shape)))), cfg, arch)
        if dtype == "keep" and kind in REQUANT_BITS:
            mod, bits = hf[: -len(".weight")], REQUANT_BITS[kind]
            wq, scales, biases = mx.quantize(w, group_size=GROUP_SIZE, bits=bits)
            new = {hf: wq, f"{mod}.scales": scales.astype(mx.float16), f"{mod}.biases": biases.astype(mx.float16)}
            quant[mod], requant[kind] = {"group_size": GROUP_SIZE, "bits": bits}, bits
        else:  # keep: the stored precision; exact: float32
            stored = {"F16": mx.float16, "BF16": mx.bfloat16}.get(kind, mx.float32)
            new = {hf: w.astype(DTYPES.get(dtype, stored if dtype == "keep" else mx.float32))}
        mx.eval(list(new.values()))  # one tensor's float32 at a time, not a whole 7B model's
        out.update(new)
    return out, _quantization_entry(quant), requant


# ------------------------------------------------------------------ the directory
def _write_weights(tmp: Path, weights: dict) -> None:
    from mlx_lm.utils import make_shards

    shards = make_shards(weights)
    fmt = "model-{:05d}-of-{:05d}.safetensors" if len(shards) > 1 else "model.safetensors"
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values())}, "weight_map": {}}
    for i, shard in enumerate(shards, 1):
        name = fmt.format(i, len(shards))
        mx.save_safetensors(str(tmp / name), shard, metadata={"format": "mlx"})
        index["weight_map"].update(dict.fromkeys(shard, name))
    if len(shards) > 1:
        atomic_write_json(tmp / "model.safetensors.index.json", index)


def _check_loads(tmp: Path, path) -> None:
    """Every tensor must find its place in mlx-lm's model class (strict, lazy: no compute)."""
    from mlx_lm.utils import load_model

    try:
        load_model(tmp, lazy=True, strict=True)
    except (ValueError, KeyError) as e:
        raise UserError(f"{path}: the converted weights do not fit mlx-lm's model "
                        f"({' '.join(str(e).split())[:200]})") from None


def convert_gguf(gguf_path, out_dir, dtype: str = "keep", tokenizer: bool = True) -> Path:
    """Write an mlx-lm model directory for ``gguf_path``; out_dir appears complete or not at all.

    dtype: keep (quantized; K-quants and other non-MLX types requantized to MLX affine 8-bit),
    exact (MLX-native quantized tensors kept, all others dequantized to float32), float32, float16,
    bfloat16. tokenizer=False writes the weights alone (for checking a base model whose
    SentencePiece tokenizer is not supported)."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if dtype not in CONVERT_DTYPES:
        raise UserError(f"unknown dtype {dtype!r} (choose {', '.join(CONVERT_DTYPES)})")
    native, reader, meta = read_gguf(gguf_path)
    _, arch = get_arch(meta, gguf_path)
    cfg = gguf_config(meta, gguf_path)
    tok = build_tokenizer(meta, gguf_path) if tokenizer else None  # refused before any heavy work
    if native is not None:
        weights, quantization, requant = _native_weights(native, cfg, arch, dtype, gguf_path)
    else:
        weights, quantization, requant = _reader_weights(reader, cfg, arch, dtype, gguf_path)
    cfg["tie_word_embeddings"] = "lm_head.weight" not in weights
    if "model.embed_tokens.weight" in weights:
        cfg["vocab_size"] = int(weights["model.embed_tokens.weight"].shape[0])
    if quantization:
        cfg["quantization"] = quantization
    cfg["source"] = {"gguf": gguf_path.name, "name": meta.get("general.name"), "dtype": dtype,
                     "reader": "mlx" if native is not None else "gguf"}
    if requant:
        cfg["source"]["requantized"] = {k: f"MLX affine {b}-bit, group size {GROUP_SIZE}"
                                        for k, b in sorted(requant.items())}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _write_weights(tmp, weights)
        del weights
        if tok is not None:
            tok[0].save(str(tmp / "tokenizer.json"))
            atomic_write_json(tmp / "tokenizer_config.json", tok[1])
        gen_cfg = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg}
        atomic_write_json(tmp / "generation_config.json", gen_cfg)
        atomic_write_json(tmp / "config.json", cfg)
        _check_loads(tmp, gguf_path)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def requantized_note(model_dir) -> str | None:
    """What a keep conversion requantized, for the CLI to say (None: nothing was)."""
    import json

    src = json.loads((Path(model_dir) / "config.json").read_text()).get("source") or {}
    req = src.get("requantized")
    return None if not req else "requantized (no MLX format holds these types): " + ", ".join(
        f"{k} -> {v}" for k, v in req.items())
