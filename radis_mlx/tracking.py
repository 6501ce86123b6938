"""Experiment tracking (`finetune --report-to wandb,tensorboard`), as mlx-lm's ``--report-to``.

W&B goes through mlx-lm's own ``WandBCallback``; TensorBoard, which mlx-lm lacks, is a callback of
the same ``TrainingCallback`` shape writing with the ``tensorboard`` package's event-file writer (the
one torch's SummaryWriter wraps; it needs neither TensorFlow nor torch, and the package is the viewer
anyone reading these logs installs anyway). Both stay inside the run directory and off the network
unless the user says otherwise: W&B runs offline (``wandb sync OUT/wandb`` uploads them later) with
its config, cache and data dirs under OUT/wandb; TensorBoard writes OUT/tensorboard.

OUT/tracking.json keeps each tracker's state (the W&B run id), so a resumed finetune continues the
same run and eval scores (``log_scores``) land in it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import secrets
import string
import time
from pathlib import Path

from mlx_lm.tuner.trainer import TrainingCallback

from .fileio import atomic_write_json, read_json
from .trackers import EXTRA, TRACKERS, check  # noqa: F401 (tracking.check: the settings' check)

STATE = "tracking.json"
DEFAULT_PROJECT = "radis-mlx"


def _numbers(info: dict) -> dict:
    """What a tracker can chart: finite numbers (a validation set without rationales has val_rat_loss None)."""
    return {k: float(v) for k, v in info.items() if k not in ("iteration", "step") and not isinstance(v, bool)
            and isinstance(v, (int, float)) and math.isfinite(v)}


class TensorBoardCallback(TrainingCallback):
    """mlx-lm's ``TrainingCallback`` interface (and its callbacks' constructor) for TensorBoard: each
    report is one event at its step under LOG_DIR/tensorboard, tags named as the W&B keys."""

    def __init__(self, project_name, log_dir, config, wrapped_callback=None, purge_step: int | None = None):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.wrapped_callback, self._pb = wrapped_callback, event_pb2
        self.writer = EventFileWriter(str(Path(log_dir) / "tensorboard"), flush_secs=30)
        if purge_step:
            # A resumed run repeats the steps after its checkpoint: START at that step makes TensorBoard's
            # reader drop the earlier events from there on, as metrics.jsonl drops its rows.
            self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=purge_step,
                                                  session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START)))

    def log(self, values: dict, step: int) -> None:
        from tensorboard.compat.proto import summary_pb2
        vals = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in _numbers(values).items()]
        self.writer.add_event(self._pb.Event(wall_time=time.time(), step=int(step),
                                             summary=summary_pb2.Summary(value=vals)))

    def on_train_loss_report(self, train_info: dict):
        self.log(train_info, train_info["iteration"])
        if self.wrapped_callback:
            self.wrapped_callback.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict):
        self.log(val_info, val_info["iteration"])
        if self.wrapped_callback:
            self.wrapped_callback.on_val_loss_report(val_info)

    def close(self, exit_code: int = 0) -> None:
        self.writer.close()


@contextlib.contextmanager
def _wandb_env(out: Path, run_id: str):
    """W&B offline, on this run's id, with its files under OUT/wandb unless the user set these dirs
    or the mode; the environment is restored afterwards."""
    mode = os.environ.get("WANDB_MODE", "offline")
    own = {"WANDB_MODE": mode, "WANDB_SILENT": "true",
           "WANDB_CACHE_DIR": str(out / "wandb" / ".cache"), "WANDB_DATA_DIR": str(out / "wandb" / ".data")}
    if mode in ("offline", "dryrun", "disabled"):
        # Online, W&B needs the user's own settings (entity, host) from ~/.config/wandb.
        own["WANDB_CONFIG_DIR"] = str(out / "wandb" / ".config")
    forced = {"WANDB_RUN_ID": run_id, "WANDB_RESUME": "allow"}  # mlx-lm's callback takes no id: wandb.init reads these
    before = {k: os.environ.get(k) for k in [*own, *forced]}
    os.environ.update({**{k: v for k, v in own.items() if before[k] is None}, **forced})
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wandb_finish(exit_code: int) -> None:
    import wandb
    wandb.finish(exit_code=exit_code)
    # wandb-core outlives the run and keeps the env it started with: a second run in this process
    # (a recipe's next method, a test) must start its own, logging into its own directory.
    wandb.teardown()


def _new_id() -> str:
    """A W&B run id (8 of [a-z0-9], as wandb makes them): chosen here, so it is saved before the run opens."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def run_name(out: Path) -> str:
    """The run directory as the user would name it: relative to the working directory when inside it
    (a recipe's methods all train into METHOD/train, so the basename alone would not tell them apart)."""
    rel = os.path.relpath(out.resolve())
    return rel if not rel.startswith("..") else "/".join(out.resolve().parts[-3:])


