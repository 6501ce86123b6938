"""The suite registry: every eval suite, declared once, with where its data sits and how it runs.

A suite says where its test file sits under a data root and on the Hugging Face hub (repository,
pinned revision, files: read through the hub cache when no local copy is given), its default max
new tokens, how its items are read (before any model loads: bad data fails fast), the prompts it
generates from first (all suites' first prompts go into one continuous batch), how it runs and
scores, and its one-line headline. Adding a suite is one ``register`` call; the family modules (translation,
ifeval, general, retention, kl) hold the code.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data import hub, sample
from ..data.hub import HubFiles
from ..data.pairs import hub_sources as pairs_hub_sources
from ..fileio import UserError
from . import general, ifeval, kl, retention, translation


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
    base_prep: Callable | None = None  # (cfg, base, items, max_tokens, loaded) -> None: from the base model, once
    splits: bool = True  # its items take split: dev|test (translation's dev set is another test set: WMT21)
    hub: HubFiles | None = None  # the same test set on the hub, read when no local copy is given


REGISTRY: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    REGISTRY[suite.name] = suite
    return suite


def get(name: str) -> Suite:
    """The one lookup, with the one error message."""
    if name not in REGISTRY:
        raise UserError(f"unknown suite {name!r} (choose from {', '.join(REGISTRY)})")
    return REGISTRY[name]


# The hub copies. Each is the same data as the local file under a data root (the same rows, in the
# same order, so items get the same ids either way; tests/test_hub_data.py reads every suite both
# ways). Revisions are commit SHAs where the hub's history showed one; "main" where it did not.
WMT22_HUB = HubFiles(  # ALMA's WMT22 test sets (reference A; second references only in the local copy)
    "haoranxu/WMT22-Test", "main",  # the newest full SHA found (3d3a8d6...) predates the en-de upload
    files=tuple(f"{d}/test-00000-of-00001-{h}.parquet" for d, h in (
        ("cs-en", "1a83a591805d9178"), ("de-en", "c03dcec47c23d6ca"), ("en-cs", "b92f389a2a10e4b5"),
        ("en-de", "c470e1e53ed73302"), ("en-ru", "889b8af39e8c83c4"), ("en-zh", "6b3b7f42ead58b33"),
        ("ru-en", "4455a1b04d42177e"), ("zh-en", "a8c846c3e121c2f6"))))
IFEVAL_HUB = HubFiles("google/IFEval", "966cd89545d6b6acfd7638bc708b98261ca58e84", ("ifeval_input_data.jsonl",))
ADVBENCH_HUB = HubFiles("walledai/AdvBench", "main", ("data/train-00000-of-00001.parquet",))  # no SHA found
GSM8K_HUB = HubFiles("openai/gsm8k", "main", ("main/test-00000-of-00001.parquet",))  # no SHA found
# AlpacaEval's hub repository loads through a script (alpaca_eval.py, remote code): read its JSON file.
ALPACAEVAL_HUB = HubFiles("tatsu-lab/alpaca_eval", "57530fed23a308e771c06bba55cb49b7e7625711", ("alpaca_eval.json",))
# FastChat's MT-Bench questions, copied unchanged (question_id and all) into H4's raw/ folder.
MTBENCH_HUB = HubFiles("HuggingFaceH4/mt_bench_prompts", "916399161f7a163d1552d1f2c3f07acab192ed19",
                       ("raw/question.jsonl",))

register(Suite("translation", "wmt22_general_test", 256, translation.load_test_pairs, translation.run_translation,
               translation.translation_prompts, translation.translation_headline, translation.translation_settings,
               splits=False, hub=WMT22_HUB))
register(Suite("ifeval", "ifeval/input_data.jsonl", 512,
               lambda cfg, path, limit: sample(ifeval.load_prompts(path), limit, cfg.seed), ifeval.run_ifeval,
               ifeval.ifeval_prompts, ifeval.ifeval_headline, hub=IFEVAL_HUB))
register(Suite("advbench", "advbench/harmful_behaviors.csv", 64, general.load_plain, general.run_advbench,
               general.advbench_prompts, lambda s: f"refusal {100 * s['refusal_rate']:.1f}% of {s['n']}",
               hub=ADVBENCH_HUB))
register(Suite("gsm8k", "gsm8k/test.jsonl", 384, general.load_gsm8k, general.run_gsm8k, general.gsm8k_prompts,
               lambda s: f"accuracy {100 * s['accuracy']:.1f}% of {s['n']}", hub=GSM8K_HUB))
register(Suite("retention", "alpaca_eval/alpaca_eval_instructions.jsonl", 256, general.load_plain,
               retention.run_retention, None, retention.headline, lambda cfg: {"base_model": cfg.base_model},
               data_from="alpacaeval", base_prep=retention.retention_base, hub=ALPACAEVAL_HUB))
register(Suite("kl", "alpaca_eval/alpaca_eval_instructions.jsonl", 256, general.load_plain, kl.run_kl,
               headline=kl.headline, settings=lambda cfg: {"base_model": cfg.base_model, "top_k": cfg.kl_top_k},
               data_from="alpacaeval", base_prep=kl.prepare, hub=ALPACAEVAL_HUB))
register(Suite("mtbench", "mt_bench/question.jsonl", 512, general.load_mtbench, general.run_mtbench,
               general.mtbench_prompts, hub=MTBENCH_HUB))
register(Suite("alpacaeval", "alpaca_eval/alpaca_eval_instructions.jsonl", 512, general.load_plain,
               general.run_alpacaeval, general.alpacaeval_prompts, hub=ALPACAEVAL_HUB))

# Whole paragraphs (WMT23 de-en's segments): a translation with blank lines inside, long enough to
# show a model that translates the first sentence and then explains. Scored at paragraph_cut.
register(Suite("paragraphs", "wmt23_general_test", 448, translation.load_paragraphs, translation.run_paragraphs,
               translation.translation_prompts, translation.paragraphs_headline,
               lambda cfg: {"pairs": cfg.pairs, "cut": cfg.paragraph_cut, "stop_decoding": cfg.stop_decoding}))

SUITES = tuple(REGISTRY)
DEFAULT_SUITES = ("translation", "ifeval", "advbench", "gsm8k", "retention")
DATA_LAYOUT = {s.name: s.data for s in REGISTRY.values()}
DEFAULT_MAX_TOKENS = {s.name: s.max_tokens for s in REGISTRY.values()}


def declared_hub(source: str) -> HubFiles | None:
    """The suites' hub copy a hub id names ("openai/gsm8k:main" -> GSM8K's), or None."""
    repo = str(source).partition(":")[0]
    return next((s.hub for s in REGISTRY.values() if s.hub and s.hub.repo == repo), None)


def _locate(cfg, suite: str) -> tuple[str, object]:
    """Where a suite's test data comes from, decided once: ("local", Path), ("hub", HubFiles) or
    ("pairs", hub id) (a translation dataset named by id, e.g. a dev split). A given path or id wins
    over a data root, a data root over the suite's own hub copy."""
    td, s = cfg.test_data or {}, get(suite)
    given = td.get(suite) or (td.get(s.data_from) if s.data_from else None)
    if given is None and td.get("root"):
        given = Path(td["root"]) / s.data
        if not given.exists():
            raise UserError(f"{given}: test data for suite {suite} not found")
        return "local", given
    if given is None and s.hub is None:
        raise UserError(f"suite {suite} has no hub copy: pass --test-data {suite}=PATH or --data-root / --test-data "
                        f"DATA_ROOT (a folder with {s.data})")
    if given is None:
        return "hub", s.hub
    if Path(given).exists():
        return "local", Path(given)
    if declared_hub(str(given)):
        return "hub", declared_hub(str(given))
    if suite == "translation" and pairs_hub_sources(str(given), cfg.pairs, split="test"):
        return "pairs", str(given)
    raise UserError(f"{given}: test data for suite {suite} not found (not a file, and not a hub dataset of the "
                    f"suites: {', '.join(sorted({x.hub.repo for x in REGISTRY.values() if x.hub}))})")


