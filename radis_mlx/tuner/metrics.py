"""Finetune's reports: OUT/metrics.jsonl, the console and progress line, OUT/loss.png, the summary line.

``MetricsLog`` is an mlx-lm ``TrainingCallback``: the loop reports to it as mlx-lm's trainer reports
to its callbacks, and it forwards the same reports to a callback of the caller's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from mlx_lm.tuner.trainer import TrainingCallback

from ..fileio import JsonlAppender, atomic_write_text, iter_jsonl, json_line, repair_jsonl_tail
from ..progress import Progress


class MetricsLog(TrainingCallback):
    """Reports as mlx-lm's callbacks get them, written to OUT/metrics.jsonl (each step once, also after a
    resume), to the progress line and the console, and drawn now and then into OUT/loss.png."""

    def __init__(self, run, forward: TrainingCallback | None = None):
        """``run``: the loop's run state (loop._Run; not imported, so the log sits below the loop)."""
        self.run, self.forward = run, forward
        out, start = run.out, run.start
        if run.main and start and (out / "metrics.jsonl").exists():
            # Steps logged after the checkpoint we resume from are about to run again: drop them.
            repair_jsonl_tail(out / "metrics.jsonl")
            rows = iter_jsonl(out / "metrics.jsonl")
            keep = [json_line(r) + "\n" for _, r in rows if int(r.get("step", 0)) <= start]
            atomic_write_text(out / "metrics.jsonl", "".join(keep))
        self.file = JsonlAppender(out / "metrics.jsonl", fsync=False) if run.main else None
        self.last_plot = time.perf_counter()
        self.win = {"loss": 0.0, "steps": 0, "tokens": 0, "trained": 0, "time": 0.0}
        self.totals = {"tokens": 0, "trained": 0, "time": 0.0}
        self.first_loss = self.last_loss = None

    def write(self, row: dict) -> None:
        if self.file:
            self.file.write(row)

    def event(self, name: str) -> None:
        self.write({"type": "event", "event": name, "step": self.run.start, "time": time.time()})

    def step(self, step: int, loss: float, norm, n_tok: int, trained: int, dt: float, prog: Progress) -> None:
        """Every optimizer step: the progress line; every steps_per_report steps, a report."""
        import mlx.core as mx
        self.first_loss = loss if self.first_loss is None else self.first_loss
        self.last_loss = loss
        for k, v in (("loss", loss), ("steps", 1), ("tokens", n_tok), ("trained", trained), ("time", dt)):
            self.win[k] += v
        for k, v in (("tokens", n_tok), ("trained", trained), ("time", dt)):
            self.totals[k] += v
        peak = mx.get_peak_memory() / 1e9
        # The buffer cache holds freed arrays for reuse on top of the peak of live ones.
        prog.update(1, tokens=n_tok, loss=loss, peak_gb=round(peak, 2), cache_gb=round(mx.get_cache_memory() / 1e9, 2))
        run, w = self.run, self.win
        if step % run.cfg.steps_per_report == 0 or step == run.total:
            self.on_train_loss_report({
                "iteration": step, "step": step, "train_loss": w["loss"] / w["steps"],
                "learning_rate": float(run.optimizer.learning_rate.item()), "grad_norm": float(norm.item()),
                "tokens": w["tokens"], "trained_tokens": w["trained"], "tokens_per_second": w["tokens"] / w["time"],
                "trained_tok_s": w["trained"] / w["time"], "peak_memory": peak,
                "epoch": round(run.position / run.plan.per_epoch, 3)})
            self.win = dict.fromkeys(w, 0)

    def on_train_loss_report(self, info: dict) -> None:
        self.write({"type": "train", "step": info["step"], "loss": info["train_loss"], "lr": info["learning_rate"],
                    "grad_norm": info["grad_norm"], "tokens": info["tokens"], "trained_tokens": info["trained_tokens"],
                    "tok_s": info["tokens_per_second"], "trained_tok_s": info["trained_tok_s"],
                    "peak_mem_gb": info["peak_memory"], "epoch": info["epoch"]})
        if self.forward:
            self.forward.on_train_loss_report(info)

    def on_val_loss_report(self, info: dict) -> None:
        self.write({"type": "val", **info})
        self.run.say(f"step {info['step']}: val loss {info['val_loss']:.4f} | ref {_f(info['val_ref_loss'])} | "
                     f"rationale {_f(info['val_rat_loss'])}")
        if self.run.main and time.perf_counter() - self.last_plot > 120:  # drawing costs ~1 s: not at every eval
            plot_losses(self.run.out)
            self.last_plot = time.perf_counter()
        if self.forward:
            self.forward.on_val_loss_report({"iteration": info["step"], **info})

    def close(self) -> None:
        if self.file:
            self.file.close()


def plot_losses(out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    train, val = {}, {}
    for _, r in iter_jsonl(out / "metrics.jsonl"):
        if r.get("type") == "train":
            train[r["step"]] = r["loss"]
        elif r.get("type") == "val":
            val[r["step"]] = r
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(sorted(train), [train[s] for s in sorted(train)], label="train loss", lw=1)
    for key, label in (("val_ref_loss", "val ref"), ("val_rat_loss", "val rationale"), ("val_loss", "val")):
        pts = sorted((s, r[key]) for s, r in val.items() if r.get(key) is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out / f".tmp-{os.getpid()}-loss.png"
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, out / "loss.png")


def _f(v):
    return "n/a" if v is None else f"{v:.4f}"


def format_summary(s: dict) -> str:
    val = s.get("val") or {}
    return (f"trained {s['steps_this_run']} steps ({s['epochs']} epochs) -> {s['adapters']}; "
            f"loss {_f(s['train_loss_first'])} -> {_f(s['train_loss_last'])}; "
            f"val ref {_f(val.get('val_ref_loss'))}, rationale {_f(val.get('val_rat_loss'))}; "
            f"{s['tok_s'] or 0:.0f} tok/s; peak {s['peak_mem_gb']:.2f} GB "
            f"(+ {s.get('cache_mem_gb') or 0:.2f} GB buffer cache); padding {s['padding_share']:.1%}"
            + (f"; fused -> {s['fused']}" if s.get("fused") else ""))
