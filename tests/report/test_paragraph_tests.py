"""The paragraphs suite enters the paired tests and report.html by its declaration alone."""

import json
import types

from radis_mlx import significance
from radis_mlx.data import load_pairs
from radis_mlx.evals import suites
from radis_mlx.evals.paragraphs import load_paragraphs
from radis_mlx.report import report


def _run(d, pairs, hyp_of, name):
    d.mkdir(parents=True)
    rows = []
    for p in pairs:
        hyp = hyp_of(p.ref)
        raw = hyp + ("\n\nThe German text is a statement about the weather." if hyp != p.ref else "")
        rows.append({"id": p.id, "src_lang": p.src_lang, "tgt_lang": p.tgt_lang, "src": p.src, "refs": [p.ref],
                     "hyp": hyp, "raw": raw, "cut": hyp != p.ref, "finish": "stop", "short": hyp != p.ref})
    (d / "paragraphs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"bleu": 0.0, "chrf": 0.0, "short_share": 0.0, "truncated_share": 0.0, "n": len(rows)}
    (d / "results.json").write_text(json.dumps({"name": name, "model": "m", "suites": {"paragraphs": summary}}))
    return d


def test_paragraph_bleu_and_chrf_are_paired_tested_and_shown(shared_data, tmp_path):
    cfg = types.SimpleNamespace(paragraph_pairs="de-en", seed=0)
    pairs = load_paragraphs(cfg, shared_data / "wmt23_general_test", 40)
    assert len(pairs) == 40
    assert {p.id for p in pairs} <= {p.id for p in load_pairs(shared_data / "wmt23_general_test", "de-en",
                                                                 split="test")}
    full = _run(tmp_path / "sft", pairs, lambda ref: ref, "sft")
    first = _run(tmp_path / "radis", pairs, lambda ref: ref.split(". ")[0] + ".", "radis")

    tests = significance.suite_tests([first], [full], suites.get("paragraphs"), 2000)
    assert [t["measure"] for t in tests] == ["para_bleu", "para_chrf"]
    assert all(t["delta"] < -10 and t["p"] < 0.01 and t["n"] == 40 for t in tests)

    out = report([str(full), str(first)], tmp_path / "report")
    measures = {(r["method"], r["vs"], r["measure"]) for r in out["tests"]}
    assert ("radis", "sft", "para_chrf") in measures
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count('class="ex" data-suite="paragraphs"') == 40
    assert "The German text is a statement about the weather." in page  # the cut-off tail, dimmed
