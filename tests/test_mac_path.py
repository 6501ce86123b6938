"""The Mac's default path, run on the CPU: a 4-bit model kept quantized (bf16 scales, groups 32 and
64, tied and untied heads, as mlx-community repos are), compiled steps, no CPU kernel swaps. QLoRA
through finetune, fuse, GGUF export, generation and eval; the refusals that guard a quantized base;
the sliced head over quantized heads; a hub id used offline; and memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_cache import offline_env, put_in_hf_cache
from radis_mlx.fileio import UserError

PAIRS = [("Der Hund schläft im Garten.", "The dog is sleeping in the garden."),
         ("Die Katze trinkt Milch.", "The cat drinks milk."),
         ("Ich habe heute keine Zeit.", "I have no time today."),
         ("Wir gehen morgen ins Kino.", "We are going to the cinema tomorrow.")]

# bf16's unit roundoff (8 significant bits): every activation the quantized model stores is rounded to it.
BF16_U = 2.0 ** -9


def quantized_copy(src: Path, out: Path, group_size: int, tied: bool, seed: int = 1) -> Path:
    """``src`` (the tiny llama) as mlx-community ships a model: weights cast to bf16, then every linear
    and the embedding quantized to 4 bits (so the scales and biases are bf16), ``quantization`` and
    ``quantization_config`` in config.json, no README. Untied: a random lm_head of its own."""
    import importlib

    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten, tree_map

    shutil.copytree(src, out)
    cfg = {**json.loads((out / "config.json").read_text()), "tie_word_embeddings": tied}
    module = importlib.import_module(f"mlx_lm.models.{cfg['model_type']}")
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(cfg))
    model.load_weights(str(src / "model.safetensors"), strict=tied)
    model.update(tree_map(lambda p: p.astype(mx.bfloat16), model.parameters()))
    nn.quantize(model, group_size=group_size, bits=4)
    cfg["quantization"] = cfg["quantization_config"] = {"group_size": group_size, "bits": 4, "mode": "affine"}
    (out / "config.json").write_text(json.dumps(cfg))
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(model.parameters())))
    return out


@pytest.fixture(scope="module")
def quant(tiny_model_dir, tmp_path_factory) -> dict:
    """{"g32-tied": dir, "g64-untied": dir, ...}: the four mlx-community shapes of the tiny llama."""
    root = tmp_path_factory.mktemp("quantized")
    return {f"g{g}-{'tied' if t else 'untied'}": quantized_copy(tiny_model_dir, root / f"g{g}-{t}", g, t)
            for g in (32, 64) for t in (True, False)}


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    rows = [{"id": f"r{i}", "src": s, "ref": r, "src_lang": "de", "tgt_lang": "en", "mode": "rationale-continue",
             "text": " Explain the translation: the verb moves." * (1 + i % 3), "kept": True, "reason": None,
             "n_tokens": 9, "finish": "stop"} for i, (s, r) in enumerate(PAIRS * 4)]
    path = tmp_path_factory.mktemp("rows") / "rationales.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _cfg(model, data, out, **kw):
    """The Mac's defaults: weights kept quantized, compiled steps, no kernel swaps."""
    from radis_mlx.tuner import load_config
    base = dict(model=str(model), data=str(data), out=str(out), batch_size=4, iters=4, lr=1e-2, quiet=True,
                dtype="keep", compile=True, fast_exp=False, steps_per_eval=0, save_every=0, seed=0)
    return load_config(**{**base, **kw})


def _lora_b_rel(a: dict, b: dict) -> float:
    """||B_a - B_b|| / ||B_b|| over every LoRA B: B starts at zero, so this is the relative difference
    of what training changed (A starts random and moves little)."""
    import mlx.core as mx
    keys = [k for k in b if k.endswith("lora_b")]
    num = sum(float(mx.sum((a[k].astype(mx.float32) - b[k]) ** 2).item()) for k in keys)
    den = sum(float(mx.sum(b[k].astype(mx.float32) ** 2).item()) for k in keys)
    return (num / den) ** 0.5


# ------------------------------------------------------------------ QLoRA: what trains, and the head

