"""radis-mlx: rationale distillation (RaDis) for chat LLMs on MLX."""

__version__ = "0.1.0"
