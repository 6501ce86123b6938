"""The kl suite: KL(base ‖ model) on the base's own answers, top-k plus one remainder bucket (evals/kl.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radis_mlx import prompts
from radis_mlx.evals import kl, retention
from radis_mlx.evals.context import ModelSpec
from radis_mlx.evals.harness import EvalConfig, evaluate
from radis_mlx.models import load
from radis_mlx.report import interpolation_paths, report, summarize

from conftest import make_adapter
from handmade import write_data


def full_logp(model, seq):
    import mlx.core as mx
    ids, n_prompt = seq
    lg = np.array(model(mx.array([ids[:-1]])).astype(mx.float32))[0].astype(np.float64)
    lg -= lg.max(-1, keepdims=True)
    return (lg - np.log(np.exp(lg).sum(-1, keepdims=True)))[n_prompt - 1:]


def test_bucket_kl_matches_the_full_vocabulary_kl(tiny_model_dir, tmp_path):
    base = load(str(tiny_model_dir))
    other = load(str(tiny_model_dir), str(make_adapter(tiny_model_dir, tmp_path / "a")))
    tok = base.tokenizer
    seqs = [retention.answer_ids(tok, prompts.chat(tok, "Say hi"), "The dog is sleeping in the garden.", True),
            retention.answer_ids(tok, prompts.chat(tok, "Translate"), "Die Katze trinkt Milch.", False)]
    vocab = full_logp(base.model, seqs[0]).shape[-1]
    for j, seq in enumerate(seqs):
        p, q = full_logp(base.model, seq), full_logp(other.model, seq)
        full = (np.exp(p) * (p - q)).sum(-1)  # the exact KL at every answer token
        exact = kl.model_kl(other.model, [seq], kl.base_topk(base.model, [seq], vocab))[0]
        assert exact[1] == len(full) and exact[0] == pytest.approx(full.sum(), rel=1e-4)
        # k = 8: the KL of the 9-bucket coarsening, computed here by hand from the full distributions
        top = kl.base_topk(base.model, [seq], 8)[0]
        pk = np.take_along_axis(p, top["ids"], -1)
        qk = np.take_along_axis(q, top["ids"], -1)
        pr, qr = np.log1p(-np.exp(pk).sum(-1)), np.log1p(-np.exp(qk).sum(-1))
        coarse = (np.exp(pk) * (pk - qk)).sum(-1) + np.exp(pr) * (pr - qr)
        got = kl.model_kl(other.model, [seq], [top])[0][0]
        assert got == pytest.approx(coarse.sum(), rel=1e-3)
        assert 0 < got <= full.sum() + 1e-6  # never above the full KL (log-sum inequality)
        assert kl.model_kl(base.model, [seq], [top])[0][0] == pytest.approx(0, abs=1e-6)


def test_kl_suite_is_0_for_the_base_and_grows_with_the_adapter_scale(tmp_path, tiny_model_dir):
    adapter = make_adapter(tiny_model_dir, tmp_path / "lora")
    data = write_data(tmp_path / "data")
    m = str(tiny_model_dir)
    runs = [ModelSpec(m, name="base"), ModelSpec(m, str(adapter), "sft-s0@0", 0.0),
            ModelSpec(m, str(adapter), "sft-s0@0.5", 0.5), ModelSpec(m, str(adapter), "sft-s0")]
    cfg = EvalConfig(models=runs, out=str(tmp_path / "out"), suites=["kl", "retention"],
                     test_data={"alpacaeval": data["retention"]}, max_tokens={"kl": 8, "retention": 8},
                     batch_size=4, kl_top_k=16, progress=False)
    r = evaluate(cfg)
    k = {name: res["suites"]["kl"]["kl"] for name, res in r.items()}
    assert k["base"] == pytest.approx(0, abs=1e-6) and k["sft-s0@0"] == pytest.approx(0, abs=1e-6)
    assert 1e-4 < k["sft-s0@0.5"] < k["sft-s0"]
    assert r["sft-s0"]["suites"]["kl"]["n"] == 4 and r["sft-s0"]["suites"]["kl"]["top_k"] == 16
    # the base's answers are retention's (one set), its top-k computed once, one file per answer
    tops = list((Path(cfg.out) / "_retention").glob("*/kl_topk/*.npz"))
    assert len(tops) == 4
    rows = [json.loads(line) for line in (Path(cfg.out) / "sft-s0" / "kl.jsonl").open()]
    ret = [json.loads(line) for line in (Path(cfg.out) / "sft-s0" / "retention.jsonl").open()]
    assert [x["answer"] for x in rows] == [x["answer"] for x in ret] and all("id" in x for x in rows)
    # a second eval recomputes nothing (the base's top-k and every model's KL are cached)
    mtimes = [p.stat().st_mtime_ns for p in tops]
    again = evaluate(cfg)
    assert {n: x["suites"]["kl"]["kl"] for n, x in again.items()} == k
    assert [p.stat().st_mtime_ns for p in tops] == mtimes
    # the report: a KL column, the paired tests on it, and sft-s0's interpolation path base -> 0.5 -> 1
    rep = report([Path(cfg.out) / n for n in r], tmp_path / "rep", n_resamples=200, html=True)
    assert summarize(r["sft-s0"])["kl"] == pytest.approx(k["sft-s0"])
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "KL(base‖model)" in md and any(t["measure"] == "kl" for t in rep["tests"])
    assert [x["name"] for x in interpolation_paths(rep["runs"])["sft-s0"]] == ["sft-s0@0", "sft-s0@0.5", "sft-s0"]
    assert "KL(base ‖ model)" in (tmp_path / "rep" / "report.html").read_text()
