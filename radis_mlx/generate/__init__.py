"""Stage 1, generate: the model's own rationales (or a baseline's self-generated targets) as records.

``stage`` runs it (``generate(GenerateConfig(...))``), ``files`` owns its resumable output,
``filters`` decides what is kept, ``workers`` shares rows out to processes, ``auto`` picks a
rationale mode per model. The decoder and the CPU kernels every stage runs on are in ``runtime``.
"""

from .files import output_status
from .stage import GenerateConfig, format_summary, generate

__all__ = ["GenerateConfig", "format_summary", "generate", "output_status"]
