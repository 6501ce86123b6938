"""Peak memory per stage, estimated from the model's dimensions before any work, and the machine's budget.

A recipe that cannot fit should fail at ``--check``, not after an hour of generation. Each
estimate adds up what a stage holds at its peak:

- weights at the dtype the stage runs them (quantized: bits per weight plus a float16 scale and
  bias per group; the CPU dequantizes to float32 at load, see models/loader.py);
- finetune: LoRA/DoRA parameters with their gradients and Adam's two moments (float32), the
  activations backward needs (every block's, or with grad_checkpoint each block's input plus one
  block recomputed), and the sliced logits with their cross-entropy at batch x max_seq_len;
- generate and eval: the KV cache at batch x (prompt + new tokens), and prefill's transients;
  eval's self-retention scores next to it with full-vocabulary logits.

The per-token coefficients count the tensors an MLX llama block keeps for backward and were
checked against mx.get_peak_memory on the offline models (BENCHMARKS.md, bench/bench_memory.py).
The finetune and eval estimates are upper bounds on the data side: every batch as long as
max_seq_len, every position taking a loss.

The budget is Metal's recommended working set on a Mac (what MLX may keep resident without
swapping), elsewhere the RAM available now. ``--fit-for mac-16gb`` estimates for another machine.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import models
from .fileio import UserError

GB = 1e9
PROMPT_TOKENS = 256  # a long translation or explain prompt with its chat template (ALMA's longest rows)
KV_STEP = 256  # mlx-lm's KVCache grows in steps of this many positions

# The recipes' hub models, for a --check before the first download (their config.json values).
KNOWN = {
    "mlx-community/Llama-2-7b-chat-mlx-4bit": dict(
        model_type="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
        intermediate_size=11008, vocab_size=32000, tie_word_embeddings=False,
        quantization={"group_size": 64, "bits": 4}),
    "mlx-community/Mistral-7B-Instruct-v0.2-4bit": dict(
        model_type="mistral", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, vocab_size=32000, tie_word_embeddings=False,
        quantization={"group_size": 64, "bits": 4}),
    "mlx-community/Qwen2.5-1.5B-Instruct-4bit": dict(
        model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
        intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True,
        quantization={"group_size": 64, "bits": 4}),
}


# ---------------------------------------------------------------- the model's dimensions

class DimsMissing(UserError):
    """A config.json without the sizes an estimate needs."""


@dataclass(frozen=True)
class Dims:
    """What memory depends on, from a model's config.json."""
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    bits: int | None = None  # quantized weights
    group_size: int = 64
    stored_bytes: int | None = None  # the weight files' size, when they are on disk
    source: str = ""  # where the dimensions came from

    @classmethod
    def from_config(cls, c: dict, source: str, stored_bytes: int | None = None) -> "Dims":
        try:
            heads = int(c["num_attention_heads"])
            hidden = int(c["hidden_size"])
            q = c.get("quantization") or c.get("quantization_config") or {}
            return cls(hidden, int(c["num_hidden_layers"]), heads, int(c.get("num_key_value_heads") or heads),
                       int(c.get("head_dim") or hidden // heads), int(c["intermediate_size"]), int(c["vocab_size"]),
                       bool(c.get("tie_word_embeddings", False)), q.get("bits"), int(q.get("group_size", 64)),
                       stored_bytes, source)
        except (KeyError, TypeError, ValueError) as e:
            raise DimsMissing(f"{source}: config.json lacks a dimension the memory estimate needs ({e})") from None

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each linear layer of one block, by mlx-lm's key."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
                "self_attn.o_proj": (q, h), "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i), "mlp.down_proj": (i, h)}

    @property
    def block_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes().values()) + 2 * self.hidden

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden


def _config_dir(model: str | None, dtype: str) -> Path | None:
    """A local model directory for ``model`` (offline names are converted once, as loading would), or None."""
    local = str(model).endswith(".gguf") or Path(str(model)).expanduser().exists()
    if models.offline.offline_model(model) is not None or local:
        return Path(models.resolve(model, dtype))
    return None


