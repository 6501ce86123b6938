#!/usr/bin/env bash
# The forgetting study of RESULTS.md (issue 30), unattended and resumable (rerun it after any
# interruption: every finished training, generation and eval is reused):
#   1. dev phase: the base, then SFT budgets in order of cost until scripts/forgetting_pick.py
#      finds the first that forgets on dev data while it still translates (the dev recipe's margin),
#   2. the main recipe at that budget: every method's first seed, then the second, then the rest.
# Usage: bash scripts/study_forgetting.sh [OUT_ROOT (default ~/studies)] [DATA_ROOT (default ../shared/data)]
set -euo pipefail
OUT=${1:-$HOME/studies}
DATA=${2:-../shared/data}
PY=${PY:-.venv/bin/python}
rmlx() { "$PY" -m radis_mlx.cli "$@"; }
DEV=(study-forgetting-qwen2.5-coder-0.5b-dev --data-root "$DATA" --out "$OUT/forget-dev")
mkdir -p "$OUT"
pick="$OUT/forget-pick.txt"
: > "$pick"
for budget in base sft-b1 sft-b1a sft-b1b sft-b2; do  # b3 and b4 were dropped (the dev recipe's header)
  rmlx run "${DEV[@]}" --only "$budget"
  rmlx report "$OUT/forget-dev/eval" --out "$OUT/forget-dev/curve" --baselines base
  "$PY" scripts/forgetting_pick.py "$OUT/forget-dev" --report "$OUT/forget-dev/curve/report.json" \
    --plot "$OUT/forget-dev/curve/curve.png" > "$pick"
  grep -q '^finetune\.' "$pick" && break
done
cat "$pick"
if ! grep -q '^finetune\.' "$pick"; then
  echo "no budget forgets while it translates: the dev curve is the finding ($OUT/forget-dev/curve)"
  exit 0
fi
sets=()
while read -r line; do sets+=(--set "$line"); done < <(grep '^finetune\.' "$pick")
MAIN=(study-forgetting-qwen2.5-coder-0.5b --data-root "$DATA" --out "$OUT/forget" "${sets[@]}")
rmlx run "${MAIN[@]}" --only 'base,*-s0'
rmlx run "${MAIN[@]}" --only '*-s1'
rmlx run "${MAIN[@]}"
