"""GGUF import: every tensor type against the gguf package's reference dequantization, every
architecture through a round trip written with llama.cpp's conventions, the error cases, and the
real offline files (Qwen2.5-Coder-0.5B-Instruct, Gemma 3 270M)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

gguf_pkg = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as Q  # noqa: E402
from gguf.quants import dequantize  # noqa: E402

from radis_mlx import models  # noqa: E402
from radis_mlx.models import gguf  # noqa: E402
from radis_mlx.fileio import UserError  # noqa: E402
from radis_mlx.models.tokenizer import build_tokenizer  # noqa: E402

TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
         "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
HIDDEN, FFN, HEADS, KV_HEADS, VOCAB = 256, 512, 4, 2, 256  # rows of 256: K-quant super-blocks fit


# ------------------------------------------------------------------ writing GGUF files as llama.cpp does
def raw_tensor(rng, rows: int, cols: int, qtype: str):
    """Random tensor data of a GGML type, as (array for GGUFWriter, raw_dtype). Quantized blocks are
    random bytes, redrawn where a random f16 scale made them non-finite or huge."""
    t = Q[qtype]
    if qtype == "F32":
        return rng.standard_normal((rows, cols)).astype(np.float32), None
    if qtype == "F16":
        return rng.standard_normal((rows, cols)).astype(np.float16), None
    if qtype == "BF16":
        return gguf_pkg.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), t), t
    block, size = gguf_pkg.GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, (rows * cols // block, size), dtype=np.uint8)
    while True:
        with np.errstate(invalid="ignore", over="ignore"):
            v = dequantize(raw, t).reshape(len(raw), block)
        bad = ~np.isfinite(v).all(1) | (np.abs(v) > 100).any(1)
        if not bad.any():
            return raw.reshape(rows, cols // block * size), t
        raw[bad] = rng.integers(0, 256, (int(bad.sum()), size), dtype=np.uint8)


def reference(data, raw_dtype) -> np.ndarray:
    """What llama.cpp means by the stored data, in float32 (the gguf package's dequantization)."""
    if raw_dtype is None:
        return data.astype(np.float32)
    return dequantize(data, raw_dtype).astype(np.float32)


def write_gguf(path: Path, arch: str, meta: dict, tensors: dict) -> Path:
    w = gguf_pkg.GGUFWriter(str(path), arch)
    for k, v in meta.items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        else:
            w.add_array(k, v)
    for name, (data, raw_dtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def hparams(arch: str, layers: int = 1, head_dim: int | None = None) -> dict:
    m = {f"{arch}.block_count": layers, f"{arch}.context_length": 2048, f"{arch}.embedding_length": HIDDEN,
         f"{arch}.feed_forward_length": FFN, f"{arch}.attention.head_count": HEADS,
         f"{arch}.attention.head_count_kv": KV_HEADS, f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
         f"{arch}.rope.freq_base": 10000.0}
    if head_dim:
        m[f"{arch}.attention.key_length"] = m[f"{arch}.attention.value_length"] = head_dim
    return m


def permute_like_llama_cpp(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: what a llama GGUF stores for q/k rows."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(base: float, dim: int, factor=8.0, low=1.0, high=4.0, old_ctx=8192) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors: Llama 3.1's rope_freqs."""
    import math
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def llama_file(tmp: Path, qtype: str, seed: int = 0, out_type: str | None = None,
               extra: dict | None = None) -> tuple[Path, dict]:
    """A one-block llama GGUF whose 2-D weights are all of ``qtype``; returns it and the reference
    float32 value of every tensor by its GGUF name."""
    rng = np.random.default_rng(seed)
    shapes = {"token_embd.weight": (VOCAB, HIDDEN), "output.weight": (VOCAB, HIDDEN),
              "blk.0.attn_q.weight": (HIDDEN, HIDDEN), "blk.0.attn_k.weight": (KV_HEADS * 64, HIDDEN),
              "blk.0.attn_v.weight": (KV_HEADS * 64, HIDDEN), "blk.0.attn_output.weight": (HIDDEN, HIDDEN),
              "blk.0.ffn_gate.weight": (FFN, HIDDEN), "blk.0.ffn_up.weight": (FFN, HIDDEN),
              "blk.0.ffn_down.weight": (HIDDEN, FFN)}
    tensors = {n: raw_tensor(rng, *s, out_type if out_type and n == "output.weight" else qtype)
               for n, s in shapes.items()}
    for n in ("output_norm.weight", "blk.0.attn_norm.weight", "blk.0.ffn_norm.weight"):
        tensors[n] = (rng.standard_normal(HIDDEN).astype(np.float32), None)
    ref = {n: reference(*t) for n, t in tensors.items()}
    tensors.update({n: (v, None) for n, v in (extra or {}).items()})
    path = write_gguf(tmp / f"llama-{qtype}.gguf", "llama", hparams("llama"), tensors)
    return path, ref


def converted_float32(model_dir: Path) -> dict:
    """The converted model's parameters as radis-mlx loads them on the CPU (float32), by HF name."""
    from mlx.utils import tree_flatten
    from mlx_lm.utils import load_model

    model, _ = load_model(model_dir)
    models.to_float32(model)
    return {k: np.array(v) for k, v in tree_flatten(model.parameters())}


HF = {"token_embd": "model.embed_tokens", "output": "lm_head", "output_norm": "model.norm",
      "attn_q": "model.layers.0.self_attn.q_proj", "attn_k": "model.layers.0.self_attn.k_proj",
      "attn_v": "model.layers.0.self_attn.v_proj", "attn_output": "model.layers.0.self_attn.o_proj",
      "ffn_gate": "model.layers.0.mlp.gate_proj", "ffn_up": "model.layers.0.mlp.up_proj",
      "ffn_down": "model.layers.0.mlp.down_proj", "attn_norm": "model.layers.0.input_layernorm",
      "ffn_norm": "model.layers.0.post_attention_layernorm"}


def as_stored(params: dict, name: str) -> np.ndarray:
    """A converted llama parameter put back the way the GGUF stores it (llama.cpp's permutation)."""
    base = name.rsplit(".", 1)[0].removeprefix("blk.0.")
    v = params[HF[base] + ".weight"]
    if base in ("attn_q", "attn_k"):
        v = permute_like_llama_cpp(v, HEADS if base == "attn_q" else KV_HEADS)
    return v


# ------------------------------------------------------------------ every tensor type, synthetic
@pytest.mark.parametrize("qtype", TYPES)
def test_exact_conversion_equals_the_gguf_reference_dequantization(tmp_path, qtype):
    path, ref = llama_file(tmp_path, qtype)
    out = gguf.convert_gguf(path, tmp_path / "exact", dtype="exact", tokenizer=False)
    src = json.loads((out / "config.json").read_text())["source"]
    assert src["reader"] == ("mlx" if qtype in gguf.NATIVE_TYPES else "gguf")
    params = converted_float32(out)
    for name, want in ref.items():
        got = as_stored(params, name)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want, err_msg=f"{qtype} {name}")


@pytest.mark.parametrize("qtype", ["Q4_K", "Q6_K", "Q3_K", "Q5_0"])
def test_keep_requantizes_within_half_a_step_and_says_so(tmp_path, qtype):
    path, ref = llama_file(tmp_path, qtype)
    out = gguf.convert_gguf(path, tmp_path / "keep", dtype="keep", tokenizer=False)
    cfg = json.loads((out / "config.json").read_text())
    bits = gguf.REQUANT_BITS[qtype]
    assert cfg["quantization"]["bits"] == bits
    assert qtype in cfg["source"]["requantized"] and "requantized" in gguf.requantized_note(out)
    params = converted_float32(out)
    for name, want in ref.items():
        if want.ndim == 1:
            continue
        got = as_stored(params, name)
        g = want.reshape(want.shape[0], -1, gguf.GROUP_SIZE)
        step = (g.max(-1, keepdims=True) - g.min(-1, keepdims=True)) / (2 ** bits - 1)
        err = np.abs(got.reshape(g.shape) - g)
        # One step of the new grid (mx.quantize keeps zero exact, which can shift the grid by half a
        # step), plus float16 rounding of the group's scale and offset (MLX keeps them as float16,
        # subnormal below 6e-5: an absolute 2**-24 a unit of scale, times up to 255).
        f16 = 2.0 ** -11 * (np.abs(g.min(-1, keepdims=True)) + np.abs(g).max(-1, keepdims=True))
        assert (err <= step * 1.001 + 2 * f16 + 256 * 2.0 ** -24).all(), name
        assert err.max() > 0  # it is a requantization, not a copy


def test_a_mixed_file_reads_native_types_through_the_gguf_package_too(tmp_path):
    path, ref = llama_file(tmp_path, "Q8_0", out_type="Q6_K")
    out = gguf.convert_gguf(path, tmp_path / "mixed", dtype="exact", tokenizer=False)
    assert json.loads((out / "config.json").read_text())["source"]["reader"] == "gguf"
    params = converted_float32(out)
    for name, want in ref.items():
        np.testing.assert_array_equal(as_stored(params, name), want, err_msg=name)


@pytest.mark.parametrize("factor", [8.0, 32.0])
def test_llama3_rope_factors_become_mlx_lm_rope_scaling(tmp_path, factor):
    path, _ = llama_file(tmp_path, "F16", extra={"rope_freqs.weight": llama3_rope_factors(10000.0, 64, factor)})
    out = gguf.convert_gguf(path, tmp_path / "out", dtype="exact", tokenizer=False)
    assert json.loads((out / "config.json").read_text())["rope_scaling"] == {
        "rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192}
    odd = llama3_rope_factors(10000.0, 64, 8.0, high=2.0)  # a scaling that is not llama3's
    (tmp_path / "odd").mkdir()
    path, _ = llama_file(tmp_path / "odd", "F16", extra={"rope_freqs.weight": odd})
    _one_line_and_clean(tmp_path, lambda: gguf.convert_gguf(path, tmp_path / "out2", tokenizer=False),
                        "rope_freqs holds a rope scaling that is not llama3's")


# ------------------------------------------------------------------ architectures, round trip
def _llama_cpp_names(arch: str) -> dict:
    """HF parameter -> GGUF tensor, as llama.cpp's converter names them (written out independently
    of radis_mlx.gguf's own table)."""
    layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down", "self_attn.q_norm": "attn_q_norm",
             "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm"}
    if arch == "gemma3":
        layer.update({"post_attention_layernorm": "post_attention_norm",
                      "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm"})
    return layer


def export_like_llama_cpp(model, arch: str, path: Path, meta: dict) -> Path:
    """Write an mlx-lm model the way llama.cpp's convert_hf_to_gguf.py would (float32 tensors)."""
    from mlx.utils import tree_flatten

    layer, tensors = _llama_cpp_names(arch), {}
    for name, v in tree_flatten(model.parameters()):
        v = np.array(v, dtype=np.float32)
        top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
               "lm_head.weight": "output.weight"}
        if name in top:
            g = top[name]
        else:
            _, _, i, rest = name.split(".", 3)
            mod, suffix = rest.rsplit(".", 1)
            g = f"blk.{i}.{layer[mod]}.{suffix}"
            if arch == "llama" and mod in ("self_attn.q_proj", "self_attn.k_proj"):
                v = permute_like_llama_cpp(v, HEADS if mod.endswith("q_proj") else KV_HEADS)
        if arch == "gemma3" and g.endswith("norm.weight"):
            v = v + 1  # llama.cpp's Gemma converter stores 1 + w
        tensors[g] = (v, None)
    return write_gguf(path, arch, meta, tensors)


ARCH_CASES = {
    "llama": ("llama", {"attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False}),
    "qwen2": ("qwen2", {"tie_word_embeddings": False}),
    "qwen3": ("qwen3", {"head_dim": 32, "tie_word_embeddings": True}),
    "gemma3": ("gemma3_text", {"head_dim": 32, "query_pre_attn_scalar": 32, "sliding_window": 4,
                               "sliding_window_pattern": 6, "rope_local_base_freq": 10000.0}),
}


@pytest.mark.parametrize("arch", list(ARCH_CASES))
def test_architecture_round_trip_gives_the_same_logits(tmp_path, arch):
    import importlib

    import mlx.core as mx

    model_type, extra = ARCH_CASES[arch]
    head_dim = extra.get("head_dim")
    cfg = {"model_type": model_type, "hidden_size": HIDDEN, "num_hidden_layers": 7 if arch == "gemma3" else 2,
           "intermediate_size": FFN, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
           "rms_norm_eps": 1e-6, "vocab_size": VOCAB, "rope_theta": 10000.0, "max_position_embeddings": 2048,
           **extra}
    if head_dim is None:
        cfg["head_dim"] = HIDDEN // HEADS
    mod = importlib.import_module(f"mlx_lm.models.{model_type}")
    mx.random.seed(1)
    ref_model = mod.Model(mod.ModelArgs.from_dict(cfg))
    if arch == "gemma3":  # random norm weights, so a missed 1 + w offset shows
        ref_model.update({"model": {"norm": {"weight": mx.random.normal((HIDDEN,)) * 0.1}}})
    meta = hparams(arch, cfg["num_hidden_layers"], head_dim)
    if arch == "gemma3":
        meta["gemma3.attention.sliding_window"] = 4
    path = export_like_llama_cpp(ref_model, arch, tmp_path / f"{arch}.gguf", meta)
    out = gguf.convert_gguf(path, tmp_path / "out", dtype="float32", tokenizer=False)
    assert json.loads((out / "config.json").read_text())["model_type"] == model_type
    from mlx_lm.utils import load_model
    model, _ = load_model(out)
    ids = mx.array([[3, 17, 200, 5, 9, 44, 101, 7, 250, 1, 2, 3]])
    np.testing.assert_allclose(np.array(model(ids)), np.array(ref_model(ids)), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ errors: one line, nothing left behind
def _one_line_and_clean(tmp_path, fn, match: str):
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)
    assert not list(tmp_path.glob(".out*"))  # no half-written directory
    return str(e.value)


def test_truncated_and_corrupt_files_are_one_line_errors(tmp_path):
    native, _ = llama_file(tmp_path, "Q8_0")
    kquant, _ = llama_file(tmp_path, "Q4_K")
    for src, cut in ((native, 0.6), (kquant, 0.6), (kquant, 0.0005)):
        bad = tmp_path / f"cut-{src.stem}-{cut}.gguf"
        data = src.read_bytes()
        bad.write_bytes(data[: int(len(data) * cut)])
        msg = _one_line_and_clean(tmp_path, lambda: gguf.convert_gguf(bad, tmp_path / "out", tokenizer=False),
                                  "truncated or corrupt")
        assert str(bad) in msg
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 100)
    _one_line_and_clean(tmp_path, lambda: gguf.convert_gguf(junk, tmp_path / "out"), "truncated or corrupt")


def test_unknown_architecture_and_tensor_type_are_named(tmp_path):
    rng = np.random.default_rng(0)
    falcon = write_gguf(tmp_path / "falcon.gguf", "falcon", hparams("falcon"),
                        {"token_embd.weight": raw_tensor(rng, VOCAB, HIDDEN, "F32")})
    msg = _one_line_and_clean(tmp_path, lambda: gguf.convert_gguf(falcon, tmp_path / "out"),
                              "unsupported GGUF architecture 'falcon'")
    assert "qwen2" in msg and "gemma3" in msg
    block, size = gguf_pkg.GGML_QUANT_SIZES[Q.IQ4_NL]
    iq = write_gguf(tmp_path / "iq.gguf", "llama", hparams("llama"), {
        "token_embd.weight": (rng.integers(0, 256, (VOCAB, HIDDEN // block * size), dtype=np.uint8), Q.IQ4_NL)})
    _one_line_and_clean(tmp_path, lambda: gguf.convert_gguf(iq, tmp_path / "out"),
                        r"unsupported GGUF tensor type IQ4_NL \(token_embd.weight\)")


def test_a_sentencepiece_tokenizer_is_refused_before_any_work(tmp_path, monkeypatch):
    path, _ = llama_file(tmp_path, "Q4_K")
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>", "a"]}
    with pytest.raises(UserError, match="unsupported GGUF tokenizer model SentencePiece"):
        build_tokenizer(meta, path)
    # The whole conversion refuses it before dequantizing anything.
    real_read = gguf._open_reader
    monkeypatch.setattr(gguf, "_open_reader", lambda p: (real_read(p)[0], {**real_read(p)[1], **meta}))
    monkeypatch.setattr(gguf, "_reader_weights", lambda *a: pytest.fail("dequantized before the check"))
    _one_line_and_clean(tmp_path, lambda: gguf.convert_gguf(path, tmp_path / "out"), "SentencePiece")


# ------------------------------------------------------------------ the real offline files
def _offline(name: str) -> Path:
    import os
    try:
        return models.gguf_file(name)
    except UserError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(e))


def _real_tensors_match(gguf_file: Path, model_dir: Path, arch: gguf.Arch, per_type: int = 2):
    """Each tensor type in the file: the first tensors of that type equal the gguf reference."""
    import mlx.core as mx
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    stored = {}
    for f in model_dir.glob("*.safetensors"):
        stored.update(mx.load(str(f)))
    seen: dict[str, int] = {}
    for t in reader.tensors:
        kind = t.tensor_type.name
        if seen.get(kind, 0) >= per_type or "attn_q." in t.name or "attn_k." in t.name:
            continue  # (q/k of llama are permuted; the architectures here do not permute)
        seen[kind] = seen.get(kind, 0) + 1
        want = dequantize(t.data, t.tensor_type).astype(np.float32)
        if arch.norm_offset and t.name.endswith("norm.weight"):
            want = want - np.float32(arch.norm_offset)
        got = np.array(stored[gguf._hf_name(t.name, gguf_file, arch.layer_names)])
        np.testing.assert_array_equal(got, want.reshape(got.shape), err_msg=t.name)
    return seen


@pytest.mark.slow
def test_real_qwen_tensors_equal_the_gguf_reference(qwen_dir):
    seen = _real_tensors_match(_offline("qwen2.5-coder-0.5b"), qwen_dir, gguf.ARCHS["qwen2"])
    assert set(seen) == {"F32", "Q5_0", "Q8_0", "Q6_K", "Q4_K"}


@pytest.mark.slow
def test_real_gemma3_converts_and_its_tensors_equal_the_gguf_reference(tmp_path):
    src = _offline("gemma3-270m")
    with pytest.raises(UserError, match="SentencePiece"):
        gguf.convert_gguf(src, tmp_path / "refused")
    out = gguf.convert_gguf(src, tmp_path / "gemma", dtype="exact", tokenizer=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text" and cfg["tie_word_embeddings"] is True
    assert cfg["head_dim"] == 256 and cfg["query_pre_attn_scalar"] == 256 and cfg["sliding_window"] == 512
    seen = _real_tensors_match(src, out, gguf.ARCHS["gemma3"])
    assert set(seen) == {"F32", "Q5_0", "Q8_0", "Q6_K", "Q4_K"}


@pytest.mark.slow
def test_real_qwen_says_paris_and_translates(qwen_dir):
    from radis_mlx import prompts
    from radis_mlx.runtime.decode import DecodeConfig, decode

    loaded = models.load(str(qwen_dir))
    cfg = json.loads((qwen_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["tie_word_embeddings"] is False and cfg["vocab_size"] == 151936
    qs = ["What is the capital of France?",
          "Translate the following German sentence into English: Die Regierung hat am Montag neue "
          "Maßnahmen gegen die steigenden Energiepreise angekündigt."]
    ps = [prompts.encode(loaded.tokenizer, prompts.chat(loaded.tokenizer, q)) for q in qs]
    paris, translation = (r.text for r in decode(loaded.model, loaded.tokenizer, ps, DecodeConfig(max_tokens=32)))
    assert "Paris" in paris
    assert "government" in translation.lower() and "energy" in translation.lower(), translation