@pytest.mark.parametrize("name", ["g32-tied", "g64-untied"])
def test_lora_wraps_quantized_linears_and_the_head_is_sliced(quant, rows_file, name):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.tuner.lora import LoRALinear

    from radis_mlx.tuner import batching, datasets, losses, trainable

    cfg = _cfg(quant[name], rows_file, "unused")
    loaded, model, split = trainable.setup_model(cfg)
    lora = [m for _, m in model.named_modules() if isinstance(m, LoRALinear)]
    assert len(lora) == 2 * 7 and all(isinstance(m.linear, nn.QuantizedLinear) for m in lora)
    head = model.lm_head if "lm_head" in model else model.model.embed_tokens
    assert isinstance(head, nn.QuantizedLinear if "lm_head" in model else nn.QuantizedEmbedding)
    assert head.scales.dtype == mx.bfloat16 and head.group_size == int(name[1:3])
    assert split is not None  # exact over a quantized lm_head and a tied QuantizedEmbedding.as_linear
    # The sliced loss takes the head at the loss positions only: the same rows' logits as the model's.
    data = datasets.load_data(cfg, loaded.tokenizer, lambda *a: None)["main"][:4]
    w = losses.segment_weights(losses.segment_counts(data), 1.0, 1.0, "tokens")
    arrays, _ = batching.batch_arrays(data, w, 1.0, 1, 512)
    sliced, seg_sliced = losses.make_loss(split)(model, *arrays)
    full, seg_full = losses.make_loss(None)(model, *arrays)
    assert sliced.item() == full.item() and mx.array_equal(seg_sliced, seg_full).item()


def test_head_check_failure_is_loud(quant, capsys):
    """A head that fails the exactness check falls back to the full logits, and says so."""
    from radis_mlx import models
    from radis_mlx.tuner.losses import head_split

    model = models.load(str(quant["g32-tied"]), dtype="keep").model
    plain = type(model).__call__
    try:
        type(model).__call__ = lambda self, x, **kw: plain(self, x, **kw) * 2  # scaled logits (as soft-capping)
        assert head_split(model) is None
    finally:
        type(model).__call__ = plain
    err = capsys.readouterr().err
    assert "warning: the head is not sliced (max |difference|" in err and "--no-slice-head" in err


# ------------------------------------------------------------------ QLoRA finetune: compiled, checkpointed

def test_qlora_finetune_compiled_checkpointed_agrees_with_float32(quant, rows_file, tmp_path):
    """Compiled steps and grad checkpointing change nothing; the bf16 run stays within bf16 rounding of
    a float32 run of the same (dequantized) weights; the checkpointed block class is wrapped once and
    put back after each run."""
    import mlx.core as mx

    from radis_mlx import models
    from radis_mlx.tuner import finetune

    model = quant["g64-untied"]
    block = type(models.load(str(model), dtype="keep").model.layers[0])
    plain = block.__call__
    seen = []

    def during(step, _):
        f = block.__call__
        seen.append(f is not plain and plain in [c.cell_contents for c in f.__closure__ or ()])

    # SGD, not Adam: an Adam step is ~lr*sign(g), so a gradient component near 0 may flip sign under
    # bf16 rounding and move by 2*lr; an SGD step is lr*g, so adapter differences stay proportional to
    # gradient differences, which the bound below covers.
    runs = {}
    for name, kw in {"compiled": {}, "checkpointed": {"grad_checkpoint": True},
                     "checkpointed again": {"grad_checkpoint": True, "compile": False}, "eager": {"compile": False},
                     "float32": {"dtype": "float32", "compile": False}}.items():
        s = finetune(_cfg(model, rows_file, tmp_path / name.replace(" ", "-"), optimizer="sgd", iters=6, **kw),
                     on_step=during if "checkpointed" in name else None)
        assert block.__call__ is plain, f"{name}: the block class is still patched after the run"
        runs[name] = mx.load(str(tmp_path / name.replace(" ", "-") / "adapters.safetensors"))
        assert s["train_loss_last"] < s["train_loss_first"] - 0.2, (name, s)
        assert s["head_sliced"] and not s["kernels_patched"] and s["compiled"] == (kw.get("compile", True))
    assert seen == [True] * 12  # wrapped exactly once, in both checkpointed runs
    # Checkpointing recomputes the same forward: identical. Compiling fuses element-wise ops, which may
    # skip intermediate roundings: held to the bf16 bound below, though it is exact here.
    assert _lora_b_rel(runs["checkpointed"], runs["compiled"]) < 1e-6
    assert _lora_b_rel(runs["checkpointed again"], runs["eager"]) < 1e-6
    # The float32 run uses the same dequantized weights, so the difference is bf16 rounding of the
    # activations alone. The SGD update is lr * sum of gradients, so the adapters' relative difference
    # is the gradients' (over 6 steps the trajectories barely separate). A gradient of a block-0 adapter
    # passes ~40 bf16 roundings (2 blocks x ~10 stored activations, forward and backward, plus norm,
    # head and cross-entropy inputs), each a relative error <= u = 2^-9; they add at worst linearly:
    # 40u = 0.078. (Measured: 0.035, about sqrt(40)u: roundings of random sign.)
    tol = 40 * BF16_U
    assert _lora_b_rel(runs["compiled"], runs["eager"]) < tol
    assert _lora_b_rel(runs["compiled"], runs["float32"]) < tol


