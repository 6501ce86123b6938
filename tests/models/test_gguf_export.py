"""export --gguf: a model with trained LoRA adapters fused, written as GGUF and read back three ways:
by llama.cpp's own reader (the gguf package: tensor names and types llama.cpp expects), by radis-mlx's
GGUF import (logits equal the fused model's within F16 / Q8_0 rounding), and through the tokenizer
(the same ids for real WMT22 sentences). The real SmolLM2 export is compared with the offline GGUF
llama.cpp itself produced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

gguf_pkg = pytest.importorskip("gguf")

from radis_mlx import models  # noqa: E402
from radis_mlx.fileio import UserError  # noqa: E402
from radis_mlx.models import gguf_export  # noqa: E402

PAIRS = [("Der Hund schläft im Garten.", "The dog is sleeping in the garden."),
         ("Die Katze trinkt Milch.", "The cat drinks milk."),
         ("Ich habe heute keine Zeit.", "I have no time today."),
         ("Wir gehen morgen ins Kino.", "We are going to the cinema tomorrow.")]


def _rows_file(path: Path, pairs) -> Path:
    rows = [{"id": f"r{i}", "src": s, "ref": r, "src_lang": "de", "tgt_lang": "en",
             "mode": "rationale-continue", "text": " The verb moves to the end of the clause.", "kept": True,
             "reason": None, "n_tokens": 9, "finish": "stop"} for i, (s, r) in enumerate(pairs)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _train(model_dir: Path, out: Path, pairs, **kw) -> Path:
    from radis_mlx.tuner import finetune, load_config

    data = _rows_file(out.parent / f"{out.name}.jsonl", pairs)
    finetune(load_config(**{"model": str(model_dir), "data": str(data), "out": str(out), "batch_size": 2,
                            "iters": 3, "lr": 1e-2, "quiet": True, "compile": False, "steps_per_eval": 0,
                            "save_every": 0, "seed": 0, **kw}))
    return out


def _wmt22(shared_data: Path, n: int = 6) -> list[str]:
    src = shared_data / "wmt22_general_test" / "sources" / "generaltest2022.de-en.src.de"
    ref = shared_data / "wmt22_general_test" / "references" / "generaltest2022.de-en.ref.A.en"
    return [line for f in (src, ref) for line in f.read_text(encoding="utf-8").splitlines()[:n]]


def _fused(model_dir, adapter):
    """The MLX model the export starts from: float32 with the adapters fused."""
    from radis_mlx.models.fuse import fuse_adapters

    loaded = models.load(str(model_dir), str(adapter) if adapter else None, dtype="float32")
    fuse_adapters(loaded.model, dequantize=True)
    return loaded


def _reimport(path: Path, monkeypatch, tmp_path):
    monkeypatch.setenv("RADIS_MLX_HOME", str(tmp_path / "home"))  # the conversion stays in the test's dir
    return models.load(str(path), dtype="float32")
def _same_model_back(out, fused, monkeypatch, tmp_path, shared_data):
    """Re-imported through radis-mlx's GGUF reader: the fused model's logits (f16 rounding) and tokens."""
    back = _reimport(out, monkeypatch, tmp_path)
    x = _prompt(fused.tokenizer)
    want, got = np.array(fused.model(x)), np.array(back.model(x))
    assert _rel_err(want, got) < 2e-3 and (want.argmax(-1) == got.argmax(-1)).all()
    for s in _wmt22(shared_data, 10):
        assert back.tokenizer.encode(s) == fused.tokenizer.encode(s), s


def _prompt(tok, text="Translate this from German to English:\nGerman: Der Hund schläft im Garten.\nEnglish:"):
    import mlx.core as mx

    return mx.array([tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)])


def _rounded_like_the_file(loaded, kind: str):
    """The fused model with each matrix rounded as the file stores it, by the gguf package's reference
    F16/Q8_0 quantize + dequantize: what the re-imported model must equal up to float32 noise."""
    import mlx.core as mx
    from gguf.quants import dequantize, quantize
    from mlx.utils import tree_flatten, tree_unflatten

    qtype = gguf_pkg.GGMLQuantizationType[kind.upper()]
    rounded = [(k, mx.array(dequantize(quantize(np.array(v), qtype), qtype).reshape(v.shape)))
               for k, v in tree_flatten(loaded.model.parameters()) if v.ndim == 2]
    loaded.model.update(tree_unflatten(rounded))
    return loaded.model


def _rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def _llama_cpp_names(arch: str, layers: int, tied: bool, biases: bool) -> set[str]:
    """What llama.cpp's converter writes for this architecture, from gguf's MODEL_TENSORS table."""
    T = gguf_pkg.MODEL_TENSOR
    arch_tensors = gguf_pkg.MODEL_TENSORS[gguf_pkg.MODEL_ARCH[arch.upper()]]
    top = [T.TOKEN_EMBD, T.OUTPUT_NORM] + ([] if tied else [T.OUTPUT])
    block = [T.ATTN_NORM, T.ATTN_Q, T.ATTN_K, T.ATTN_V, T.ATTN_OUT, T.FFN_NORM, T.FFN_GATE, T.FFN_UP, T.FFN_DOWN]
    assert set(top + block) <= set(arch_tensors)
    names = {f"{gguf_pkg.TENSOR_NAMES[t]}.weight" for t in top}
    for i in range(layers):
        names |= {gguf_pkg.TENSOR_NAMES[t].format(bid=i) + ".weight" for t in block}
        if biases:
            names |= {gguf_pkg.TENSOR_NAMES[t].format(bid=i) + ".bias" for t in (T.ATTN_Q, T.ATTN_K, T.ATTN_V)}
    return names


def _check_types(reader, kind: str) -> None:
    want = {"f16": "F16", "q8_0": "Q8_0"}[kind]
    for t in reader.tensors:
        assert t.tensor_type.name == ("F32" if len(t.shape) == 1 else want), t.name


def _tiny_variant(tiny_dir: Path, out: Path, model_type: str, seed: int = 3) -> Path:
    """The tiny llama's tokenizer and sizes in another mlx-lm architecture, random weights (biases too)."""
    import importlib

    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map

    shutil.copytree(tiny_dir, out)
    cfg = {**json.loads((out / "config.json").read_text()), "model_type": model_type, "tie_word_embeddings": False,
           "head_dim": 16}
    (out / "config.json").write_text(json.dumps(cfg))
    mod = importlib.import_module(f"mlx_lm.models.{model_type}")
    mx.random.seed(seed)
    model = mod.Model(mod.ModelArgs.from_dict(cfg))
    # Random biases and norms, so a dropped or misplaced one changes the logits.
    params = tree_map(lambda p: mx.random.normal(p.shape) * 0.1 if p.ndim == 1 else p, model.parameters())
    mx.save_safetensors(str(out / "model.safetensors"), dict(tree_flatten(params)))
    return out


