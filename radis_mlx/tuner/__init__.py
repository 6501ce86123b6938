"""Stage 2, finetune: LoRA / DoRA / full fine-tuning with the RaDis loss.

``config`` (settings) -> ``datasets`` (targets -> token examples with segments) -> ``batching``
(resumable length-bucketed batches) -> ``losses`` (the per-segment loss) -> ``loop`` (the training
loop; ``trainable`` sets up what trains, ``checkpoint`` owns the run directory).

The names below load on first use: methods.py imports ``tuner.datasets``, and the loop imports
methods, so an eager import here would be circular.
"""

_EXPORTS = {"FinetuneConfig": "config", "load_config": "config", "finetune": "loop", "format_summary": "metrics",
            "output_status": "checkpoint", "restart_settings": "checkpoint",
            "settings_changed": "checkpoint",
            "training_cost": "checkpoint"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
