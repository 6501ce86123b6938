"""scripts/study_pick.py: the dev rules of the Qwen study, applied to a dev run's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "study_pick.py"


def _dev_run(tmp_path, runs: dict[str, tuple[float, float]], specs: dict[str, dict]) -> Path:
    (tmp_path / "report").mkdir()
    rows = [{"name": n, "bleu": b, "chrf": 30.0, "retention_increase": r} for n, (b, r) in runs.items()]
    (tmp_path / "report" / "report.json").write_text(json.dumps({"runs": rows}))
    (tmp_path / "recipe.json").write_text(json.dumps({"methods": specs}))
    return tmp_path


def _pick(run: Path, *args) -> list[str]:
    out = subprocess.run([sys.executable, str(SCRIPT), str(run), *args], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if not line.startswith("#")]


def test_the_learning_rate_is_the_lowest_within_half_a_bleu_of_the_best(tmp_path):
    specs = {f"sft-lr{x}": {"method": "sft", "finetune": {"seed": 0, "lr": float(x)}} for x in ("1e-4", "3e-4", "1e-3")}
    run = _dev_run(tmp_path, {"base": (12.8, 0.0), "sft-lr1e-4": (13.0, 0.01), "sft-lr3e-4": (14.1, 0.05),
                              "sft-lr1e-3": (14.4, 0.3)}, {"base": {}, **specs})
    assert _pick(run, "--lr") == ["finetune.lr=0.0003"]


def test_each_family_picks_the_best_bleu_that_forgets_at_most_radis_plus_slack(tmp_path):
    specs = {"radis-s0": {"method": "radis", "finetune": {"seed": 0}},
             "radis-r25-s0": {"method": "radis", "generate": {"ratio": 0.25}, "finetune": {"seed": 0}},
             "radis-r50-s0": {"method": "radis", "generate": {"ratio": 0.5}, "finetune": {"seed": 0}},
             "radis-wrat50-s0": {"method": "radis", "finetune": {"seed": 0, "w_rat": 0.5}},
             "radis-seg-s0": {"method": "radis", "finetune": {"seed": 0, "normalize": "segments"}}}
    # r25 translates best but forgets too much; neither loss variant qualifies: the smaller increase wins.
    run = _dev_run(tmp_path, {"radis-s0": (14.0, 0.10), "radis-r25-s0": (15.0, 0.13), "radis-r50-s0": (14.5, 0.11),
                              "radis-wrat50-s0": (16.0, 0.20), "radis-seg-s0": (13.0, 0.15)}, specs)
    lines = _pick(run, "--seeds", "0,1")
    assert [line.split("=", 1)[0] for line in lines] == [
        "methods.radis-r50-s0", "methods.radis-r50-s1", "methods.radis-seg-s0", "methods.radis-seg-s1"]
    assert json.loads(lines[1].split("=", 1)[1]) == {"method": "radis", "generate": {"ratio": 0.5},
                                                     "finetune": {"seed": 1}}
