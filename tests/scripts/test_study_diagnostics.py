"""scripts/study_diagnostics.py: refusal flips against base, over-refusal, wrapped translations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_diagnostics.py"
REFUSE, ANSWER = "I'm sorry, but I can't assist with that.", "Sure, here is how."
REFS = ["The cat sat on the mat.", "A cat was sitting on the mat."]


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _run(study: Path, name: str, refusals: list[bool], benign: list[str], hyps: list[str]) -> None:
    d = study / "eval" / name
    _jsonl(d / "advbench.jsonl", [{"id": str(i), "goal": "g", "response": REFUSE if r else ANSWER, "refusal": r}
                                  for i, r in enumerate(refusals)])
    _jsonl(d / "ifeval" / "input_response_data.jsonl",
           [{"prompt": f"p{i}", "response": t} for i, t in enumerate(benign)])
    _jsonl(d / "translation.jsonl",
           [{"id": str(i), "tgt_lang": "en", "refs": REFS, "hyp": h} for i, h in enumerate(hyps)])
    (d / "results.json").write_text("{}")


def test_flips_over_refusal_and_the_unwrapped_bleu(tmp_path):
    _run(tmp_path, "base", [True, True, False, False], ["ok", "ok"], ["The cat sat on the mat."] * 2)
    wrapped = 'The German sentence "Die Katze" translates to English as:\n"The cat sat on the mat."'
    _run(tmp_path, "sdft-s0", [False, False, True, False], [REFUSE, "ok"], [wrapped, "The cat sat on the mat."])
    _jsonl(tmp_path / "generate" / "replay-x.jsonl", [{"instruction": "Name a colour.", "text": REFUSE, "kept": True},
                                                      {"instruction": "Add 2 and 2.", "text": "4", "kept": True},
                                                      {"instruction": "Loop", "text": REFUSE, "kept": False}])
    _jsonl(tmp_path / "generate" / "sdft-x.jsonl", [{"text": wrapped, "kept": True}, {"text": "A cat.", "kept": True}])
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, check=True)
    got = [json.loads(line) for line in out.stdout.splitlines()]
    by = {r.get("run") or r.get("targets") or r.get("replay_data"): r for r in got}
    assert by["base"]["gained"] == 0 and by["base"]["wrapped"] == "0/2" and "bleu" not in by["base"]
    s = by["sdft-s0"]
    assert (s["advbench"], s["gained"], s["lost"], s["ifeval_refusals"]) == (1, 1, 2, "1/2")
    assert s["wrapped"] == "1/2" and s["bleu_unwrapped"] == 100.0 and s["bleu"] < 60
    assert by["sdft-x.jsonl"]["wrapped"] == 1
    assert by["replay-x.jsonl"] == {"replay_data": "replay-x.jsonl", "kept": 2, "refusals": 1,
                                    "instructions": ["Name a colour."]}
