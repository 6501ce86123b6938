"""Paired tests between methods, on per-item files laid out as eval writes them (real WMT22 and AdvBench items)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radis_mlx import significance as sig
from radis_mlx.data import load_instructions, load_pairs


def write_run(d: Path, translations=None, advbench=None) -> Path:
    d.mkdir(parents=True)
    if translations is not None:
        (d / "translation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in translations))
    if advbench is not None:
        (d / "advbench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in advbench))
    return d


@pytest.fixture(scope="module")
def wmt(shared_data):
    return load_pairs(shared_data / "wmt22_general_test", "de-en", limit=60, seed=0, split="test")


def _rows(pairs, hyps):
    return [{"id": p.id, "refs": list(p.all_refs), "hyp": h} for p, h in zip(pairs, hyps)]


def test_translation_test_tells_a_good_system_from_a_bad_one(tmp_path, wmt):
    good = [p.all_refs[1] for p in wmt]  # reference B scored against A and B: near perfect
    bad = [wmt[(i + 1) % len(wmt)].all_refs[1] for i in range(len(wmt))]  # the next sentence's translation
    a = [write_run(tmp_path / "a0", _rows(wmt, good))]
    b = [write_run(tmp_path / "b0", _rows(wmt, bad))]
    t = sig.corpus_test(a, b, "translation", n_trials=2000)
    assert t["n"] == 60 and t["refs"] == 2
    assert t["bleu"]["delta"] > 50 and t["bleu"]["p"] < 0.01 and t["chrf"]["p"] < 0.01
    same = sig.corpus_test(a, a, "translation", n_trials=200)
    assert same["bleu"] == {"delta": 0.0, "p": 1.0}


def test_general_test_on_refusals(tmp_path, shared_data):
    goals = load_instructions(shared_data / "advbench" / "harmful_behaviors.csv", 40, 0)
    rows = lambda refused: [{"id": g["id"], "refusal": refused(i)} for i, g in enumerate(goals)]  # noqa: E731
    a = [write_run(tmp_path / "a0", advbench=rows(lambda i: True))]
    b = [write_run(tmp_path / "b0", advbench=rows(lambda i: i % 2 == 0))]
    g = sig.general_test(a, b, "advbench", n_resamples=5000)
    assert g["n"] == 40 and g["delta"] == pytest.approx(0.5) and g["p"] < 0.001
    assert sig.general_test(a, a, "advbench")["p"] == 1.0
    assert sig.general_test(a, b, "gsm8k") is None  # no per-item file: no test


def test_paired_permutation_is_exact_on_small_samples():
    # five pairs that all differ by +1: 2 of the 2^5 sign assignments are as extreme
    p = sig.paired_permutation(np.ones(5), np.zeros(5))
    assert p == pytest.approx(2 / 32)


def test_seed_pairs_and_holm():
    assert sig.seed_pairs(["a0", "a1", "a2"], ["b0", "b1"]) == [("a0", "b0"), ("a1", "b1")]
    assert sig.seed_pairs(["base"], ["s0", "s1", "s2"]) == [("base", "s0"), ("base", "s1"), ("base", "s2")]
    assert sig.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_compare_runs_each_method_against_each_baseline(tmp_path, wmt):
    refs = [p.all_refs[1] for p in wmt]
    groups = {name: [write_run(tmp_path / f"{name}-s{k}", _rows(wmt, refs if name != "base" else refs[::-1]))
                     for k in range(n)] for name, n in (("base", 1), ("sft", 2), ("radis", 2))}
    rows = sig.compare(groups, n_resamples=500)
    assert {(r["method"], r["vs"]) for r in rows} == {("base", "sft"), ("radis", "sft"), ("base", "radis"),
                                                     ("sft", "radis")}
    base_vs_sft = next(r for r in rows if r["method"] == "base" and r["vs"] == "sft" and r["measure"] == "bleu")
    assert base_vs_sft["n"] == 120 and base_vs_sft["delta"] < 0 and base_vs_sft["p_holm"] < 0.05
    text = sig.markdown(rows)
    assert "- base vs sft, BLEU:" in text and "worse" in text and "radis vs sft, BLEU" not in text.split("Holm's")[1]


def test_report_tests_against_the_baselines_it_is_given(tmp_path, shared_data):
    """A TransLLM-shaped recipe has no sft or radis: its report compares with base and replay."""
    from radis_mlx.report import report
    goals = load_instructions(shared_data / "advbench" / "harmful_behaviors.csv", 40, 0)
    runs = []
    for name, refuses in (("base", lambda i: i % 4 == 0), ("replay-s0", lambda i: i % 2 == 0),
                          ("replay-s1", lambda i: i % 2 == 1), ("transllm-s0", lambda i: True)):
        d = write_run(tmp_path / "eval" / name, advbench=[{"id": g["id"], "refusal": refuses(i)}
                                                          for i, g in enumerate(goals)])
        rate = sum(refuses(i) for i in range(40)) / 40
        (d / "results.json").write_text(json.dumps({"name": name, "suites": {"advbench": {"refusal_rate": rate,
                                                                                          "n": 40}}}))
        runs.append(d)
    r = report(runs, tmp_path / "rep", n_resamples=500, html=False, baselines=["base", "replay"])
    assert {(t["method"], t["vs"]) for t in r["tests"]} == {("replay", "base"), ("transllm", "base"),
                                                           ("base", "replay"), ("transllm", "replay")}
    t = next(t for t in r["tests"] if (t["method"], t["vs"]) == ("transllm", "base"))
    assert t["delta"] == pytest.approx(0.75) and t["n"] == 40 and t["p_holm"] < 0.05
    assert "against base and against replay" in (tmp_path / "rep" / "report.md").read_text()
    assert not report(runs, tmp_path / "rep2", n_resamples=500, html=False)["tests"]  # no sft, no radis: none


def test_recipe_report_baselines_are_checked(tmp_path):
    import yaml
    from radis_mlx.fileio import UserError
    from radis_mlx.recipe import load_recipe
    p = tmp_path / "r.yaml"
    body = {"name": "x", "model": "m", "train_data": "demo:train.de-en.jsonl",
            "methods": {"base": {}, "replay-s0": {"method": "replay"}}}
    p.write_text(yaml.safe_dump({**body, "report": {"baselines": ["base", "replay"]}}))
    assert load_recipe(p)["report"] == {"baselines": ["base", "replay"]}
    p.write_text(yaml.safe_dump(body))
    assert load_recipe(p)["report"] == {"baselines": ["sft", "radis"]}
    p.write_text(yaml.safe_dump({**body, "report": {"baselines": ["sft"]}}))
    with pytest.raises(UserError, match=r"report.baselines: sft is not a method of this recipe"):
        load_recipe(p)
    p.write_text(yaml.safe_dump({**body, "report": {"baseline": ["base"]}}))
    with pytest.raises(UserError, match=r"report: unknown key\(s\) baseline"):
        load_recipe(p)
