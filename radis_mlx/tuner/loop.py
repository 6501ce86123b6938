"""Stage 2 (`radis-mlx finetune`): LoRA / DoRA / full fine-tuning with the RaDis loss (losses.py).

Why a loop of our own and not ``mlx_lm.tuner.trainer.train``: mlx-lm's loop restarts its batch
iterator and optimizer on resume (only the adapter weights are reloaded), validates one loss over
a sample of batches, and always computes the full vocabulary head. Here a killed run resumes
*exactly* (optimizer state, RNG state and the data position are checkpointed, so kill -9 and
resume equal one clean run), validation reports the loss per segment (reference, rationale,
end-of-turn) over the whole set, and the head runs only where a loss is taken. What mlx-lm does
serve is used: its LoRA/DoRA layers, grad_checkpoint and adapter format (trainable.py), its
``TrainingCallback`` protocol for reporting (``MetricsLog`` is one; pass yours as
``training_callback``; ``--report-to`` puts mlx-lm's W&B callback and a TensorBoard one in front, see
tracking.py), and ``default_loss``, which the loss equals at w_rat=0.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlx_lm.tuner.trainer import TrainingCallback

from .. import __version__, memory, methods
from ..tracking import tracked
from ..runtime.kernels import patch_cpu_kernels
from ..fileio import UserError, atomic_write_json, atomic_write_text, read_json
from ..models.fuse import fuse_into
from ..models.modelfile import write_generation_stops
from ..outdir import claim_if_main
from ..progress import Progress
from .batching import BatchPlan, batch_arrays, padding_share, shape_policy
from .checkpoint import (config_diff, list_checkpoints, load_checkpoint, prepare_out, save_checkpoint,
                         trainable_weights)
from .config import FinetuneConfig, config_hash
from .datasets import load_data
from .losses import make_loss, segment_counts, segment_weights, validation_losses
from .metrics import MetricsLog, plot_losses
from ..runtime.memory import check_fits, memory_gb, wire_for_training
from .trainable import (adapter_config, build_optimizer, checkpoint_blocks, preflight_quantized_base, save_adapters,
                        setup_model, write_adapter_config)


def finetune(cfg: FinetuneConfig, on_step=None, training_callback: TrainingCallback | None = None) -> dict:
    """Train; returns a summary dict (also OUT/summary.json). ``on_step(step, metrics)`` is called
    after every optimizer step (tests use it to simulate a kill)."""
    import mlx.core as mx

    cfg.validate()
    memory.require_fit("finetune", cfg, cfg.model, "--batch-size")  # before any data or model is read
    t_start = time.perf_counter()
    world = mx.distributed.init()
    if cfg.batch_size % world.size():
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the {world.size()} processes")
    preflight_quantized_base(cfg)  # before the run directory exists
    with claim_if_main(cfg.out):  # one writer per output
        if world.rank() == 0:
            prepare_out(Path(cfg.out), cfg)
        return _finetune(cfg, world, t_start, on_step, training_callback)


def _finetune(cfg: FinetuneConfig, world, t_start: float, on_step, training_callback) -> dict:
    import mlx.core as mx

    loaded, model, split = setup_model(cfg)
    fast = cfg.fast_exp if cfg.fast_exp is not None else mx.default_device().type == mx.cpu
    restores = [patch_cpu_kernels(model) if fast else None]
    try:
        restores.append(checkpoint_blocks(model) if cfg.grad_checkpoint else None)
        limit, unwire = wire_for_training(cfg.memory_limit_gb)
        restores.append(unwire)
        run = _start(cfg, world, loaded, model, split, fast, restores[0] is not None)
        run.memory_limit = limit
        steps = _compile_steps(cfg, run, make_loss(split, fast_ce=fast))
        with tracked(run, training_callback) as callback:
            log = MetricsLog(run, callback)
            _loop(run, steps, log, on_step)
            return _finish(run, log, t_start)
    finally:
        for restore in reversed(restores):
            if restore:
                restore()


@dataclass
class _Run:
    """One training run's state: what trains, on what, and where it stands. Between steps (``clean``)
    model, optimizer, step and position agree, so a checkpoint can be taken."""
    cfg: FinetuneConfig
    out: Path
    world: object
    loaded: object
    model: object
    optimizer: object
    data: dict
    plan: BatchPlan
    total: int
    info: dict  # what a checkpoint must match to resume: settings and data hashes
    summary: dict
    pad: int = 1
    head_pad: int = 1
    step: int = 0
    position: int = 0  # global micro-batches consumed
    best: dict = field(default_factory=lambda: {"value": None, "step": None})
    start: int = 0
    last_saved: int = 0
    last_val: dict | None = None
    clean: bool = True
    tokens: int = 0  # processed since step 0, across resumes: the run's cost even when it was interrupted
    memory_limit: int | None = None  # bytes a step's peak must stay under (runtime/memory.py)

    @property
    def main(self) -> bool:
        return self.world.rank() == 0

    def say(self, *a) -> None:
        if self.main and not self.cfg.quiet:
            print(*a, flush=True)

    def checkpoint(self) -> None:
        if self.main:
            save_checkpoint(self.out, self.step, self.model, self.optimizer,
                            {**self.info, "position": self.position, "best": self.best, "time": time.time(),
                             "tokens": self.tokens},
                            self.cfg.keep_checkpoints)
        self.last_saved = self.step


def _start(cfg: FinetuneConfig, world, loaded, model, split, fast: bool, patched: bool) -> _Run:
    """Data, batch plan, optimizer and the resume point; writes config.yaml and adapter_config.json."""
    out = Path(cfg.out)
    quiet = cfg.quiet or world.rank() != 0
    data = load_data(cfg, loaded.tokenizer, (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True)))
    plan = BatchPlan(data["main"], cfg.batch_size, cfg.seed, extra=data["extra"],
                     ratio=cfg.replay_ratio if data["extra"] else 0.0, bucket=cfg.bucket)
    total = cfg.iters or max(1, math.ceil(cfg.epochs * plan.per_epoch / cfg.grad_accum))
    optimizer = build_optimizer(cfg, total)
    optimizer.init(model.trainable_parameters())
    traj = cfg.trajectory()
    info = {"config_hash": config_hash(traj), "config": traj, "data_hash": data["hash"], "version": __version__}
    compiled, pad, head_pad = shape_policy(cfg)
    run = _Run(cfg, out, world, loaded, model, optimizer, data, plan, total, info, {}, pad, head_pad)
    if cfg.resume:
        _resume(run)
    n_train = sum(v.size for v in trainable_weights(model).values())
    pad_share = padding_share(plan, 1, pad, cfg.max_seq_len)
    run.summary = {
        "out": str(out), "method": cfg.method, "fine_tune_type": cfg.fine_tune_type, "steps": total,
        "batches_per_epoch": plan.per_epoch, "epochs": round(total * cfg.grad_accum / plan.per_epoch, 3),
        "examples": len(data["main"]), "extra_examples": len(data["extra"]), "val_examples": len(data["val"]),
        "data": data["stats"], "data_hash": data["hash"], "generate_meta_hashes": data["meta_hashes"],
        "trainable_parameters": n_train, "padding_share": round(pad_share, 4), "head_sliced": split is not None,
        "fast_exp": fast, "kernels_patched": patched, "compiled": compiled, "pad_multiple": pad,
        "processes": world.size()}
    if run.main:
        import yaml
        atomic_write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False,
                                                              allow_unicode=True))
        write_adapter_config(out, adapter_config(cfg, loaded.path, total))
    d = data["stats"]["main"]
    n_extra = f" + {len(data['extra'])} extra" if data["extra"] else ""
    run.say(f"finetune {cfg.method}/{cfg.fine_tune_type}: {len(data['main'])} examples{n_extra}, "
            f"{len(data['val'])} val; {d['truncated']} truncated, {d['dropped_too_long']} dropped (too long); "
            f"{total} steps; padding {pad_share:.1%}; {n_train / 1e6:.2f}M trainable; head sliced: {split is not None}")
    return run


def _resume(run: _Run) -> None:
    """Continue from the newest checkpoint, refusing one written with other settings or data."""
    ckpts = list_checkpoints(run.out)
    if not ckpts:
        return
    saved = read_json(run.out / "checkpoints" / f"step-{ckpts[-1]:07d}.json")
    if saved.get("config_hash") != run.info["config_hash"]:
        raise UserError(f"cannot resume {run.out}: settings differ from the checkpoint's: "
                        f"{config_diff(saved.get('config', {}), run.info['config'])}")
    if saved.get("data_hash") != run.info["data_hash"]:
        raise UserError(f"cannot resume {run.out}: the training data (or tokenizer/template) changed since the "
                        f"checkpoint (data hash {saved.get('data_hash')} -> {run.info['data_hash']})")
    saved = load_checkpoint(run.out, ckpts[-1], run.model, run.optimizer)
    run.start, run.position, run.best = saved["step"], saved["position"], saved.get("best", run.best)
    run.tokens = saved.get("tokens", 0)
    run.step = run.last_saved = run.start
    run.say(f"resuming {run.out} from step {run.start}/{run.total}")


@dataclass
class _Steps:
    grad: object  # (inputs, targets, weights, segments, positions) -> (loss, segment sums, gradients)
    apply: object  # (summed gradients, summed loss) -> (global loss, gradient norm); updates the model
    eval: object  # the same arrays -> per-segment CE sums
    state: list


def _compile_steps(cfg: FinetuneConfig, run: _Run, loss_fn) -> _Steps:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.nn.utils import average_gradients

    model, optimizer, size = run.model, run.optimizer, run.world.size()
    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state, mx.random.state]

    def grad_step(*arrays):
        (loss, seg), grads = loss_and_grad(model, *arrays)
        return loss, seg, grads

    def apply_step(grads, loss):
        # Each rank's weights are pre-scaled by the world size, so the average is the global gradient.
        grads = average_gradients(grads)
        loss = mx.distributed.all_sum(loss) / size if size > 1 else loss
        if cfg.max_grad_norm:
            grads, norm = optim.clip_grad_norm(grads, cfg.max_grad_norm)
        else:
            norm = mx.array(0.0)
        optimizer.update(model, grads)
        return loss, norm

    def eval_step(*arrays):
        return loss_fn(model, *arrays)[1]

    if run.summary["compiled"]:
        grad_step, apply_step, eval_step = (mx.compile(f, inputs=state, outputs=state)
                                            for f in (grad_step, apply_step, eval_step))
    return _Steps(grad_step, apply_step, eval_step, state)


def _loop(run: _Run, steps: _Steps, log: "MetricsLog", on_step) -> None:
    """The training loop: one optimizer step per iteration, reports, validation and checkpoints."""
    import mlx.core as mx

    cfg = run.cfg
    prog = Progress(run.total - run.start, desc="finetune" + (f" (from step {run.start})" if run.start else ""),
                    unit="steps", enabled=run.main and not cfg.quiet)
    try:
        log.event("resume" if run.start else "start")
        mx.eval(run.model.parameters(), run.optimizer.state)
        mx.reset_peak_memory()
        if run.start == 0:
            _validate(run, steps, log)
        while run.step < run.total:
            tic = time.perf_counter()
            run.clean = False
            loss, norm, n_tok, trained = _train_step(run, steps)
            run.step += 1
            if not math.isfinite(loss):
                good = list_checkpoints(run.out)
                raise UserError(f"loss is {loss} at step {run.step}: training stopped; the last good checkpoint is "
                                + (f"{run.out}/checkpoints/step-{good[-1]:07d}" if good else "none (none saved yet)")
                                + "; lower --lr, raise --warmup or set --max-grad-norm")
            run.clean = True
            check_fits(run.memory_limit, run.step)
            log.step(run.step, loss, norm, n_tok, trained, time.perf_counter() - tic, prog)
            run.tokens += n_tok
            if cfg.steps_per_eval and run.step % cfg.steps_per_eval == 0 and run.step < run.total:
                _validate(run, steps, log)
            if cfg.save_every and run.step % cfg.save_every == 0:
                run.checkpoint()
            if on_step is not None:
                on_step(run.step, {"loss": loss})
        prog.close()
        if run.data["val"] and (run.last_val is None or run.last_val["step"] != run.step):
            _validate(run, steps, log)
        if run.last_saved != run.step:
            run.checkpoint()
    except KeyboardInterrupt:
        prog.close()
        if run.world.size() == 1 and run.clean and run.step > run.last_saved and run.main:
            run.checkpoint()
            run.say(f"interrupted at step {run.step}: checkpoint saved; rerun with --resume to continue")
        raise
    finally:
        log.close()


def _train_step(run: _Run, steps: _Steps) -> tuple[float, object, int, int]:
    """One optimizer step over ``grad_accum`` global micro-batches: (loss, grad norm, tokens, trained tokens).
    The segment weights come from the whole step's counts, so accumulation equals one big batch."""
    import mlx.core as mx
    from mlx.utils import tree_map

    cfg, plan = run.cfg, run.plan
    rank, size = run.world.rank(), run.world.size()
    micro = []
    for _ in range(cfg.grad_accum):
        micro.append([plan.examples[i] for i in plan.at(run.position)])
        run.position += 1
    counts = segment_counts([e for m in micro for e in m])
    seg_w = segment_weights(counts, cfg.w_ref, cfg.w_rat, cfg.normalize)
    acc = loss_acc = None
    n_tok = 0
    for m in micro:
        arrays, _ = batch_arrays(m[rank::size], seg_w, float(size), run.pad, cfg.max_seq_len, run.head_pad)
        loss, _, grads = steps.grad(*arrays)
        acc = grads if acc is None else tree_map(lambda a, g: a + g, acc, grads)
        loss_acc = loss if loss_acc is None else loss_acc + loss
        n_tok += sum(len(e) - 1 for e in m)
        if cfg.grad_accum > 1 or cfg.grad_checkpoint:
            # The gradients before the update: evaluated in one graph with the clipping and the optimizer
            # step, checkpointed blocks were recomputed several at a time (SmolLM2, batch 8 x 256: a
            # 3.5 GB peak against 2.0; BENCHMARKS.md, "Memory").
            mx.eval(acc, loss_acc)
    loss, norm = steps.apply(acc, loss_acc)
    mx.eval(steps.state, loss, norm)
    return loss.item(), norm, n_tok, int(counts[1:].sum())


