"""The fuzz tier over every command's settings and every recipe level (issue 31).

Each case builds a command line (or a recipe plus ``--set`` overrides) from menus of valid values,
edge values and junk, and runs the CLI in-process with ``models.load`` replaced by a sentinel: the
settings are checked before any model loads, so a case costs milliseconds. The only allowed
outcomes are exit 0, exit 2 with one line, or reaching the model load with every setting accepted;
never a traceback, and never a file outside the case's output folder (the working directory, the
inputs and TMPDIR are watched). A recipe that ``run --check`` passes must then run up to its model
load: --check is the whole validation pass.

CI (plain ``pytest``) runs a small sample (``FAST`` cases per command); ``-m slow`` runs ``SLOW`` per
command, 10,000 in all. ``FUZZ_COUNTS=path.json`` records the outcomes (RELIABILITY.md quotes them).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from radis_mlx import models
from radis_mlx.cli import main
from radis_mlx.evals.suites import SUITES
from radis_mlx.generate.config import GenerateConfig
from radis_mlx.methods import MODES
from radis_mlx.outdir import PACKAGE
from radis_mlx.tuner.config import FinetuneConfig
from radis_mlx.evals.harness import EvalConfig

FAST = 25  # cases per command in CI: 125 in all
SLOW = int(os.environ.get("FUZZ_SLOW_N", 2000))  # per command in the slow tier: 10,000 in all
DEMO = PACKAGE / "demo_data"
COUNTS: Counter = Counter()


class ModelLoaded(Exception):
    """The patched models.load: every setting was accepted and the stage reached its model."""


# ---------------------------------------------------------------- value menus

JUNK_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
NUMBERS = st.one_of(
    st.sampled_from(["0", "1", "2", "-1", "8", "64", "0.5", "1.5", "1e9", "1000000000", "nan", "inf", "-inf",
                     "-0.0", "3.0", "1e-12", "99999999999999999999", "abc", "", "0x10", "1_000"]),
    st.integers(-10**12, 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr))
SMALL_INTS = st.integers(-2, 70).map(str)


def num(*good):
    """A number flag's values: valid ones (``good``), small ints, and anything."""
    return st.one_of(st.sampled_from([str(g) for g in good]), SMALL_INTS, NUMBERS)


def choice(*good):
    return st.one_of(st.sampled_from(list(good)), JUNK_TEXT)


def case_dirs(tmp_root: Path) -> dict:
    """A fresh sandbox: ``in`` (inputs), ``out`` (the only place a case may write), ``cwd``, ``tmp``."""
    base = Path(tempfile.mkdtemp(dir=tmp_root))
    d = {k: base / k for k in ("in", "out", "cwd", "tmp")}
    for k in ("in", "cwd", "tmp"):
        d[k].mkdir()
    row = {"src": "Der Hund schläft.", "ref": "The dog sleeps.", "src_lang": "de", "tgt_lang": "en"}
    (d["in"] / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    (d["in"] / "instr.jsonl").write_text(json.dumps({"id": "i1", "instruction": "Say hi."}) + "\n")
    model = d["in"] / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    d["base"], d["model"] = base, model
    return d


def _files(root: Path, skip: Path) -> set:
    return {p for p in root.rglob("*") if skip not in p.parents and p != skip}


def run_case(argv: list[str], d: dict, monkeypatch) -> str:
    """One CLI call in the sandbox; returns its outcome ("exit 0", "exit 2", "model") or fails."""
    def load(*a, **k):
        raise ModelLoaded
    monkeypatch.setattr(models, "load", load)
    before = _files(d["base"], d["out"])
    err = io.StringIO()
    old_cwd = os.getcwd()
    env = {k: os.environ.get(k) for k in ("TMPDIR", "TMP", "TEMP")}
    os.environ.update(TMPDIR=str(d["tmp"]), TMP=str(d["tmp"]), TEMP=str(d["tmp"]))
    tempfile.tempdir = None
    os.chdir(d["cwd"])
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(argv)
                outcome = "exit 0"
            except SystemExit as e:
                outcome = f"exit {e.code or 0}"
            except ModelLoaded:
                outcome = "model"
    finally:
        os.chdir(old_cwd)
        for k, v in env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        tempfile.tempdir = None
    lines = err.getvalue().strip().splitlines()
    assert outcome in ("exit 0", "exit 2", "model"), (argv, outcome, err.getvalue()[-2000:])
    if outcome == "exit 2":
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err.getvalue()[-2000:])
    after = _files(d["base"], d["out"])
    assert after == before, (argv, sorted(map(str, after - before)))  # nothing outside --out
    COUNTS[outcome] += 1
    return outcome


