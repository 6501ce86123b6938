"""finetune: token segments, truncation, batching, the RaDis loss, resume, outputs, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from radis_mlx.tuner import batching, datasets
from radis_mlx import prompts
from radis_mlx.tuner.datasets import row_target
from radis_mlx.records import Record
from radis_mlx.data import Pair
from radis_mlx.fileio import UserError

PAIRS = [("Der Hund schläft im Garten.", "The dog is sleeping in the garden."),
         ("Die Katze trinkt Milch.", "The cat drinks milk."),
         ("Ich habe heute keine Zeit.", "I have no time today."),
         ("Wir gehen morgen ins Kino.", "We are going to the cinema tomorrow.")]
RATIONALE = " Explain the translation: the verb moves."


def _row(i, mode="rationale-continue", text=None, kept=True):
    s, r = PAIRS[i % len(PAIRS)]
    return {"id": f"r{i}", "src": s, "ref": r, "src_lang": "de", "tgt_lang": "en", "mode": mode,
            "text": RATIONALE * (1 + i % 3) if text is None else text, "kept": kept, "reason": None,
            "n_tokens": 9, "finish": "stop"}


def _target(row, tok, templates=prompts.Templates(), **kw):
    return row_target(Record.from_row(row, "f", 1), tok, templates, **kw)


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    rows = [_row(i, kept=i % 7 != 3) for i in range(20)]
    rows += [_row(20 + i, "rationale-explain", "The verb 'schläft' becomes 'is sleeping'.") for i in range(4)]
    return _write(tmp_path_factory.mktemp("rows") / "rationales.jsonl", rows)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from radis_mlx.models import load
    return load(str(tiny_model_dir)).tokenizer


def _cfg(tiny_model_dir, data, out, **kw):
    from radis_mlx.tuner import load_config
    base = dict(model=str(tiny_model_dir), data=str(data), out=str(out), batch_size=4, iters=4, lr=1e-2,
                quiet=True, compile=False, steps_per_eval=0, save_every=0, seed=0)
    base.update(kw)
    return load_config(**base)


def _seg_text(tok, ids, segs, s):
    return tok.decode([t for t, g in zip(ids, segs) if g == s])


# ---------------------------------------------------------------- segments and targets

def test_continuation_segments_keep_whitespace(tok):
    text = "  Both use the present tense.\n"
    t = _target(_row(0, text=text), tok, prompts.Templates())
    assert t.pieces == [(PAIRS[0][1], datasets.REF), (text, datasets.RAT)]  # verbatim: leading spaces, trailing newline
    ids, segs = datasets.tokenize_segments(tok, t.prompt, t.pieces, prompts.end_of_turn(tok))
    assert ids == prompts.encode(tok, t.prompt + PAIRS[0][1] + text + prompts.end_of_turn(tok))  # one tokenisation
    assert _seg_text(tok, ids, segs, datasets.PROMPT) == t.prompt
    assert _seg_text(tok, ids, segs, datasets.REF) == PAIRS[0][1]
    assert _seg_text(tok, ids, segs, datasets.RAT) == text
    assert _seg_text(tok, ids, segs, datasets.EOT) == "<|im_end|>"
    assert segs == sorted(segs)  # prompt, ref, rationale, eot in order


def test_explain_separator_and_modes(tok):
    T = prompts.Templates()
    t = _target(_row(1, "rationale-explain", "  The verb moves.  "), tok, T)
    assert t.pieces[1] == ("\n\nThe verb moves.", datasets.RAT)
    t = _target(_row(1, "rationale-explain", "The verb moves."), tok, T, separator=" || ")
    assert t.pieces[1] == (" || The verb moves.", datasets.RAT)
    # Rejected rationale: reference only. seqkd/sdft: own output when kept, else the reference.
    assert _target(_row(2, kept=False), tok, T).pieces == [(PAIRS[2][1], datasets.REF)]
    assert _target(_row(2, "seqkd", " I have no time. "), tok, T).pieces == [("I have no time.", datasets.REF)]
    assert _target(_row(2, "sdft", "x", kept=False), tok, T).pieces == [(PAIRS[2][1], datasets.REF)]
    rep = {"id": "q", "mode": "replay", "instruction": "Say hi.", "text": " Hi! ", "kept": True}
    t = _target(rep, tok, T)
    assert t.prompt == prompts.chat(tok, "Say hi.") and t.pieces == [("Hi!", datasets.REF)]
    assert _target({**rep, "kept": False}, tok, T) is None
    # Train prompts are exactly the translation prompts eval uses.
    p = Pair(PAIRS[1][0], PAIRS[1][1], "de", "en", "x")
    assert t.prompt != prompts.translation_prompt(tok, p)
    assert _target(_row(1), tok, T).prompt == prompts.translation_prompt(tok, p)


def test_straddling_token_goes_to_the_reference(tok):
    prompt = prompts.chat(tok, "hi")
    pieces = [("The cat drinks mil", datasets.REF), ("k today.", datasets.RAT)]
    ids, segs = datasets.tokenize_segments(tok, prompt, pieces, "<|im_end|>")
    full = prompt + "The cat drinks milk today.<|im_end|>"
    enc = tok._tokenizer(full, return_offsets_mapping=True, add_special_tokens=False)
    ref_end = len(prompt) + len("The cat drinks mil")
    for (a, b), s in zip(enc["offset_mapping"], segs):
        if a < ref_end and b > len(prompt):
            assert s == datasets.REF  # touches the reference: trained as reference even with w_rat=0


def test_truncation_policy(tok):
    toks, segs = list(range(12)), [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3]
    assert datasets.fit_length(toks, segs, 12) == (toks, segs, False)
    t2, s2, cut = datasets.fit_length(toks, segs, 9)  # 3 over: the last 3 rationale tokens go, eot stays
    assert cut and t2 == [0, 1, 2, 3, 4, 5, 6, 7, 11] and s2 == [0, 0, 0, 0, 1, 1, 1, 2, 3]
    assert datasets.fit_length(toks, segs, 7) is None  # the rationale can't absorb it: drop, never cut the prompt
    st = datasets.BuildStats()
    targets = [_target(_row(i), tok, prompts.Templates()) for i in range(3)]
    full = datasets.build_examples(tok, targets, None)
    limit = len(full[0]) - 3
    got = datasets.build_examples(tok, targets, limit, stats=st)
    assert all(len(e) <= limit for e in got)
    for e, f in zip(got, full):
        n_prompt = f.segments.count(0)
        assert e.tokens[:n_prompt] == f.tokens[:n_prompt] and e.segments[-1] == datasets.EOT
    assert st.truncated + st.dropped_too_long >= 1 and st.examples == len(got)
    st2 = datasets.BuildStats()
    assert datasets.build_examples(tok, targets, full[0].segments.count(0) + 2, stats=st2) == []
    assert st2.dropped_too_long == 3


def _fake(lengths, source=0):
    return [datasets.Example(list(range(n)), [0] * (n - 2) + [1, 3], f"e{i}", source) for i, n in enumerate(lengths)]


def test_batches_deterministic_resumable_and_padding():
    rng = np.random.default_rng(0)
    exs = _fake(rng.integers(10, 300, size=101).tolist())
    it = batching.iterate_batches(exs, 8, seed=3)
    first = [next(it) for _ in range(30)]
    again = batching.iterate_batches(exs, 8, seed=3, start=17)
    for g, b in (next(again) for _ in range(13)):
        assert [e.id for e in b] == [e.id for e in first[g][1]]
    plan = batching.BatchPlan(exs, 8, seed=3)
    assert plan.per_epoch == 12
    seen = np.concatenate(plan.epoch(0))
    assert len(set(seen.tolist())) == 96  # each example at most once per epoch; the remainder rotates
    bucketed = batching.padding_share(plan, 2)
    unsorted = batching.padding_share(batching.BatchPlan(exs, 8, seed=3, bucket=1), 2)
    assert 0 <= bucketed < unsorted / 2
    # padding_share is exactly what collate pads
    b = batching.collate([exs[i] for i in plan.at(0)], 32)
    L = plan.lengths[plan.at(0)] - 1
    assert b.inputs.shape[1] % 32 == 0 and b.padding == b.inputs.size - L.sum()


def test_mixing_ratio_deterministic():
    main, extra = _fake([20] * 30), _fake([25] * 7, source=1)
    pool0 = batching.epoch_pool(30, 7, 0.25, 0, 0)
    assert len(pool0) == 40 and (pool0 >= 30).sum() == 10  # 10 of 40 = 25% from the second set
    both = np.concatenate([batching.epoch_pool(30, 7, 0.25, 0, e)[30:] for e in range(2)])
    assert set(both.tolist()) == set(range(30, 37))  # round-robin: every extra example gets used
    assert (batching.epoch_pool(30, 7, 0.25, 0, 1) == batching.epoch_pool(30, 7, 0.25, 0, 1)).all()
    plan = batching.BatchPlan(main, 8, 0, extra=extra, ratio=0.25)
    srcs = [plan.examples[i].source for i in np.concatenate(plan.epoch(0))]
    assert sum(srcs) == 10 and plan.per_epoch == 5


# ---------------------------------------------------------------- the loss

@pytest.fixture(scope="module")
def tiny_setup(tiny_model_dir, rows_file, tok):
    from types import SimpleNamespace

    from radis_mlx.tuner import losses, trainable
    T = SimpleNamespace(setup_model=trainable.setup_model, load_data=datasets.load_data,
                        segment_counts=losses.segment_counts, segment_weights=losses.segment_weights,
                        make_loss=losses.make_loss, batch_arrays=batching.batch_arrays)
    cfg = _cfg(tiny_model_dir, rows_file, "unused")
    loaded, model, split = T.setup_model(cfg)
    return T, cfg, model, split, T.load_data(cfg, tok)


def test_wrat0_equals_mlx_lm_default_loss(tiny_setup, tok, tiny_model_dir, rows_file):
    import mlx.core as mx
    from mlx_lm.tuner.trainer import default_loss
    T, cfg, model, split, data = tiny_setup
    assert split is not None  # the tiny llama's head is split off exactly
    sft = T.load_data(_cfg(tiny_model_dir, rows_file, "unused", method="sft"), tok)["main"][:6]
    counts = T.segment_counts(sft)
    arrays, _ = T.batch_arrays(sft, T.segment_weights(counts, 1.0, 0.0, "tokens"), 1.0, 32, 512)
    mine, _ = T.make_loss(split)(model, *arrays)
    fast, _ = T.make_loss(split, fast_ce=True)(model, *arrays)
    L = max(len(e) for e in sft)
    batch = np.zeros((len(sft), L + 1), np.int32)
    for i, e in enumerate(sft):
        batch[i, :len(e)] = e.tokens
    # mlx-lm's mask keeps targets at positions offset..length inclusive, one past the last real
    # token (ml-explore/mlx-lm PR #1697); length-1 selects exactly the real answer tokens.
    lengths = mx.array([[e.segments.index(datasets.REF), len(e) - 1] for e in sft])
    ref, ntoks = default_loss(model, mx.array(batch), lengths)
    assert int(ntoks.item()) == int(counts[1:].sum())
    assert abs(mine.item() - ref.item()) < 1e-5 * abs(ref.item())
    assert abs(fast.item() - ref.item()) < 1e-5 * abs(ref.item())


def test_fast_exp_matches_mlx():
    """The CPU pow-based exp path: cross-entropy and swiglu equal mlx's, values and gradients,
    extremes included (no NaN from 0 * inf in the backward pass)."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models.activations import swiglu
    from radis_mlx.runtime.kernels import _fast_fns, fast_cross_entropy
    mx.random.seed(0)
    lg = mx.random.normal((16, 300)) * 8
    t = mx.random.randint(0, 300, (16,))
    v0, g0 = mx.value_and_grad(lambda l: nn.losses.cross_entropy(l, t).sum())(lg)
    v, g = mx.value_and_grad(lambda l: fast_cross_entropy(l, t).sum())(lg)
    assert abs(v.item() - v0.item()) < 1e-5 * abs(v0.item()) and mx.allclose(g, g0, atol=1e-6).item()
    gate = mx.array([-300.0, -90.0, -20.0, -1.0, 0.0, 0.5, 3.0, 90.0, 300.0])
    x = mx.ones_like(gate) * 1.5
    fast = _fast_fns()[1]
    assert mx.allclose(fast(gate, x), swiglu(gate, x), rtol=1e-6, atol=1e-6).item()
    g1 = mx.grad(lambda a: fast(a, x).sum())(gate)
    g0 = mx.grad(lambda a: swiglu(a, x).sum())(gate)
    assert not mx.isnan(g1).any().item() and mx.allclose(g1, g0, rtol=1e-5, atol=1e-6).item()
    # Grouped-query causal attention with the pow softmax (and its output-based backward).
    q, k, v = (mx.random.normal((2, h, 7, 16)) for h in (6, 2, 2))
    ct = mx.random.normal((2, 6, 7, 16))
    ref = lambda q, k, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask="causal")  # noqa: E731
    ours = lambda q, k, v: _fast_fns()[2](q, k, v, 0.25)  # noqa: E731
    (o0,), g0 = mx.vjp(ref, [q, k, v], [ct])
    (o1,), g1 = mx.vjp(ours, [q, k, v], [ct])
    assert mx.allclose(o0, o1, atol=1e-5).item()
    assert all(mx.allclose(a, b, atol=1e-4).item() for a, b in zip(g0, g1))