def _hub_cached(repo: str) -> Path | None:
    """The snapshot folder of a hub model in the Hugging Face cache, when its config.json is there."""
    try:
        from huggingface_hub import try_to_load_from_cache
        p = try_to_load_from_cache(repo, "config.json")
    except Exception:  # an id the hub client rejects: resolve() has named the problem already
        return None
    return Path(p).parent if isinstance(p, str) else None


def model_dims(model: str | None, dtype: str = "auto") -> Dims | None:
    """The dimensions of ``model``: a local dir, an offline name, the HF cache, else the recipes'
    table (KNOWN); None when none of these has it (a hub id not downloaded yet)."""
    models.resolve(model, dtype)  # a malformed id fails here, with resolve's message
    folder = _config_dir(model, dtype)
    if folder is None:
        folder = _hub_cached(str(model))
    if folder is not None:
        files = sorted(folder.glob("*.safetensors"))
        size = sum(f.stat().st_size for f in files) if files else None
        return Dims.from_config(json.loads((folder / "config.json").read_text()), str(folder / "config.json"), size)
    if model in KNOWN:
        return Dims.from_config(KNOWN[model], f"{model} (radis-mlx's table; not downloaded yet)")
    return None


# ---------------------------------------------------------------- where it runs, and its budget

@dataclass(frozen=True)
class Target:
    """The machine an estimate is for: its device ("gpu": Metal; "cpu") and its memory budget."""
    device: str
    budget: int
    what: str

    def runs_as(self, dtype: str) -> str:
        """dtype "auto" as loading resolves it on this device (backend.resolve_dtype)."""
        return dtype if dtype != "auto" else ("float32" if self.device == "cpu" else "keep")


def _metal_budget() -> int | None:
    import mlx.core as mx
    try:
        info = mx.device_info() if hasattr(mx, "device_info") else mx.metal.device_info()
        return int(info["max_recommended_working_set_size"])
    except Exception:  # no Metal, or an MLX without this key
        return None


def _available_ram() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def this_machine() -> Target:
    import mlx.core as mx
    if mx.default_device().type == mx.gpu:
        b = _metal_budget()
        if b:
            return Target("gpu", b, f"this Mac's Metal working set ({b / GB:.1f} GB)")
    b = _available_ram()
    return Target("cpu", b, f"this machine's available RAM ({b / GB:.1f} GB)")


def mac_working_set(total_gb: float) -> int:
    """Metal's recommended working set on a Mac with this much memory: about two-thirds of it up to
    32 GB (10.7 GiB on 16 GB), three-quarters above (macOS's default GPU wired limit)."""
    share = 2 / 3 if total_gb <= 32 else 3 / 4
    return int(total_gb * 2 ** 30 * share)


FIT_FOR_ENV = "RADIS_MLX_FIT_FOR"


def parse_target(spec: str | None = None) -> Target | None:
    """``--fit-for`` (else $RADIS_MLX_FIT_FOR): "here" (this machine, the default), "mac-16gb" (a Mac
    with 16 GB), "cpu-24gb", or "off" (no memory check: None)."""
    spec = spec or os.environ.get(FIT_FOR_ENV) or "here"
    if spec.strip().lower() == "off":
        return None
    if spec.strip().lower() == "here":
        return this_machine()
    m = re.fullmatch(r"(mac|cpu)-(\d+(?:\.\d+)?)gb", spec.strip().lower())
    if not m:
        raise UserError(f"--fit-for (or ${FIT_FOR_ENV}) {spec!r}: expected here, mac-NNgb (e.g. mac-16gb), "
                        "cpu-NNgb or off")
    gb = float(m.group(2))
    if m.group(1) == "mac":
        b = mac_working_set(gb)
        return Target("gpu", b, f"a {gb:g} GB Mac's Metal working set ({b / GB:.1f} GB)")
    return Target("cpu", int(gb * GB), f"{gb:g} GB of RAM")


# ---------------------------------------------------------------- the estimates

@dataclass
class Estimate:
    """A stage's estimated peak, by part; ``knob``: the setting that shrinks it most."""
    stage: str
    parts: dict = field(default_factory=dict)
    knob: str = ""
    note: str = ""

    @property
    def total(self) -> int:
        return int(sum(self.parts.values()))

    def line(self) -> str:
        if not self.parts:
            return f"{self.stage}: estimate unavailable ({self.note})"
        parts = ", ".join(f"{k} {v / GB:.2f}" for k, v in self.parts.items() if v >= 0.005 * GB)
        return f"{self.stage}: ~{self.total / GB:.1f} GB ({parts})"