def flags(options: dict) -> st.SearchStrategy:
    """A random subset of ``options`` (flag -> value strategy, or None for a switch) as argv."""
    def build(picked):
        argv = []
        for flag, value in picked:
            argv += [flag] if value is None else [flag, value]
        return argv
    items = [st.tuples(st.just(f), v if v is not None else st.none()) for f, v in options.items()]
    return st.lists(st.one_of(items), max_size=6).map(build)


def _fuzz(n: int, strategy, check) -> None:
    @settings(max_examples=n, deadline=None, database=None, derandomize=n <= FAST,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def inner(case):
        check(case)
    inner()


TIERS = [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)]


@pytest.fixture
def sandbox_root(tmp_path, request, n):
    # CI runs plain `pytest` (the slow real-model tests included): the 10,000 cases only when asked for.
    if n != FAST and "slow" not in (request.config.option.markexpr or ""):
        pytest.skip("the settings fuzz tier's 10,000 cases: run with -m slow")
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def _record(name: str) -> None:
    path = os.environ.get("FUZZ_COUNTS")
    if path:
        old = json.loads(Path(path).read_text()) if Path(path).exists() else {}
        old[name] = dict(COUNTS)
        Path(path).write_text(json.dumps(old, indent=1))
    COUNTS.clear()


# ---------------------------------------------------------------- one test per command

def _d(cls, name):
    return getattr(cls(**({"data": "x", "out": "x"} if cls is GenerateConfig else {})), name)


GENERATE = {
    "--mode": choice(*MODES), "--pairs": choice("de-en", "en-de", "de-en,en-de"), "--split": choice("train", "test"),
    "--limit": num(1, 5), "--seed": num(0, 3), "--max-tokens": num(_d(GenerateConfig, "max_tokens"), 1, 32768),
    "--temperature": num(0, 0.7, 100), "--top-p": num(1, 0.9), "--batch-size": num(1, 64, 4096),
    "--workers": num(0, 1), "--min-tokens": num(0, 1), "--max-len": num(1, 200), "--max-repeat": num(0.5, 1),
    "--unfinished": choice("keep", "trim", "drop"), "--ratio": num(0, 0.5, 1),
    "--dtype": choice("auto", "keep", "float32", "float16", "bfloat16"), "--tcot-lang": choice("de", "en", "cs"),
    "--template": choice("Translate {src_name} to {tgt_name}: {src}", "{src}", "{nope}"),
    "--explain-template": choice("{instruction} {ref}"), "--system": JUNK_TEXT, "--thinking": None,
    "--trust-remote-code": None,
}


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_generate(n, sandbox_root, monkeypatch):
    def check(case):
        extra, data = case
        d = case_dirs(sandbox_root)
        src = d["in"] / ("instr.jsonl" if data else "pairs.jsonl")
        run_case(["generate", "-d", str(src), "-o", str(d["out"] / "g.jsonl"), "-m", str(d["model"]), *extra],
                 d, monkeypatch)
    _fuzz(n, st.tuples(flags(GENERATE), st.booleans()), check)
    _record("generate")