# ------------------------------------------------------------------ fuse after QLoRA

def test_fuse_after_qlora_keeps_the_delta(quant, rows_file, tmp_path):
    """The fused model's logits equal base + adapters' within the fused layers' bf16 rounding, far
    closer than the adapters' own change. mlx-lm re-quantized W + dW to 4 bits at the base's group,
    whose rounding step is larger than dW: the fused model was then farther from base + adapters than
    the adapters are from the base (mlx-lm PR #1564)."""
    import mlx.core as mx

    import mlx.nn as nn

    from radis_mlx import models
    from radis_mlx.models.fuse import fuse_into
    from radis_mlx.tuner import finetune

    model, out = quant["g32-tied"], tmp_path / "run"
    # lr 1e-4: a delta the size a real run's is next to the 4-bit rounding step (the SmolLM2 case).
    finetune(_cfg(model, rows_file, out, compile=False, fuse=True, lr=1e-4))
    fused_dir = out / "fused"
    x = mx.array([[1, 5, 9, 13, 17, 21, 25, 29, 33, 37]])
    # Compared in float32, where the quantized weights dequantize exactly and bf16 weights are exact:
    # what differs is only W + dW rounded to bf16 once per weight (relative error <= u, random sign).
    logits = {k: models.load(str(m), a, dtype="float32").model(x)
              for k, m, a in (("base", model, None), ("adapters", model, str(out)), ("fused", fused_dir, None))}
    delta = mx.abs(logits["adapters"] - logits["base"]).max().item()
    err = mx.abs(logits["fused"] - logits["adapters"]).max().item()
    # Along a path through the 2 blocks 6 fused linears are in series (q/k/v then o, gate/up then down,
    # twice), each adding <= u of relative error: 6u of the logits' scale at worst. (Measured: 0.023 of
    # a 0.051 bound; re-quantizing to 4 bits gave 0.66, more than delta, 0.52.)
    size = mx.abs(logits["adapters"]).max().item()
    assert err <= 6 * BF16_U * size and err < delta / 4, (err, delta, size)
    stored = mx.load(str(fused_dir / "model.safetensors"))
    assert "model.layers.0.self_attn.q_proj.weight" in stored and "model.layers.0.self_attn.q_proj.scales" not in stored
    assert stored["model.layers.0.self_attn.q_proj.weight"].dtype == mx.bfloat16  # fused in float: the scales' dtype
    assert "model.embed_tokens.scales" in stored  # what was not adapted stays quantized
    assert json.loads((fused_dir / "config.json").read_text())["quantization"]["group_size"] == 32
    assert models.load(str(fused_dir), dtype="keep").model(mx.array([[1, 2]])).dtype == mx.bfloat16
    # Quantized when asked, from the float fused weights: 8 bits keeps the delta; 4 bits, mlx-lm's
    # default, rounds it away (its error is larger than the delta itself).
    errs = {}
    for bits in (8, 4):
        loaded = models.load(str(model), str(out), dtype="keep")
        fuse_into(tmp_path / f"fused{bits}", loaded, loaded.model, bits)
        q = models.load(str(tmp_path / f"fused{bits}"), dtype="keep").model.layers[0].self_attn.q_proj
        assert isinstance(q, nn.QuantizedLinear) and q.bits == bits and q.group_size == 32
        got = models.load(str(tmp_path / f"fused{bits}"), dtype="float32").model(x)
        errs[bits] = mx.abs(got - logits["adapters"]).max().item()
    assert errs[8] < delta / 4 < delta < errs[4], (errs, delta)


# ------------------------------------------------------------------ export --gguf from a QLoRA run

