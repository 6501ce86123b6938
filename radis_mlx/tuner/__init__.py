"""Stage 2, finetune: LoRA / DoRA / full fine-tuning with the RaDis loss.

``config`` (settings) -> ``datasets`` (rows and files -> targets -> token examples with segments) ->
``batching`` (resumable length-bucketed batches) -> ``losses`` (the per-segment loss) -> ``loop`` (the
training loop; ``trainable`` sets up what trains, ``checkpoint`` owns the run directory, ``metrics``
its logs). What a target is lives below the stages (``radis_mlx.targets``), and folding the adapters
into the weights is the models' (``models.fuse``).

The face loads the whole stage, mlx-lm with it: nothing below the stages imports the tuner.
"""

from .checkpoint import output_status, restart_settings, settings_changed, training_cost
from .config import FinetuneConfig, load_config
from .loop import finetune
from .metrics import format_summary

__all__ = ["FinetuneConfig", "finetune", "format_summary", "load_config", "output_status", "restart_settings",
           "settings_changed", "training_cost"]
