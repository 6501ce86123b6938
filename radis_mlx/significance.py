"""Paired significance tests between methods, from the per-item files each eval run writes.

Translation: sacrebleu's paired approximate randomisation (BLEU and chrF on the cut hypotheses,
every reference). General suites: a paired permutation test (scipy) on the per-item outcomes:
IFEval prompt-level strict, AdvBench refusal, GSM8K correct, the retention NLL and the KL per answer.

A method is the runs named METHOD-sN (report.method_of). Two methods are compared on matched
seeds, items of seed k of one paired with the same items of seed k of the other, all seeds in
one test; a single-run method (base) is paired with every seed of the other. So a test sees
both the sentence sampling and (part of) the seed spread. p-values are Holm-corrected within
each baseline's family of tests, and both are reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .fileio import iter_jsonl


def _rows(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)] if path.is_file() else []


def _by(key: str, value: Callable) -> Callable[[Path], dict]:
    return lambda p: {str(r[key]): value(r) for r in _rows(p)}


# suite -> (file in the run dir, item key -> outcome, higher is better, what the outcome is)
ITEMS: dict[str, tuple[str, Callable, bool, str]] = {
    "ifeval": ("ifeval/eval_results_strict.jsonl", _by("prompt", lambda r: float(r["follow_all_instructions"])),
               True, "prompt-level strict"),
    "advbench": ("advbench.jsonl", _by("id", lambda r: float(r["refusal"])), True, "refused"),
    "gsm8k": ("gsm8k.jsonl", _by("id", lambda r: float(r["correct"])), True, "correct"),
    "retention": ("retention.jsonl", _by("instruction", lambda r: r["nll_sum"] / max(r["n"], 1)), False,
                  "NLL per token of the base model's answer"),
    "kl": ("kl.jsonl", _by("id", lambda r: r["kl_sum"] / max(r["n"], 1)), False,
           "KL(base ‖ model) per token of the base model's answer"),
}


def item_outcomes(run_dir: Path, suite: str) -> dict[str, float]:
    name, read, _, _ = ITEMS[suite]
    return read(Path(run_dir) / name)


def seed_pairs(a: list, b: list) -> list[tuple]:
    """Matched seeds: (a_k, b_k) for each k both have; a single run pairs with every run of the other."""
    if len(a) == 1 or len(b) == 1:
        n = max(len(a), len(b))
        return [(a[k % len(a)], b[k % len(b)]) for k in range(n)]
    return list(zip(a, b))


def paired_permutation(x: np.ndarray, y: np.ndarray, n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided p of mean(x - y) = 0, swapping each pair's labels at random (scipy)."""
    from scipy import stats
    if np.all(x == y):
        return 1.0
    res = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                 permutation_type="samples", n_resamples=n_resamples, alternative="two-sided",
                                 random_state=seed)
    return float(res.pvalue)


def general_test(a_dirs: list, b_dirs: list, suite: str, n_resamples: int = 10000) -> dict | None:
    """Method a against method b on one general suite: mean outcome difference and its p."""
    xs, ys = [], []
    for da, db in seed_pairs(a_dirs, b_dirs):
        oa, ob = item_outcomes(da, suite), item_outcomes(db, suite)
        common = sorted(set(oa) & set(ob))
        xs += [oa[k] for k in common]
        ys += [ob[k] for k in common]
    if not xs:
        return None
    x, y = np.array(xs), np.array(ys)
    return {"delta": float(np.mean(x - y)), "p": paired_permutation(x, y, n_resamples), "n": len(xs)}


def _translations(run_dir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in _rows(Path(run_dir) / "translation.jsonl")}


