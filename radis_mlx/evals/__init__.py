"""Stage 3, eval: translation quality and the general abilities a fine-tune can lose, per model.

``harness`` runs every suite on every model (``evaluate(EvalConfig(...))``); ``suites`` is the suite
registry; ``context`` holds what a suite runs with (the model, its cached generation); the suite
families are ``translation``, ``ifeval`` (+ ``ifeval_text``), ``general``, ``retention`` and ``kl``;
``judge`` scores MT-Bench / AlpacaEval answers.
"""

from .harness import EvalConfig, evaluate

__all__ = ["EvalConfig", "evaluate"]
