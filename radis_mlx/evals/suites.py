"""The suite registry: every eval suite, declared once, with where its data sits, how it runs and
how the report reads what it leaves.

A suite is one ``register(name=..., ...)`` call in its family module (translation, ifeval, general,
retention, kl, chat, paragraphs), in the manner of lm-evaluation-harness's task registry: a task
declares its data, prompt, generation settings and metrics (with higher_is_better) once, and
make_table reports any task with no code of its own. Here a suite says where its test file sits
under a data root and on the Hugging Face hub (repository, pinned revision, files: read through
the hub cache when no local copy is given), its default max new tokens, how its items are read
(before any model loads: bad data fails fast), the prompts it generates from first (all suites'
first prompts go into one continuous batch), how it runs and scores, its one-line headline; and
for the report: its per-item file, the per-item outcome the paired tests pair on, its columns
(label, format, higher_is_better), its summary of its results.json entry and how report.html
shows an item. The report, the paired tests, report.html and the CLI loop over this registry.

The registry's order is the order of the imports at the bottom (each module registers as it is
imported; the package imports this module first): it orders the CLI's list, the report's
columns, report.html's sections and the paired tests.
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
from ..results import Column


@dataclass(frozen=True)
class Outcome:
    """What the paired tests (significance.py) pair a suite on, item by item, across two runs' items files."""
    key: str  # the item field naming the same item in every run
    value: Callable[[dict], float] | None = None  # one number per item: a paired permutation test of its mean
    column: str = ""  # the report column that number is (its label, format and higher_is_better)
    # instead of a number: these corpus metrics of the items' hyp and refs, by paired approximate
    # randomisation; each is one of the suite's column keys, ending in sacrebleu's name (bleu, para_chrf)
    corpus: tuple[str, ...] = ()
    note: str = ""  # what the outcome is, in the report's words (said under its paired tests)


@dataclass(frozen=True)
class Html:
    """How report.html shows a suite's items: one row per item (the same item across runs by ``key``),
    the item's own cells, then one cell per run."""
    title: str
    cols: tuple[str, ...]  # the item's own columns' headers
    key: Callable[[dict], object]  # row -> the item across runs
    head: Callable[[dict], list[str]]  # row -> the item's own cells (HTML; results.esc every text)
    cell: Callable[[dict], str]  # row -> this run's cell
    prepare: Callable[[dict, dict], dict] = lambda row, summary: row  # (row, the run's summary) -> the row shown


@dataclass(frozen=True, kw_only=True)
class Suite:
    name: str
    # its data and how it runs
    data: str  # where its file sits under a data root like ../shared/data (`--test-data ROOT`)
    hub: HubFiles | None = None  # the same test set on the hub, read when no local copy is given
    data_from: str | None = None  # the suite whose test data it reads when given none of its own
    splits: bool = True  # its items take split: dev|test (translation's dev set is another test set: WMT21)
    max_tokens: int  # default max new tokens of an answer
    load: Callable  # (cfg, path, limit) -> items
    prompts: Callable | None = None  # (ctx, items) -> the prompts generated first; None: none of its own
    run: Callable  # (ctx, items) -> summary (its results.json entry)
    base_prep: Callable | None = None  # (cfg, base, items, max_tokens, loaded) -> None: from the base model, once
    cut: Callable | None = None  # cfg -> the cut its outputs are scored at (decoding stops there unless --no-stop)
    headline: Callable = lambda s: s.get("note", "")  # summary -> one line of progress
    settings: Callable = lambda cfg: {}  # its own settings, recorded beside the common ones
    # what it leaves in a run folder, and how the report reads it
    items: str | None = None  # its per-item file under the run folder (a glob): paired tests and report.html read it
    outcome: Outcome | None = None  # what the paired tests pair on; None: not tested
    columns: tuple[Column, ...] = ()  # its report columns, in order
    summary: Callable[[dict], dict] = lambda s: {}  # its summary -> its fields of a report row (its columns' keys)
    general: tuple[str, str] | None = None  # (score, count) fields of its summary: a 0-1 part of the general score
    html: Html | None = None  # how report.html shows its items; None: not shown


REGISTRY: dict[str, Suite] = {}