def test_export_gguf_from_qlora_round_trips(quant, rows_file, tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    import mlx.core as mx
    from gguf.quants import dequantize, quantize
    from gguf import GGMLQuantizationType
    from mlx.utils import tree_flatten, tree_unflatten

    from radis_mlx import models
    from radis_mlx.models import gguf_export
    from radis_mlx.tuner import finetune
    from radis_mlx.models.fuse import fuse_adapters

    model, run = quant["g64-untied"], tmp_path / "run"
    finetune(_cfg(model, rows_file, run, compile=False, iters=3))
    out = gguf_export.export_gguf(str(model), str(run), tmp_path / "m.gguf", "f16")
    # What the file must hold: the float32 dequantized base with the adapters fused, each matrix rounded
    # to F16 as llama.cpp's reference quantizer does.
    want = models.load(str(model), str(run), dtype="float32")
    fuse_adapters(want.model, dequantize=True)
    f16 = GGMLQuantizationType.F16
    want.model.update(tree_unflatten([(k, mx.array(dequantize(quantize(np.array(v), f16), f16).reshape(v.shape)))
                                      for k, v in tree_flatten(want.model.parameters()) if v.ndim == 2]))
    monkeypatch.setenv("RADIS_MLX_HOME", str(tmp_path / "home"))
    back = models.load(str(out), dtype="float32")
    x = mx.array([[1, 5, 9, 13, 17, 21]])
    a, b = np.array(want.model(x), np.float64), np.array(back.model(x), np.float64)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 1e-5  # float32 noise: the export adds nothing


def test_export_gguf_refuses_before_loading(quant, tmp_path, monkeypatch):
    from radis_mlx.models import gguf_export, loader

    def no_load(*a, **kw):
        raise AssertionError("the model was loaded before the refusal")
    monkeypatch.setattr(loader, "load", no_load)
    arch = shutil.copytree(quant["g32-tied"], tmp_path / "arch")
    (arch / "config.json").write_text(json.dumps({**json.loads((arch / "config.json").read_text()),
                                                  "model_type": "phi3"}))
    with pytest.raises(UserError, match="unsupported architecture 'phi3'"):
        gguf_export.export_gguf(str(arch), None, tmp_path / "a.gguf")
    tok = shutil.copytree(quant["g32-tied"], tmp_path / "tok")
    t = json.loads((tok / "tokenizer.json").read_text())
    t["model"] = {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}
    (tok / "tokenizer.json").write_text(json.dumps(t))
    with pytest.raises(UserError, match="unsupported tokenizer"):
        gguf_export.export_gguf(str(tok), None, tmp_path / "t.gguf")
    assert not list(tmp_path.glob("*.gguf"))


# ------------------------------------------------------------------ what cannot train on a quantized base

@pytest.mark.parametrize("kw,says", [({"fine_tune_type": "full"}, "fine_tune_type full: "),
                                     ({"fine_tune_type": "dora"}, "fine_tune_type dora: "),
                                     ({"train_embeddings": True}, "train_embeddings: ")])
def test_quantized_base_refuses_full_dora_and_embeddings(quant, rows_file, tmp_path, monkeypatch, kw, says):
    """One line before any work: nothing loaded, no run directory; and the same after a load when the
    files could not be read first (a hub id fetched by the load)."""
    from radis_mlx import models
    from radis_mlx.tuner import finetune, trainable

    real_load = models.load
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("loaded before the refusal"))
    out = tmp_path / "run"
    with pytest.raises(UserError) as e:
        finetune(_cfg(quant["g64-untied"], rows_file, out, **kw))
    msg = str(e.value)
    assert msg.startswith(says) and "4-bit" in msg and "--dtype bfloat16" in msg and "\n" not in msg
    assert not out.exists()
    monkeypatch.setattr(models, "load", real_load)
    monkeypatch.setattr(models, "stored_config", lambda m: None)
    with pytest.raises(UserError, match=says):
        trainable.setup_model(_cfg(quant["g64-untied"], rows_file, out, **kw))


# ------------------------------------------------------------------ generation and eval, no swaps

