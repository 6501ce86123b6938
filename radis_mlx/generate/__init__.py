"""Stage 1, generate: the model's own rationales (or a baseline's self-generated targets) as records.

``stage`` runs it (``generate(GenerateConfig(...))``), ``files`` owns its resumable output,
``filters`` decides what is kept, ``workers`` shares rows out to processes, ``decode`` is the
batched greedy/sampled decoder every stage generates with, ``kernels`` its CPU kernel swaps.
"""

from .files import output_status
from .stage import GenerateConfig, format_summary, generate

__all__ = ["GenerateConfig", "format_summary", "generate", "output_status"]
