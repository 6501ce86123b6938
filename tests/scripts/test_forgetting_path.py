"""scripts/forgetting_path.py: "above SFT's interpolation path", as the forgetting recipe fixes it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "forgetting_path.py"
PATH_BLEU = {"base": 10.0, "sft-s0@0.25": 12.0, "sft-s0@0.5": 14.0, "sft-s0@0.75": 15.0, "sft-s0": 16.0}


def _test(method: str, vs: str, measure: str, delta: float, p: float, higher: bool = True) -> dict:
    return {"method": method, "vs": vs, "measure": measure, "delta": delta, "p": p, "p_holm": p, "n": 100,
            "higher_is_better": higher}


def _run(tmp_path, radis_bleu: float, tests: list[dict]) -> str:
    runs = [{"name": n, "bleu": b} for n, b in PATH_BLEU.items()]
    methods = [{"name": "radis", "bleu": radis_bleu, "seeds": 3}]
    f = tmp_path / "report.json"
    f.write_text(json.dumps({"runs": runs, "methods": methods, "tests": tests}))
    return subprocess.run([sys.executable, str(SCRIPT), str(f), "--methods", "radis"], capture_output=True, text=True,
                          check=True).stdout


def _line(out: str, measure: str) -> str:
    return next(x for x in out.splitlines() if x.strip().startswith(measure + " "))


def test_above_only_when_better_than_both_bracketing_points(tmp_path):
    # RaDis at BLEU 14.5 lies between sft@0.5 (14.0) and sft@0.75 (15.0)
    tests = [_test("sft@0.5", "radis", "advbench", -0.10, 0.01), _test("sft@0.75", "radis", "advbench", -0.15, 0.001),
             _test("sft@0.5", "radis", "ifeval", -0.05, 0.01), _test("sft@0.75", "radis", "ifeval", -0.08, 0.20),
             # the far points do not count: the path's ends are worse on gsm8k, the bracket is not
             _test("sft", "radis", "gsm8k", -0.2, 0.001), _test("sft@0.5", "radis", "gsm8k", 0.01, 0.9),
             _test("sft@0.75", "radis", "gsm8k", 0.0, 1.0),
             # retention NLL: lower is better; both points forget more (higher NLL), significantly
             _test("sft@0.5", "radis", "retention", 0.05, 0.001, False),
             _test("sft@0.75", "radis", "retention", 0.09, 0.001, False)]
    out = _run(tmp_path, 14.5, tests)
    assert "radis: BLEU 14.50 (3 seeds), bracketed by sft-s0@0.5 and sft-s0@0.75" in out
    assert _line(out, "advbench").split()[1] == "above"
    assert _line(out, "ifeval").split()[1:3] == ["not", "above"]  # one of the two is not significant
    assert _line(out, "gsm8k").split()[1:3] == ["not", "above"]
    assert _line(out, "retention").split()[1] == "above"


def test_past_the_path_s_end_is_compared_with_the_end_alone(tmp_path):
    tests = [_test("sft", "radis", "kl", 0.2, 0.001, False), _test("sft@0.75", "radis", "kl", 0.1, 0.001, False)]
    out = _run(tmp_path, 16.5, tests)
    assert "not bracketed: compared with sft-s0 alone" in out
    assert _line(out, "kl").split()[1] == "above" and "sft@0.75" not in _line(out, "kl")
    below = _run(tmp_path, 9.0, [_test("base", "radis", "kl", -0.1, 0.001, False)])
    assert "compared with base alone" in below and _line(below, "kl").split()[1] == "below"


def test_post_hoc_lists_path_points_that_reach_its_bleu_and_beat_it(tmp_path):
    # a path that peaks in its middle: sft@0.5 translates better than radis and forgets less (KL)
    tests = [_test("sft@0.5", "radis", "kl", -0.02, 0.001, False), _test("sft@0.75", "radis", "kl", 0.01, 0.001, False),
             _test("sft@0.25", "radis", "kl", -0.05, 0.001, False),  # lower BLEU than radis: not listed
             _test("sft", "radis", "kl", -0.03, 0.30, False)]  # not significant: not listed
    out = _run(tmp_path, 13.5, tests)
    post = out.split("post hoc")[1]
    kl = next(x for x in post.splitlines() if x.strip().startswith("kl "))
    assert "sft-s0@0.5 (BLEU 14.00) -0.020" in kl
    assert "sft-s0@0.75" not in kl and "sft-s0@0.25" not in kl and "sft-s0 (" not in kl
