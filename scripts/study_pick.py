"""Apply the dev rules of study-qwen2.5-coder-0.5b-de-en-dev: the learning rate, then one RaDis
variant per family.

    python scripts/study_pick.py DEV_RUN_DIR --lr          # phase 1: finetune.lr=X
    python scripts/study_pick.py DEV_RUN_DIR [--seeds 0,1] # phase 2: the variants

Reads DEV_RUN_DIR/report/report.json (dev BLEU and retention-NLL increase per run) and
DEV_RUN_DIR/recipe.json (each candidate's settings). Prints why each pick won (lines starting
with #), then the `--set` values for `radis-mlx run`: `finetune.lr=X`, or one
`methods.NAME-sK=...` per variant and seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FAMILIES = {"ratio": ("radis-r25", "radis-r50"), "loss": ("radis-wrat50", "radis-seg")}
REFERENCE = "radis"
SLACK = 0.02  # a candidate may forget at most this much more than plain RaDis (NLL increase)
LR_PREFIX = "sft-lr"
LR_TIE = 0.5  # dev BLEU within this of the best counts as a tie, which the lower rate wins


def pick(rows: dict[str, dict], family: tuple[str, ...]) -> tuple[str, str]:
    limit = rows[REFERENCE]["retention_increase"] + SLACK
    ok = [c for c in family if rows[c]["retention_increase"] <= limit]
    if ok:
        best = max(ok, key=lambda c: rows[c]["bleu"])
        return best, (f"highest dev BLEU ({rows[best]['bleu']:.2f}) among those within +{SLACK} NLL "
                      f"of radis ({limit:.3f})")
    best = min(family, key=lambda c: rows[c]["retention_increase"])
    return best, f"none within +{SLACK} NLL of radis ({limit:.3f}): the smallest increase"


def pick_lr(rows: dict[str, dict], recipe: dict) -> tuple[float, str]:
    lrs = {float(recipe["methods"][n]["finetune"]["lr"]): r for n, r in rows.items()
           if n.startswith(LR_PREFIX)}
    if not lrs:
        raise SystemExit(f"no {LR_PREFIX}* runs in the report: run phase 1 first")
    best = max(r["bleu"] for r in lrs.values())
    lr = min(x for x, r in lrs.items() if r["bleu"] >= best - LR_TIE)
    return lr, f"the lowest rate within {LR_TIE} BLEU of the best dev BLEU ({best:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dev_run", type=Path)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--lr", action="store_true", help="phase 1: pick the learning rate")
    a = ap.parse_args()
    report = json.loads((a.dev_run / "report" / "report.json").read_text())
    recipe = json.loads((a.dev_run / "recipe.json").read_text())
    rows = {r["name"].removesuffix("-s0"): r for r in report["runs"]}
    for name, r in sorted(rows.items()):
        print(f"# dev {name:14s} BLEU {r['bleu']:6.2f}  chrF {r['chrf']:6.2f}  "
              f"NLL increase {r.get('retention_increase', 0):+.3f}")
    if a.lr:
        lr, why = pick_lr(rows, recipe)
        print(f"# lr: {lr:g}: {why}")
        print(f"finetune.lr={lr:g}")
        return
    for fam, cands in FAMILIES.items():
        best, why = pick(rows, cands)
        print(f"# {fam}: {best}: {why}")
        spec = recipe["methods"][f"{best}-s0"]
        for seed in a.seeds.split(","):
            s = {**spec, "finetune": {**spec.get("finetune", {}), "seed": int(seed)}}
            print(f"methods.{best}-s{seed}={json.dumps(s)}")


if __name__ == "__main__":
    main()
