"""Stage 1, generate: the model's own rationales (or a baseline's self-generated targets) as records.

``config`` holds its settings, ``stage`` runs it (``generate(GenerateConfig(...))``), ``rows`` decodes
one process's rows into records, ``files`` owns its resumable output, ``filters`` decides what is
kept, ``workers`` shares rows out to processes (each one ``python -m radis_mlx.generate``:
``__main__``), ``auto`` picks a rationale mode per model, ``tcot_rows`` makes the composite tcot
mode's rows. The decoder and the CPU kernels every stage runs on are in ``runtime``.
"""

from .config import GenerateConfig
from .files import output_status
from .stage import format_summary, generate

__all__ = ["GenerateConfig", "format_summary", "generate", "output_status"]
