#!/usr/bin/env bash
# The Qwen study of RESULTS.md, unattended and resumable (rerun it after any interruption):
#   1. the dev recipe (RaDis variants on held-out dev data), 2. the dev rule picks two variants,
#   3. how often rationale-continue mode yields a rationale on the training pairs,
#   4. the main recipe with the picks: every method's first seed, then every seed.
# Usage: bash scripts/study_qwen.sh [OUT_ROOT (default ~/studies)] [DATA_ROOT (default ../shared/data)]
set -euo pipefail
OUT=${1:-$HOME/studies}
DATA=${2:-../shared/data}
PY=${PY:-.venv/bin/python}
rmlx() { "$PY" -m radis_mlx.cli "$@"; }
mkdir -p "$OUT"
rmlx run study-qwen2.5-coder-0.5b-de-en-dev --data-root "$DATA" --out "$OUT/qwen-dev"
"$PY" scripts/study_pick.py "$OUT/qwen-dev" --seeds 0,1 > "$OUT/qwen-picks.txt"
cat "$OUT/qwen-picks.txt"
rmlx generate --data "$OUT/qwen-dev/data/train.jsonl" --model qwen2.5-coder-0.5b --mode rationale-continue --pairs de-en \
  --max-tokens 64 --out "$OUT/qwen-continue/rationale-continue.jsonl"
picks=()
while read -r line; do picks+=(--set "$line"); done < <(grep -v '^#' "$OUT/qwen-picks.txt")
rmlx run study-qwen2.5-coder-0.5b-de-en --data-root "$DATA" --out "$OUT/qwen" "${picks[@]}" --only 'base,*-s0'
rmlx run study-qwen2.5-coder-0.5b-de-en --data-root "$DATA" --out "$OUT/qwen" "${picks[@]}"
