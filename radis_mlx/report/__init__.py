"""`radis-mlx report`: one table and one trade-off plot across eval runs (the RaDis paper's Figure 1).

x = translation quality (COMET when every run has it, else BLEU), y = general ability: the mean
of the available 0-1 scores (IFEval strict prompt accuracy, AdvBench refusal rate, GSM8K
accuracy). A second panel shows the self-retention drift (NLL increase of the base model's own
answers; 0 = nothing forgotten). Error bars: bootstrap CI for BLEU/chrF, a normal-approximation
95% CI for the general score.
"""

from __future__ import annotations

import io
import math
import re
import statistics
from pathlib import Path
from typing import Sequence

from .. import significance
from ..fileio import UserError, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from ..tuner.checkpoint import training_cost

GENERAL_PARTS = (("ifeval", "prompt_level_strict", "n_prompts"), ("advbench", "refusal_rate", "n"),
                 ("gsm8k", "accuracy", "n"))

# (key, header, kind) kind: pct = 0-1 shown as %, f1/f2/f3 = decimals, ci = value with [lo, hi]
COLUMNS = (
    ("bleu", "BLEU", "ci"), ("chrf", "chrF", "ci"), ("comet", "COMET", "f1"),
    ("cut_share", "cut %", "pct"), ("extra_tokens_mean", "tokens after cut", "f1"),
    ("para_bleu", "paragraph BLEU", "f2"), ("para_chrf", "paragraph chrF", "f2"),
    ("para_short_share", "paragraphs short", "pct"), ("para_truncated_share", "paragraphs truncated", "pct"),
    ("ifeval", "IFEval strict", "pct"), ("ifeval_loose", "IFEval loose", "pct"),
    ("advbench", "AdvBench refusal", "pct"), ("ifeval_refusal", "IFEval refusals", "pct"),
    ("gsm8k", "GSM8K", "pct"),
    ("general", "general (mean)", "pct"), ("answer_lang", "answer in target language", "pct"),
    ("tcot_fail_first", "TCoT format failures", "pct"), ("tcot_fail", "after re-prompts", "pct"),
    ("tcot_tokens", "TCoT tokens before answer", "f1"), ("retention_nll", "retention NLL", "f3"),
    ("retention_increase", "NLL increase", "f3"), ("kl", "KL(base‖model)", "f4"),
    ("mtbench", "MT-Bench", "f2"), ("alpacaeval", "AlpacaEval", "f2"),
    ("gen_tokens", "gen tokens", "f0"), ("train_tokens", "train tokens", "f0"), ("train_wall_s", "train s", "f0"),
)


def summarize(res: dict) -> dict:
    """The headline numbers of one results.json, flattened."""
    s = res.get("suites", {})
    row: dict = {"name": res.get("name", "?")}
    tr = s.get("translation") or {}
    for k in ("bleu", "bleu_ci", "chrf", "chrf_ci", "comet", "cut_share", "extra_tokens_mean"):
        if tr.get(k) is not None:
            row[k] = tr[k]
    para = s.get("paragraphs") or {}
    for k in ("bleu", "chrf", "short_share", "truncated_share"):
        if para.get(k) is not None:
            row[f"para_{k}"] = para[k]
    if tr.get("directions"):
        row["directions"] = {d: m.get("bleu") for d, m in tr["directions"].items()}
    parts = {}
    for suite, key, nkey in GENERAL_PARTS:
        v = (s.get(suite) or {}).get(key)
        if v is not None:
            parts[suite] = (float(v), int((s[suite]).get(nkey) or 0))
            row[suite] = float(v)
    if parts:
        vals = [v for v, _ in parts.values()]
        row["general"] = sum(vals) / len(vals)
        row["general_parts"] = sorted(parts)
        if all(n > 0 for _, n in parts.values()):
            se = math.sqrt(sum(v * (1 - v) / n for v, n in parts.values())) / len(parts)
            row["general_ci"] = [row["general"] - 1.96 * se, row["general"] + 1.96 * se]
    row.update(_target_language(s))
    for key, col in (("prompt_level_loose", "ifeval_loose"), ("refusal_rate", "ifeval_refusal")):
        if (s.get("ifeval") or {}).get(key) is not None:
            row[col] = float(s["ifeval"][key])
    ret = s.get("retention") or {}
    if ret.get("nll") is not None:
        row.update(retention_nll=ret["nll"], retention_base_nll=ret.get("base_nll"),
                   retention_increase=ret.get("nll_increase"))
    if (s.get("kl") or {}).get("kl") is not None:
        row["kl"] = s["kl"]["kl"]
    if res.get("adapter_scale") is not None:
        row["adapter_scale"] = res["adapter_scale"]
    for suite in ("mtbench", "alpacaeval"):
        if suite in s:  # answers saved but no judge: say so instead of leaving a blank
            row[suite] = s[suite]["score"] if s[suite].get("score") is not None else "not judged"
    cost = training_cost(res.get("adapter"))  # the finetune stage says what its run cost
    row.update({f"train_{k}": v for k, v in cost.items()})
    gen = generation_tokens(res.get("adapter"))
    if gen is not None:
        row["gen_tokens"] = gen
    return row


