"""Stage 2, finetune: LoRA / DoRA / full fine-tuning with the RaDis loss.

``config`` (settings) -> ``datasets`` (rows and files -> targets -> token examples with segments) ->
``batching`` (resumable length-bucketed batches) -> ``losses`` (the per-segment loss) -> ``loop`` (the
training loop; ``trainable`` sets up what trains, ``checkpoint`` owns the run directory, ``metrics``
its logs). What a target is lives below the stages (``radis_mlx.targets``), and folding the adapters
into the weights is the models' (``models.fuse``).

Nothing below the stages imports the tuner. The face defers the loop and its logs (and MLX and mlx-lm with it) to
the first use of ``finetune``, so `radis-mlx --help`, which builds its options from ``FinetuneConfig``,
starts without them.
"""

from .checkpoint import output_status, restart_settings, settings_changed, training_cost
from .config import FinetuneConfig, load_config


def __getattr__(name: str):
    if name == "finetune":
        from .loop import finetune
        return finetune
    if name == "format_summary":
        from .metrics import format_summary
        return format_summary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["FinetuneConfig", "finetune", "format_summary", "load_config", "output_status", "restart_settings",
           "settings_changed", "training_cost"]
