"""Check radis-mlx's GGUF import against an independent reference: Hugging Face transformers.

transformers has its own GGUF loader (it dequantizes with the `gguf` package, rebuilds the tokenizer
from the metadata and runs its PyTorch model), written and tested apart from radis_mlx/models/gguf.py. So
the same GGUF file opened both ways must give the same token ids, the same logits (to float32
rounding) and the same greedy tokens. Checked: (1) tokenizer ids, decode round trip and chat
template on WMT22 sources (de, en, zh), code, JSON, emoji, mixed scripts and special tokens;
(2) next-token logits on >= 300 tokens; (3) 32 greedy tokens on 4 prompts. Exits 1 when token ids
or greedy tokens differ. The reference runs in its own venv (torch), in a subprocess of this file.

Reproduce:
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 transformers gguf numpy sentencepiece protobuf accelerate
    .venv/bin/python bench/check_gguf_reference.py --model qwen2.5-coder-0.5b --out /tmp/ref-qwen.json
    .venv/bin/python bench/check_gguf_reference.py --model smollm2-135m --out /tmp/ref-smollm2.json
    .venv/bin/python bench/check_gguf_reference.py --model gemma3-270m --weights-only --out /tmp/ref-gemma.json
(--gguf FILE for any other file; --ref-python names the reference venv's python, /tmp/refvenv by default.)
The radis-mlx side is what a CPU user gets: the 'exact' conversion loaded as float32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ../shared/data beside the checkout (see its README); read in place, never copied.
WMT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wmt22_general_test" / "sources"
EXTRA = [
    "def f(x):\n\tif x > 0:\n\t\treturn x  # tab-indented\n\treturn -x\n",
    "class A:\n    def __init__(self, n=10):\n        self.n = n\n\n    def __repr__(self):\n"
    "        return f'A({self.n!r})'\n",
    '{"name": "radis", "version": [0, 1, 2], "ok": true, "nested": {"k": null, "pi": 3.14159}}',
    "for (int i = 0; i < 1000000; ++i) { sum += a[i] * b[i]; }  // C++   with   spaces",
    "Emoji: 😀👍🏽🎉 👨‍👩‍👧‍👦 ❤️ 🇩🇪🇨🇳 and ✓ ✗ → ∑ ∞",
    "Mixed: Hello 世界, Привет мир, こんにちは, 안녕하세요, مرحبا, שלום, Γειά σου, नमस्ते",
    "Numbers 1234567890 3.14159 1,000,000 2024-01-15 12:30:45 -42 +7e-10",
    "I'll say it's DON'T WON'T you've we'd   multiple   spaces\n\n\n  lines \r\n\ttabs\t \n",
    "Ünïcödé àccents: Straße, naïve café, façade, Øre, Łódź, İstanbul",
    "<|im_start|>user\nHallo<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>",
    "<|endoftext|> text after an end token <|im_start|>system\nbe brief<|im_end|>",
    "<s> </s> <unk> <|begin_of_text|> [INST] plain text that looks special [/INST]",
    "   leading spaces and trailing spaces   ",
]
CHAT = [{"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hallo! Wie geht es dir heute?"}]
GREEDY = [
    "What is the capital of France?",
    "Translate the following German sentence into English: Die Regierung hat am Montag neue "
    "Maßnahmen gegen die steigenden Energiepreise angekündigt.",
    "In Python, how do I reverse a list in place? Answer briefly.",
    "A farmer has 17 sheep. He buys 5 more and then sells 8. How many sheep does he have now?",
]


def sample_texts(n: int) -> list[str]:
    texts = []
    for name in ("generaltest2022.de-en.src.de", "generaltest2022.en-de.src.en",
                 "generaltest2022.zh-en.src.zh"):
        lines = [s for s in (WMT / name).read_text(encoding="utf-8").splitlines() if s.strip()]
        texts += lines[:n]
    return texts + EXTRA


def logit_chats() -> list[list[dict]]:
    de = (WMT / "generaltest2022.de-en.src.de").read_text(encoding="utf-8").splitlines()
    zh = (WMT / "generaltest2022.zh-en.src.zh").read_text(encoding="utf-8").splitlines()
    return [
        [{"role": "user", "content": "Translate into English:\n" + " ".join(de[40:44])}],
        [{"role": "user", "content": "Translate into English:\n" + " ".join(zh[40:43])}],
        [{"role": "system", "content": "You are a careful Python reviewer."},
         {"role": "user", "content": "Review this code and explain the bug:\n" + EXTRA[1] + EXTRA[0]}],
        [{"role": "user", "content": "Summarise this JSON:\n" + EXTRA[2]},
         {"role": "assistant", "content": "A package called radis with a version list."},
         {"role": "user", "content": "And what do these mean: 😀👍🏽🎉?"}],
    ]


def chat_ids(tok, messages) -> list[int]:
    """apply_chat_template(tokenize=True) as a flat id list, whatever the transformers version returns."""
    r = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    if hasattr(r, "keys"):
        r = r["input_ids"]
    r = list(r.tolist() if hasattr(r, "tolist") else r)
    return [int(i) for i in (r[0] if r and isinstance(r[0], list) else r)]


def plain_ids(tok, messages) -> list[int]:
    """A base model's prompt: the messages' text, no chat template."""
    return [int(i) for i in tok.encode("\n\n".join(m["content"] for m in messages))]


def all_chats() -> list[list[dict]]:
    return [CHAT] + logit_chats() + [[{"role": "user", "content": p}] for p in GREEDY]


# ---------------------------------------------------------------- reference side (ref venv, torch)
def reference(gguf: Path, work: Path, n_sent: int, n_new: int, weights_only: bool) -> None:
    import warnings

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=FutureWarning)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    texts = sample_texts(n_sent)
    enc = [tok.encode(t) for t in texts]
    res = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
           "encode": enc, "decode": [tok.decode(e, skip_special_tokens=False) for e in enc],
           "chat": [plain_ids(tok, c) if weights_only else chat_ids(tok, c) for c in all_chats()]}
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32).eval()
    with torch.no_grad():
        for i, ids in enumerate(res["chat"][1:1 + len(logit_chats())]):
            np.save(work / f"ref_logits_{i}.npy", model(torch.tensor([ids])).logits[0].float().numpy())
        res["greedy"] = []
        for ids in res["chat"][-len(GREEDY):]:
            out = model(torch.tensor([ids]), use_cache=True)
            new = []
            for _ in range(n_new):
                new.append(int(out.logits[0, -1].argmax()))
                out = model(torch.tensor([[new[-1]]]), past_key_values=out.past_key_values, use_cache=True)
            res["greedy"].append(new)
    res["greedy_text"] = [tok.decode(g, skip_special_tokens=False) for g in res["greedy"]]
    (work / "ref.json").write_text(json.dumps(res, ensure_ascii=False))


# ---------------------------------------------------------------- radis-mlx side (main venv, MLX)
def mlx_greedy(model, ids, n_new):
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array([ids]), cache=cache)
    new = []
    for _ in range(n_new):
        new.append(int(mx.argmax(logits[0, -1]).item()))
        logits = model(mx.array([[new[-1]]]), cache=cache)
    return new


def first_diff(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if len(a) == len(b) else
                min(len(a), len(b)))


def compare(gguf: Path, work: Path, ref: dict, n_sent: int, n_new: int, weights_only: bool) -> dict:
    from radis_mlx import models
    from radis_mlx.models.gguf import convert_gguf

    t0 = time.time()
    # What a CPU user gets: the 'exact' conversion loaded as float32.
    convert_gguf(gguf, work / "mlx", dtype="exact", tokenizer=not weights_only)
    convert_s = round(time.time() - t0, 1)
    model = models.load(str(work / "mlx"), dtype="float32").model if not weights_only else \
        _weights_only_model(work / "mlx")
    cfg = json.loads((work / "mlx" / "config.json").read_text())
    lg = compare_logits(model, work, ref)
    gr = []
    for k, ids in enumerate(ref["chat"][-len(GREEDY):]):
        new = mlx_greedy(model, ids, n_new)
        gr.append({"prompt": GREEDY[k], "match": new == ref["greedy"][k],
                   "first_diff_at": first_diff(new, ref["greedy"][k]), "ref_text": ref["greedy_text"][k],
                   "radis_ids": new})
    res = {"gguf": str(gguf), "architecture": cfg.get("model_type"), "vocab": cfg.get("vocab_size"),
           "reference_versions": ref["versions"], "logits": lg, "greedy": gr, "convert_seconds": convert_s}
    if cfg.get("model_type") == "gemma3_text":
        res["logits_float32_embed_scale"] = gemma_float32_scale_logits(model, work, ref)
    if weights_only:
        return {**res, "tokenizer": None, "radis_seconds": round(time.time() - t0, 1)}
    tok = models.load(str(work / "mlx"), dtype="keep").tokenizer
    for g in gr:
        g["radis_text"] = tok.decode(g.pop("radis_ids"))
    res["tokenizer"] = compare_tokenizer(tok, ref, n_sent)
    return {**res, "radis_seconds": round(time.time() - t0, 1)}


def gemma_float32_scale_logits(model, work: Path, ref: dict) -> dict:
    """mlx-lm's gemma3_text rounds the embedding scale sqrt(hidden) to bfloat16 (25.25 for 640,
    not 25.298); transformers keeps it in the weights' dtype. The same logits with mlx-lm's
    rounding swapped out show how much of the difference is that one constant."""
    import types

    import mlx.core as mx
    from mlx_lm.models import gemma3_text

    shim = types.SimpleNamespace(**{k: getattr(mx, k) for k in dir(mx) if not k.startswith("__")})
    shim.bfloat16 = mx.float32
    gemma3_text.mx = shim
    try:
        return compare_logits(model, work, ref)
    finally:
        gemma3_text.mx = mx


def _weights_only_model(path: Path):
    from mlx_lm.utils import load_model
    from radis_mlx.models import to_float32

    model, _ = load_model(path)
    to_float32(model)
    return model


def compare_tokenizer(tok, ref: dict, n_sent: int) -> dict:
    texts = sample_texts(n_sent)
    mine = [list(tok.encode(t)) for t in texts]
    bad = [i for i, (a, b) in enumerate(zip(mine, ref["encode"])) if a != b]
    tk = {"strings": len(texts), "tokens_ref": sum(map(len, ref["encode"])),
          "tokens_radis": sum(map(len, mine)), "mismatching_strings": len(bad),
          "decode_roundtrip_ref": sum(d == t for d, t in zip(ref["decode"], texts)),
          "decode_roundtrip_radis": sum(tok.decode(m) == t for m, t in zip(mine, texts)),
          "decode_equal_on_ref_ids": sum(tok.decode(e) == d for e, d in zip(ref["encode"], ref["decode"]))}
    tk["mismatch_examples"] = []
    for i in bad[:5]:
        j = first_diff(mine[i], ref["encode"][i])
        tk["mismatch_examples"].append({
            "index": i, "text": texts[i][:200], "first_diff_at": j,
            "ref": ref["encode"][i][max(0, j - 3):j + 6], "radis": mine[i][max(0, j - 3):j + 6],
            "ref_pieces": [tok.decode([t]) for t in ref["encode"][i][max(0, j - 3):j + 6]],
            "radis_pieces": [tok.decode([t]) for t in mine[i][max(0, j - 3):j + 6]]})
    try:
        my_chat = [chat_ids(tok, c) for c in all_chats()]
    except Exception as e:  # no chat template in the converted tokenizer, for instance
        my_chat, tk["chat_template_error"] = [], f"{type(e).__name__}: {e}"
    cbad = [i for i, (a, b) in enumerate(zip(my_chat, ref["chat"])) if a != b] if my_chat else []
    tk.update({"chat_conversations": len(ref["chat"]), "chat_mismatches": len(cbad) if my_chat else None,
               "chat_2msg_equal": bool(my_chat) and my_chat[0] == ref["chat"][0]})
    if cbad:
        i = cbad[0]
        j = first_diff(my_chat[i], ref["chat"][i])
        tk["chat_first_mismatch"] = {"conversation": i, "first_diff_at": j,
                                     "ref_text": tok.decode(ref["chat"][i]),
                                     "radis_text": tok.decode(my_chat[i])}
    return tk


def compare_logits(model, work: Path, ref: dict) -> dict:
    """Logits on the reference's own ids, so this is a pure weights/architecture check."""
    import mlx.core as mx

    mx_abs, sums, n, agree, scale = 0.0, 0.0, 0, 0, 0.0
    per_prompt = []
    for i, ids in enumerate(ref["chat"][1:1 + len(logit_chats())]):
        r = np.load(work / f"ref_logits_{i}.npy")
        m = np.array(model(mx.array([ids]))[0].astype(mx.float32))
        d = np.abs(m - r)
        mx_abs, sums, n = max(mx_abs, float(d.max())), sums + float(d.sum()), n + d.size
        agree += int((m.argmax(-1) == r.argmax(-1)).sum())
        scale = max(scale, float(np.abs(r).max()))
        per_prompt.append({"tokens": len(ids), "max_abs_diff": float(d.max())})
    T = sum(p["tokens"] for p in per_prompt)
    return {"positions": T, "max_abs_diff": mx_abs, "mean_abs_diff": sums / n, "max_abs_logit_ref": scale,
            "argmax_agreement": agree / T, "per_prompt": per_prompt}