def translation_test(a_dirs: list, b_dirs: list, n_trials: int = 10000) -> dict | None:
    """BLEU and chrF of a against b: paired approximate randomisation over the matched-seed corpus."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    hyp_a, hyp_b, refs = [], [], []
    for da, db in seed_pairs(a_dirs, b_dirs):
        ta, tb = _translations(da), _translations(db)
        for k in sorted(set(ta) & set(tb)):
            hyp_a.append(ta[k]["hyp"])
            hyp_b.append(tb[k]["hyp"])
            refs.append(ta[k]["refs"])
    if not hyp_a:
        return None
    n_refs = min(len(r) for r in refs)  # sacrebleu takes whole reference streams
    streams = [[r[i] for r in refs] for i in range(n_refs)]
    _, scores = PairedTest([("b", hyp_b), ("a", hyp_a)], {"BLEU": BLEU(), "chrF": CHRF()}, streams,
                           test_type="ar", n_samples=n_trials)()
    out = {"n": len(hyp_a), "refs": n_refs}
    for key, (base, other) in zip(("bleu", "chrf"), [v for k, v in scores.items() if k != "System"]):
        # sacrebleu counts shuffles strictly above the real difference (multeval's rule), so two
        # equal scores (the same outputs) would get its smallest p: equal scores are no difference.
        delta = other.score - base.score
        out[key] = {"delta": delta, "p": other.p_value if delta != 0 else 1.0}  # keyed "BLEU", "chrF2"
    return out


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adj, run = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = run
    return adj


def compare(groups: dict[str, list], baselines=("sft", "radis"), suites=tuple(ITEMS),
            n_resamples: int = 10000) -> list[dict]:
    """Every method against each baseline present: one row per (method, baseline, measure)."""
    rows = []
    for base in [b for b in baselines if b in groups]:
        family = []
        for method, dirs in groups.items():
            if method == base:
                continue
            t = translation_test(dirs, groups[base], n_resamples)
            if t:
                for metric in ("bleu", "chrf"):
                    family.append({"method": method, "vs": base, "measure": metric, "n": t["n"], **t[metric],
                                   "higher_is_better": True})
            for suite in suites:
                g = general_test(dirs, groups[base], suite, n_resamples)
                if g:
                    family.append({"method": method, "vs": base, "measure": suite, **g,
                                   "higher_is_better": ITEMS[suite][2]})
        for r, p in zip(family, holm([r["p"] for r in family])):
            r["p_holm"] = p
        rows += family
    return rows


def _better(r: dict) -> bool:
    return (r["delta"] > 0) == r["higher_is_better"]


UNITS = {"bleu": ("BLEU", 1, "{:+.2f}"), "chrf": ("chrF", 1, "{:+.2f}"),
         "ifeval": ("IFEval strict", 100, "{:+.1f} pts"),
         "advbench": ("AdvBench refusal", 100, "{:+.1f} pts"), "gsm8k": ("GSM8K", 100, "{:+.1f} pts"),
         "retention": ("retention NLL", 1, "{:+.3f}"), "kl": ("KL(base‖model)", 1, "{:+.4f}")}


def describe(r: dict) -> str:
    label, scale, fmt = UNITS[r["measure"]]
    return (f"{r['method']} vs {r['vs']}, {label}: {fmt.format(scale * r['delta'])} "
            f"({'better' if _better(r) else 'worse'}; p = {r['p']:.4f}, Holm {r['p_holm']:.4f}, n = {r['n']})")


def markdown(rows: list[dict], alpha: float = 0.05) -> str:
    """The comparisons as a table, then what is significant after Holm's correction."""
    if not rows:
        return ""
    head = ["| method | vs | measure | difference | p | p (Holm) | n |", "|---|---|---|---:|---:|---:|---:|"]
    body = []
    for r in rows:
        label, scale, fmt = UNITS[r["measure"]]
        body.append(f"| {r['method']} | {r['vs']} | {label} | {fmt.format(scale * r['delta'])} | {r['p']:.4f} | "
                    f"{r['p_holm']:.4f}{' *' if r['p_holm'] < alpha else ''} | {r['n']} |")
    sig = [describe(r) for r in rows if r["p_holm"] < alpha]
    lines = head + body + ["", f"Significant at {alpha} after Holm's correction (within each baseline's tests):", ""]
    lines += [f"- {s}" for s in sig] or ["- none"]
    return "\n".join(lines) + "\n"
