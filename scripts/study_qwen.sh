#!/usr/bin/env bash
# The Qwen study of RESULTS.md, unattended and resumable (rerun it after any interruption):
#   1. dev phase 1: SFT at three learning rates; the dev rule picks the rate for every method,
#   2. dev phase 2: the RaDis variants at that rate; the dev rule picks two of them,
#   3. how often rationale-continue mode yields a rationale on the training pairs,
#   4. the main recipe with the picks: every method's first seed, then every seed.
# Usage: bash scripts/study_qwen.sh [OUT_ROOT (default ~/studies)] [DATA_ROOT (default ../shared/data)]
set -euo pipefail
OUT=${1:-$HOME/studies}
DATA=${2:-../shared/data}
PY=${PY:-.venv/bin/python}
rmlx() { "$PY" -m radis_mlx.cli "$@"; }
DEV=(study-qwen2.5-coder-0.5b-de-en-dev --data-root "$DATA" --out "$OUT/qwen-dev")
mkdir -p "$OUT"
rmlx run "${DEV[@]}" --only 'base,sft-*'
"$PY" scripts/study_pick.py "$OUT/qwen-dev" --lr > "$OUT/qwen-lr.txt"
cat "$OUT/qwen-lr.txt"
lr=$(grep -v '^#' "$OUT/qwen-lr.txt")
rmlx run "${DEV[@]}" --set "$lr"
"$PY" scripts/study_pick.py "$OUT/qwen-dev" --seeds 0,1 > "$OUT/qwen-picks.txt"
cat "$OUT/qwen-picks.txt"
rmlx generate --data "$OUT/qwen-dev/data/train.jsonl" --model qwen2.5-coder-0.5b --mode rationale-continue --pairs de-en \
  --max-tokens 64 --out "$OUT/qwen-continue/rationale-continue.jsonl"
picks=(--set "$lr")
while read -r line; do picks+=(--set "$line"); done < <(grep -v '^#' "$OUT/qwen-picks.txt")
rmlx run study-qwen2.5-coder-0.5b-de-en --data-root "$DATA" --out "$OUT/qwen" "${picks[@]}" --only 'base,*-s0'
rmlx run study-qwen2.5-coder-0.5b-de-en --data-root "$DATA" --out "$OUT/qwen" "${picks[@]}"