def weight_bytes(d: Dims, dtype: str) -> int:
    """The weights at the dtype a stage runs them: "keep" as stored (quantized or not), else every
    element at that float width."""
    if dtype == "keep":
        if d.stored_bytes:
            return d.stored_bytes
        if d.bits:  # mlx-lm quantizes every linear layer and the embedding; norms stay float16
            per = d.bits / 8 + 4 / d.group_size
            return int((d.params - (2 * d.layers + 1) * d.hidden) * per + 2 * (2 * d.layers + 1) * d.hidden)
        return 2 * d.params
    return (4 if dtype == "float32" else 2) * d.params


def act_bytes(d: Dims, dtype: str) -> int:
    """Bytes of one activation element: float32 on the CPU, the scales' float16 for a kept quantized model."""
    return 4 if dtype == "float32" else 2


def trained_params(d: Dims, cfg) -> int:
    """Parameters finetune trains: LoRA/DoRA matrices (or whole blocks), and the embeddings if asked."""
    n_blocks = d.layers if cfg.num_layers == -1 else min(cfg.num_layers, d.layers)
    extra = d.vocab * d.hidden * (1 if d.tied else 2) if cfg.train_embeddings else 0
    if cfg.fine_tune_type == "full":
        return n_blocks * d.block_params + extra
    shapes = d.linear_shapes()
    keys = [k for k in shapes if not cfg.lora_keys or k in cfg.lora_keys]
    dora = cfg.fine_tune_type == "dora"
    per_block = sum(cfg.lora_rank * (shapes[k][0] + shapes[k][1]) + (shapes[k][1] if dora else 0)
                    for k in keys)
    return n_blocks * per_block + extra


def _block_tokens(d: Dims, device: str = "cpu") -> int:
    """Activation elements one block keeps per token for backward: its input and normed inputs, the
    residual, q/k/v after rope and the attention output, and the MLP's projections. mlx-lm's swiglu is
    compiled, so on Metal SiLU's intermediates are recomputed (three intermediate-sized tensors, counted);
    on the CPU, with its swapped SiLU (runtime/kernels.py), four fit the measured peaks (BENCHMARKS.md)."""
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    return 4 * d.hidden + 2 * q + 2 * kv + (4 if device == "cpu" else 3) * d.intermediate


def finetune_estimate(d: Dims, cfg, target: Target) -> Estimate:
    dtype = target.runs_as(cfg.dtype)
    a = act_bytes(d, dtype)
    B, L = cfg.batch_size, cfg.max_seq_len
    tokens = B * L
    # Each trained parameter, its gradient and Adam's two moments (+ the accumulated gradient); LoRA
    # matrices are float32 whatever the model's dtype, whole blocks keep theirs.
    n = trained_params(d, cfg)
    width = 4 if cfg.fine_tune_type != "full" or dtype == "float32" else 2
    trained = n * width * (4 + (cfg.grad_accum > 1))
    block = tokens * _block_tokens(d, target.device) * a
    # Attention scores: the CPU materialises softmax(QK^T) per block (kept for backward); Metal's fused
    # attention recomputes them in backward, one block at a time.
    scores = B * d.heads * L * L * 4
    # The head's output, its log-softmax, the softmax and the gradient, at every position: four copies
    # (measured on the CPU: 16.8 bytes an element in float32, BENCHMARKS.md).
    logits = tokens * d.vocab * 4 * a
    parts = {"weights": weight_bytes(d, dtype), "trainable + Adam": trained}
    if cfg.grad_checkpoint:
        # Each block's input and output kept; the logits are gone before the first block is recomputed,
        # so the larger of the two adds to them.
        parts["activations"] = d.layers * tokens * 2 * d.hidden * a
        parts["logits or one block"] = max(logits, block + scores)
    else:
        parts["activations"] = d.layers * block + (d.layers if target.device == "cpu" else 1) * scores
        parts["logits"] = logits
    return Estimate(f"finetune (batch {B} x {L} tokens)", parts, knob="batch_size")


