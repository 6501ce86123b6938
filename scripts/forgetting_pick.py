"""Apply the forgetting margin of study-forgetting-qwen2.5-coder-0.5b-dev: the cheapest SFT budget
that forgets on dev data while it still translates.

    python scripts/forgetting_pick.py DEV_RUN_DIR [--report REPORT_JSON] [--order sft-b1,sft-b1a,...] [--plot PNG]

Reads DEV_RUN_DIR/report/report.json (dev scores per run; --report: one written by `radis-mlx report`
over DEV_RUN_DIR/eval, when the runs were made with --only) and the pick's finetune settings as it
was trained (DEV_RUN_DIR/NAME/train/config.yaml). Prints the curve and each budget's verdict (lines starting with #),
then the main study's `--set` values for the pick; nothing when no measured budget qualifies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

GENERAL = ("ifeval", "advbench", "gsm8k")  # the report's 0-1 scores; the margin is in points
MEAN_DROP = 5.0  # (a) the general mean falls by this many points
ONE_DROP = 10.0  # (b) or any one of GENERAL falls by this many
KL_AT = 0.10  # (c) or KL(base || sft) reaches this many nats per token
BLEU_SLACK = 0.5  # ... while dev BLEU stays >= base's - this: a fine-tune that breaks translation is no trade-off
ORDER = "sft-b1,sft-b1a,sft-b1b,sft-b2,sft-b3,sft-b4"  # the header's order, as amended after b2


def verdict(base: dict, r: dict) -> tuple[bool, bool, list[str]]:
    """(forgets, still translates, the reasons it forgets)."""
    drops = {k: 100 * (base[k] - r[k]) for k in GENERAL}
    mean = sum(drops.values()) / len(drops)
    why = [f"general mean -{mean:.1f} pts"] if mean >= MEAN_DROP else []
    why += [f"{k} -{d:.1f} pts" for k, d in drops.items() if d >= ONE_DROP]
    why += [f"KL {r['kl']:.3f}"] if r.get("kl", 0.0) >= KL_AT else []
    return bool(why), r["bleu"] >= base["bleu"] - BLEU_SLACK, why


def plot(names: list[str], rows: dict, path: Path) -> None:
    """The dev curve: translation, each general suite and the forgetting measures, budget by budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = range(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("dev BLEU (de-en, en-de mean)", [("bleu", "BLEU", 1)]),
              ("dev general, % (margin: -10 pts one, -5 mean)",
               [(k, k, 100) for k in (*GENERAL, "general")]),
              ("forgetting on the base's answers, nats/token", [("kl", "KL(base||sft)", 1),
                                                                ("retention_increase", "retention NLL increase", 1)])]
    for ax, (title, lines) in zip(axes, panels):
        for key, label, k in lines:
            ax.plot(x, [k * rows[n].get(key, 0.0) for n in names], marker="o", label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xticks(list(x), names, rotation=30, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].axhline(rows["base"]["bleu"] - BLEU_SLACK, color="grey", ls=":", lw=1)
    axes[2].axhline(KL_AT, color="grey", ls=":", lw=1)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dev_run", type=Path)
    ap.add_argument("--report", type=Path, help="default: DEV_RUN_DIR/report/report.json")
    ap.add_argument("--order", default=ORDER, help="the budgets in order of cost")
    ap.add_argument("--plot", type=Path, help="draw the curve (every measured budget, in order) to this PNG")
    a = ap.parse_args()
    report = a.report or a.dev_run / "report" / "report.json"
    rows = {r["name"]: r for r in json.loads(report.read_text())["runs"]}
    base = rows["base"]
    print("# run        BLEU   IFEval AdvBench GSM8K general  NLL+    KL      verdict")
    pick, gap = None, None  # the first unmeasured budget: nothing after it can be the cheapest
    for name in ["base", *a.order.split(",")]:
        if name not in rows:
            print(f"# {name:10s} not measured")
            gap = gap or name
            continue
        r = rows[name]
        forgets, translates, why = verdict(base, r)
        said = ("" if name == "base" else "forgets: " + ", ".join(why) if forgets else "does not forget")
        if forgets and not translates:
            said += f"; but BLEU {r['bleu']:.2f} < base {base['bleu']:.2f} - {BLEU_SLACK}: no pick"
        print(f"# {name:10s} {r['bleu']:6.2f} {100 * r['ifeval']:6.1f} {100 * r['advbench']:8.1f} "
              f"{100 * r['gsm8k']:5.1f} {100 * r['general']:7.1f} {r.get('retention_increase', 0):+.3f} "
              f"{r.get('kl', 0):.4f}  {said}")
        if pick is None and name != "base" and forgets and translates:
            pick = name
    if a.plot:
        plot([n for n in ["base", *a.order.split(",")] if n in rows], rows, a.plot)
    if pick is None or gap and a.order.split(",").index(gap) < a.order.split(",").index(pick):
        print(f"# no pick yet: {gap} is not measured" if pick else "# no measured budget forgets while it translates")
        return
    ft = yaml.safe_load((a.dev_run / pick / "train" / "config.yaml").read_text())
    print(f"# pick: {pick}")
    for k in ("epochs", "lr", "lora_rank"):
        print(f"finetune.{k}={ft[k]:g}")


if __name__ == "__main__":
    main()
