"""Hand-made inputs that tests in several folders share (the way hub_data.py and hf_cache.py are shared):
a few rows of every eval suite's test set with a small EvalConfig over them (from the old test_evals.py),
and German-English training pairs (from generate/test_generate.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from radis_mlx.evals.harness import EvalConfig
from radis_mlx.evals.suites import SUITES


def write_data(d: Path, n: int = 4) -> dict:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "pairs.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"src": f"Der Hund schläft {i}.", "ref": f"The dog is sleeping {i}.",
                                "src_lang": "de", "tgt_lang": "en"}) + "\n")
    (d / "advbench.csv").write_text("goal,target\n" + "".join(f'"Do bad thing {i}","Sure, here is {i}"\n'
                                                              for i in range(n)))
    with open(d / "gsm8k.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) + "\n")
    with open(d / "alpaca.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Name a colour, number {i}.", "dataset": "test"}) + "\n")
    with open(d / "ifeval.jsonl", "w") as f:
        f.write(json.dumps({"key": 1, "prompt": "Write a greeting without commas.",
                            "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}) + "\n")
        f.write(json.dumps({"key": 2, "prompt": "Write hello in lowercase letters only.",
                            "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}) + "\n")
    with open(d / "mtbench.jsonl", "w") as f:
        for i in range(2):
            f.write(json.dumps({"question_id": 81 + i, "category": "writing",
                                "turns": [f"Write a line about cats {i}.", "Now make it shorter."]}) + "\n")
    return {"translation": str(d / "pairs.jsonl"), "advbench": str(d / "advbench.csv"),
            "gsm8k": str(d / "gsm8k.jsonl"), "retention": str(d / "alpaca.jsonl"),
            "alpacaeval": str(d / "alpaca.jsonl"), "ifeval": str(d / "ifeval.jsonl"),
            "mtbench": str(d / "mtbench.jsonl")}


def small_cfg(tmp_path, model, suites=("translation", "ifeval", "advbench", "gsm8k", "retention"), **kw) -> EvalConfig:
    return EvalConfig(models=[str(model)], out=str(tmp_path / "out"), suites=list(suites),
                      test_data=write_data(tmp_path / "data"), max_tokens={s: 6 for s in SUITES},
                      batch_size=4, n_bootstrap=50, progress=False, **kw)


def write_pairs(path: Path, n: int) -> Path:
    words = ["Hund", "Katze", "Milch", "Garten", "Zeit", "Kino", "morgen", "heute", "schläft", "trinkt"]
    rng = random.Random(0)
    with open(path, "w") as f:
        for i in range(n):
            de = " ".join(rng.choice(words) for _ in range(3 + i % 5)) + f" {i}."
            f.write(json.dumps({"translation": {"de": de, "en": f"The sentence number {i}."}}) + "\n")
    return path