def register(**declaration) -> Suite:
    """Declare a suite (keywords: Suite's fields); it takes the next place in the registry's order."""
    suite = Suite(**declaration)
    if suite.name in REGISTRY:
        raise ValueError(f"suite {suite.name!r} is registered already")
    REGISTRY[suite.name] = suite
    return suite


def get(name: str, where: str = "") -> Suite:
    """The one lookup, with the one error message (``where``: what named it, e.g. "limits: ")."""
    if name not in REGISTRY:
        raise UserError(f"{where}unknown suite {name!r:.40} (choose from {', '.join(REGISTRY)})")
    return REGISTRY[name]


def check(names, where: str = "") -> list[str]:
    """``names``, each a registered suite, and at least one (else the one error message)."""
    names = list(names)
    for n in names or [""]:
        get(n, where)
    return names


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def registered() -> tuple[Suite, ...]:
    """Every suite, in the registry's order."""
    return tuple(REGISTRY.values())


def items_path(run_dir, suite: str, name: str = "*") -> Path:
    """Where a suite's per-item file goes in a run folder: its declared ``items`` (a glob's * is ``name``)."""
    return Path(run_dir) / get(suite).items.replace("*", name)


DEFAULT_SUITES = ("translation", "ifeval", "advbench", "gsm8k", "retention")


def __getattr__(attr: str):
    """SUITES, DATA_LAYOUT and DEFAULT_MAX_TOKENS, read from the registry at each use (so a suite
    registered later, as a test's, is in them)."""
    if attr == "SUITES":
        return names()
    if attr == "DATA_LAYOUT":
        return {s.name: s.data for s in REGISTRY.values()}
    if attr == "DEFAULT_MAX_TOKENS":
        return {s.name: s.max_tokens for s in REGISTRY.values()}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


# The hub copies. Each is the same data as the local file under a data root (the same rows, in the
# same order, so items get the same ids either way; tests/data/test_hub_data.py reads every suite both
# ways). Revisions are commit SHAs where the hub's history showed one; "main" where it did not.
WMT22_HUB = HubFiles(  # ALMA's WMT22 test sets (reference A; second references only in the local copy)
    "haoranxu/WMT22-Test", "main",  # the newest full SHA found (3d3a8d6...) predates the en-de upload
    files=tuple(f"{d}/test-00000-of-00001-{h}.parquet" for d, h in (
        ("cs-en", "1a83a591805d9178"), ("de-en", "c03dcec47c23d6ca"), ("en-cs", "b92f389a2a10e4b5"),
        ("en-de", "c470e1e53ed73302"), ("en-ru", "889b8af39e8c83c4"), ("en-zh", "6b3b7f42ead58b33"),
        ("ru-en", "4455a1b04d42177e"), ("zh-en", "a8c846c3e121c2f6"))))
# ALMA's WMT23 de-en and en-de (549 and 557 rows, as the card says and the WMT files hold: whole
# paragraphs), at the commit whose tree lists these two files.
WMT23_HUB = HubFiles("haoranxu/WMT23-Test", "0110d303955a48e064c5cee9e4c510e7be0aefe5",
                     files=("de-en/test-00000-of-00001-c57aa591fad1fafc.parquet", "en-de/test-00000-of-00001.parquet"))
IFEVAL_HUB = HubFiles("google/IFEval", "966cd89545d6b6acfd7638bc708b98261ca58e84", ("ifeval_input_data.jsonl",))
ADVBENCH_HUB = HubFiles("walledai/AdvBench", "main", ("data/train-00000-of-00001.parquet",))  # no SHA found
GSM8K_HUB = HubFiles("openai/gsm8k", "main", ("main/test-00000-of-00001.parquet",))  # no SHA found
# AlpacaEval's hub repository loads through a script (alpaca_eval.py, remote code): read its JSON file.
ALPACAEVAL_HUB = HubFiles("tatsu-lab/alpaca_eval", "57530fed23a308e771c06bba55cb49b7e7625711", ("alpaca_eval.json",))
# FastChat's MT-Bench questions, copied unchanged (question_id and all) into H4's raw/ folder.
MTBENCH_HUB = HubFiles("HuggingFaceH4/mt_bench_prompts", "916399161f7a163d1552d1f2c3f07acab192ed19",
                       ("raw/question.jsonl",))


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
    v = cfg.max_tokens.get(suite, get(suite).max_tokens)
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