def test_cpu_kernel_patch_is_scoped(tiny_model_dir):
    import sys
    from mlx_lm.models import activations, base
    from radis_mlx.models import load
    from radis_mlx.runtime.kernels import patch_cpu_kernels
    model = load(str(tiny_model_dir)).model
    mod = sys.modules[type(model).__module__]
    restore = patch_cpu_kernels(model)
    assert restore is not None and mod.swiglu is not activations.swiglu
    restore()
    assert mod.swiglu is activations.swiglu and mod.scaled_dot_product_attention is base.scaled_dot_product_attention


def test_weighted_loss_matches_full_logits(tiny_setup):
    """Both normalisations, on rationale rows, against CE from the full (unsliced) logits."""
    import mlx.core as mx
    import mlx.nn as nn
    T, cfg, model, split, data = tiny_setup
    exs = data["main"][:5]
    counts = T.segment_counts(exs)
    b = batching.collate(exs, 32)
    ce = np.array(nn.losses.cross_entropy(model(mx.array(b.inputs)), mx.array(b.targets)))
    seg = b.segments
    tot = {s: ce[seg == s].sum() for s in (1, 2, 3)}
    n = {s: (seg == s).sum() for s in (1, 2, 3)}
    for w_ref, w_rat in ((1.0, 0.0), (1.0, 1.0), (2.0, 0.5)):
        want_tok = (w_ref * (tot[1] + tot[3]) + w_rat * tot[2]) / (w_ref * (n[1] + n[3]) + w_rat * n[2])
        ans, rat = (tot[1] + tot[3]) / (n[1] + n[3]), tot[2] / n[2]
        want_seg = (w_ref * ans + w_rat * rat) / (w_ref + w_rat) if w_rat else ans
        for norm, want in (("tokens", want_tok), ("segments", want_seg)):
            arrays, _ = T.batch_arrays(exs, T.segment_weights(counts, w_ref, w_rat, norm), 1.0, 32, 512)
            for sp in (split, None):
                got, sums = T.make_loss(sp)(model, *arrays)
                assert abs(got.item() - want) < 1e-5 * want, (norm, w_ref, w_rat)
                assert np.allclose(np.array(sums), [tot[1], tot[2], tot[3]], rtol=1e-5)


