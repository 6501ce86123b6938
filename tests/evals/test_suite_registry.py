"""A suite is one declaration: a toy suite registered here, and nowhere else, runs through `radis-mlx
eval`, shows in report.md, report.json and report.html, and enters the paired tests; the registry is the one
lookup of a suite by name."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from radis_mlx import prompts
from radis_mlx.cli import main
from radis_mlx.data import load_instructions
from radis_mlx.evals import suites
from radis_mlx.evals.harness import EvalConfig
from radis_mlx.fileio import UserError, atomic_write_jsonl
from radis_mlx.results import Column, badge, esc, meta, out_block, pick

WORDS = ("apple", "river", "stone", "cloud", "bread")


def _run_repeat(ctx, items: list) -> dict:
    """Ask the model to repeat a word; an answer matches when it is exactly that word."""
    outs = ctx.first("repeat", [prompts.chat(ctx.loaded.tokenizer, f"Repeat this word: {r['instruction']}")
                                for r in items])
    rows = [{"id": r["id"], "word": r["instruction"], "answer": o["text"],
             "match": o["text"].strip() == r["instruction"]} for r, o in zip(items, outs)]
    atomic_write_jsonl(suites.items_path(ctx.run_dir, "repeat"), rows)
    n = sum(r["match"] for r in rows)
    return {"exact_match": n / len(rows), "n": len(rows), "n_matched": n}


@pytest.fixture
def repeat_suite():
    """The toy suite, registered for one test and gone after it."""
    suite = suites.register(
        name="repeat", data="repeat/words.jsonl", max_tokens=4,
        load=lambda cfg, path, limit: load_instructions(path, limit, cfg.seed), run=_run_repeat,
        headline=lambda s: f"exact match {100 * s['exact_match']:.0f}% of {s['n']}",
        items="repeat.jsonl", outcome=suites.Outcome("id", lambda r: float(r["match"]), "repeat"),
        columns=(Column("repeat", "repeat exact match", "pct", True),),
        summary=lambda s: pick(s, {"repeat": "exact_match"}),
        html=suites.Html("Repeat a word", ("word",), key=lambda r: str(r["id"]), head=lambda r: [out_block(r["word"])],
                         cell=lambda r: meta(badge(bool(r["match"]), "repeated", "missed")) + out_block(r["answer"])),
    )
    yield suite
    del suites.REGISTRY["repeat"]


def test_a_suite_declared_once_runs_and_is_reported_and_tested(tmp_path, tiny_model_dir, repeat_suite):
    words = tmp_path / "words.jsonl"
    atomic_write_jsonl(words, [{"id": f"w{i}", "instruction": w} for i, w in enumerate(WORDS)])
    model = str(tiny_model_dir)
    main(["eval", "--model", model, "--name", "base", "--model", model, "--name", "sft", "--suites", "repeat",
          "--test-data", f"repeat={words}", "--out", str(tmp_path / "eval")])
    res = json.loads((tmp_path / "eval" / "sft" / "results.json").read_text())["suites"]["repeat"]
    assert res["n"] == len(WORDS) and res["settings"]["max_tokens"] == 4
    items = [json.loads(line) for line in (tmp_path / "eval" / "sft" / "repeat.jsonl").read_text().splitlines()]
    assert [r["word"] for r in items] == list(WORDS)

    main(["report", str(tmp_path / "eval"), "--out", str(tmp_path / "rep")])
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["repeat"] for r in rep["runs"]] == [res["exact_match"]] * 2  # the same model under two names
    assert {m["name"]: m["repeat"] for m in rep["methods"]} == {"base": res["exact_match"], "sft": res["exact_match"]}
    test, = rep["tests"]  # base against the sft baseline, on the five words
    assert (test["method"], test["vs"], test["measure"], test["n"]) == ("base", "sft", "repeat", len(WORDS))
    assert test["delta"] == 0 and test["p"] == 1.0 and test["higher_is_better"] is True

    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| run | repeat exact match |" in md and f"| sft | {100 * res['exact_match']:.1f} |" in md
    assert "## Paired tests" in md and "| base | sft | repeat exact match | +0.0 pts |" in md

    page = (tmp_path / "rep" / "report.html").read_text()
    assert '<section class="suite" data-suite="repeat"><h2>Repeat a word <small>5 items' in page
    assert len(re.findall(r'<tr class="ex" data-suite="repeat">', page)) == len(WORDS)
    assert all(f'<div class="out">{esc(w)}</div>' in page for w in WORDS)
    assert page.count('<td class="run r1">') >= len(WORDS)  # a cell for each run, per word


def test_the_toy_suite_leaves_with_its_fixture():
    assert "repeat" not in suites.names()
    assert "repeat" not in suites.DEFAULT_MAX_TOKENS


def test_suite_registry_is_the_one_lookup():
    from radis_mlx.evals import suites
    assert suites.SUITES == ("translation", "ifeval", "advbench", "gsm8k", "retention", "kl", "mtbench", "alpacaeval",
                             "paragraphs")
    assert suites.get("kl").data_from == "alpacaeval"
    assert suites.DATA_LAYOUT["retention"] == suites.DATA_LAYOUT["alpacaeval"]
    assert suites.get("retention").data_from == "alpacaeval"
    with pytest.raises(UserError,
                       match=r"unknown suite 'bogus' \(choose from translation, ifeval, .*alpacaeval, paragraphs\)"):
        suites.get("bogus")
    cfg = EvalConfig(test_data={"alpacaeval": __file__})  # retention reads AlpacaEval's instructions when not given
    assert suites.suite_path(cfg, "retention") == Path(__file__)
