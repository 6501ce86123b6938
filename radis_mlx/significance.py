"""Paired significance tests between methods, from the per-item files each eval run writes.

Every suite that declares an ``outcome`` (evals/suites.py) is tested, in the registry's order, with
no code of its own here: a per-item number (IFEval prompt-level strict, AdvBench refusal, GSM8K
correct, the retention NLL and the KL per answer) by a paired permutation test (scipy); corpus
metrics of the items' hypotheses and references (translation's BLEU and chrF on the cut
hypotheses, every reference) by sacrebleu's paired approximate randomisation.

A method is the runs named METHOD-sN (report.method_of). Two methods are compared on matched
seeds, items of seed k of one paired with the same items of seed k of the other, all seeds in
one test; a single-run method (base) is paired with every seed of the other. So a test sees
both the sentence sampling and (part of) the seed spread. p-values are Holm-corrected within
each baseline's family of tests, and both are reported.

Report side: it reads the registry and the run folders (through radis_mlx.results), never the
suites' code (evals -> results <- report).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .evals import suites as registry
from .results import Column, item_rows


def _items(run_dir: Path, suite) -> dict[str, dict]:
    """A run's items of a suite, by the outcome's key ({} if the run has no items file)."""
    return {str(r[suite.outcome.key]): r for _, _, r in item_rows(run_dir, suite.items)}


def item_outcomes(run_dir: Path, suite: str) -> dict[str, float]:
    s = registry.get(suite)
    return {k: s.outcome.value(r) for k, r in _items(run_dir, s).items()}


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
    """Method a against method b on a suite's per-item numbers: mean outcome difference and its p."""
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


def _metric(column: str):
    """sacrebleu's metric a corpus column scores: its key's last part (bleu, para_bleu -> BLEU)."""
    from sacrebleu.metrics import BLEU, CHRF
    return {"bleu": BLEU, "chrf": CHRF}[column.rsplit("_", 1)[-1]]()


def corpus_test(a_dirs: list, b_dirs: list, suite: str, n_trials: int = 10000) -> dict | None:
    """A suite's corpus metrics (its outcome's ``corpus``: BLEU, chrF) of a against b: paired
    approximate randomisation over the matched-seed corpus of the items' ``hyp`` and ``refs``."""
    from sacrebleu.significance import PairedTest

    s = registry.get(suite)
    hyp_a, hyp_b, refs = [], [], []
    for da, db in seed_pairs(a_dirs, b_dirs):
        ta, tb = _items(da, s), _items(db, s)
        for k in sorted(set(ta) & set(tb)):
            hyp_a.append(ta[k]["hyp"])
            hyp_b.append(tb[k]["hyp"])
            refs.append(ta[k]["refs"])
    if not hyp_a:
        return None
    n_refs = min(len(r) for r in refs)  # sacrebleu takes whole reference streams
    streams = [[r[i] for r in refs] for i in range(n_refs)]
    metrics = {m: _metric(m) for m in s.outcome.corpus}
    _, scores = PairedTest([("b", hyp_b), ("a", hyp_a)], metrics, streams, test_type="ar", n_samples=n_trials)()
    out = {"n": len(hyp_a), "refs": n_refs}
    for key, (base, other) in zip(metrics, [v for k, v in scores.items() if k != "System"]):
        # sacrebleu counts shuffles strictly above the real difference (multeval's rule), so two
        # equal scores (the same outputs) would get its smallest p: equal scores are no difference.
        delta = other.score - base.score
        out[key] = {"delta": delta, "p": other.p_value if delta != 0 else 1.0}
    return out


def holm(ps: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adj, run = [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        run = max(run, min(1.0, (len(ps) - rank) * ps[i]))
        adj[i] = run
    return adj


def measures() -> dict[str, Column]:
    """Every measure the tests can report, with the report column it is (label, format, direction):
    a corpus metric by its name, a per-item number by its suite's."""
    out = {}
    for s in registry.registered():
        if s.outcome:
            cols = {c.key: c for c in s.columns}
            out.update({m: cols[m] for m in s.outcome.corpus})
            if s.outcome.value:
                out[s.name] = cols[s.outcome.column]
    return out


def suite_tests(a_dirs: list, b_dirs: list, suite, n_resamples: int) -> list[dict]:
    """One suite's tests of a against b: a row per measure (none without items in both)."""
    cols = measures()
    if suite.outcome.corpus:
        t = corpus_test(a_dirs, b_dirs, suite.name, n_resamples)
        return [{"measure": m, "n": t["n"], **t[m], "higher_is_better": cols[m].higher_is_better}
                for m in suite.outcome.corpus] if t else []
    g = general_test(a_dirs, b_dirs, suite.name, n_resamples)
    return [{"measure": suite.name, **g, "higher_is_better": cols[suite.name].higher_is_better}] if g else []


def compare(groups: dict[str, list], baselines=("sft", "radis"), suites=None, n_resamples: int = 10000) -> list[dict]:
    """Every method against each baseline present: one row per (method, baseline, measure), over the
    suites named (default: every suite with an outcome, in the registry's order)."""
    tested = [s for s in registry.registered() if s.outcome and (suites is None or s.name in suites)]
    rows = []
    for base in [b for b in baselines if b in groups]:
        family = []
        for method, dirs in groups.items():
            if method != base:
                family += [{"method": method, "vs": base, **t} for s in tested
                           for t in suite_tests(dirs, groups[base], s, n_resamples)]
        for r, p in zip(family, holm([r["p"] for r in family])):
            r["p_holm"] = p
        rows += family
    return rows


def _better(r: dict) -> bool:
    return (r["delta"] > 0) == r["higher_is_better"]


def unit(col: Column) -> tuple[str, int, str]:
    """How a difference of a column's measure reads: (label, scale, format); a share in points."""
    if col.fmt == "pct":
        return col.label, 100, "{:+.1f} pts"
    return col.label, 1, "{:+.2f}" if col.fmt == "ci" else "{:+.%sf}" % col.fmt[1]


def describe(r: dict, cols: dict | None = None) -> str:
    label, scale, fmt = unit((cols or measures())[r["measure"]])
    return (f"{r['method']} vs {r['vs']}, {label}: {fmt.format(scale * r['delta'])} "
            f"({'better' if _better(r) else 'worse'}; p = {r['p']:.4f}, Holm {r['p_holm']:.4f}, n = {r['n']})")


def markdown(rows: list[dict], alpha: float = 0.05) -> str:
    """The comparisons as a table, then what is significant after Holm's correction."""
    if not rows:
        return ""
    cols = measures()
    head = ["| method | vs | measure | difference | p | p (Holm) | n |", "|---|---|---|---:|---:|---:|---:|"]
    body = []
    for r in rows:
        label, scale, fmt = unit(cols[r["measure"]])
        body.append(f"| {r['method']} | {r['vs']} | {label} | {fmt.format(scale * r['delta'])} | {r['p']:.4f} | "
                    f"{r['p_holm']:.4f}{' *' if r['p_holm'] < alpha else ''} | {r['n']} |")
    sig = [describe(r, cols) for r in rows if r["p_holm"] < alpha]
    lines = head + body + ["", f"Significant at {alpha} after Holm's correction (within each baseline's tests):", ""]
    lines += [f"- {s}" for s in sig] or ["- none"]
    return "\n".join(lines) + "\n"
