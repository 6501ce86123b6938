"""radis-mlx: rationale distillation (RaDis) for chat LLMs on MLX."""

from .backend import preload_openblas

# First thing, before any module imports mlx.core: the Python API then multiplies with the system
# OpenBLAS, as fast as the CLI (see backend.preload_openblas).
preload_openblas()

__version__ = "0.1.0"