def summary(r: dict) -> str:
    tk, lg = r["tokenizer"] or {}, r["logits"]
    head = [("model", f"{Path(r['gguf']).name} ({r['architecture']}, vocab {r['vocab']})"),
            ("reference", " ".join(f"{k} {v}" for k, v in r["reference_versions"].items()))]
    rows = [("tokenizer strings", f"{tk['strings']} strings, {tk['tokens_ref']} tokens ref / "
                                  f"{tk['tokens_radis']} radis"),
            ("  id mismatches", f"{tk['mismatching_strings']} strings"),
            ("  decode round trip", f"ref {tk['decode_roundtrip_ref']}/{tk['strings']}, radis "
                                    f"{tk['decode_roundtrip_radis']}/{tk['strings']}, same decode of ref ids "
                                    f"{tk['decode_equal_on_ref_ids']}/{tk['strings']}"),
            ("  chat template", f"{tk['chat_mismatches']} of {tk['chat_conversations']} conversations "
                                f"differ; 2-message equal: {tk['chat_2msg_equal']}")] if tk else [
        ("tokenizer", "not compared (weights only: the reference's ids, no chat template)")]
    rows = head + rows + [
            ("logits", f"{lg['positions']} positions, max|diff| {lg['max_abs_diff']:.3e}, mean|diff| "
                       f"{lg['mean_abs_diff']:.3e}, max|logit| {lg['max_abs_logit_ref']:.2f}, "
                       f"argmax agree {lg['argmax_agreement']:.4f}")]
    if "logits_float32_embed_scale" in r:
        e = r["logits_float32_embed_scale"]
        rows.append(("  embed scale float32", f"max|diff| {e['max_abs_diff']:.3e}, mean|diff| "
                                              f"{e['mean_abs_diff']:.3e}, argmax agree {e['argmax_agreement']:.4f}"))
    rows += [(f"greedy {i}", f"{'MATCH' if g['match'] else 'DIFFER at ' + str(g['first_diff_at'])}: "
                             f"{g['prompt'][:50]}") for i, g in enumerate(r["greedy"])]
    out = "\n".join(f"{a:<22} {b}" for a, b in rows)
    for ex in tk.get("mismatch_examples", [])[:1]:
        out += "\nfirst tokenizer mismatch: " + json.dumps(ex, ensure_ascii=False)
    if "chat_first_mismatch" in tk:
        out += "\nfirst chat mismatch: " + json.dumps(tk["chat_first_mismatch"], ensure_ascii=False)
    if "chat_template_error" in tk:
        out += "\nchat template error: " + tk["chat_template_error"]
    for g in r["greedy"]:
        out += f"\n--- {g['prompt'][:60]}\n  ref:   {g['ref_text']!r}\n  radis: {g.get('radis_text')!r}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path)
    ap.add_argument("--model", help="an offline model's short name (radis-mlx models), e.g. qwen2.5-coder-0.5b")
    ap.add_argument("--weights-only", action="store_true", help="a base model or a tokenizer radis-mlx does not "
                    "rebuild (SentencePiece): logits and greedy tokens on the reference's ids, no chat template")
    ap.add_argument("--ref-python", default="/tmp/refvenv/bin/python")
    ap.add_argument("--out", type=Path, default=Path("/tmp/gguf_reference.json"))
    ap.add_argument("--sentences", type=int, default=40, help="WMT22 sources per direction")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reference", type=Path, help=argparse.SUPPRESS)  # internal: work dir, ref venv
    a = ap.parse_args()
    if a.gguf is None and a.model:
        from radis_mlx import models
        a.gguf = models.gguf_file(a.model)
    if a.gguf is None:
        ap.error("give --gguf or --model")
    gguf = a.gguf.resolve()
    if a.reference:
        reference(gguf, a.reference, a.sentences, a.new_tokens, a.weights_only)
        return 0
    with tempfile.TemporaryDirectory(prefix="gguf_ref_") as td:
        work = Path(td)
        t0 = time.time()
        subprocess.run([a.ref_python, __file__, "--gguf", str(gguf), "--reference", str(work),
                        "--sentences", str(a.sentences), "--new-tokens", str(a.new_tokens)]
                       + ["--weights-only"] * a.weights_only, check=True,
                       env={**os.environ, "TQDM_DISABLE": "1"})
        ref = json.loads((work / "ref.json").read_text())
        ref_s = round(time.time() - t0, 1)
        res = compare(gguf, work, ref, a.sentences, a.new_tokens, a.weights_only)
    res["reference_seconds"] = ref_s
    tk = res["tokenizer"] or {"mismatching_strings": 0, "chat_mismatches": 0}
    ok = tk["mismatching_strings"] == 0 and tk["chat_mismatches"] == 0 and all(g["match"] for g in res["greedy"])
    res["ok"] = ok
    a.out.write_text(json.dumps(res, indent=1, ensure_ascii=False))
    print(summary(res))
    print(f"{'OK' if ok else 'FAILED'}: figures written to {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
