"""Is a method above SFT's interpolation path? The forgetting study's comparison, as its recipe's
header fixes it (study-forgetting-qwen2.5-coder-0.5b).

    python scripts/forgetting_path.py REPORT_JSON [--methods radis,radis-turn] [--run sft-s0]

The path: the base (scale 0), RUN@A for each evaluated scale, and RUN (scale 1), ordered by BLEU.
A method's BLEU (its seeds' mean) is bracketed by two adjacent path points; the method lies above
the path on a measure only when it is better than BOTH points on it, each by the report's paired
test (point vs method: the report needs the method among its baselines), significant at 0.05 after
Holm. Better than both ends is better than any mix of them at that BLEU. A BLEU past either end is
compared with that end alone and said to be not bracketed.

Post hoc (added once the test path was seen to peak in its middle, not at scale 1): ordering by BLEU
is the path only when BLEU rises with the scale. So the script also lists the path points that reach
at least the method's BLEU and are significantly better than it on a measure: a cheaper way to the
same translation with less forgetting, whatever the bracket says.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

MEASURES = ("ifeval", "advbench", "gsm8k", "retention", "kl", "para_bleu")
ALPHA = 0.05


def path_points(runs: dict[str, dict], run: str) -> list[tuple[str, str, float]]:
    """(run name, the method its paired tests name, BLEU), ordered by BLEU: base, RUN@A..., RUN."""
    method = re.sub(r"-s\d+$", "", run)
    pts = [("base", "base", runs["base"]["bleu"]), (run, method, runs[run]["bleu"])]
    for name, r in runs.items():
        m = re.fullmatch(re.escape(run) + r"@(.+)", name)
        if m:
            pts.append((name, f"{method}@{m[1]}", r["bleu"]))
    return sorted(pts, key=lambda p: p[2])


def bracket(points: list, bleu: float) -> tuple[list, bool]:
    """The two adjacent points whose BLEU brackets ``bleu``, or the nearer end alone (not bracketed)."""
    for lo, hi in zip(points, points[1:]):
        if lo[2] <= bleu <= hi[2]:
            return [lo, hi], True
    return [points[0] if bleu < points[0][2] else points[-1]], False


def _paired(tests: list[dict], point: str, method: str, measure: str) -> dict | None:
    """The report's paired test of a path point against ``method`` (delta = point - method)."""
    return next((t for t in tests if t["method"] == point and t["vs"] == method and t["measure"] == measure), None)


def _gain(t: dict) -> float:
    """How much better the path point is than the method (> 0: the point is better)."""
    return (1 if t["higher_is_better"] else -1) * t["delta"]


def verdict(tests: list[dict], method: str, against: list, measure: str) -> tuple[str, list[str]]:
    """"above", "below" (worse than both, significantly) or "not above", and each comparison."""
    said, better, worse = [], 0, 0
    for _, point, _ in against:
        t = _paired(tests, point, method, measure)
        if t is None:
            said.append(f"{point}: no test")
            continue
        ok = t["p_holm"] < ALPHA
        better += ok and _gain(t) < 0  # the point is worse than the method
        worse += ok and _gain(t) > 0
        said.append(f"{point} {t['delta']:+.3f} (Holm p {t['p_holm']:.3g})")
    if better == len(against):
        return "above", said
    return ("below" if worse == len(against) else "not above"), said


def dominating(tests: list[dict], method: str, points: list, bleu: float, measure: str) -> list[str]:
    """The path points at BLEU >= ``bleu`` significantly better than ``method`` on ``measure`` (Holm)."""
    said = []
    for name, point, b in points:
        t = _paired(tests, point, method, measure)
        if b >= bleu and t and t["p_holm"] < ALPHA and _gain(t) > 0:
            said.append(f"{name} (BLEU {b:.2f}) {t['delta']:+.3f} (Holm p {t['p_holm']:.3g})")
    return said


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--methods", default="radis,radis-turn")
    ap.add_argument("--run", default="sft-s0", help="the run whose scales make the path")
    a = ap.parse_args()
    rep = json.loads(a.report.read_text())
    runs = {r["name"]: r for r in rep["runs"]}
    methods = {m["name"]: m for m in rep["methods"]}
    points = path_points(runs, a.run)
    measured = [x for x in MEASURES if any(t["measure"] == x for t in rep["tests"])]
    print("path: " + ", ".join(f"{n} {b:.2f}" for n, _, b in points))
    for name in a.methods.split(","):
        m = methods[name]
        against, inside = bracket(points, m["bleu"])
        where = " and ".join(p[0] for p in against)
        print(f"\n{name}: BLEU {m['bleu']:.2f} ({m['seeds']} seed{'s' * (m['seeds'] != 1)}), "
              + (f"bracketed by {where}" if inside else f"not bracketed: compared with {where} alone"))
        for measure in measured:
            v, said = verdict(rep["tests"], name, against, measure)
            print(f"  {measure:10s} {v:9s}  " + "; ".join(said))
        print("  post hoc, path points at >= its BLEU that are significantly better:")
        for measure in measured:
            print(f"    {measure:10s} " + ("; ".join(dominating(rep["tests"], name, points, m["bleu"], measure))
                                           or "none"))


if __name__ == "__main__":
    main()