def _open_wandb(run, state: dict, wrapped):
    import wandb
    from mlx_lm.tuner.callbacks import WandBCallback

    st = state["wandb"]
    st.setdefault("project", run.cfg.project_name or DEFAULT_PROJECT)
    st["name"] = run_name(run.out)
    atomic_write_json(run.out / STATE, state)  # the id first: a run killed during init still resumes onto it
    cb = WandBCallback(st["project"], str(run.out), dataclasses.asdict(run.cfg), wrapped)
    wandb.run.name = st["name"]  # mlx-lm names the run after the directory's basename
    run.say(f"W&B run {st['id']} ({os.environ['WANDB_MODE']}) in {run.out / 'wandb'}"
            + (f"; upload it with: wandb sync {run.out / 'wandb'}" if os.environ["WANDB_MODE"] == "offline" else ""))
    return cb, _wandb_finish


def _open_tensorboard(run, state: dict, wrapped):
    state["tensorboard"] = {"logdir": "tensorboard"}
    cb = TensorBoardCallback(run.cfg.project_name, str(run.out), None, wrapped, purge_step=run.start + 1 if run.start
                             else None)
    run.say(f"TensorBoard events in {run.out / 'tensorboard'} (tensorboard --logdir {run.out / 'tensorboard'})")
    return cb, cb.close


OPEN = {"wandb": _open_wandb, "tensorboard": _open_tensorboard}


class _Reports(TrainingCallback):
    """What a tracked finetune reports to: the trackers get the numbers (mlx-lm's chain, each callback
    wrapping the one before), the caller's own callback the reports unchanged."""

    def __init__(self, chain, forward):
        self.chain, self.forward = chain, forward

    def on_train_loss_report(self, info: dict):
        self.chain.on_train_loss_report({"iteration": info["iteration"], **_numbers(info)})
        if self.forward:
            self.forward.on_train_loss_report(info)

    def on_val_loss_report(self, info: dict):
        self.chain.on_val_loss_report({"iteration": info["iteration"], **_numbers(info)})
        if self.forward:
            self.forward.on_val_loss_report(info)


@contextlib.contextmanager
def tracked(run, callback=None):
    """The callback a finetune reports to: ``callback`` alone, or with the trackers of
    ``run.cfg.report_to`` in front (the main process only); they are closed when the block ends,
    with a failed exit code when it raised."""
    cfg, out = run.cfg, run.out
    if not cfg.report_to or not run.main:
        yield callback
        return
    state = read_json(out / STATE) if (out / STATE).is_file() else {}
    if "wandb" in cfg.report_to:
        state.setdefault("wandb", {}).setdefault("id", _new_id())
    env = _wandb_env(out, state["wandb"]["id"]) if "wandb" in cfg.report_to else contextlib.nullcontext()
    chain, closers, exit_code = None, [], 1
    with env:
        try:
            for name in cfg.report_to:
                chain, close = OPEN[name](run, state, chain)
                closers.append(close)
            atomic_write_json(out / STATE, state)
            yield _Reports(chain, callback)
            exit_code = 0
        finally:
            for close in reversed(closers):
                close(exit_code)
    if exit_code == 0:
        state["step"] = run.step  # where eval scores go (log_scores)
        atomic_write_json(out / STATE, state)


def log_scores(run_dir, scores: dict) -> list[str]:
    """Eval's headline ``scores`` into the tracker runs of the finetune that wrote ``run_dir``, at its
    last step: W&B reopens that run by id (history and summary), TensorBoard adds an event file to
    the same logdir. Returns the trackers written; the same scores are not logged twice (a recipe
    run again serves its eval from cache), and a tracker no longer installed is left out."""
    run_dir = Path(run_dir)
    if not (run_dir / STATE).is_file():
        return []
    state = read_json(run_dir / STATE)
    vals = {f"eval/{k}": v for k, v in _numbers(scores).items()}
    key = json.dumps(vals, sort_keys=True)
    if not vals or state.get("eval_logged") == key:
        return []
    step, done = int(state.get("step") or 0), []
    if "wandb" in state and importlib.util.find_spec("wandb"):
        import wandb
        st = state["wandb"]
        with _wandb_env(run_dir, st["id"]):
            wandb.init(project=st["project"], id=st["id"], resume="allow", dir=str(run_dir), name=st["name"])
            wandb.log(vals, step=step)
            wandb.run.summary.update(vals)
            _wandb_finish(0)
        done.append("wandb")
    if "tensorboard" in state and importlib.util.find_spec("tensorboard"):
        tb = TensorBoardCallback(None, run_dir, None)
        tb.log(vals, step)
        tb.close()
        done.append("tensorboard")
    state["eval_logged"] = key
    atomic_write_json(run_dir / STATE, state)
    return done