def test_sharded_gradients_average_to_full_batch(tiny_setup):
    """Data parallel: each rank's weights are scaled by the world size, so the average of the
    ranks' gradients (nn.average_gradients) is the whole batch's gradient."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten
    T, cfg, model, split, data = tiny_setup
    exs = data["main"][:8]
    w = T.segment_weights(T.segment_counts(exs), 1.0, 1.0, "segments")
    lg = nn.value_and_grad(model, T.make_loss(split))
    model.eval()  # no dropout noise

    def grads(part, scale):
        (loss, _), g = lg(model, *T.batch_arrays(part, w, scale, 32, 512)[0])
        return loss, dict(tree_flatten(g))
    full_loss, full = grads(exs, 1.0)
    parts = [grads(exs[r::2], 2.0) for r in range(2)]
    model.train()
    assert abs((parts[0][0] + parts[1][0]).item() / 2 - full_loss.item()) < 1e-5
    for k, v in full.items():
        avg = (parts[0][1][k] + parts[1][1][k]) / 2
        # Equal up to float32 summation order: OpenBLAS blocks the half batches' matmuls differently from
        # the full one, ~1e-6 of the tensor's largest entry, so the absolute tolerance follows that scale.
        assert mx.allclose(avg, v, rtol=1e-4, atol=1e-5 * mx.abs(v).max().item()).item(), k


# ---------------------------------------------------------------- training runs

def test_loss_falls_outputs_and_adapters_load(tiny_model_dir, rows_file, tmp_path):
    import mlx.core as mx
    from radis_mlx.models import load
    from radis_mlx.tuner import finetune
    out = tmp_path / "run"
    s = finetune(_cfg(tiny_model_dir, rows_file, out, iters=20, val_fraction=0.2, steps_per_eval=10,
                      steps_per_report=5, save_every=10))
    assert s["train_loss_last"] < s["train_loss_first"] - 0.5
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["type"] == "val"]
    assert [r["step"] for r in val] == [0, 10, 20]
    assert val[-1]["val_ref_loss"] < val[0]["val_ref_loss"] and val[-1]["val_rat_loss"] < val[0]["val_rat_loss"]
    for f in ("adapters.safetensors", "adapter_config.json", "best_adapters.safetensors", "config.yaml",
              "loss.png", "summary.json", "checkpoints/step-0000020.json"):
        assert (out / f).exists(), f
    conf = json.loads((out / "adapter_config.json").read_text())
    assert conf["fine_tune_type"] == "lora" and conf["num_layers"] == -1 and conf["lora_parameters"]["rank"] == 8
    x = mx.array([[1, 5, 9, 13, 17]])
    base = load(str(tiny_model_dir)).model(x)
    tuned = load(str(tiny_model_dir), adapter_path=str(out)).model(x)
    assert not mx.allclose(base, tuned, atol=1e-3).item()  # the adapters are applied


def test_resume_equals_uninterrupted(tiny_model_dir, rows_file, tmp_path):
    import mlx.core as mx
    from radis_mlx.tuner import finetune
    data = tmp_path / "data.jsonl"
    shutil.copy(rows_file, data)
    kw = dict(iters=6, save_every=2, grad_accum=2, lora_dropout=0.1, warmup=2, normalize="segments")
    finetune(_cfg(tiny_model_dir, data, tmp_path / "a", **kw))

    def kill(step, _):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        finetune(_cfg(tiny_model_dir, data, tmp_path / "b", **kw), on_step=kill)
    assert not (tmp_path / "b" / "adapters.safetensors").exists()
    with pytest.raises(UserError, match="exists"):
        finetune(_cfg(tiny_model_dir, data, tmp_path / "b", **kw))
    s = finetune(_cfg(tiny_model_dir, data, tmp_path / "b", resume=True, **kw))
    assert s["steps_this_run"] == 4  # resumed from the step-2 checkpoint
    from radis_mlx.tuner import training_cost
    assert training_cost(tmp_path / "b") == {"tokens": training_cost(tmp_path / "a")["tokens"]}  # steps 1-2 kept
    a = mx.load(str(tmp_path / "a" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "b" / "adapters.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert mx.allclose(a[k], b[k], rtol=1e-5, atol=1e-7).item(), k
    # Ctrl-C saves a checkpoint at the step it stopped at; resuming from there ends the same.
    def interrupt(step, _):
        if step == 3:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        finetune(_cfg(tiny_model_dir, data, tmp_path / "c", **kw), on_step=interrupt)
    assert (tmp_path / "c" / "checkpoints" / "step-0000003.json").exists()
    assert finetune(_cfg(tiny_model_dir, data, tmp_path / "c", resume=True, **kw))["steps_this_run"] == 3
    c = mx.load(str(tmp_path / "c" / "adapters.safetensors"))
    assert all(mx.allclose(a[k], c[k], rtol=1e-5, atol=1e-7).item() for k in a)
    # A different config or data refuses, naming what changed.
    with pytest.raises(UserError, match=r"lr \(0\.01 -> 0\.02\).*w_rat"):
        finetune(_cfg(tiny_model_dir, data, tmp_path / "b", resume=True, **{**kw, "lr": 0.02, "w_rat": 0.5}))
    _write(data, [_row(i, text=" Another rationale.") for i in range(24)])
    with pytest.raises(UserError, match="training data"):
        finetune(_cfg(tiny_model_dir, data, tmp_path / "b", resume=True, **kw))


def test_nan_loss_stops_with_last_good_checkpoint(tiny_model_dir, rows_file, tmp_path):
    from radis_mlx.tuner import finetune
    out = tmp_path / "nan"
    with pytest.raises(UserError, match=r"loss is (nan|inf) at step \d+.*step-\d{7}"):
        finetune(_cfg(tiny_model_dir, rows_file, out, iters=8, lr=1e30, max_grad_norm=0, save_every=1,
                      optimizer="sgd"))
    assert not (out / "adapters.safetensors").exists()
    assert list((out / "checkpoints").glob("step-*.json"))


def test_fuse_matches_adapters(tiny_model_dir, rows_file, tmp_path):
    import mlx.core as mx
    from radis_mlx.models import load
    from radis_mlx.tuner import finetune
    out = tmp_path / "fuse"
    finetune(_cfg(tiny_model_dir, rows_file, out, iters=3, fuse=True, fine_tune_type="dora"))
    x = mx.array([[1, 5, 9, 13, 17, 21]])
    a = load(str(tiny_model_dir), adapter_path=str(out)).model(x)
    f = load(str(out / "fused")).model(x)
    assert mx.allclose(a, f, atol=1e-4).item()


def test_config_precedence_and_cli_errors(tiny_model_dir, rows_file, tmp_path):
    from radis_mlx.cli import main
    from radis_mlx.tuner import load_config
    y = tmp_path / "c.yaml"
    y.write_text("lr: 3e-4\nbatch_size: 2\nw_rat: 0.5\nlora_keys: [self_attn.q_proj]\n")
    c = load_config(y, batch_size=4, data="x")
    assert (c.lr, c.batch_size, c.w_rat, c.lora_keys) == (3e-4, 4, 0.5, ["self_attn.q_proj"])
    y.write_text("learning_rate_typo: 1\n")
    with pytest.raises(UserError, match="learning_rate_typo"):
        load_config(y, data="x")
    base = ["finetune", "--model", str(tiny_model_dir), "--quiet", "--no-compile"]
    bad = [["--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o1")],
           ["--data", str(rows_file), "--out", str(tmp_path / "o2"), "--normalize", "mean"],
           ["--data", str(rows_file), "--out", str(tmp_path / "o3"), "--lora", "--full"],
           ["--data", str(rows_file), "--out", str(tmp_path / "o4"), "--method", "seqkd"],
           ["--data", str(rows_file), "--out", str(tmp_path / "o5"), "--batch-size", "64"]]
    for args in bad:
        with pytest.raises(SystemExit) as e:
            main(base + args)
        assert e.value.code == 2, args
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as e:
        main(base + ["--data", str(rows_file), "--out", str(tmp_path / "taken"), "--overwrite"])
    assert e.value.code == 2 and (tmp_path / "taken" / "notes.txt").exists()
    # every flag reaches the run's config, and --lora stands for --fine-tune-type
    y.write_text("w_rat: 0.25\nlr: 1e-3\n")
    main(base + ["--data", str(rows_file), "--out", str(tmp_path / "ok"), "--lora", "--iters", "1", "--lr", "7e-4",
                 "--seed", "3", "--lora-rank", "4", "--config", str(y)])
    saved = yaml.safe_load((tmp_path / "ok" / "config.yaml").read_text())
    assert (saved["lr"], saved["seed"], saved["lora_rank"], saved["w_rat"], saved["fine_tune_type"]) == \
        (7e-4, 3, 4, 0.25, "lora")


def test_fine_tune_type_switches():
    from radis_mlx.tuner.config import fine_tune_type_flag
    assert fine_tune_type_flag(None, lora=True, dora=False, full=False) == "lora"
    assert fine_tune_type_flag("dora", lora=False, dora=True, full=False) == "dora"
    assert fine_tune_type_flag("full", lora=False, dora=False, full=False) == "full"
    assert fine_tune_type_flag(None, lora=False, dora=False, full=False) is None
    for given, sw in ((None, dict(lora=True, full=True)), ("full", dict(lora=True))):
        with pytest.raises(UserError, match="pick one fine-tune type"):
            fine_tune_type_flag(given, **sw)


def test_replay_method_interleaves(tiny_model_dir, rows_file, tmp_path, tok):
    from radis_mlx.tuner.datasets import load_data
    rep = _write(tmp_path / "replay.jsonl", [{"id": f"q{i}", "mode": "replay", "instruction": f"Count to {i}.",
                                               "text": " ".join(map(str, range(i + 1))), "kept": i != 2,
                                               "reason": None, "n_tokens": 3, "finish": "stop"} for i in range(6)])
    d = load_data(_cfg(tiny_model_dir, rows_file, "x", method="replay", replay_data=str(rep)), tok)
    assert len(d["extra"]) == 5 and d["stats"]["extra"]["dropped_rejected"] == 1
    assert all(e.segments.count(datasets.RAT) == 0 for e in d["main"])  # replay's translation part is plain SFT


# ---------------------------------------------------------------- slow

@pytest.mark.slow
def test_data_parallel_two_processes_match_one(tiny_model_dir, rows_file, tmp_path):
    """2 ranks over mlx.launch's ring backend end at the single-process adapters."""
    launch = Path(sys.executable).with_name("mlx.launch")
    if not launch.exists():
        pytest.skip("mlx.launch not installed")
    script = tmp_path / "run.py"
    script.write_text(
        "import sys\nfrom radis_mlx.tuner import load_config, finetune\n"
        f"finetune(load_config(model={str(tiny_model_dir)!r}, data={str(rows_file)!r}, out=sys.argv[1], "
        # SGD: Adam's m/sqrt(v) turns float-order noise in near-zero gradients into +-lr steps.
        "batch_size=4, iters=4, lr=0.5, optimizer='sgd', quiet=True, compile=False, steps_per_eval=0, "
        "save_every=0))\n")
    port = 20000 + os.getpid() % 20000
    r = subprocess.run([str(launch), "-n", "2", "--backend", "ring", "-p", str(port), "--", sys.executable,
                        str(script), str(tmp_path / "two")], capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and "ring" in (r.stderr or "").lower() and "error" in r.stderr.lower():
        pytest.skip(f"ring backend unavailable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    subprocess.run([sys.executable, str(script), str(tmp_path / "one")], check=True, timeout=300)
    import mlx.core as mx
    a = mx.load(str(tmp_path / "one" / "adapters.safetensors"))
    b = mx.load(str(tmp_path / "two" / "adapters.safetensors"))
    for k in a:
        # all-reduce sums in a different order than one process: float32 rounding, amplified by lr=1e-2
        assert mx.allclose(a[k], b[k], rtol=1e-3, atol=1e-4).item(), k


@pytest.mark.slow
def test_real_model_lora_loss_falls(real_model_dir, shared_data, tmp_path):
    """10 LoRA steps of the real SmolLM2 on 16 ALMA de-en rows with hand-made rationales (CLI, OpenBLAS)."""
    src = shared_data / "alma_human_parallel" / "deen" / "train.de-en.json"
    rows = []
    with open(src, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if len(rows) == 16:
                break
            tr = json.loads(line)["translation"]
            if len(tr["de"]) > 200:
                continue
            rows.append({"id": f"a{i}", "src": tr["de"], "ref": tr["en"], "src_lang": "de", "tgt_lang": "en",
                         "mode": "rationale-continue", "kept": True, "reason": None, "n_tokens": 20,
                         "finish": "stop", "text": "\n\nThe German sentence keeps its meaning in English: the "
                         "verb moves to the second position and the nouns lose their capital letters."})
    data = _write(tmp_path / "alma.jsonl", rows)
    out = tmp_path / "real"
    env = {**os.environ, "RADIS_MLX_HOME": os.environ.get("RADIS_MLX_HOME", str(Path.home() / ".cache/radis-mlx"))}
    r = subprocess.run([sys.executable, "-m", "radis_mlx.cli", "finetune", "--model", str(real_model_dir),
                        "--data", str(data), "--out", str(out), "--iters", "10", "--batch-size", "4",
                        "--lr", "5e-4", "--max-seq-len", "256", "--steps-per-report", "1", "--save-every", "0",
                        "--quiet"], capture_output=True, text=True, timeout=1200, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    losses = [json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()
              if json.loads(x)["type"] == "train"]
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3])


def test_the_tuner_says_how_a_run_goes_on(tmp_path):
    """The pipeline asks the tuner (restart_settings) instead of reading a run's files itself."""
    from radis_mlx.tuner import output_status, restart_settings
    out = tmp_path / "run"
    assert restart_settings(out) == {"resume": False, "overwrite": False} and output_status(out) == "to do"
    (out / "checkpoints").mkdir(parents=True)  # died before its first checkpoint: starts over
    assert restart_settings(out) == {"resume": False, "overwrite": True}
    for suffix in (".json", ".adapters.safetensors", ".optimizer.safetensors"):
        (out / "checkpoints" / f"step-0000004{suffix}").write_text("{}")
    assert restart_settings(out) == {"resume": True, "overwrite": False}
    assert output_status(out) == "partial (resumes at step 4)"
    (out / "adapters.safetensors").write_text("")
    (out / "summary.json").write_text("{}")
    assert restart_settings(out) is None and output_status(out) == "done"


def test_train_embeddings_trains_and_loads_back_in_mlx_lm(tiny_model_dir, rows_file, tmp_path):
    """TransLLM's option: embed_tokens (and an untied lm_head) train in full beside LoRA; the adapter
    file stays one mlx-lm's load_adapters reads, and radis-mlx's loader applies the embeddings too."""
    import mlx.core as mx
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load as mlx_load
    from radis_mlx.models import load
    from radis_mlx.tuner import finetune
    finetune(_cfg(tiny_model_dir, rows_file, tmp_path / "emb", train_embeddings=True, iters=2))
    emb = "model.embed_tokens.weight"
    saved = mx.load(str(tmp_path / "emb" / "embeddings.safetensors"))
    base, _ = mlx_load(str(tiny_model_dir))
    assert emb in saved and not mx.array_equal(saved[emb], base.model.embed_tokens.weight).item()
    load_adapters(base, str(tmp_path / "emb"))  # LoRA tensors only: mlx-lm accepts the file
    ours = load(str(tiny_model_dir), str(tmp_path / "emb"), dtype="float32").model
    assert mx.array_equal(ours.model.embed_tokens.weight, saved[emb]).item()
    finetune(_cfg(tiny_model_dir, rows_file, tmp_path / "plain", iters=2))
    assert not (tmp_path / "plain" / "embeddings.safetensors").exists()


def test_grad_checkpoint_trains_the_same_weights(tiny_model_dir, rows_file, tmp_path):
    """Checkpointing recomputes each block in backward, and the loop evaluates the gradients before the
    update when it is on (memory: BENCHMARKS.md): neither may change what is learned."""
    import mlx.core as mx
    from radis_mlx.tuner import finetune
    runs = {}
    for gc in (False, True):
        s = finetune(_cfg(tiny_model_dir, rows_file, tmp_path / f"gc{gc}", grad_checkpoint=gc, iters=3))
        runs[gc] = (s["train_loss_last"], mx.load(str(tmp_path / f"gc{gc}" / "adapters.safetensors")))
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-5)
    assert set(runs[True][1]) == set(runs[False][1])
    for k, v in runs[False][1].items():
        assert mx.allclose(runs[True][1][k], v, atol=1e-5).item(), k


def test_radis_turn_ends_the_translation_turn_and_explains_in_the_next(tok):
    """radis-turn: reference + its end of turn trained, the follow-up user turn masked, the rationale
    the next assistant turn; the rows are radis's, only laid out in two exchanges."""
    from radis_mlx import methods
    rule = methods.get("radis-turn").data
    assert rule.modes == methods.get("radis").data.modes and rule.layout is methods.rationale_turn
    T = prompts.Templates()
    rec = Record.from_row(_row(1, "rationale-explain", "  The verb 'trinkt' becomes 'drinks'. "), "f", 1)
    t = row_target(rec, tok, T, layout=rule.layout)
    eot = prompts.end_of_turn(tok)
    assert [s for _, s in t.pieces] == [datasets.REF, datasets.EOT, datasets.PROMPT, datasets.RAT]
    assert t.pieces[0][0] == PAIRS[1][1] and t.pieces[3][0] == "The verb 'trinkt' becomes 'drinks'."
    ids, segs = datasets.tokenize_segments(tok, t.prompt, t.pieces, eot)
    follow_up = T.follow_up.format(src_name="German")
    # the whole example is the chat template's own rendering of the two exchanges
    conv = prompts.chat_turns(tok, [{"role": "user", "content": prompts.instruction(rec.pair)},
                                    {"role": "assistant", "content": PAIRS[1][1]},
                                    {"role": "user", "content": follow_up}])
    assert ids == prompts.encode(tok, conv + t.pieces[3][0] + eot)
    masked = _seg_text(tok, ids, segs, datasets.PROMPT)
    assert masked.startswith(t.prompt) and masked.count(follow_up) == 1 and "<|im_start|>user" in masked[len(t.prompt):]
    assert _seg_text(tok, ids, segs, datasets.REF) == PAIRS[1][1]
    assert _seg_text(tok, ids, segs, datasets.RAT) == "The verb 'trinkt' becomes 'drinks'."
    assert _seg_text(tok, ids, segs, datasets.EOT) == eot + eot  # the translation's end of turn, and the rationale's
    first_eot = segs.index(datasets.EOT)
    assert set(segs[:segs.index(datasets.REF)]) == {datasets.PROMPT} and segs[first_eot - 1] == datasets.REF
    assert segs[first_eot + 1] == datasets.PROMPT  # the follow-up turn right after it: no loss
    # a row without a rationale trains as radis's does: the reference, then the end of turn
    assert row_target(Record.from_row(_row(2, kept=False), "f", 1), tok, T, layout=rule.layout).pieces == \
        [(PAIRS[2][1], datasets.REF)]


def test_radis_turn_weights_its_segments_like_radis(tiny_model_dir, rows_file, tmp_path, tok):
    from radis_mlx.tuner.datasets import load_data
    from radis_mlx.tuner import losses
    a = load_data(_cfg(tiny_model_dir, rows_file, tmp_path / "a", method="radis-turn"), tok)
    b = load_data(_cfg(tiny_model_dir, rows_file, tmp_path / "b", method="radis"), tok)
    sa, sb = a["stats"]["main"]["tokens"], b["stats"]["main"]["tokens"]
    with_rationale = sum(1 for e in a["main"] if 2 in e.segments)
    assert sa["eot"] == sb["eot"] + with_rationale > sb["eot"]  # one more end of turn per rationale row
    assert sa["prompt"] > sb["prompt"]  # the follow-up turns, masked
    w = losses.segment_weights(losses.segment_counts(a["main"]), 1.0, 0.5, "tokens")
    assert w[datasets.EOT] == w[datasets.REF] and w[datasets.RAT] == pytest.approx(0.5 * w[datasets.REF])
    assert w[datasets.PROMPT] == 0