FINETUNE = {
    "--method": choice("sft", "radis", "seqkd", "sdft", "replay", "mix", "base"),
    "--fine-tune-type": choice("lora", "dora", "full"), "--lora": None, "--dora": None, "--full": None,
    "--lora-rank": num(8, 1), "--lora-scale": num(20), "--lora-dropout": num(0, 0.1), "--num-layers": num(-1, 2),
    "--w-ref": num(1), "--w-rat": num(1, 0), "--normalize": choice("tokens", "segments"),
    "--optimizer": choice("adamw", "adam", "sgd", "adafactor", "lion", "muon"), "--lr": num(1e-5, 3e-4),
    "--lr-min": num(0), "--schedule": choice("cosine", "constant"), "--warmup": num(0, 10),
    "--weight-decay": num(0), "--max-grad-norm": num(1, 0), "--grad-accum": num(1, 2), "--batch-size": num(8, 1),
    "--epochs": num(1, 0.5), "--iters": num(10, 100000, 100001), "--max-seq-len": num(512, 8),
    "--pad-multiple": num(1, 32), "--bucket": num(16), "--seed": num(0), "--val-fraction": num(0, 0.1),
    "--val-batch-size": num(4), "--steps-per-eval": num(100), "--steps-per-report": num(10),
    "--save-every": num(100, 0), "--keep-checkpoints": num(2), "--best-metric": choice("val_loss", "val_ref_loss"),
    "--dtype": choice("auto", "float32"), "--replay-ratio": num(0.2, 0), "--lora-keys": choice("self_attn.q_proj"),
    "--report-to": choice("tensorboard", "wandb", "mlflow"), "--resume": None, "--overwrite": None, "--yes": None,
    "--fuse": None, "--train-embeddings": None, "--compile": None, "--no-slice-head": None,
    "--separator": JUNK_TEXT, "--template": choice("{src}"), "--pairs": choice("de-en"),
}


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_finetune(n, sandbox_root, monkeypatch):
    def check(case):
        extra, with_config = case
        d = case_dirs(sandbox_root)
        argv = ["finetune", "-d", str(d["in"] / "pairs.jsonl"), "-o", str(d["out"] / "ft"), "-m", str(d["model"])]
        if with_config:  # the same flags as a --config file's keys (flags -> YAML keys)
            conf, rest = {}, []
            for i, a in enumerate(extra):
                if a.startswith("--") and i + 1 < len(extra) and not extra[i + 1].startswith("--"):
                    conf[a[2:].replace("-", "_")] = extra[i + 1]
                elif not a.startswith("--") and i and extra[i - 1] in conf:
                    continue
                else:
                    rest.append(a)
            p = d["in"] / "c.yaml"
            p.write_text(yaml.safe_dump(conf))
            argv += ["--config", str(p), *[a for a in rest if a.startswith("--")]]
        else:
            argv += extra
        run_case(argv, d, monkeypatch)
    _fuzz(n, st.tuples(flags(FINETUNE), st.booleans()), check)
    _record("finetune")


def _per_suite(values):
    return st.one_of(values, st.tuples(st.sampled_from([*SUITES, "nope"]), values).map(lambda t: f"{t[0]}={t[1]}"))


EVAL = {
    "--suites": st.lists(st.sampled_from([*SUITES, "nope", ""]), min_size=0, max_size=3).map(",".join),
    "--limit": _per_suite(num(2, 1)), "--max-tokens": _per_suite(num(16, 32768)), "--seed": num(0),
    "--batch-size": num(32, 1), "--stop": choice("\\n\\n", "", "\\t"), "--dtype": choice("auto", "float32"),
    "--tcot": choice("de", "en"), "--tcot-zero-shot": None, "--judge-max-tokens": num(1024, 1),
    "--judge-url": choice("http://127.0.0.1:9"), "--judge-model": choice("x/y"), "--pairs": choice("de-en", "xx-yy"),
    "--name": choice("a", "b", "../x"), "--adapter": choice("-", "nope"), "--base-model": choice("x/y"),
}
EVAL_DATA = [f"translation={DEMO / 'test.de-en.jsonl'}", f"advbench={DEMO / 'harmful.jsonl'}",
             f"retention={DEMO / 'general.jsonl'}"]


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_eval(n, sandbox_root, monkeypatch):
    def check(extra):
        d = case_dirs(sandbox_root)
        argv = ["eval", "-m", str(d["model"]), "-o", str(d["out"] / "ev"), "--suites", "translation,advbench"]
        for t in EVAL_DATA:
            argv += ["--test-data", t]
        run_case(argv + extra, d, monkeypatch)
    _fuzz(n, flags(EVAL), check)
    _record("eval")