def _same_but_for_bf16_ties(model, prompt_ids, without, with_swaps) -> int:
    """Each row's greedy tokens agree, or agree up to a step where the two tokens chosen tie in the
    model's logits at bf16 resolution (a random tiny model's ~400 logits sit a bf16 step or two apart,
    so a one-ulp change in a kernel's rounding picks the other); returns how many rows split so."""
    import mlx.core as mx
    split = 0
    for p, a, b in zip(prompt_ids, without, with_swaps):
        if a == b:
            continue
        k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), None)
        assert k is not None, (a, b)  # one row ended early at the same tokens
        logits = model(mx.array([p + a[:k]]))[0, -1].astype(mx.float32)
        gap, top = abs(logits[a[k]].item() - logits[b[k]].item()), mx.abs(logits).max().item()
        assert gap <= 4 * BF16_U * top, f"step {k}: tokens {a[k]} and {b[k]} are {gap:.3g} apart, not a tie"
        split += 1
    return split


@pytest.mark.parametrize("name", ["g32-tied", "g64-untied"])
def test_greedy_tokens_same_with_and_without_swaps(quant, name):
    import mlx.core as mx

    from radis_mlx import models, prompts
    from radis_mlx.runtime.kernels import patch_cpu_kernels, patch_rope
    from radis_mlx.data import Pair
    from radis_mlx.runtime.decode import DecodeConfig, decode

    loaded = models.load(str(quant[name]), dtype="keep")
    # The swaps decode makes, over 300 positions: the logits of a bf16 model stay its own (patch_rope's
    # table in bf16 rounded the angles: 0.28 on logits of scale 2.4 past position 200).
    x = mx.array([list(range(1, 301))])
    plain = loaded.model(x).astype(mx.float32)
    restores = [patch_cpu_kernels(loaded.model, inference=True), patch_rope(512)]
    try:
        swapped = loaded.model(x).astype(mx.float32)
    finally:
        for restore in restores:
            if restore:
                restore()
    assert mx.abs(swapped - plain).max().item() <= 4 * BF16_U * mx.abs(plain).max().item()
    tok = loaded.tokenizer
    ids = [prompts.encode(tok, prompts.translation_prompt(tok, Pair(s, r, "de", "en", f"p{i}")))
           for i, (s, r) in enumerate(PAIRS * 2)]
    runs = [[c.tokens for c in decode(loaded.model, tok, ids, DecodeConfig(max_tokens=12, fast_exp=fast))]
            for fast in (False, True)]
    assert all(len(t) > 0 for t in runs[0])
    assert _same_but_for_bf16_ties(loaded.model, ids, *runs) <= len(ids) // 2


def test_eval_same_with_and_without_swaps(quant, tmp_path, monkeypatch):
    """eval decodes through the same path: with the swaps off, its tokens are the swapped run's (bf16
    ties aside), and each row's text is its tokens'."""
    import functools

    from radis_mlx import models
    from radis_mlx.evals import context
    from radis_mlx.evals.harness import EvalConfig, evaluate
    from radis_mlx.runtime.decode import DecodeConfig, decode

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"src": s, "ref": r, "src_lang": "de", "tgt_lang": "en"}) + "\n"
                            for s, r in PAIRS))
    seen = {}

    def recording(fast):
        def run(model, tok, prompt_ids, cfg, **kw):
            assert cfg.fast_exp is fast
            done = decode(model, tok, prompt_ids, cfg, **kw)
            seen[fast] = (prompt_ids, [c.tokens for c in done], sorted(c.text for c in done))
            return done
        return run

    texts = {}
    for fast in (True, False):
        monkeypatch.setattr(context, "DecodeConfig", functools.partial(DecodeConfig, fast_exp=fast))
        monkeypatch.setattr(context, "decode", recording(fast))
        out = tmp_path / f"eval-{fast}"
        evaluate(EvalConfig(models=[str(quant["g64-untied"])], out=str(out), suites=["translation"],
                            test_data={"translation": str(data)}, max_tokens={"translation": 12}, dtype="keep",
                            n_bootstrap=10, comet=False, progress=False))
        rows = [json.loads(x) for x in next(out.glob("*/cache/translation.jsonl")).read_text().splitlines()]
        texts[fast] = sorted(r["text"] for r in rows if "text" in r)
        assert texts[fast] == seen[fast][2]
    assert seen[True][0] == seen[False][0] and len(texts[True]) == len(PAIRS)
    model = models.load(str(quant["g64-untied"]), dtype="keep").model
    split = _same_but_for_bf16_ties(model, seen[False][0], seen[False][1], seen[True][1])
    assert split <= len(PAIRS) // 2
    if not split:
        assert texts[True] == texts[False]


# ------------------------------------------------------------------ a hub id, offline

