"""Foundation: GGUF conversion (on the real SmolLM2 file) and the model loader (its backend facts are in
test_backend.py, the CLI basics in test_cli.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import edited_copy
from radis_mlx import models
from radis_mlx.models import gguf
from radis_mlx.fileio import UserError

TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France, "
        "and Berlin is the capital of Germany.")


def mean_nll(model, tokenizer, text: str) -> float:
    import mlx.core as mx
    import mlx.nn as nn
    ids = mx.array([tokenizer.encode(text)])
    logits = model(ids[:, :-1]).astype(mx.float32)
    return nn.losses.cross_entropy(logits, ids[:, 1:]).mean().item()


def answer(loaded, question: str, max_tokens: int = 24) -> str:
    from radis_mlx import prompts
    from radis_mlx.runtime.decode import DecodeConfig, decode
    p = prompts.encode(loaded.tokenizer, prompts.chat(loaded.tokenizer, question))
    return decode(loaded.model, loaded.tokenizer, [p], DecodeConfig(max_tokens=max_tokens))[0].text


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["keep", "float32"])
def test_real_gguf_conversion_acceptance(real_model_dir, tmp_path, dtype):
    out = real_model_dir if dtype == "keep" else gguf.convert_gguf(models.default_gguf(), tmp_path / "f32",
                                                                    dtype="float32")
    cfg = json.loads((out / "config.json").read_text())
    if dtype == "keep":  # per-tensor widths survive: 8-bit embedding, 4-bit elsewhere
        assert cfg["quantization"]["bits"] == 4
        assert cfg["quantization"]["model.embed_tokens"] == {"group_size": 32, "bits": 8}
    else:
        assert "quantization" not in cfg
    loaded = models.load(str(out), dtype="keep")
    nll = mean_nll(loaded.model, loaded.tokenizer, TEXT)
    assert nll < 3.0, nll  # ~2.66 when q/k rows are un-permuted correctly, ~6.6 when not
    assert "Paris" in answer(loaded, "What is the capital of France?")


@pytest.mark.slow
def test_converted_dir_opens_in_mlx_lm_generate(real_model_dir):
    env = {**os.environ}
    r = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(real_model_dir),
                        "--prompt", "What is the capital of France?", "--max-tokens", "12"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout


@pytest.mark.slow
def test_default_model_loads_float32_on_cpu(real_model_dir):
    import mlx.core as mx
    from mlx.utils import tree_flatten
    loaded = models.load(None)
    if mx.default_device().type == mx.cpu:
        dtypes = {v.dtype for _, v in tree_flatten(loaded.model.parameters())}
        assert dtypes == {mx.float32}  # dequantized: the fast CPU path
    assert loaded.name == models.DEFAULT_MODEL


def test_unpermute_inverts_llama_cpp_permutation():
    import mlx.core as mx
    w = mx.arange(8 * 6 * 3).reshape(8 * 6, 3)  # 8 heads of dim 6
    n_head = 8
    permuted = w.reshape(n_head, 2, w.shape[0] // n_head // 2, 3).swapaxes(1, 2).reshape(w.shape)
    assert mx.array_equal(gguf._unpermute_rows(permuted, n_head), w)


def test_unsupported_architecture_is_a_clear_error():
    with pytest.raises(UserError, match="unsupported GGUF architecture 'falcon'"):
        gguf.gguf_config({"general.architecture": "falcon"}, "m.gguf")
    with pytest.raises(UserError, match="unsupported GGUF tensor 'blk.0.weird.weight'"):
        gguf._hf_name("blk.0.weird.weight", "m.gguf")


def test_tiny_model_loads_with_and_without_float32(tiny_model_dir):
    import mlx.core as mx
    loaded = models.load(str(tiny_model_dir))
    assert loaded.tokenizer.eos_token_ids == {2}
    assert loaded.model(mx.array([[1, 2, 3]])).shape[-1] == loaded.tokenizer.vocab_size


def test_resolve_rejects_bad_model_specs(tmp_path):
    with pytest.raises(UserError, match="not an mlx-lm model directory"):
        models.resolve(str(tmp_path))
    with pytest.raises(UserError, match="GGUF file not found"):
        models.resolve(str(tmp_path / "x.gguf"))
    with pytest.raises(UserError, match="not a Hugging Face id"):
        models.resolve("./missing/model/dir")
    assert models.resolve("mlx-community/Mistral-7B-Instruct-v0.2-4bit") == \
        "mlx-community/Mistral-7B-Instruct-v0.2-4bit"  # hub ids pass through to mlx_lm.load


def test_trust_remote_code_is_off_by_default(tiny_model_dir, tmp_path):
    d = edited_copy(tiny_model_dir, tmp_path / "remote", "config.json", model_file="evil.py")
    (d / "evil.py").write_text("raise SystemExit('executed remote code')\n")
    with pytest.raises(UserError, match="custom module"):
        models.load(str(d))


def test_adapters_for_another_model_are_a_clear_error(tiny_model_dir, tmp_path):
    import mlx.core as mx
    a = tmp_path / "adapters"
    a.mkdir()
    (a / "adapter_config.json").write_text(json.dumps(
        {"fine_tune_type": "lora", "num_layers": 2, "lora_parameters": {"rank": 4, "scale": 1.0, "dropout": 0.0}}))
    mx.save_safetensors(str(a / "adapters.safetensors"),  # layer 9: the tiny model has 2
                        {"model.layers.9.self_attn.q_proj.lora_a": mx.zeros((64, 4))})
    with pytest.raises(UserError, match=f"{a}: these adapters do not fit"):
        models.load(str(tiny_model_dir), str(a))


@pytest.mark.parametrize("bits,group_size", [(2, 32), (4, 32), (4, 64), (8, 32)])
def test_float32_dequantization_equals_mlx_in_float32(bits, group_size):
    """to_float32's own unpacking gives mx.dequantize's values computed in float32."""
    import mlx.core as mx
    from radis_mlx.models.loader import _dequantize_f32
    w = mx.random.normal((48, 128), key=mx.random.key(bits))
    q, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
    scales, biases = scales.astype(mx.float16), biases.astype(mx.float16)  # as stored in checkpoints
    ref = mx.dequantize(q, scales.astype(mx.float32), biases.astype(mx.float32), group_size=group_size, bits=bits)
    got = _dequantize_f32(q, scales, biases, group_size, bits)
    assert got.dtype == mx.float32 and mx.array_equal(got, ref).item()
    assert mx.abs(got - w).max().item() < 2 ** (2 - bits) * 3  # and it is the matrix that was quantized


def test_model_bytes_counts_float32_weights_once(tiny_model_dir, tmp_path):
    """What a worker process holds: every element as float32, whether the file stores float32 (a
    converted K-quant model) or float16."""
    import mlx.core as mx
    weights = mx.load(str(tiny_model_dir / "model.safetensors"))
    n = sum(v.size for v in weights.values())
    assert models.model_bytes(str(tiny_model_dir)) == 4 * n
    half = edited_copy(tiny_model_dir, tmp_path / "half", "config.json")
    mx.save_safetensors(str(half / "model.safetensors"), {k: v.astype(mx.float16) for k, v in weights.items()})
    assert models.model_bytes(str(half)) == 4 * n