def _validate(run: _Run, steps: _Steps, log: "MetricsLog") -> None:
    """Validation losses now; the best adapters so far are kept as best_adapters.safetensors."""
    if not run.data["val"]:
        return
    cfg = run.cfg
    r = {"step": run.step, **validation_losses(run.model, steps.eval, run.data["val"], cfg, run.world, run.pad,
                                               run.head_pad)}
    log.on_val_loss_report(r)
    v = r[cfg.best_metric]
    if run.main and v is not None and (run.best["value"] is None or v < run.best["value"]):
        run.best = {"value": v, "step": run.step, "metric": cfg.best_metric}
        save_adapters(run.out, run.model, cfg.fine_tune_type, "best_")
    run.last_val = r


def _finish(run: _Run, log: MetricsLog, t_start: float) -> dict:
    """The final adapters (and a fused model when asked), the loss plot and summary.json."""
    out, cfg = run.out, run.cfg
    if run.main:
        save_adapters(out, run.model, cfg.fine_tune_type)
        plot_losses(out)
    fused = None
    if cfg.fuse and run.main:
        fused = out / "fused"
        fuse_into(fused, run.loaded, run.model, cfg.fuse_bits)
        write_generation_stops(fused, run.loaded.tokenizer, methods.runtime_stops(run.loaded.tokenizer, cfg.method))
    t = log.totals
    run.summary.update({
        "steps_this_run": run.step - run.start, "train_loss_first": log.first_loss,
        "train_loss_last": log.last_loss, "val": run.last_val, "best": run.best, "tokens_this_run": t["tokens"],
        "tokens": run.tokens,
        "trained_tokens_this_run": t["trained"],
        "tok_s": round(t["tokens"] / t["time"], 1) if t["time"] else None,
        "trained_tok_s": round(t["trained"] / t["time"], 1) if t["time"] else None,
        **{f"{k.removesuffix('_gb')}_mem_gb": v for k, v in memory_gb().items()},  # active, cache, peak
        "wall_s": round(time.perf_counter() - t_start, 1),
        "adapters": str(out / "adapters.safetensors"), "fused": str(fused) if fused else None})
    if run.main:
        atomic_write_json(out / "summary.json", run.summary)
    return run.summary
