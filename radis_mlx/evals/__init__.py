"""Stage 3, eval: translation quality and the general abilities a fine-tune can lose, per model.

``harness`` runs every suite on every model (``evaluate(EvalConfig(...))``); ``suites`` is the suite
registry; ``context`` holds what a suite runs with (the model, its cached generation); the suite
families, each declaring its suites, are ``translation``, ``ifeval`` (+ ``ifeval_text``),
``general``, ``retention``, ``kl``, ``chat`` and ``paragraphs``; ``judge`` scores MT-Bench /
AlpacaEval answers.

Eval writes results.json and the per-item files; it reads and writes them through radis_mlx.results
and imports nothing from report/ (evals -> results <- report).
"""

from . import suites
# The registry imports none of its families (they import it): each registers its suites as it is
# imported here, in this order, which is the registry's and the report's column order.
from . import translation, ifeval, general, retention, kl, chat, paragraphs  # noqa: E402, F401
from .harness import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate", "suites"]