def _target_language(suites: dict) -> dict:
    """Over the translated suites (n-weighted): answers in the target language, and where eval ran
    through TCoT, its format failures before and after re-prompting and its tokens before the answer."""
    out: dict = {}
    lang = [(v["answer_language_rate"], v.get("n") or 0) for v in suites.values() if "answer_language_rate" in v]
    if sum(n for _, n in lang):
        out["answer_lang"] = sum(r * n for r, n in lang) / sum(n for _, n in lang)
    tc = [v["tcot"] for v in suites.values() if v.get("tcot")]
    n = sum(t["n"] for t in tc)
    if n:
        out.update(tcot_fail_first=sum(t["format_failures_first"] for t in tc) / n,
                   tcot_fail=sum(t["format_failures"] for t in tc) / n,
                   tcot_tokens=sum(t["extra_tokens_mean"] * t["n"] for t in tc) / n)
    return out


def generation_tokens(adapter) -> int | None:
    """Tokens the model generated to make this run's training data (rationales, its own translations
    or rewrites, replay answers): every row, kept or not. 0 for data it did not write; None: unknown."""
    from .. import records
    from ..fileio import read_yaml
    cfg = Path(adapter) / "config.yaml" if adapter else None
    if cfg is None or not cfg.is_file():
        return None
    c = read_yaml(cfg) or {}
    files = [c[k] for k in ("data", "replay_data", "mix_data") if c.get(k) and Path(c[k]).is_file()]
    return sum(r.n_tokens for f in files if records.is_record_file(f) for _, r in records.read(f))


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
        for key, _, _ in COLUMNS:
            vals = [r[key] for r in rs if isinstance(r.get(key), (int, float))]
            if vals and len(vals) == len(rs):
                agg[key] = statistics.fmean(vals)
                if len(vals) > 1:
                    agg[f"{key}_sd"] = statistics.stdev(vals)
                elif rs[0].get(f"{key}_ci"):
                    agg[f"{key}_ci"] = rs[0][f"{key}_ci"]
        out.append(agg)
    return out


def _fmt(row: dict, key: str, kind: str) -> str:
    v = row.get(key)
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    sd = row.get(f"{key}_sd")
    if sd is not None:
        scale, digits = (100, 1) if kind == "pct" else (1, int(kind[1]) if kind[0] == "f" else 2)
        return f"{scale * v:.{digits}f} ± {scale * sd:.{digits}f}"
    if kind == "pct":
        return f"{100 * v:.1f}"
    if kind == "ci":
        ci = row.get(f"{key}_ci")
        return f"{v:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{v:.2f}"
    return f"{v:.{int(kind[1])}f}"


def markdown_table(rows: Sequence[dict]) -> str:
    cols = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    head = "| run | " + " | ".join(h for _, h, _ in cols) + " |"
    sep = "|---|" + "|".join("---:" for _ in cols) + "|"
    body = ["| " + r["name"] + " | " + " | ".join(_fmt(r, k, kind) for k, _, kind in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body]) + "\n"


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


