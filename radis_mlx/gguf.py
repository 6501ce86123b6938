"""Convert a llama-architecture GGUF file into an mlx-lm model directory.

MLX reads GGUF natively (``mx.load(path, return_metadata=True)``): Q4_0/Q4_1/Q8_0 tensors
arrive as MLX affine-quantized triplets (weight/scales/biases, group size 32) whose bit
width differs per tensor, so the config gets a per-module quantization entry. What MLX
does not do is undo llama.cpp's conventions: its HF->GGUF converter permutes the q/k rows
so rope works on interleaved pairs, and it stores the tokenizer as vocab+merges+types in the
metadata. Both are reversed here so ``mlx_lm.load(out_dir)`` gives the HF model back.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx

from .io import UserError, atomic_write_json

GROUP_SIZE = 32
DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}

_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}

# llama.cpp's pre-tokenizer names -> the split regex HF uses (None: GPT-2's, built into ByteLevel).
_LLAMA3_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_RE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZERS = {"gpt2": "gpt2", "default": "gpt2", "smollm": "digits+gpt2",
                   "starcoder": "digits+gpt2", "llama-bpe": _LLAMA3_RE, "llama3": _LLAMA3_RE,
                   "qwen2": _QWEN2_RE}


def _scalar(v):
    if isinstance(v, mx.array):
        return v.item() if v.size == 1 else v.tolist()
    return v


def read_gguf(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: GGUF file not found")
    try:
        weights, meta = mx.load(str(path), return_metadata=True)
    except Exception as e:  # mlx raises RuntimeError/ValueError for unsupported tensor types
        raise UserError(f"{path}: cannot read GGUF ({e})") from None
    return weights, meta


def gguf_config(meta: dict, path="GGUF") -> dict:
    arch = _scalar(meta.get("general.architecture"))
    if arch != "llama":
        raise UserError(f"{path}: unsupported GGUF architecture {arch!r} (supported: llama)")
    g = lambda k, d=None: _scalar(meta.get(f"llama.{k}", d))  # noqa: E731
    n_heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    cfg = {
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(g("block_count")),
        "intermediate_size": int(g("feed_forward_length")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(g("attention.head_count_kv", n_heads)),
        "rms_norm_eps": float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": float(g("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(g("context_length", 4096)),
        "head_dim": int(g("rope.dimension_count", hidden // n_heads)),
        "attention_bias": False,
        "mlp_bias": False,
    }
    tokens = meta.get("tokenizer.ggml.tokens")
    cfg["vocab_size"] = int(g("vocab_size", len(tokens) if tokens else 0))
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = meta.get(f"tokenizer.ggml.{k.replace('pad_', 'padding_')}")
        if v is not None:
            cfg[k] = int(_scalar(v))
    return cfg


def _unpermute_rows(w: mx.array, n_heads: int) -> mx.array:
    # llama.cpp stored  W.reshape(h, 2, d/2, ...).swapaxes(1, 2);  invert that row order.
    # Rows are output features for weight, scales and biases alike, so the packed
    # quantized tensors are permuted without dequantizing.
    rows = w.shape[0]
    return w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str, path) -> str:
    base, _, suffix = name.rpartition(".")
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if m and m.group(2) in _LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{suffix}"
    if base in _TOP_NAMES:
        return f"{_TOP_NAMES[base]}.{suffix}"
    if base == "rope_freqs":
        return ""  # llama3 rope scaling factors: carried in config instead
    raise UserError(f"{path}: unsupported GGUF tensor {name!r}")


def convert_weights(weights: dict, cfg: dict, dtype: str = "keep", path="GGUF"):
    """Return (hf_weights, quantization) where quantization is None or mlx-lm's config entry."""
    if dtype != "keep" and dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r} (choose keep, {', '.join(DTYPES)})")
    out: dict[str, mx.array] = {}
    for name, w in weights.items():
        hf = _hf_name(name, path)
        if hf:
            out[hf] = w
    for i in range(cfg["num_hidden_layers"]):
        for proj, heads in (("q_proj", cfg["num_attention_heads"]), ("k_proj", cfg["num_key_value_heads"])):
            for part in ("weight", "scales", "biases"):
                k = f"model.layers.{i}.self_attn.{proj}.{part}"
                if k in out:
                    out[k] = _unpermute_rows(out[k], heads)
    quant: dict = {}
    for k in [k for k in out if k.endswith(".scales")]:
        mod = k[: -len(".scales")]
        w, scales, biases = out[f"{mod}.weight"], out[k], out.get(f"{mod}.biases")
        if biases is None:
            raise UserError(f"{path}: quantized tensor {mod} has no biases (unsupported tensor type)")
        in_features = scales.shape[-1] * GROUP_SIZE
        bits = w.shape[-1] * 32 // in_features
        if bits not in (2, 3, 4, 5, 6, 8):
            raise UserError(f"{path}: tensor {mod} has unsupported quantization ({bits} bits)")
        if dtype == "keep":
            quant[mod] = {"group_size": GROUP_SIZE, "bits": bits}
        else:
            # Dequantize in float32 so float16 scales don't cost precision, then cast.
            deq = mx.dequantize(w, scales.astype(mx.float32), biases.astype(mx.float32),
                                group_size=GROUP_SIZE, bits=bits)
            out[f"{mod}.weight"] = deq.astype(DTYPES[dtype])
            del out[k], out[f"{mod}.biases"]
    if dtype != "keep":
        out = {k: v.astype(DTYPES[dtype]) if mx.issubdtype(v.dtype, mx.floating) else v
               for k, v in out.items()}
    cfg["tie_word_embeddings"] = "lm_head.weight" not in out
    if not quant:
        return out, None
    # The most common width is the default; the others get per-module entries.
    widths = [q["bits"] for q in quant.values()]
    default_bits = max(set(widths), key=widths.count)
    quantization = {"group_size": GROUP_SIZE, "bits": default_bits}
    for mod, q in quant.items():
        if q["bits"] != default_bits:
            quantization[mod] = q
    return out, quantization


