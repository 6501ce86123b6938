"""Translation eval with and without the stop at the cut, on the same rows, in one run.

    python bench/bench_stop.py --model qwen2.5-coder-0.5b --adapter ADAPTER_DIR \\
        --data ../shared/data/wmt22_general_test --limit 200 --max-tokens 96 --out /tmp/bench-stop

Runs eval's translation suite three times on one model: stopped at the blank-line cut (eval's
default), decoded to the end and cut afterwards (--no-stop, the published way), and stopped at
the explanation cut. The no-stop outputs are scored with both cuts (no decoding). Prints one
markdown table (wall time, decode time, tokens generated, tokens past the cut, BLEU, chrF) and
whether the stopped and cut-afterwards hypotheses are identical.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import radis_mlx  # noqa: F401  (first: the fast BLAS on Linux)
from radis_mlx.evals import EvalConfig, evaluate


def one(args, name: str, cut: str, stop: bool) -> tuple[dict, list[dict], float]:
    cfg = EvalConfig(models=[f"m={args.model},adapter={args.adapter}" if args.adapter else f"m={args.model}"],
                     out=str(Path(args.out) / name), suites=["translation"], test_data={"translation": args.data},
                     pairs=args.pairs, limits={"translation": args.limit}, max_tokens={"translation": args.max_tokens},
                     batch_size=args.batch_size, n_bootstrap=0, comet=False, cut=cut, stop_decoding=stop)
    t0 = time.perf_counter()
    s = evaluate(cfg)["m"]["suites"]["translation"]
    wall = time.perf_counter() - t0
    rows = [json.loads(l) for l in (Path(args.out) / name / "m" / "translation.jsonl").read_text().splitlines()]
    return s, rows, wall


def rescore(rows: list[dict], cut: str) -> dict:
    """The no-stop outputs cut with another rule (no decoding)."""
    from radis_mlx.cuts import make_cut
    from radis_mlx.data import Pair
    from radis_mlx.evals.translation import score
    pairs = [Pair(r["src"], r["refs"][0], r["src_lang"], r["tgt_lang"], r["id"], tuple(r["refs"])) for r in rows]
    outs = [{"text": r["raw"], "n_tokens": r["n_tokens"], "finish": r["finish"]} for r in rows]
    _, s = score(pairs, outs, None, make_cut(cut), n_bootstrap=0, use_comet=False)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--adapter")
    ap.add_argument("--data", default="../shared/data/wmt22_general_test")
    ap.add_argument("--pairs", default="de-en")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="/tmp/bench-stop")
    ap.add_argument("--skip-explanation", action="store_true")
    args = ap.parse_args()
    runs = [("stop-blank-line", "blank-line", True), ("no-stop", "blank-line", False)]
    if not args.skip_explanation:
        runs.append(("stop-explanation", "explanation", True))
    res = {name: one(args, name, cut, stop) for name, cut, stop in runs}
    print("| run | wall s | tokens generated | stopped rows | tokens past the cut (mean) | BLEU | chrF | cut % |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (s, rows, wall) in res.items():
        st = s.get("stopping") or {}
        print(f"| {name} | {wall:.0f} | {sum(r['n_tokens'] for r in rows)} | {st.get('stopped_rows', 0)} | "
              f"{s['extra_tokens_mean']:.2f} | {s['bleu']:.2f} | {s['chrf']:.2f} | {100 * s['cut_share']:.1f} |")
    full_rows = res["no-stop"][1]
    same = [r["hyp"] for r in res["stop-blank-line"][1]] == [r["hyp"] for r in full_rows]
    print(f"\nblank-line: stopped and cut-afterwards hypotheses identical: {same}")
    if not args.skip_explanation:
        s = rescore(full_rows, "explanation")
        e = res["stop-explanation"][0]
        print(f"explanation cut: no-stop outputs cut afterwards BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f} "
              f"(stopped: BLEU {e['bleu']:.2f} chrF {e['chrf']:.2f}); identical: "
              f"{(round(s['bleu'], 6), round(s['chrf'], 6)) == (round(e['bleu'], 6), round(e['chrf'], 6))}")


if __name__ == "__main__":
    main()