# ------------------------------------------------------------------ the tiny llama, with trained adapters
@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    return _train(tiny_model_dir, tmp_path_factory.mktemp("tiny-lora") / "run", PAIRS)


# F16 keeps 11 significant bits, so each stored weight is off by at most its unit roundoff u = 2**-11
# (relative). The tiny llama's logits pass 9 rounded matmuls in series (2 blocks x (qkv->o, gate/up->down)
# plus the head), and each adds at most ~u of relative error before cancellation in the random weights'
# logits, which we allow to double it: 2 * 9 * u = 8.8e-3. Q8_0's bound is the measured one below.
F16_TOL = 2 * 9 * 2.0**-11


@pytest.mark.parametrize("kind,tol", [("f16", F16_TOL), ("q8_0", 0.2)])
def test_tiny_llama_round_trip(tiny_model_dir, tiny_adapter, shared_data, tmp_path, monkeypatch, kind, tol):
    from gguf import GGUFReader

    fused = _fused(tiny_model_dir, tiny_adapter)
    base = models.load(str(tiny_model_dir), dtype="float32")
    x = _prompt(fused.tokenizer)
    want = np.array(fused.model(x))
    assert _rel_err(want, base.model(x)) > 2 * tol  # the adapters changed the model: fusing is exercised

    out = gguf_export.export_gguf(str(tiny_model_dir), str(tiny_adapter), tmp_path / "tiny.gguf", kind)
    reader = GGUFReader(str(out))
    assert {t.name for t in reader.tensors} == _llama_cpp_names("llama", 2, tied=True, biases=False)
    _check_types(reader, kind)
    meta = {k: f.contents() for k, f in reader.fields.items()}
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt2" and meta["tokenizer.chat_template"].startswith("{% for message")
    assert meta["llama.attention.head_count_kv"] == 2 and meta["tokenizer.ggml.eos_token_id"] == 2

    back = _reimport(out, monkeypatch, tmp_path)
    got = np.array(back.model(x))
    # The random tiny model amplifies Q8_0's rounding (0.4% of each weight) tenfold in its logits; that
    # the export adds nothing else shows against the fused model rounded the same way.
    assert _rel_err(want, got) < tol
    assert _rel_err(_rounded_like_the_file(fused, kind)(x), got) < 1e-5
    for s in _wmt22(shared_data) + ["<|im_start|>user\nHallo<|im_end|>"]:
        assert back.tokenizer.encode(s) == fused.tokenizer.encode(s), s
    assert back.tokenizer.apply_chat_template([{"role": "user", "content": "Hallo"}], tokenize=False) == \
        fused.tokenizer.apply_chat_template([{"role": "user", "content": "Hallo"}], tokenize=False)


def test_qwen2_round_trip_keeps_the_attention_biases(tiny_model_dir, tmp_path, monkeypatch):
    from gguf import GGUFReader

    src = _tiny_variant(tiny_model_dir, tmp_path / "qwen2", "qwen2")
    adapter = _train(src, tmp_path / "qwen2-lora", PAIRS)
    fused = _fused(src, adapter)
    out = gguf_export.export_gguf(str(src), str(adapter), tmp_path / "qwen2.gguf", "f16")
    reader = GGUFReader(str(out))
    assert {t.name for t in reader.tensors} == _llama_cpp_names("qwen2", 2, tied=False, biases=True)
    _check_types(reader, "f16")
    x = _prompt(fused.tokenizer)
    assert _rel_err(fused.model(x), _reimport(out, monkeypatch, tmp_path).model(x)) < 2e-3


# ------------------------------------------------------------------ the real SmolLM2 (llama), trained a few steps
@pytest.fixture(scope="module")
def real_adapter(real_model_dir, shared_data, tmp_path_factory) -> Path:
    lines = _wmt22(shared_data, 4)
    pairs = list(zip(lines[:4], lines[4:]))
    return _train(real_model_dir, tmp_path_factory.mktemp("real-lora") / "run", pairs, lr=2e-3, max_seq_len=96,
                  num_layers=4, iters=2)


def test_real_smollm2_export_matches_llama_cpp_and_round_trips(real_model_dir, real_adapter, shared_data,
                                                               tmp_path, monkeypatch):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    fused = _fused(real_model_dir, real_adapter)
    out = gguf_export.export_gguf(str(real_model_dir), str(real_adapter), tmp_path / "smol.gguf", "f16")
    ours, orig = GGUFReader(str(out)), GGUFReader(str(models.gguf_file("smollm2-135m")))
    assert {t.name for t in ours.tensors} == {t.name for t in orig.tensors}
    _check_types(ours, "f16")
    a, b = ({k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.")} for r in (ours, orig))
    assert a.pop("tokenizer.ggml.add_bos_token") is b.pop("tokenizer.ggml.add_bos_token") is False
    assert b.pop("tokenizer.ggml.add_space_prefix") is False  # an older converter's key; False is the default
    assert a == b  # tokens, types, merges, pre-tokenizer, special ids and chat template as llama.cpp wrote them
    # llama.cpp's q/k row order, checked against llama.cpp's own file: a block the adapters left alone
    # comes out as llama.cpp wrote it (up to F16 rounding of its Q4_1 values; in HF's row order it would
    # differ by ~140%), a trained one differs by the LoRA delta.
    ours_t, orig_t = ({t.name: t for t in r.tensors} for r in (ours, orig))
    for name, lo, hi in (("blk.0.attn_q.weight", 0, 1e-3), ("blk.0.attn_k.weight", 0, 1e-3),
                         ("blk.29.attn_q.weight", 1e-3, 0.3), ("blk.29.attn_k.weight", 1e-3, 0.3)):
        w, w0 = (dequantize(t.data, t.tensor_type).astype(np.float32) for t in (ours_t[name], orig_t[name]))
        assert lo <= _rel_err(w0, w) < hi, name

    _same_model_back(out, fused, monkeypatch, tmp_path, shared_data)


# ------------------------------------------------------------------ errors and the CLI
def _one_line(fn, match: str):
    with pytest.raises(UserError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


def test_refusals_are_one_line_and_leave_nothing(tiny_model_dir, tmp_path, monkeypatch):
    qwen3 = _tiny_variant(tiny_model_dir, tmp_path / "qwen3", "qwen3")
    out = tmp_path / "out"
    out.mkdir()
    _one_line(lambda: gguf_export.export_gguf(str(qwen3), None, out / "q3.gguf"), r"unsupported architecture 'qwen3'")
    _one_line(lambda: gguf_export.export_gguf(str(tiny_model_dir), None, tmp_path / "nope" / "m.gguf"),
              "does not exist")
    _one_line(lambda: gguf_export.export_gguf(str(tiny_model_dir), None, out / "m.gguf", "q4_0"), "f16 or q8_0")
    (out / "old.gguf").write_bytes(b"old")
    _one_line(lambda: gguf_export.export_gguf(str(tiny_model_dir), None, out / "old.gguf"), "--overwrite")

    calls = []

    def fail_midway(*a):
        calls.append(a)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real(*a)
    real = gguf_export.tensor_data
    monkeypatch.setattr(gguf_export, "tensor_data", fail_midway)
    with pytest.raises(OSError):
        gguf_export.export_gguf(str(tiny_model_dir), None, out / "old.gguf", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.gguf"] and (out / "old.gguf").read_bytes() == b"old"


def test_cli_export(tiny_model_dir, tiny_adapter, tmp_path, capsys):
    from gguf import GGUFReader

    from radis_mlx.cli import main

    out = tmp_path / "cli.gguf"
    main(["export", "--gguf", str(out), "--model", str(tiny_model_dir), "--adapter", str(tiny_adapter),
          "--type", "q8_0"])
    assert f"wrote {out}" in capsys.readouterr().out
    assert GGUFReader(str(out)).fields["general.file_type"].contents() == gguf_pkg.LlamaFileType.MOSTLY_Q8_0
    with pytest.raises(SystemExit) as e:
        main(["export", "--gguf", str(tmp_path / "missing" / "x.gguf"), "--model", str(tiny_model_dir)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "does not exist" in err


# ------------------------------------------------------------------ the real Qwen2.5-Coder-0.5B (qwen2), slow
@pytest.mark.slow
def test_real_qwen_export_matches_llama_cpp_and_round_trips(shared_data, tmp_path, monkeypatch):
    """Qwen2.5-Coder-0.5B-Instruct with a one-step adapter, F16: llama.cpp's tensor names (biases, untied
    output) and tokenizer metadata, re-imported logits and WMT22 token ids. ~2-3 min on 2 cores."""
    from gguf import GGUFReader

    original = models.gguf_file("qwen2.5-coder-0.5b")  # joined once per machine
    monkeypatch.setenv("RADIS_MLX_HOME", str(tmp_path / "home"))  # converted by this checkout's importer
    src = Path(models.converted_dir(original, "exact"))
    lines = _wmt22(shared_data, 2)
    adapter = _train(src, tmp_path / "qwen-lora", list(zip(lines[:2], lines[2:])), lr=2e-3, iters=1,
                     max_seq_len=256, num_layers=2)
    fused = _fused(src, adapter)
    out = gguf_export.export_gguf(str(src), str(adapter), tmp_path / "qwen.gguf", "f16")
    ours, orig = GGUFReader(str(out)), GGUFReader(str(original))
    assert {t.name for t in ours.tensors} == {t.name for t in orig.tensors}
    _check_types(ours, "f16")
    a, b = ({k: f.contents() for k, f in r.fields.items() if k.startswith("tokenizer.")} for r in (ours, orig))
    assert a == b
    del ours, orig
    _same_model_back(out, fused, monkeypatch, tmp_path, shared_data)


def test_token_types_round_trip_through_import_and_export(tmp_path):
    """Control, user-defined and llama.cpp's unused padding tokens come back as the types they were."""
    from radis_mlx.models.tokenizer import build_tokenizer

    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
            "tokenizer.ggml.tokens": ["a", "b", "ab", "<|c|>", "<t>", "[PAD5]"],
            "tokenizer.ggml.token_type": [1, 1, 1, 3, 4, 5], "tokenizer.ggml.merges": ["a b"]}
    tok, tok_config = build_tokenizer(meta)
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(tok_config))
    tokens, types, pre, special = gguf_export.vocab_metadata(tmp_path, None, n_vocab=8)
    assert tokens == meta["tokenizer.ggml.tokens"] + ["[PAD6]", "[PAD7]"]
    assert types == [1, 1, 1, 3, 4, 5, 5, 5] and pre == "qwen2" and special.merges == ["a b"]


# ------------------------------------------------------------------ exports stop where eval cuts
def _ollama_commands(text: str) -> list[tuple[str, str]]:
    """(command, value) as Ollama's parser reads a Modelfile: a quoted value runs across lines until
    its closing quote, with no escape decoding (ollama/parser/parser.go)."""
    out, i = [], 0
    while i < len(text):
        if text[i] in " \t\r\n":
            i += 1
            continue
        if text[i] == "#":
            i = text.find("\n", i) % (len(text) + 1) if "\n" in text[i:] else len(text)
            continue
        j = text.index(" ", i)
        name = text[i:j]
        if name == "PARAMETER":
            k = text.index(" ", j + 1)
            name, j = text[j + 1:k], k
        j += 1
        for q in ('"""', '"', ""):
            if text.startswith(q, j) and q:
                end = text.index(q, j + len(q))
                out.append((name, text[j + len(q):end]))
                i = end + len(q)
                break
            if not q:
                end = text.find("\n", j) if "\n" in text[j:] else len(text)
                out.append((name, text[j:end].strip()))
                i = end
    return out


@pytest.mark.parametrize("method", ["radis", "sft", None])
def test_the_modelfile_stops_where_eval_cuts(tiny_model_dir, tiny_adapter, tmp_path, method):
    """The method comes from the adapter's own run files; a radis adapter's Modelfile stops at the end
    of turn and at eval's cut, an sft one at the end of turn only."""
    import shutil

    from radis_mlx.cli import main
    from radis_mlx.evals import EvalConfig
    from radis_mlx.models import load

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, adapter)
    conf = json.loads((adapter / "adapter_config.json").read_text())
    if method is None:
        conf.pop("radis")  # adapters from elsewhere (mlx_lm.lora): no method is guessed
    else:
        conf["radis"]["method"] = method
    (adapter / "adapter_config.json").write_text(json.dumps(conf))
    main(["export", "--gguf", str(tmp_path / "t.gguf"), "--model", str(tiny_model_dir), "--adapter", str(adapter)])
    cmds = _ollama_commands((tmp_path / "Modelfile").read_text())
    stops = [v for k, v in cmds if k == "stop"]
    eot = "<|im_end|>"
    assert load(str(tiny_model_dir)).tokenizer.decode([2]) == eot  # the eos eval's decoding stops at
    cfg = EvalConfig()
    assert stops == ([eot, cfg.stop] if method == "radis" else [eot]) and cfg.stop == "\n\n" and cfg.cut == "blank-line"
    assert ("FROM", "./t.gguf") in cmds and ("temperature", "0") in cmds
    template = dict(cmds)["TEMPLATE"]
    assert template.endswith("<|im_start|>assistant\n") and "{{ .Content }}<|im_end|>" in template


def test_fuse_writes_the_stops_into_generation_config(tiny_model_dir, tmp_path):
    from radis_mlx.models import load
    out = _train(tiny_model_dir, tmp_path / "run", PAIRS, fuse=True)
    conf = json.loads((out / "fused" / "generation_config.json").read_text())
    assert conf["stop_strings"] == ["\n\n"] and 2 in conf["eos_token_id"]  # <|im_end|> is token 2
    fused = load(str(out / "fused"))
    assert 2 in fused.tokenizer.eos_token_ids  # mlx-lm reads eos_token_id from generation_config.json