def build_tokenizer(meta: dict, path="GGUF"):
    """Rebuild a HF fast tokenizer (tokenizer.json) from the GGUF vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, Regex

    kind = _scalar(meta.get("tokenizer.ggml.model"))
    if kind != "gpt2":
        raise UserError(f"{path}: unsupported GGUF tokenizer model {kind!r} (supported: gpt2 byte-level BPE);"
                        " convert from the original Hugging Face repository instead")
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    types = meta.get("tokenizer.ggml.token_type")
    types = types.tolist() if isinstance(types, mx.array) else [1] * len(tokens)
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False))
    pre = _scalar(meta.get("tokenizer.ggml.pre", "default"))
    split = _PRE_TOKENIZERS.get(pre)
    if split is None:
        raise UserError(f"{path}: unsupported GGUF pre-tokenizer {pre!r} (supported: {', '.join(_PRE_TOKENIZERS)})")
    if split == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif split == "digits+gpt2":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Control (3) and user-defined (4) tokens must never be split by BPE.
    tok.add_special_tokens([AddedToken(tokens[i], special=(t == 3), normalized=False)
                            for i, t in enumerate(types) if t in (3, 4)])
    ids = {k: int(_scalar(meta[f"tokenizer.ggml.{k}"])) for k in
           ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id")
           if f"tokenizer.ggml.{k}" in meta}
    add_bos = bool(_scalar(meta.get("tokenizer.ggml.add_bos_token", False)))
    if add_bos and "bos_token_id" in ids:
        bos = tokens[ids["bos_token_id"]]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
            special_tokens=[(bos, ids["bos_token_id"])])
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "clean_up_tokenization_spaces": False,
        "add_bos_token": add_bos,
        "model_max_length": int(_scalar(meta.get("llama.context_length", 4096))),
    }
    for key, name in (("bos_token_id", "bos_token"), ("eos_token_id", "eos_token"),
                      ("padding_token_id", "pad_token"), ("unknown_token_id", "unk_token")):
        if key in ids:
            tok_config[name] = tokens[ids[key]]
    template = _scalar(meta.get("tokenizer.chat_template"))
    if template:
        tok_config["chat_template"] = template
    return tok, tok_config


def convert_gguf(gguf_path, out_dir, dtype: str = "keep") -> Path:
    """Write an mlx-lm model directory for ``gguf_path``; atomic: out_dir appears complete or not at all."""
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    weights, meta = read_gguf(gguf_path)
    cfg = gguf_config(meta, gguf_path)
    hf_weights, quantization = convert_weights(weights, cfg, dtype, gguf_path)
    tokenizer, tok_config = build_tokenizer(meta, gguf_path)
    if quantization:
        cfg["quantization"] = quantization
    cfg["source"] = {"gguf": gguf_path.name, "name": _scalar(meta.get("general.name")), "dtype": dtype}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        mx.save_safetensors(str(tmp / "model.safetensors"), hf_weights, metadata={"format": "mlx"})
        tokenizer.save(str(tmp / "tokenizer.json"))
        atomic_write_json(tmp / "tokenizer_config.json", tok_config)
        gen_cfg = {k: cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in cfg}
        atomic_write_json(tmp / "generation_config.json", gen_cfg)
        atomic_write_json(tmp / "config.json", cfg)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir

