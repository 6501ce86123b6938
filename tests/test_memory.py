"""The memory estimator: its counts against what MLX allocates, the budget targets, and `run --check`'s
refusal of a recipe that cannot fit. (Estimates against measured peaks: bench/bench_memory.py.)"""

from __future__ import annotations

import json

import pytest

from radis_mlx import memory
from radis_mlx.fileio import UserError
from radis_mlx.tuner.config import FinetuneConfig


def _loaded(model_dir):
    from radis_mlx.models import load
    return load(str(model_dir), dtype="float32")


def test_parameter_count_is_the_models(real_model_dir, qwen_dir):
    from mlx.utils import tree_flatten
    for folder in (real_model_dir, qwen_dir):
        d = memory.model_dims(str(folder))
        n = sum(v.size for _, v in tree_flatten(_loaded(folder).model.parameters()))
        assert abs(d.params - n) / n < 0.001, (folder, d.params, n)  # only biases are left out
        assert memory.weight_bytes(d, "float32") == 4 * d.params


def test_quantized_weight_bytes_match_a_quantized_model(tmp_path, tiny_model_dir):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_map
    model = _loaded(tiny_model_dir).model
    model.update(tree_map(lambda p: p.astype(mx.float16), model.parameters()))  # as a hub model is stored
    nn.quantize(model, group_size=32, bits=4)
    real = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    d = memory.Dims.from_config({**cfg, "quantization": {"group_size": 32, "bits": 4}}, "test")
    assert abs(memory.weight_bytes(d, "keep") - real) / real < 0.05


def test_lora_parameters_are_the_ones_mlx_lm_adds(tiny_model_dir):
    from radis_mlx.tuner.trainable import setup_model
    from radis_mlx.tuner.checkpoint import trainable_weights
    d = memory.model_dims(str(tiny_model_dir))
    for kw in ({}, {"lora_rank": 4, "num_layers": 1}, {"lora_keys": ["self_attn.q_proj", "self_attn.v_proj"]},
               {"fine_tune_type": "dora"}):
        cfg = FinetuneConfig(model=str(tiny_model_dir), data="x", **kw)
        _, model, _ = setup_model(cfg)
        real = sum(v.size for v in trainable_weights(model).values())
        assert memory.trained_params(d, cfg) == real, kw


def test_kv_cache_bytes_are_mlx_lm_caches(tiny_model_dir):
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache
    model = _loaded(tiny_model_dir).model
    d = memory.model_dims(str(tiny_model_dir))
    for batch, positions in ((1, 10), (3, 300)):
        cache = make_prompt_cache(model)
        model(mx.zeros((batch, positions), mx.int32), cache=cache)
        real = sum(c.keys.nbytes + c.values.nbytes for c in cache)
        assert memory.kv_bytes(d, batch, positions, "float32") == real


def test_estimates_grow_with_the_settings_that_the_refusal_names(tiny_model_dir):
    d = memory.model_dims(str(tiny_model_dir))
    cpu = memory.Target("cpu", 10**12, "test")
    ft = lambda **kw: memory.finetune_estimate(d, FinetuneConfig(data="x", **kw), cpu).total  # noqa: E731
    assert ft(batch_size=16) > ft(batch_size=8) and ft(max_seq_len=1024) > ft(max_seq_len=512)
    assert ft(batch_size=16, grad_checkpoint=True) < ft(batch_size=16)
    assert memory.finetune_estimate(d, FinetuneConfig(data="x"), cpu).knob == "batch_size"


def test_targets():
    mac = memory.parse_target("mac-16gb")
    assert mac.device == "gpu" and 11.0e9 < mac.budget < 11.6e9 and mac.runs_as("auto") == "keep"
    assert memory.parse_target("mac-64gb").budget == int(64 * 2 ** 30 * 0.75)
    cpu = memory.parse_target("cpu-24gb")
    assert (cpu.device, cpu.budget, cpu.runs_as("auto")) == ("cpu", 24 * 10**9, "float32")
    assert memory.parse_target("off") is None
    with pytest.raises(UserError, match=r"--fit-for .*'16gb'.*mac-NNgb"):
        memory.parse_target("16gb")


def test_unknown_hub_model_is_unavailable_and_known_or_cached_ones_are_read(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert memory.model_dims("someone/not-downloaded") is None
    est = memory.estimate("finetune", FinetuneConfig(data="x"), "someone/not-downloaded",
                          memory.parse_target("mac-16gb"))
    assert not est.parts and "not downloaded yet" in est.line()
    known = memory.model_dims("mlx-community/Qwen2.5-1.5B-Instruct-4bit")
    assert known.layers == 28 and "table" in known.source
    snap = tmp_path / "models--someone--cached" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (tmp_path / "models--someone--cached" / "refs").mkdir()
    (tmp_path / "models--someone--cached" / "refs" / "main").write_text("abc")
    (snap / "config.json").write_text(json.dumps({**memory.KNOWN["mlx-community/Qwen2.5-1.5B-Instruct-4bit"],
                                                   "num_hidden_layers": 3}))
    assert memory.model_dims("someone/cached").layers == 3


def _refused(capsys, *args) -> str:
    from radis_mlx.cli import main
    with pytest.raises(SystemExit) as e:
        main(["run", "demo", "--check", *args])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1  # one line
    return err


def test_run_check_prints_estimates_and_refuses_what_cannot_fit(tmp_path, capsys):
    from radis_mlx.cli import main
    out = ["--out", str(tmp_path / "d")]
    main(["run", "demo", "--check", *out, "--fit-for", "cpu-64gb"])
    text = capsys.readouterr().out
    assert text.count("memory: finetune (batch 4 x 256 tokens): ~") == 2 and "memory: generate (batch 64" in text
    assert "memory: every stage fits 64 GB of RAM" in text
    err = _refused(capsys, *out, "--fit-for", "cpu-1gb")
    assert err.startswith("error: finetune (batch 4 x 256 tokens): ~") and "does not fit 1 GB of RAM: lower " in err
    assert "demo.yaml: finetune.batch_size" in err
    assert "lower --set finetune.batch_size" in _refused(capsys, *out, "--fit-for", "cpu-1gb",
                                                          "--set", "finetune.batch_size=4")
    err = _refused(capsys, *out, "--fit-for", "cpu-1.2gb", "--set", "finetune.batch_size=1",
                   "--set", "finetune.max_seq_len=64")
    assert err.startswith("error: generate (batch 64") and "demo.yaml: generate.batch_size" in err
    assert "lower --set methods.sft.finetune.batch_size" in _refused(
        capsys, *out, "--fit-for", "cpu-2gb", "--set", "methods.sft.finetune.batch_size=64")
    assert (tmp_path / "d").exists() is False  # refused before any work


def test_this_machine_is_the_default(monkeypatch):
    monkeypatch.delenv(memory.FIT_FOR_ENV, raising=False)
    here = memory.parse_target()
    assert here.device == "cpu" and "available RAM" in here.what  # the test box has no Metal
    assert 0 < here.budget <= memory._available_ram() * 1.5
    monkeypatch.setenv(memory.FIT_FOR_ENV, "mac-32gb")
    assert memory.parse_target().device == "gpu" and memory.parse_target("cpu-8gb").budget == 8 * 10**9


def _recipe_estimates(name: str, sets: list[str], target) -> list:
    """The estimates `run --check` makes for a recipe's generate, finetune and eval settings."""
    from radis_mlx.evals.harness import EvalConfig
    from radis_mlx.evals.suites import DEFAULT_MAX_TOKENS
    from radis_mlx.generate import GenerateConfig
    from radis_mlx.recipe import load_recipe
    r = load_recipe(name, sets)
    ev = EvalConfig(**{k: v for k, v in r["eval"].items() if k in ("batch_size", "max_tokens", "suites")})
    longest = max(ev.max_tokens.get(s, DEFAULT_MAX_TOKENS[s]) for s in ev.suites)
    gen = GenerateConfig(data="x", out="x", **{k: v for k, v in r["generate"].items() if k != "limit"})
    return [memory.estimate("finetune", FinetuneConfig(data="x", **r["finetune"]), r["model"], target),
            memory.estimate("generate", gen, r["model"], target),
            memory.estimate("eval", ev, r["model"], target, longest=longest)]


@pytest.mark.parametrize("name", ["radis-llama2-7b-chat", "radis-mistral-7b-instruct-v0.2",
                                  "radis-qwen2.5-1.5b-instruct"])
def test_mac_recipes_fit_the_macs_their_headers_name(name):
    import re
    from radis_mlx.recipe import find_recipe
    header = "".join(line[1:] for line in find_recipe(name).read_text().splitlines(True) if line.startswith("#"))
    assert "Memory: set for a 16 GB Mac" in header and "rationale-auto" in header
    mac16, mac32 = memory.parse_target("mac-16gb"), memory.parse_target("mac-32gb")
    assert all(e.parts and e.total <= mac16.budget for e in _recipe_estimates(name, [], mac16))
    sets = re.findall(r"--set (\S+)", header.split("On a 32 GB Mac:")[1])
    assert sets and all(e.total <= mac32.budget for e in _recipe_estimates(name, sets, mac32))
    # The settings before this issue did not fit a 16 GB Mac (the finetune at batch 8-16 and full length).
    old = ["finetune.batch_size=16", "finetune.grad_accum=1"] if "7b" in name else \
        ["finetune.batch_size=8", "finetune.grad_accum=1", "finetune.max_seq_len=768"]
    assert _recipe_estimates(name, old, mac16)[0].total > mac16.budget


def test_plain_generate_and_finetune_refuse_before_any_work(tmp_path, tiny_model_dir, monkeypatch):
    from radis_mlx.generate import GenerateConfig, generate
    from radis_mlx.tuner import finetune
    from handmade import write_pairs
    monkeypatch.setenv(memory.FIT_FOR_ENV, "cpu-0.001gb")  # 1 MB: not even the tiny model's weights
    data = write_pairs(tmp_path / "train.de-en.json", 4)
    with pytest.raises(UserError, match=r"^generate \(batch 64.* does not fit 0.001 GB of RAM: lower --batch-size"):
        generate(GenerateConfig(data=str(data), out=str(tmp_path / "g.jsonl"), model=str(tiny_model_dir)))
    assert not list(tmp_path.glob("g.jsonl*"))
    with pytest.raises(UserError, match=r"^finetune \(batch 8 x 512 tokens\).* lower --batch-size"):
        finetune(FinetuneConfig(model=str(tiny_model_dir), data=str(data), out=str(tmp_path / "ft"), method="sft"))
    assert not (tmp_path / "ft").exists()
    monkeypatch.setenv(memory.FIT_FOR_ENV, "off")
    assert memory.require_fit("finetune", FinetuneConfig(data="x"), str(tiny_model_dir)) is None
