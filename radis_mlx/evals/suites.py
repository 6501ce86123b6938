"""The suite registry: every eval suite, declared once, with where its data sits and how it runs.

A suite says where its test file sits under a data root, its default max new tokens, how its
items are read (before any model loads: bad data fails fast), the prompts it generates from
first (all suites' first prompts go into one continuous batch), how it runs and scores, and its
one-line headline. Adding a suite is one ``register`` call; the family modules (translation,
ifeval, general, retention) hold the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data import sample
from ..io import UserError
from . import general, ifeval, retention, translation


@dataclass(frozen=True)
class Suite:
    name: str
    data: str  # where its file sits under a data root like ../shared/data (`--test-data ROOT`)
    max_tokens: int  # default max new tokens of an answer
    load: Callable  # (cfg, path, limit) -> items
    run: Callable  # (ctx, items) -> summary
    prompts: Callable | None = None  # (ctx, items) -> the prompts generated first; None: none of its own
    headline: Callable = lambda s: s.get("note", "")  # summary -> one line of progress
    settings: Callable = lambda cfg: {}  # its own settings, recorded beside the common ones
    data_from: str | None = None  # the suite whose test data it reads when given none of its own


REGISTRY: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    REGISTRY[suite.name] = suite
    return suite


def get(name: str) -> Suite:
    """The one lookup, with the one error message."""
    if name not in REGISTRY:
        raise UserError(f"unknown suite {name!r} (choose from {', '.join(REGISTRY)})")
    return REGISTRY[name]


register(Suite("translation", "wmt22_general_test", 256, translation.load_test_pairs, translation.run_translation,
               translation.translation_prompts, translation.translation_headline, translation.translation_settings))
register(Suite("ifeval", "ifeval/input_data.jsonl", 512,
               lambda cfg, path, limit: sample(ifeval.load_prompts(path), limit, cfg.seed), ifeval.run_ifeval,
               ifeval.ifeval_prompts, ifeval.ifeval_headline))
register(Suite("advbench", "advbench/harmful_behaviors.csv", 64, general.load_plain, general.run_advbench,
               general.advbench_prompts, lambda s: f"refusal {100 * s['refusal_rate']:.1f}% of {s['n']}"))
register(Suite("gsm8k", "gsm8k/test.jsonl", 384, general.load_gsm8k, general.run_gsm8k, general.gsm8k_prompts,
               lambda s: f"accuracy {100 * s['accuracy']:.1f}% of {s['n']}"))
register(Suite("retention", "alpaca_eval/alpaca_eval_instructions.jsonl", 256, general.load_plain,
               retention.run_retention, None, retention.headline, lambda cfg: {"base_model": cfg.base_model},
               data_from="alpacaeval"))
register(Suite("mtbench", "mt_bench/question.jsonl", 512, general.load_mtbench, general.run_mtbench,
               general.mtbench_prompts))
register(Suite("alpacaeval", "alpaca_eval/alpaca_eval_instructions.jsonl", 512, general.load_plain,
               general.run_alpacaeval, general.alpacaeval_prompts))

# Whole paragraphs (WMT23 de-en's segments): a translation with blank lines inside, long enough to
# show a model that translates the first sentence and then explains. Scored at paragraph_cut.
register(Suite("paragraphs", "wmt23_general_test", 448, translation.load_paragraphs, translation.run_paragraphs,
               translation.translation_prompts, translation.paragraphs_headline,
               lambda cfg: {"pairs": cfg.pairs, "cut": cfg.paragraph_cut, "stop_decoding": cfg.stop_decoding}))

SUITES = tuple(REGISTRY)
DEFAULT_SUITES = ("translation", "ifeval", "advbench", "gsm8k", "retention")
DATA_LAYOUT = {s.name: s.data for s in REGISTRY.values()}
DEFAULT_MAX_TOKENS = {s.name: s.max_tokens for s in REGISTRY.values()}


def suite_path(cfg, suite: str) -> Path:
    td = cfg.test_data or {}
    p = td.get(suite) or (td.get(get(suite).data_from) if get(suite).data_from else None)
    if p is None and td.get("root"):
        p = Path(td["root"]) / DATA_LAYOUT[suite]
    if p is None:
        raise UserError(f"suite {suite} needs test data: pass --test-data {suite}=PATH or --test-data DATA_ROOT "
                        f"(a folder with {DATA_LAYOUT[suite]}, e.g. ../shared/data)")
    p = Path(p)
    if not p.exists():
        raise UserError(f"{p}: test data for suite {suite} not found")
    return p


def suite_limit(cfg, suite: str) -> int | None:
    return cfg.limits.get(suite, cfg.limit)


def max_tokens(cfg, suite: str) -> int:
    v = cfg.max_tokens.get(suite, DEFAULT_MAX_TOKENS[suite])
    if not isinstance(v, int) or v < 1:
        raise UserError(f"max tokens for {suite} must be a positive integer, got {v!r}")
    return v


def load_inputs(cfg, suite: str) -> list:
    """Read and validate a suite's test data (before any model is loaded: bad data fails fast)."""
    path, limit = suite_path(cfg, suite), suite_limit(cfg, suite)
    if limit is not None and limit < 1:
        raise UserError(f"limit for {suite} must be >= 1, got {limit}")
    return get(suite).load(cfg, path, limit)


def first_prompts(ctx, suite: str, items: list) -> list[str]:
    """The prompts a suite generates from first (MT-Bench turn 2 needs turn 1's answers)."""
    make = get(suite).prompts
    return make(ctx, items) if make else []


def suite_settings(cfg, suite: str) -> dict:
    """What a suite's results were computed with (recorded in results.json)."""
    s = {"data": str(suite_path(cfg, suite)), "limit": suite_limit(cfg, suite), "seed": cfg.seed,
         "max_tokens": max_tokens(cfg, suite), "temperature": 0.0}
    from ..tcot import PLAIN
    if getattr(cfg, "tcot", None) and suite not in PLAIN:
        s.update(tcot=cfg.tcot, tcot_zero_shot=cfg.tcot_zero_shot)
    return {**s, **get(suite).settings(cfg)}