OFFLINE_SCRIPT = r"""
import json, sys
from pathlib import Path
from radis_mlx.cli import main
from radis_mlx import models
repo, work = sys.argv[1], Path(sys.argv[2])
loaded = models.load(repo, dtype="keep")
assert loaded.path == repo and type(loaded.model.model.embed_tokens).__name__ == "QuantizedEmbedding"
def cli(*argv):
    try:
        main(list(argv))
    except SystemExit as e:
        assert not e.code, (argv[0], e.code)
cli("generate", "--data", str(work / "pairs.jsonl"), "--out", str(work / "gen.jsonl"), "--model", repo,
    "--max-tokens", "8", "--min-tokens", "1", "--dtype", "keep", "--workers", "1")
cli("finetune", "--model", repo, "--data", str(work / "gen.jsonl"), "--out", str(work / "run"), "--iters", "2",
    "--batch-size", "2", "--dtype", "keep", "--compile", "--fuse", "--quiet", "--steps-per-eval", "0")
cli("eval", "--model", repo, "--adapter", str(work / "run"), "--name", "adapters",
    "--model", str(work / "run" / "fused"), "--adapter", "-", "--name", "fused", "--suites", "translation",
    "--test-data", f"translation={work / 'pairs.jsonl'}", "--max-tokens", "6", "--dtype", "keep",
    "--out", str(work / "ev"))
# What cannot train on the kept 4-bit weights is refused from the cached config.json, before any load.
import contextlib, io
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        main(["finetune", "--model", repo, "--data", str(work / "gen.jsonl"), "--out", str(work / "full"), "--full",
              "--dtype", "keep"])
    except SystemExit as e:
        assert e.code == 2
assert err.getvalue().startswith(f"error: fine_tune_type full: {repo} is quantized (4-bit)"), err.getvalue()
assert err.getvalue().count("\n") == 1 and not (work / "full").exists()
print(json.dumps({"card": (work / "run" / "fused" / "README.md").read_text()}))
"""


def test_hub_id_offline_load_generate_finetune_fuse_eval(quant, tmp_path):
    """An mlx-community-style repo (quantization_config, group 64, bf16 scales, no README) in a
    Hugging Face cache, used with HF_HUB_OFFLINE=1: no step reaches for the network (mlx-lm's save read
    the repo's model card, never cached, so --fuse failed after training)."""
    repo = "mlx-community/tiny-llama-4bit"
    put_in_hf_cache(tmp_path / "hf" / "hub", repo, quant["g64-untied"])
    (tmp_path / "pairs.jsonl").write_text("".join(
        json.dumps({"src": s, "ref": r, "src_lang": "de", "tgt_lang": "en"}) + "\n" for s, r in PAIRS))
    env = offline_env(tmp_path / "hf")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    p = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, repo, str(tmp_path)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    card = json.loads(p.stdout.strip().splitlines()[-1])["card"]
    assert f"base_model: {repo}" in card
    for run in ("adapters", "fused"):
        res = json.loads((tmp_path / "ev" / run / "results.json").read_text())
        assert res["suites"]["translation"]["directions"]["de-en"]["n"] == len(PAIRS)


# ------------------------------------------------------------------ memory

def test_memory_reported_and_a_step_over_the_limit_stops(quant, rows_file, tmp_path, monkeypatch):
    import mlx.core as mx

    from radis_mlx.runtime import memory
    from radis_mlx.tuner import finetune

    s = finetune(_cfg(quant["g32-tied"], rows_file, tmp_path / "ok", compile=False, iters=1))
    assert s["peak_mem_gb"] > 0 and s["active_mem_gb"] >= 0 and s["cache_mem_gb"] >= 0
    with pytest.raises(UserError) as e:
        finetune(_cfg(quant["g32-tied"], rows_file, tmp_path / "big", compile=False, memory_limit_gb=1e-4))
    assert str(e.value).startswith("step 1 needed ") and "--batch-size" in str(e.value)
    # Metal's branch (the CPU names no working set): wired to the GPU's working set, unwired after.
    assert memory.wire_for_training(None)[0] is None
    calls = []
    monkeypatch.setattr(mx, "device_info", lambda: {"max_recommended_working_set_size": 5e9})
    monkeypatch.setattr(mx, "set_wired_limit", lambda n: calls.append(n) or 7)
    limit, unwire = memory.wire_for_training(None)
    unwire()
    assert limit == 5e9 and calls == [5e9, 7]
    assert memory.wire_for_training(2.0)[0] == 2e9