TRANSLATE = {
    "--suite": choice("advbench", "gsm8k", "mtbench", "translation"), "--lang": choice("de", "en", "cs", "xx"),
    "--limit": num(2), "--seed": num(0), "--batch-size": num(32, 1), "--max-tokens": num(384, 1, 32768),
}


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_translate_suite(n, sandbox_root, monkeypatch):
    def check(extra):
        d = case_dirs(sandbox_root)
        run_case(["translate-suite", "--suite", "advbench", "--test-data", f"advbench={DEMO / 'harmful.jsonl'}",
                  "--translator", str(d["model"]), "-o", str(d["out"] / "ts"), *extra], d, monkeypatch)
    _fuzz(n, flags(TRANSLATE), check)
    _record("translate-suite")


# ---------------------------------------------------------------- recipes: every level

def _fields(cls):
    return sorted(f for f in cls.__dataclass_fields__)


VALUES = st.one_of(st.sampled_from([0, 1, -1, 2, 8, 0.5, 1e9, float("nan"), float("inf"), True, False, None, "",
                                    "x", "de-en", [], ["base"], {}, {"a": 1}, "demo:train.de-en.jsonl",
                                    "../../etc/passwd", {"local": "../x"}, {"hub": "a/b"}, [1, 2]]),
                   st.integers(-10**6, 10**6), JUNK_TEXT)
SECTIONS = {"generate": _fields(GenerateConfig), "finetune": _fields(FinetuneConfig), "eval": _fields(EvalConfig)}
TOP = ["name", "seed", "pairs", "limit", "description", "report", "translate_suites", "methods", "train_data",
       "replay_data", "bogus"]
METHOD_NAMES = ["base", "sft", "radis", "seqkd"]


def _paths() -> list[str]:
    paths = list(TOP) + ["report.baselines", "translate_suites.lang", "translate_suites.suites",
                         "translate_suites.bogus"]
    for sec, names in SECTIONS.items():
        paths += [f"{sec}.{f}" for f in names + ["bogus"]]
        paths += [f"methods.{m}.{sec}.{f}" for m in METHOD_NAMES for f in names + ["bogus"]]
    paths += [f"methods.{m}.{k}" for m in METHOD_NAMES for k in ("method", "bogus")]
    return paths


PATHS = _paths()


def _set(r: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if not isinstance(r.get(k), dict):
            r[k] = {}
        r = r[k]
    r[keys[-1]] = value


def _has_key(obj, key: str) -> bool:
    if isinstance(obj, dict):
        return key in obj or any(_has_key(v, key) for v in obj.values())
    return isinstance(obj, list) and any(_has_key(v, key) for v in obj)


@pytest.mark.parametrize("n", TIERS)
def test_fuzz_recipes(n, sandbox_root, monkeypatch):
    base = yaml.safe_load((PACKAGE / "recipes" / "demo.yaml").read_text())

    def check(case):
        methods, in_file, by_set = case
        d = case_dirs(sandbox_root)
        r = json.loads(json.dumps(base))
        r["model"] = str(d["model"])
        r["methods"] = {m: {} for m in methods}
        for path, v in in_file:
            _set(r, path, v)
        p = d["in"] / "r.yaml"
        p.write_text(yaml.safe_dump(r, allow_unicode=True))
        sets = []
        for path, v in by_set:
            sets += ["--set", f"{path}={json.dumps(v) if not isinstance(v, str) else v}"]
        argv = ["run", str(p), "--out", str(d["out"] / "run"), "--quiet", *sets]
        checked = run_case(argv + ["--check"], d, monkeypatch)
        if not by_set and _has_key(r, "bogus"):  # an unknown key at any level of the file is refused
            assert checked == "exit 2", (argv, r, "--check passed an unknown key")
        if checked == "exit 0":
            outcome = run_case(argv, d, monkeypatch)
            assert outcome == "model", (argv, "--check passed it, but the run did not reach its model")
    mutation = st.tuples(st.sampled_from(PATHS), VALUES)
    _fuzz(n, st.tuples(st.lists(st.sampled_from(METHOD_NAMES), min_size=1, max_size=3, unique=True),
                       st.lists(mutation, max_size=3), st.lists(mutation, max_size=2)), check)
    _record("run")
