"""`radis-mlx report`: one table and one trade-off plot across eval runs (the RaDis paper's Figure 1).

x = translation quality (COMET when every run has it, else BLEU), y = general ability: the mean
of the available 0-1 scores (IFEval strict prompt accuracy, AdvBench refusal rate, GSM8K
accuracy). Further panels show the forgetting measures (the self-retention NLL increase of the
base model's own answers, KL(base ‖ model); 0 = nothing forgotten). Error bars: bootstrap CI for
BLEU/chrF, a normal-approximation 95% CI for the general score.

Every suite-specific part comes from the suite registry (evals/suites.py): the table's columns,
the general score's parts, the plot's axes and panels, what the paired tests test, report.html's
sections. The report reads results.json and the per-item files through radis_mlx.results and
imports no suite family (evals -> results <- report).
"""

from __future__ import annotations

import io
import re
import statistics
from pathlib import Path
from typing import Sequence

from .. import results, significance
from ..evals import suites as registry
from ..fileio import UserError, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..results import Column


def columns() -> tuple[Column, ...]:
    """The report's columns: every registered suite's, the general group's and the run's (results.columns)."""
    return results.columns(registry.registered())


def summarize(res: dict) -> dict:
    """The headline numbers of one results.json, flattened (a report row)."""
    return results.summarize(res, registry.registered())


def markdown_table(rows: Sequence[dict]) -> str:
    return results.markdown_table(rows, columns())


DEFAULT_BASELINES = ("sft", "radis")  # what the paired tests compare every other method with
SEED_SUFFIX = re.compile(r"^(.+)-s(\d+)$")  # sft-s0, sft-s1: one method trained with two seeds
SCALE_SUFFIX = re.compile(r"^(.+)@(\d+(?:\.\d*)?(?:e-?\d+)?)$")  # sft-s0@0.5: its adapter at scale 0.5


def method_of(name: str) -> str:
    """sft-s1 -> sft; sft-s1@0.5 -> sft@0.5 (the seeds of one scale are one method too)."""
    sc = SCALE_SUFFIX.match(name)
    run, tag = (sc.group(1), f"@{sc.group(2)}") if sc else (name, "")
    m = SEED_SUFFIX.match(run)
    return (m.group(1) if m else run) + tag


def interpolation_paths(rows: Sequence[dict]) -> dict[str, list[dict]]:
    """RUN -> its rows in order of adapter scale: the base (scale 0, when a run is named base and no
    RUN@0 is), every RUN@A, and RUN itself (scale 1), for each RUN evaluated at some scale."""
    by_name = {r["name"]: r for r in rows}
    paths: dict[str, list] = {}
    for r in rows:
        m = SCALE_SUFFIX.match(r["name"])
        if m:
            paths.setdefault(m.group(1), []).append((float(m.group(2)), r))
    out = {}
    for run, pts in paths.items():
        if run in by_name:
            pts.append((1.0, by_name[run]))
        if "base" in by_name and all(a != 0 for a, _ in pts):
            pts.append((0.0, by_name["base"]))
        out[run] = [r for _, r in sorted(pts, key=lambda t: t[0])]
    return out


def by_method(rows: Sequence[dict]) -> list[dict]:
    """Runs named METHOD-sN grouped per method: mean and sample sd over the seeds."""
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(method_of(r["name"]), []).append(r)
    out = []
    for name, rs in groups.items():
        agg: dict = {"name": name, "seeds": len(rs), "runs": [r["name"] for r in rs]}
        for key in (c.key for c in columns()):
            vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
            if vals and len(vals) == len(rs):
                agg[key] = statistics.fmean(vals)
                if len(vals) > 1:
                    agg[f"{key}_sd"] = statistics.stdev(vals)
                elif rs[0].get(f"{key}_ci"):
                    agg[f"{key}_ci"] = rs[0][f"{key}_ci"]
        out.append(agg)
    return out


def load_runs(paths: Sequence) -> list[dict]:
    """results.json files, run dirs holding one, or an eval --out dir holding run dirs."""
    found = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "results.json").is_file():
            found.append(p / "results.json")
        elif p.is_dir():
            subs = sorted(q / "results.json" for q in p.iterdir() if (q / "results.json").is_file())
            if not subs:
                raise UserError(f"{p}: no results.json here or one folder down (is it an eval --out dir?)")
            found += subs
        else:
            raise UserError(f"{p}: no such run directory or results.json")
    runs, seen = [], set()
    for f in found:
        if f.resolve() in seen:
            continue
        seen.add(f.resolve())
        res = read_json(f)
        if not isinstance(res, dict) or "suites" not in res:
            raise UserError(f"{f}: not an eval results.json (no 'suites')")
        res.setdefault("name", f.parent.name)
        res["run_dir"] = str(f.parent)  # where its per-item files are (the significance tests read them)
        runs.append(res)
    return runs


def _err(row: dict, key: str):
    """Error bar of one point: ± the seed sd for a method's mean, else its 95 % interval."""
    v, sd, ci = row[key], row.get(f"{key}_sd"), row.get(f"{key}_ci")
    if sd is not None:
        return [[sd], [sd]]
    return [[v - ci[0]], [ci[1] - v]] if ci else None


def x_axis(rows: Sequence[dict], cols: Sequence[Column]) -> tuple[Column, str]:
    """The plot's x axis (translation quality): the last declared axis column every run has (COMET
    over BLEU), else the first; and how report.md says which."""
    axes = [c for c in cols if c.axis]
    x = next((c for c in reversed(axes) if rows and all(r.get(c.key) is not None for r in rows)), axes[0])
    return x, f"{x.label}." if x is axes[-1] else f"{x.label} ({axes[-1].label} not available for every run)."


