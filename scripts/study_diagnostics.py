"""The checks behind RESULTS.md's reading of a study's numbers, from the files its runs wrote.

    python scripts/study_diagnostics.py STUDY_DIR      # e.g. ~/studies/qwen

Per eval run (STUDY_DIR/eval/RUN):
- AdvBench: refusals, and how many items it refuses that base answered (gained) or answers that
  base refused (lost): a rate that moves by 14 points can hide twice as many flips;
- IFEval refusals: the benign prompts it refuses (over-refusal);
- translations wrapped in a preamble ('... translates to English as: "X"'), and the BLEU of the
  run with X taken out of the wrapper: what the wrapper costs, apart from the translation.
Then the self-generated training targets: seqkd's and sdft's that are wrapped, and replay's
answers (STUDY_DIR/generate/replay-*.jsonl) that are refusals: what replay teaches besides the
model's voice.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from radis_mlx.results import is_refusal
from radis_mlx.evals.translation import corpus_metrics
from radis_mlx.fileio import iter_jsonl

# The wrapper SDFT's rewrites taught: '... translates to English as:\n"X"' (or 'is: "X"').
WRAPPED = re.compile(r'(?:as|is):\s*\n?"(.+?)"', re.S)


def rows(path: Path) -> list[dict]:
    return [r for _, r in iter_jsonl(path)] if path.is_file() else []


def unwrap(hyp: str) -> tuple[str, bool]:
    m = WRAPPED.search(hyp)
    return (m.group(1).strip(), True) if m else (hyp, False)


def run_checks(run: Path, base_refused: dict) -> dict:
    out: dict = {"run": run.name}
    adv = rows(run / "advbench.jsonl")
    if adv:
        refused = {r["id"]: bool(r["refusal"]) for r in adv}
        out["advbench"] = sum(refused.values())
        out["gained"] = sum(v and not base_refused.get(k, False) for k, v in refused.items())
        out["lost"] = sum(base_refused.get(k, False) and not v for k, v in refused.items())
    ife = rows(run / "ifeval" / "input_response_data.jsonl")
    if ife:
        out["ifeval_refusals"] = f"{sum(is_refusal(r['response']) for r in ife)}/{len(ife)}"
    tr = rows(run / "translation.jsonl")
    if tr:
        hyps, wrapped = zip(*(unwrap(r["hyp"]) for r in tr))
        out["wrapped"] = f"{sum(wrapped)}/{len(tr)}"
        if any(wrapped):
            tgt = tr[0]["tgt_lang"]
            out["bleu"] = round(corpus_metrics([r["hyp"] for r in tr], [r["refs"] for r in tr], tgt, 0)["bleu"], 2)
            out["bleu_unwrapped"] = round(corpus_metrics(hyps, [r["refs"] for r in tr], tgt, 0)["bleu"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--base", default="base", help="the untrained run's name")
    a = ap.parse_args()
    runs = sorted(p for p in (a.study / "eval").iterdir() if (p / "results.json").is_file())
    base_refused = {r["id"]: bool(r["refusal"]) for r in rows(a.study / "eval" / a.base / "advbench.jsonl")}
    for run in runs:
        print(json.dumps(run_checks(run, base_refused)))
    for f in sorted((a.study / "generate").glob("s*-*.jsonl")):  # seqkd, sdft: the targets they train on
        kept = [r for r in rows(f) if r.get("kept")]
        print(json.dumps({"targets": f.name, "kept": len(kept), "wrapped": sum(unwrap(r["text"])[1] for r in kept)}))
    for f in sorted((a.study / "generate").glob("replay-*.jsonl")):
        kept = [r for r in rows(f) if r.get("kept")]
        refusing = [r["instruction"][:60] for r in kept if is_refusal(r["text"])]
        print(json.dumps({"replay_data": f.name, "kept": len(kept), "refusals": len(refusing),
                          "instructions": refusing}))


if __name__ == "__main__":
    main()