def suite_path(cfg, suite: str) -> Path | str:
    """The suite's test data as its loader reads it: a local file or folder, the hub copy's cached
    file (its snapshot folder when it is several), or a hub id load_pairs reads."""
    kind, where = _locate(cfg, suite)
    if kind != "hub":
        return where
    root = hub.download(where)
    return root / where.files[0] if len(where.files) == 1 else root


def data_status(cfg, suite: str) -> str:
    """Where the suite's data comes from, checked without downloading (for --check): "local PATH",
    "cached (REPO@REV)" or "on the hub ..."; offline and not cached: a UserError saying how to fetch."""
    kind, where = _locate(cfg, suite)
    if kind == "local":
        return f"local {where}"
    srcs = [where] if kind == "hub" else pairs_hub_sources(where, cfg.pairs, split="test")
    return "; ".join(hub.status(x) for x in srcs)


def data_label(cfg, suite: str) -> str:
    """What results.json records as a suite's data: the local path, or the hub copy and its revision."""
    kind, where = _locate(cfg, suite)
    return f"hf:{where.repo}@{where.revision}" if kind == "hub" else str(where)


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
    kind, where = _locate(cfg, suite)
    if kind == "hub" and len(where.files) > 1 and not cfg.pairs:
        # The declared files' directions only (<s>-<t>/test-*.parquet): a whole-repository download
        # puts more of them (WMT21's is-en) in the same snapshot folder.
        cfg = dataclasses.replace(cfg, pairs=",".join(Path(f).parts[0] for f in where.files))
    split = getattr(cfg, "split", None)
    if split is None or not get(suite).splits:
        return get(suite).load(cfg, path, limit)
    return sample(split_items(get(suite).load(cfg, path, None), split, path), limit, cfg.seed)