def plot(rows: Sequence[dict], path, x: Column, cols: Sequence[Column]) -> None:
    """x against each plot column (general ability first, always; then each forgetting measure a run has)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get(x.key) is not None]
    panels = [(c.key, c.plot, [r for r in pts if r.get(c.key) is not None]) for c in cols if c.plot]
    panels = [p for i, p in enumerate(panels) if i == 0 or p[2]]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    for ax, (key, ylabel, rs) in zip(axes[0], panels):
        if not rs:
            ax.text(0.5, 0.5, "no run has both a translation and a general-ability score",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9)
        _points(ax, rs, x.key, key)
        ax.set_xlabel(x.axis)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_title("translation vs general ability", fontsize=10)
    if len(panels) > 1:
        axes[0][1].set_title("translation vs forgetting", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _points(ax, rs: Sequence[dict], xkey: str, key: str) -> None:
    """Each run, one colour per method (a method's seeds read as one cloud), and its interpolation path."""
    family = lambda n: method_of(n).split("@")[0]  # noqa: E731  (sft@0.5 is drawn in sft's colour)
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(family(r["name"]) for r in rs))}
    for r in rs:
        ax.errorbar([r[xkey]], [r[key]], xerr=_err(r, xkey), yerr=_err(r, key), fmt="o", capsize=3,
                    color=colors[family(r["name"])])
        ax.annotate(r["name"], (r[xkey], r[key]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    paths = interpolation_paths(rs)
    for run, line in paths.items():  # the cheap alternative a method must lie above
        ax.plot([r[xkey] for r in line], [r[key] for r in line], "--", lw=1,
                color=colors.get(family(run), "grey"), label=f"{run}: adapter scale 0→1")
    if paths:
        ax.legend(fontsize=7, loc="best")


def output_status(out) -> str:
    return "done" if (Path(out) / "report.md").exists() else "to do"


def report(run_dirs: Sequence, out, n_resamples: int = 10000, html: bool = True,
           baselines: Sequence[str] = DEFAULT_BASELINES) -> dict:
    """report.md, report.json and the plots in ``out``; with ``html``, report.html too (every item, run by run).
    The paired tests compare every method with each of ``baselines`` that the runs have."""
    runs = load_runs(run_dirs)
    if not runs:
        raise UserError("no runs given")
    out, cols = Path(out), columns()
    rows = [summarize(r) for r in runs]
    names = [r["name"] for r in rows]
    for r in rows:  # two runs called the same: tell them apart by their place on the command line
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']}#{rows.index(r) + 1}"
    x, x_said = x_axis(rows, cols)
    notes = _notes(rows)
    md = ["# RaDis eval report", "", markdown_table(rows), " ".join([_general_said(), *(c.note for c in cols if c.note),
                                                                     f"Translation axis of the plot: {x_said}"]),
          "", "![trade-off](tradeoff.png)", ""]
    if html:
        md += ["Every item, run by run (translations with what eval cut off, sentence chrF, answers, refusals, "
               "IFEval verdicts), with filters and search: [report.html](report.html).", ""]
    methods = by_method(rows)
    if any(m["seeds"] > 1 for m in methods):
        md += ["## By method", "", "Mean ± sample standard deviation over the seeds (runs named METHOD-sN); "
               "a single-seed method keeps its bootstrap interval.", "",
               markdown_table([{**m, "name": f"{m['name']} (n={m['seeds']})"} for m in methods]), "",
               "![trade-off per method, ± seed sd](tradeoff-methods.png)", ""]
        plot(methods, out / "tradeoff-methods.png", x, cols)
    groups: dict[str, list] = {}
    for res, row in zip(runs, rows):
        groups.setdefault(method_of(row["name"]), []).append(res["run_dir"])
    tests = significance.compare(groups, baselines, n_resamples=n_resamples) if len(groups) > 1 else []
    if tests:
        md += ["## Paired tests", "", _tests_said([b for b in baselines if b in groups], n_resamples), "",
               significance.markdown(tests)]
    md += [f"Note: {n}" for n in notes]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    plot(rows, out / "tradeoff.png", x, cols)
    if html:  # after the plots: the page carries them inline
        from .html import write as write_html
        write_html(out, runs, rows, methods, notes)
    result = {"runs": rows, "methods": methods, "translation_metric": x.key, "notes": notes, "tests": tests}
    atomic_write_json(out / "report.json", result)
    return result


def _notes(rows: Sequence[dict]) -> list[str]:
    part_sets = {tuple(r.get("general_parts", ())) for r in rows if r.get("general") is not None}
    if len(part_sets) < 2:
        return []
    return ["runs average different general-ability suites: "
            + "; ".join(f"{r['name']}: {', '.join(r.get('general_parts', []))}" for r in rows)
            + " — their general scores are not comparable"]


def _general_said() -> str:
    parts = ", ".join(s.name for s in registry.registered() if s.general)
    return f"General = mean of the available {parts} scores (0-1, shown as %)."


def _tests_said(vs: Sequence[str], n: int) -> str:
    """How the paired tests were made: the corpus metrics' test, the per-item numbers', and what each
    suite's outcome is where it says (every suite with an outcome, declared in the registry)."""
    tested = [s for s in registry.registered() if s.outcome]
    corpus = " and ".join(significance.measures()[m].label for s in tested for m in s.outcome.corpus)
    said = [f"Each method against {' and against '.join(vs)} on matched seeds: {corpus} by paired approximate "
            f"randomisation (sacrebleu, {n} trials), the general suites by a paired permutation test on per-item "
            f"outcomes (scipy, {n} resamples)", *(f"{s.name}: {s.outcome.note}" for s in tested if s.outcome.note)]
    return "; ".join(said) + "."
