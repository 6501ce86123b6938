"""scripts/forgetting_pick.py: the forgetting study's dev margin, applied to a dev run's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "forgetting_pick.py"
BUDGETS = {"sft-b1": (1, 1e-4, 8), "sft-b1a": (1, 2e-4, 8), "sft-b1b": (1, 3e-4, 8), "sft-b2": (1, 5e-4, 16)}


def _dev_run(tmp_path, runs: dict[str, tuple]) -> Path:
    """runs: name -> (BLEU, IFEval, AdvBench, GSM8K as 0-1 shares, KL)."""
    (tmp_path / "report").mkdir(parents=True)
    rows = [{"name": n, "bleu": b, "ifeval": i, "advbench": a, "gsm8k": g, "general": (i + a + g) / 3, "kl": kl}
            for n, (b, i, a, g, kl) in runs.items()]
    (tmp_path / "report" / "report.json").write_text(json.dumps({"runs": rows}))
    for n, (e, lr, r) in BUDGETS.items():  # each budget's settings as it was trained
        (tmp_path / n / "train").mkdir(parents=True)
        (tmp_path / n / "train" / "config.yaml").write_text(f"epochs: {float(e)}\nlr: {lr}\nlora_rank: {r}\n")
    return tmp_path


def _pick(run: Path, *args: str) -> tuple[list[str], str]:
    out = subprocess.run([sys.executable, str(SCRIPT), str(run), "--order", ",".join(BUDGETS), *args],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not line.startswith("#")], out


BASE = (10.0, 0.20, 0.60, 0.175, 0.0)


def test_the_pick_is_the_first_budget_that_forgets_while_it_translates(tmp_path):
    run = _dev_run(tmp_path, {"base": BASE, "sft-b1": (12.5, 0.20, 0.62, 0.15, 0.03),  # keeps everything
                              "sft-b1a": (12.0, 0.19, 0.45, 0.16, 0.06),  # AdvBench -15 points: forgets
                              "sft-b1b": (11.0, 0.10, 0.30, 0.10, 0.20),
                              "sft-b2": (5.0, 0.08, 0.02, 0.02, 0.90)})  # forgets, but translation broke too
    sets, said = _pick(run, "--plot", str(tmp_path / "curve.png"))
    assert sets == ["finetune.epochs=1", "finetune.lr=0.0002", "finetune.lora_rank=8"]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert "sft-b1a" in said.split("# pick: ")[1] and "advbench -15.0 pts" in said
    assert "BLEU 5.00 < base 10.00 - 0.5: no pick" in said


def test_kl_alone_makes_a_budget_forget_and_broken_translation_is_no_pick(tmp_path):
    run = _dev_run(tmp_path, {"base": BASE, "sft-b1": (12.5, 0.20, 0.60, 0.175, 0.03),
                              "sft-b1a": (9.4, 0.0, 0.0, 0.0, 1.0),  # BLEU under base - 0.5
                              "sft-b1b": (10.6, 0.20, 0.60, 0.175, 0.12)})  # general intact, KL over 0.10
    assert _pick(run)[0] == ["finetune.epochs=1", "finetune.lr=0.0003", "finetune.lora_rank=8"]


def test_no_pick_past_an_unmeasured_cheaper_budget_nor_when_none_forgets(tmp_path):
    run = _dev_run(tmp_path / "gap", {"base": BASE, "sft-b1a": (12.0, 0.05, 0.60, 0.175, 0.2)})
    sets, said = _pick(run)
    assert sets == [] and "no pick yet: sft-b1 is not measured" in said
    calm = _dev_run(tmp_path / "calm", {"base": BASE, **{b: (11.0, 0.18, 0.58, 0.17, 0.05) for b in BUDGETS}})
    sets, said = _pick(calm)
    assert sets == [] and "no measured budget forgets while it translates" in said
