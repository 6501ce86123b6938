"""Shared fixtures: a tiny random llama built in seconds, and the real offline chat models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CORPUS = [
    "Translate this from German to English:", "German: Der Hund schläft im Garten.",
    "English: The dog is sleeping in the garden.", "Die Katze trinkt Milch. The cat drinks milk.",
    "Ich habe heute keine Zeit. I have no time today.", "Explain the translation: the verb moves.",
    "Paris is the capital of France. Berlin is the capital of Germany.", "0123456789 .,;:!?()[]{}\"'",
    "Wir gehen morgen ins Kino. We are going to the cinema tomorrow.", "Czech Russian Chinese 中文 Русский",
]


def build_tiny_model(out: Path, seed: int = 0, layers: int = 2, hidden: int = 64, arch: str = "llama") -> Path:
    """A random-weight llama (or another mlx-lm architecture with llama's config keys, such as
    qwen2) with a real byte-level BPE tokenizer and a ChatML template."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHATML,
        "bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "add_bos_token": False, "clean_up_tokenization_spaces": False}))
    cfg = {"model_type": arch, "hidden_size": hidden, "num_hidden_layers": layers,
           "intermediate_size": hidden * 2, "num_attention_heads": 4, "num_key_value_heads": 2,
           "rms_norm_eps": 1e-5, "vocab_size": tok.get_vocab_size(), "rope_theta": 10000.0,
           "tie_word_embeddings": True, "max_position_embeddings": 2048, "eos_token_id": 2}
    (out / "config.json").write_text(json.dumps(cfg))
    mx.random.seed(seed)
    module = importlib.import_module(f"mlx_lm.models.{arch}")
    model = module.Model(module.ModelArgs.from_dict(cfg))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return out


def edited_copy(model_dir: Path, out: Path, json_file: str, **changes) -> Path:
    """A copy of a model directory with keys of one of its JSON files changed (for attack tests)."""
    import shutil

    shutil.copytree(model_dir, out)
    cfg = json.loads((out / json_file).read_text())
    cfg.update(changes)
    (out / json_file).write_text(json.dumps(cfg))
    return out


def make_adapter(model_dir: Path, out: Path, fine_tune_type: str = "lora", seed: int = 3) -> Path:
    """A LoRA (or DoRA) adapter with random (non-zero) B matrices, so the adapted model differs from its base."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    cfg = {"fine_tune_type": fine_tune_type, "num_layers": 2,
           "lora_parameters": {"rank": 4, "scale": 10.0, "dropout": 0.0}}
    model, _ = load(str(model_dir))
    model.freeze()
    linear_to_lora_layers(model, cfg["num_layers"], cfg["lora_parameters"], use_dora=fine_tune_type == "dora")
    mx.random.seed(seed)
    model.update(tree_map(lambda p: mx.random.normal(p.shape) * 0.05, model.trainable_parameters()))
    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    mx.save_safetensors(str(out / "adapters.safetensors"), dict(tree_flatten(model.trainable_parameters())))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_model_dir():
    """The offline default model (SmolLM2-135M-Instruct), converted once per machine."""
    from radis_mlx.fileio import UserError
    from radis_mlx.models import converted_dir, default_gguf

    try:
        gguf = default_gguf()
    except UserError as e:
        if os.environ.get("CI"):
            raise  # CI installs it: a missing model there is a real failure
        pytest.skip(str(e))
    return converted_dir(gguf)


@pytest.fixture(scope="session")
def qwen_dir() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct as a CPU load gets it (the 'exact' conversion), once per machine."""
    from radis_mlx import models
    from radis_mlx.fileio import UserError

    try:
        gguf = models.gguf_file("qwen2.5-coder-0.5b")
    except UserError as e:
        if os.environ.get("CI"):
            raise  # CI installs it (scripts/setup.sh)
        pytest.skip(str(e))
    return Path(models.converted_dir(gguf, "exact"))


@pytest.fixture(autouse=True)
def _memory_budget(monkeypatch):
    """The memory check (radis_mlx.memory) against a fixed 64 GB, not the RAM a shared box has free at
    the moment: a test's outcome must not depend on what else runs. test_memory.py checks the real budget."""
    monkeypatch.setenv("RADIS_MLX_FIT_FOR", "cpu-64gb")
