"""Eval rates per suite on Qwen2.5-Coder-0.5B (the base), one suite per evaluate() call, at the
forgetting study's max tokens; prints one JSON line per suite (BENCHMARKS.md, issue 30).

Usage: python scripts/forgetting_rates.py DATA_ROOT OUT [ITEMS_PER_SUITE=8]
"""

import json
import sys
import time

from radis_mlx.evals.harness import EvalConfig, evaluate
from radis_mlx.models import load

root, out = sys.argv[1].rstrip("/") + "/", sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 8
t0 = time.perf_counter()
load("qwen2.5-coder-0.5b")
load_s = time.perf_counter() - t0  # subtracted from each call: every evaluate() loads the model once
print(json.dumps({"load_s": round(load_s, 1)}), flush=True)
data = {"translation": root + "wmt22_general_test", "ifeval": root + "ifeval/input_data.jsonl",
        "advbench": root + "advbench/harmful_behaviors.csv", "gsm8k": root + "gsm8k/test.jsonl",
        "alpacaeval": root + "alpaca_eval/alpaca_eval_instructions.jsonl"}
mt = {"translation": 96, "ifeval": 160, "advbench": 32, "gsm8k": 256, "retention": 128, "kl": 128}
for suite in ["translation", "advbench", "ifeval", "gsm8k", "retention", "kl"]:
    cfg = EvalConfig(models=["base=qwen2.5-coder-0.5b"], out=out, suites=[suite], test_data=data,
                     pairs="de-en,en-de", limit=n // 2 if suite == "translation" else n, max_tokens=mt,
                     batch_size=64, split="test", progress=False, comet=False, n_bootstrap=0)
    t = time.perf_counter()
    r = evaluate(cfg)["base"]["suites"][suite]
    w = time.perf_counter() - t - load_s
    g = r.get("generated_tokens_this_run", 0)
    print(json.dumps({"suite": suite, "items": r.get("n") or r.get("n_prompts"), "wall_s_minus_load": round(w, 1),
                      "generated_tokens": g, "gen_tok_s": round(g / w, 1) if g else None,
                      "n_tokens": r.get("n_tokens")}), flush=True)