SPLITS = ("dev", "test")
DEV_SHARE = 0.25  # of each suite's items; IFEval 541 -> ~135 dev, AdvBench 520 -> ~130, GSM8K 1319 -> ~330


def item_id(item) -> str:
    return str(getattr(item, "key", None) if not isinstance(item, dict) else item.get("id"))


def in_dev(item_key: str) -> bool:
    """A fixed part of the items, by a hash of the item's id alone: no seed, limit, file order or
    translation (which keeps the ids) moves an item across, so dev-phase picks never see an item the
    study later tests; the seed and the limit only sample within a part."""
    h = hashlib.sha1(f"radis-dev-split\x00{item_key}".encode()).digest()
    return int.from_bytes(h[:8], "big") < DEV_SHARE * 2 ** 64


def split_items(items: list, split: str, path) -> list:
    keep = [x for x in items if in_dev(item_id(x)) == (split == "dev")]
    if not keep:
        raise UserError(f"{path}: no items in the {split} split ({len(items)} items in all)")
    return keep


def first_prompts(ctx, suite: str, items: list) -> list[str]:
    """The prompts a suite generates from first (MT-Bench turn 2 needs turn 1's answers)."""
    make = get(suite).prompts
    return make(ctx, items) if make else []


def suite_settings(cfg, suite: str) -> dict:
    """What a suite's results were computed with (recorded in results.json)."""
    s = {"data": data_label(cfg, suite), "limit": suite_limit(cfg, suite), "seed": cfg.seed,
         "max_tokens": max_tokens(cfg, suite), "temperature": 0.0}
    from ..tcot import PLAIN
    if getattr(cfg, "tcot", None) and suite not in PLAIN:
        s.update(tcot=cfg.tcot, tcot_zero_shot=cfg.tcot_zero_shot)
    if getattr(cfg, "split", None) and get(suite).splits:
        s["split"] = cfg.split
    return {**s, **get(suite).settings(cfg)}
