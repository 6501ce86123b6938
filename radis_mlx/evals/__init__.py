"""Stage 3, eval: translation quality and the general abilities a fine-tune can lose, per model.

``harness`` runs every suite on every model (``evaluate(EvalConfig(...))``); ``suites`` is the suite
registry; ``context`` holds what a suite runs with (the model, its cached generation); the suite
families, each declaring its suites, are ``translation``, ``ifeval`` (+ ``ifeval_text``),
``general``, ``retention``, ``kl``, ``chat`` and ``paragraphs``; ``judge`` scores MT-Bench /
AlpacaEval answers.

Eval writes results.json and the per-item files; it reads and writes them through radis_mlx.results
and imports nothing from report/ (evals -> results <- report).
"""

from . import suites  # first: it imports the families, which register their suites in the registry's order
from .harness import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate", "suites"]