def kv_bytes(d: Dims, batch: int, positions: int, dtype: str, step: int = KV_STEP) -> int:
    """Keys and values of every block for ``positions`` (mlx-lm's KVCache rounds up to ``step``)."""
    ctx = -(-positions // step) * step
    return 2 * d.layers * d.kv_heads * d.head_dim * batch * ctx * act_bytes(d, dtype)


def decode_estimate(d: Dims, stage: str, batch: int, new_tokens: int, dtype: str, knob: str,
                    prompt: int = PROMPT_TOKENS, prefill_tokens: int = 2048) -> Estimate:
    """Batched decoding (runtime/decode.py): the batch's KV cache (sized to prompt + new tokens at
    once, so never regrown), which a joining wave of rows copies whole (twice it at that moment), and
    prefill's one block of activations and attention scores."""
    a = act_bytes(d, dtype)
    kv = kv_bytes(d, batch, prompt + new_tokens + 1, dtype, step=1)
    rows = max(1, prefill_tokens // prompt)
    prefill = prefill_tokens * _block_tokens(d) * a + rows * d.heads * prompt * prompt * 4
    return Estimate(f"{stage} (batch {batch}, {prompt}+{new_tokens} tokens)", {
        "weights": weight_bytes(d, dtype), "KV cache": 2 * kv, "prefill": prefill,
        "logits": batch * d.vocab * 4 * 2}, knob=knob)


def generate_estimate(d: Dims, cfg, target: Target) -> Estimate:
    return decode_estimate(d, "generate", cfg.batch_size, cfg.max_tokens, target.runs_as(cfg.dtype), "batch_size")


def eval_estimate(d: Dims, cfg, target: Target, longest: int = 512) -> Estimate:
    """The eval's decoding (every suite's prompts in one batch, ``longest``: their largest max_tokens)
    or its self-retention NLL (full-vocabulary logits for nll_batch_tokens positions), whichever is larger."""
    dtype = target.runs_as(cfg.dtype)
    est = decode_estimate(d, "eval", cfg.batch_size, longest, dtype, "batch_size")
    if "retention" in cfg.suites:
        nll = weight_bytes(d, dtype) + cfg.nll_batch_tokens * (d.vocab * (act_bytes(d, dtype) + 8)
                                                                 + _block_tokens(d) * act_bytes(d, dtype))
        if nll > est.total:
            return Estimate(f"eval (retention NLL, {cfg.nll_batch_tokens} tokens a batch)", {
                "weights": weight_bytes(d, dtype), "logits": nll - weight_bytes(d, dtype)}, knob="nll_batch_tokens")
    return est


# ---------------------------------------------------------------- the verdict

ESTIMATORS = {"generate": generate_estimate, "finetune": finetune_estimate, "eval": eval_estimate}


def estimate(kind: str, cfg, model: str | None, target: Target, **extra) -> Estimate:
    """A stage's estimate (``kind``: generate, finetune, eval; ``extra``: the estimator's own
    arguments) for ``model``; without its dimensions (a hub id not downloaded yet, not in KNOWN),
    an Estimate that says so and holds no parts."""
    try:
        d = model_dims(model, target.runs_as(cfg.dtype))
    except DimsMissing as e:  # not a model config we can size: the load names what is wrong with it
        return Estimate(kind, note=str(e))
    if d is None:
        return Estimate(kind, note=f"{model} is not downloaded yet; its config.json is read once it is "
                        "in the Hugging Face cache")
    return ESTIMATORS[kind](d, cfg, target, **extra)


def require_fit(kind: str, cfg, model: str | None, where: str = "") -> Estimate | None:
    """A stage's own check before its work (plain `finetune`, `generate`): refuse what cannot fit."""
    target = parse_target()
    if target is None:
        return None
    est = estimate(kind, cfg, model, target)
    check_fits([(est, where)], target)
    return est

def check_fits(estimates: list[tuple[Estimate, str]], target: Target) -> None:
    """Refuse the first estimate over the budget, naming the setting to lower (``where``: the
    recipe section or flag that holds it)."""
    for est, where in estimates:
        if est.parts and est.total > target.budget:
            knob = where or est.knob
            raise UserError(f"{est.line()} does not fit {target.what}: lower {knob} (or the lengths: max_seq_len, "
                            f"max_tokens), or use a smaller model; ${FIT_FOR_ENV}=off skips this check")
