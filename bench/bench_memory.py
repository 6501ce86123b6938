"""Benchmark: radis_mlx.memory's estimates against the peaks MLX measures (mx.get_peak_memory).

    python bench/bench_memory.py                      # both offline models, two batch sizes each
    python bench/bench_memory.py --models smollm2-135m --batches 4,8 --seq-len 256 --steps 2

Each measurement runs in a process of its own, so its peak is that stage's alone:
- finetune: LoRA r 8 on every linear layer, ``--steps`` optimizer steps, every row as long as
  ``--seq-len`` (ALMA de-en pairs with a rationale long enough to be cut at the limit), so every
  batch has the shape the estimate assumes (the check's worst case: batches at max_seq_len);
- generate: explain-mode rationales for 2 x ``batch`` ALMA pairs, ``--new-tokens`` each, so a second
  wave of rows joins the batch as a long run's do.

"estimate" is what `radis-mlx run --check` prints for these settings on this machine (float32 on the
CPU): an upper bound on the data side (finetune: a loss at every position; generate: 256-token
prompts). For generate the bench also gives the estimate at its rows' longest prompt, which checks the
model of memory rather than the guess of the data. Peaks include the weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ALMA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alma_human_parallel" / "deen" / "train.de-en.json"
RATIONALE = (" The German sentence is carried over into English clause by clause: the finite verb moves from the "
             "end of the German subordinate clause to its English position, compound nouns become English noun "
             "phrases, and the tense and register of the source are kept.")

FINETUNE = r"""
import json, sys
import radis_mlx  # before mlx.core: loads OpenBLAS (backend.preload_openblas)
import mlx.core as mx
from radis_mlx.tuner import load_config, finetune
a = json.loads(sys.argv[1])
cfg = load_config(model=a["model"], data=a["data"], out=a["out"], overwrite=True, method="radis",
                  batch_size=a["batch"], max_seq_len=a["seq_len"], lora_rank=8, iters=a["steps"],
                  steps_per_eval=0, save_every=0, quiet=True, grad_checkpoint=a["grad_checkpoint"])
s = finetune(cfg)
print(json.dumps({"peak": mx.get_peak_memory(), "data": s["data"]}))
"""

GENERATE = r"""
import json, sys
import radis_mlx  # before mlx.core: loads OpenBLAS (backend.preload_openblas)
import mlx.core as mx
from radis_mlx.generate import GenerateConfig, generate
a = json.loads(sys.argv[1])
from pathlib import Path
from mlx_lm.utils import load_tokenizer
from radis_mlx import prompts
from radis_mlx.generate.rows import build_items
from radis_mlx.models import resolve
cfg = GenerateConfig(data=a["data"], out=a["out"], mode="rationale-explain", model=a["model"], pairs="de-en",
                     limit=2 * a["batch"], batch_size=a["batch"], max_tokens=a["new_tokens"], workers=1)
s = generate(cfg, progress=False)
peak = mx.get_peak_memory()
tok = load_tokenizer(Path(resolve(a["model"])))
longest = max(len(prompts.encode(tok, it.prompt)) for it in build_items(cfg, tok))
print(json.dumps({"peak": peak, "mean_tokens": s["mean_tokens_kept"], "longest_prompt": longest}))
"""


def rows_file(path: Path, n: int) -> Path:
    """Rationale-explain records of ALMA pairs, each rationale long enough to be cut at any --seq-len."""
    from radis_mlx.records import Record, write
    pairs = [json.loads(line)["translation"] for line in ALMA.open(encoding="utf-8")][:n]
    write(path, [Record(f"r{i}", "rationale-explain", RATIONALE * 40, True, None, 0, "length", p["de"], p["en"],
                        "de", "en") for i, p in enumerate(pairs)])
    return path


def measure(script: str, args: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", script, json.dumps(args)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def estimates(model: str, kind: str, batch: int, a, got: dict) -> tuple[int, int | None]:
    """(the check's estimate, the estimate at the rows' longest prompt or None)."""
    from radis_mlx import memory
    from radis_mlx.generate import GenerateConfig
    from radis_mlx.tuner.config import FinetuneConfig
    dims = memory.model_dims(model, "auto")
    target = memory.this_machine()
    if kind == "finetune":
        cfg = FinetuneConfig(model=model, data="x", batch_size=batch, max_seq_len=a.seq_len, lora_rank=8,
                             grad_checkpoint=a.grad_checkpoint)
        return memory.finetune_estimate(dims, cfg, target).total, None
    cfg = GenerateConfig(data="x", out="x", model=model, batch_size=batch, max_tokens=a.new_tokens)
    at = memory.decode_estimate(dims, "generate", batch, a.new_tokens, target.runs_as("auto"), "batch_size",
                                prompt=got["longest_prompt"])
    return memory.generate_estimate(dims, cfg, target).total, at.total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,qwen2.5-coder-0.5b")
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--grad-checkpoint", action="store_true")
    ap.add_argument("--stages", default="finetune,generate")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = rows_file(Path(tmp) / "rows.jsonl", 64)
        for model in a.models.split(","):
            for batch in map(int, a.batches.split(",")):
                for kind in a.stages.split(","):
                    args = {"model": model, "batch": batch, "out": f"{tmp}/{kind}-{model}-{batch}",
                            "steps": a.steps, "seq_len": a.seq_len, "grad_checkpoint": a.grad_checkpoint,
                            "new_tokens": a.new_tokens, "data": str(data) if kind == "finetune" else str(ALMA)}
                    if kind == "generate":
                        args["out"] += ".jsonl"
                    got = measure(FINETUNE if kind == "finetune" else GENERATE, args)
                    est, at = estimates(model, kind, batch, a, got)
                    rows.append({"model": model, "stage": kind, "batch": batch, "estimate_gb": round(est / 1e9, 2),
                                 "measured_gb": round(got["peak"] / 1e9, 2), "error": round(est / got["peak"] - 1, 3),
                                 "at_data_gb": round(at / 1e9, 2) if at else None,
                                 "at_data_error": round(at / got["peak"] - 1, 3) if at else None,
                                 "longest_prompt": got.get("longest_prompt")})
                    print(json.dumps(rows[-1]), flush=True)
    print("\n| model | stage | batch | estimate (GB) | at the rows' longest prompt | measured peak (GB) | error |"
          "\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        at = f"{r['at_data_gb']:.2f} ({r['longest_prompt']} tokens, {100 * r['at_data_error']:+.0f} %)" \
            if r["at_data_gb"] else "-"
        print(f"| {r['model']} | {r['stage']} | {r['batch']} | {r['estimate_gb']:.2f} | {at} | "
              f"{r['measured_gb']:.2f} | "
              f"{100 * r['error']:+.0f} % |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