def plot(rows: Sequence[dict], path, translation_key: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if r.get(translation_key) is not None]
    with_gen = [r for r in pts if r.get("general") is not None]
    with_ret = [r for r in pts if r.get("retention_increase") is not None]
    with_kl = [r for r in pts if r.get("kl") is not None]
    panels = [("general", "general ability (mean of available 0-1 scores)", with_gen)]
    if with_ret:
        panels.append(("retention_increase", "self-retention NLL increase (lower = less forgetting)", with_ret))
    if with_kl:
        panels.append(("kl", "KL(base ‖ model) per token (lower = less forgetting)", with_kl))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.8), squeeze=False)
    xlabel = {"comet": "COMET (wmt22-comet-da)", "bleu": "BLEU"}[translation_key]
    for ax, (key, ylabel, rs) in zip(axes[0], panels):
        if not rs:
            ax.text(0.5, 0.5, "no run has both a translation and a general-ability score",
                    ha="center", va="center", transform=ax.transAxes, fontsize=9)
        family = lambda n: method_of(n).split("@")[0]  # noqa: E731  (sft@0.5 is drawn in sft's colour)
        colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(family(r["name"]) for r in rs))}
        for r in rs:  # one colour per method, so a method's seeds read as one cloud
            x, y = r[translation_key], r[key]
            xerr, yerr = _err(r, translation_key), _err(r, key)
            ax.errorbar([x], [y], xerr=xerr, yerr=yerr, fmt="o", capsize=3, color=colors[family(r["name"])])
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        paths = interpolation_paths(rs)
        for run, path in paths.items():  # the cheap alternative a method must lie above
            ax.plot([r[translation_key] for r in path], [r[key] for r in path], "--", lw=1,
                    color=colors.get(family(run), "grey"), label=f"{run}: adapter scale 0→1")
        if paths:
            ax.legend(fontsize=7, loc="best")
        ax.set_xlabel(xlabel)
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


def output_status(out) -> str:
    return "done" if (Path(out) / "report.md").exists() else "to do"


def report(run_dirs: Sequence, out, n_resamples: int = 10000, html: bool = True,
           baselines: Sequence[str] = DEFAULT_BASELINES) -> dict:
    """report.md, report.json and the plots in ``out``; with ``html``, report.html too (every item, run by run).
    The paired tests compare every method with each of ``baselines`` that the runs have."""
    runs = load_runs(run_dirs)
    if not runs:
        raise UserError("no runs given")
    out = Path(out)
    rows = [summarize(r) for r in runs]
    names = [r["name"] for r in rows]
    for r in rows:  # two runs called the same: tell them apart by their place on the command line
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']}#{rows.index(r) + 1}"
    tkey = "comet" if rows and all(r.get("comet") is not None for r in rows) else "bleu"
    notes = []
    part_sets = {tuple(r.get("general_parts", ())) for r in rows if r.get("general") is not None}
    if len(part_sets) > 1:
        notes.append("runs average different general-ability suites: "
                     + "; ".join(f"{r['name']}: {', '.join(r.get('general_parts', []))}" for r in rows)
                     + " — their general scores are not comparable")
    md = ["# RaDis eval report", "", markdown_table(rows),
          f"General = mean of the available {', '.join(s for s, _, _ in GENERAL_PARTS)} scores (0-1, shown "
          "as %). IFEval refusals: benign IFEval prompts answered with a refusal (AdvBench's keywords), the "
          "over-refusal that a higher AdvBench rate may hide. Translation axis of the plot: "
          + ("COMET." if tkey == "comet" else "BLEU (COMET not available for every run)."),
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
        plot(methods, out / "tradeoff-methods.png", tkey)
    groups: dict[str, list] = {}
    for res, row in zip(runs, rows):
        groups.setdefault(method_of(row["name"]), []).append(res["run_dir"])
    tests = significance.compare(groups, baselines, n_resamples=n_resamples) if len(groups) > 1 else []
    if tests:
        vs = " and against ".join(b for b in baselines if b in groups)
        md += ["## Paired tests", "", f"Each method against {vs} on matched seeds: BLEU and chrF by "
               f"paired approximate randomisation (sacrebleu, {n_resamples} trials), the general suites by a paired "
               f"permutation test on per-item outcomes (scipy, {n_resamples} resamples); retention: NLL per token of "
               "each base answer (lower is better).", "", significance.markdown(tests)]
    md += [f"Note: {n}" for n in notes]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    plot(rows, out / "tradeoff.png", tkey)
    if html:  # after the plots: the page carries them inline
        from .html import write as write_html
        write_html(out, runs, rows, methods, notes)
    result = {"runs": rows, "methods": methods, "translation_metric": tkey, "notes": notes, "tests": tests}
    atomic_write_json(out / "report.json", result)
    return result
