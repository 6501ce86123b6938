"""Bad input never reaches the work (issue 31): every setting bounded and checked before any model
loads, inputs bounded, outputs confined, one writer per output.

Most cases run the CLI in-process with ``models.load`` replaced by a sentinel that fails the test's
expectation if reached: a refused setting must be refused *before* the model load. Each test here
failed before its fix (see RELIABILITY.md)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml

from radis_mlx import models
from radis_mlx.cli import main
from radis_mlx.fileio import MAX_ROW_BYTES, UserError
from radis_mlx.outdir import LOCK, PACKAGE, TMP, claim

ROW = {"src": "Der Hund schläft.", "ref": "The dog sleeps.", "src_lang": "de", "tgt_lang": "en"}


class ModelLoaded(Exception):
    """Raised by the patched models.load: validation let the command through to the model."""


@pytest.fixture
def no_model(monkeypatch):
    def load(*a, **k):
        raise ModelLoaded(a[0] if a else None)
    monkeypatch.setattr(models, "load", load)


@pytest.fixture
def data(tmp_path) -> Path:
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(ROW) + "\n")
    return p


@pytest.fixture
def fake_model(tmp_path) -> Path:
    """A directory models.resolve accepts (the load itself is patched)."""
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def run_cli(argv, capsys) -> tuple[int, str]:
    """(exit code, stderr) of the CLI run in-process; 0 when it returned."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    return code, capsys.readouterr().err.strip()


def refused(argv, capsys, *words) -> str:
    code, err = run_cli(argv, capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), (argv, code, err)
    for w in words:
        assert w in err, (argv, err)
    return err


# ---------------------------------------------------------------- every number bounded, before the model

@pytest.mark.parametrize("flags,flag", [
    (["--batch-size", "0"], "--batch-size"), (["--batch-size", "100000000"], "--batch-size"),
    (["--max-tokens", "0"], "--max-tokens"), (["--max-tokens", "-5"], "--max-tokens"),
    (["--max-tokens", "1000000000"], "--max-tokens"),
    (["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
    (["--temperature", "inf"], "--temperature"), (["--top-p", "0"], "--top-p"), (["--top-p", "1.5"], "--top-p"),
    (["--limit", "0"], "--limit"), (["--seed", "-1"], "--seed"), (["--max-repeat", "nan"], "--max-repeat"),
    (["--min-tokens", "-1"], "--min-tokens"), (["--max-len", "0"], "--max-len"), (["--dtype", "int4"], "--dtype"),
    (["--workers", "100000"], "--workers"),
])
def test_generate_numbers_are_bounded_before_the_model(tmp_path, data, fake_model, no_model, capsys, flags, flag):
    out = tmp_path / "o" / "g.jsonl"
    refused(["generate", "-d", data, "-o", out, "-m", fake_model, *flags], capsys, flag)
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing written


@pytest.mark.parametrize("flags,flag", [
    (["--max-tokens", "0"], "--max-tokens"), (["--max-tokens", "-5"], "--max-tokens"),
    (["--batch-size", "0"], "--batch-size"), (["--limit", "0"], "--limit"), (["--lang", "en"], "lang"),
])
def test_translate_suite_numbers_are_bounded(tmp_path, no_model, capsys, flags, flag):
    refused(["translate-suite", "--suite", "advbench", "--out", tmp_path / "t", *flags], capsys, flag)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("flags,flag", [
    (["--batch-size", "0"], "--batch-size"), (["--max-tokens", "40000"], "max_tokens."),
    (["--judge-max-tokens", "0"], "--judge-max-tokens"), (["--seed", "-3"], "--seed"),
    (["--dtype", "fp8"], "--dtype"),
])
def test_eval_numbers_are_bounded(tmp_path, no_model, capsys, flags, flag):
    refused(["eval", "--suites", "advbench", "--out", tmp_path / "e", *flags], capsys, flag)
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("flags,flag", [
    (["--iters", "1000000000"], "--yes"), (["--epochs", "nan"], "--epochs"), (["--epochs", "1e9"], "--epochs"),
    (["--lora-rank", "100000000"], "--lora-rank"), (["--max-seq-len", "1000000000"], "--max-seq-len"),
    (["--val-batch-size", "0"], "--val-batch-size"), (["--num-layers", "0"], "--num-layers"),
    (["--steps-per-report", "0"], "--steps-per-report"), (["--keep-checkpoints", "-1"], "--keep-checkpoints"),
])
def test_finetune_numbers_are_bounded(tmp_path, data, fake_model, no_model, capsys, flags, flag):
    refused(["finetune", "-d", data, "-o", tmp_path / "f", "-m", fake_model, *flags], capsys, flag)
    assert not (tmp_path / "f").exists()


def test_a_run_of_days_needs_yes(tmp_path, data, fake_model, no_model, capsys):
    argv = ["finetune", "-d", data, "-o", tmp_path / "f", "-m", fake_model, "--iters", "1000000000"]
    refused(argv, capsys, "--yes", "1000000000")
    with pytest.raises(ModelLoaded):  # with --yes the settings pass and the model is what comes next
        main([str(a) for a in argv] + ["--yes"])


# ---------------------------------------------------------------- recipes: every key at every level; --check = the pass

@pytest.mark.parametrize("override,where", [
    ("generate.max_tokens=0", "--set generate.max_tokens"),
    ("generate.temperature=.nan", "--set generate.temperature"),
    ("methods.radis.bogus=1", "--set methods.radis.bogus"),
    ("methods.base.finetune.bogus=1", "--set methods.base.finetune.bogus"),
    ("methods.base.generate.max_tokens=x", "--set methods.base.generate.max_tokens"),
    ("translate_suites.bogus=1", "--set translate_suites.bogus"),
    ("finetune.iters=1000000000", "--set finetune.iters"),
    ("eval.max_tokens={advbench: 0}", "max_tokens.advbench"),
    ("eval.batch_size=0", "--set eval.batch_size"),
    # found by the fuzz tier: a data source, a model and directions the run would only meet later
    ("generate.ref=0", "--set generate.ref"), ("methods.seqkd.generate.teacher=0", "generate.teacher (method seqkd)"),
    ("methods.base.eval.pairs=0", "--set methods.base.eval.pairs"),
    ("train_data=/no/such/pairs.jsonl", "--set train_data: /no/such/pairs.jsonl: no such file"),
    ("eval.test_data={translation: demo:nope.jsonl}", "no such file"),
])
def test_check_refuses_every_bad_key_and_number(tmp_path, capsys, override, where):
    out = tmp_path / "run"
    refused(["run", "demo", "--out", out, "--check", "--set", override], capsys, where)
    assert not out.exists()


def test_a_null_seed_is_the_default(tmp_path, capsys, no_model):
    """`--set seed=null` passed --check, then every stage crashed on int(None) (found by the fuzz tier)."""
    with pytest.raises(ModelLoaded):
        main(["run", "demo", "--out", str(tmp_path / "run"), "--quiet", "--only", "base", "--set", "seed=null"])


def test_an_empty_recipe_fails_check(tmp_path, capsys):
    for text in ("", "name: x\n", "methods: []\n"):
        p = tmp_path / "r.yaml"
        p.write_text(text)
        refused(["run", p, "--out", tmp_path / "run", "--check"], capsys, "methods")


def test_what_check_passes_runs_up_to_the_model(tmp_path, capsys, no_model):
    """run --check is the validation pass: a recipe it passes gets past every setting (to the model)."""
    out = tmp_path / "run"
    assert run_cli(["run", "demo", "--out", out, "--check", "--set", "generate.max_tokens=8"], capsys)[0] == 0
    with pytest.raises(ModelLoaded):
        main(["run", "demo", "--out", str(out), "--quiet", "--set", "generate.max_tokens=8"])


# ---------------------------------------------------------------- adapters only from safetensors

def test_an_adapter_dir_without_safetensors_is_one_line(tmp_path, no_model, capsys):
    a = tmp_path / "adapters"
    a.mkdir()
    (a / "adapter_config.json").write_text("{}")
    (a / "adapters.npz").write_bytes(b"PK")
    refused(["eval", "--adapter", a, "--suites", "advbench", "--out", tmp_path / "e"], capsys,
            "adapters.safetensors", "found: adapter_config.json, adapters.npz")
    with pytest.raises(UserError, match="no adapter_config.json or adapters.safetensors .found: nothing"):
        (tmp_path / "empty").mkdir()
        models.loader.load(None, str(tmp_path / "empty"))


# ---------------------------------------------------------------- bounded inputs

def test_a_huge_row_is_refused_with_file_and_line_before_the_model(tmp_path, fake_model, no_model, capsys):
    big = {**ROW, "src": "x" * (MAX_ROW_BYTES + 10)}
    jl = tmp_path / "big.jsonl"
    jl.write_text(json.dumps(ROW) + "\n" + json.dumps(big) + "\n")
    refused(["generate", "-d", jl, "-o", tmp_path / "o.jsonl", "-m", fake_model], capsys, f"{jl}:2")
    arr = tmp_path / "big.json"  # a pretty-printed JSON array: the element's line
    arr.write_text(json.dumps([{"translation": {"de": ROW["src"], "en": ROW["ref"]}},
                               {"translation": {"de": big["src"], "en": "x"}}], indent=1))
    refused(["generate", "-d", arr, "-o", tmp_path / "o2.jsonl", "-m", fake_model, "--pairs", "de-en"], capsys,
            f"{arr}:", "longer than the limit")
    src, ref = tmp_path / "s.de", tmp_path / "r.en"
    src.write_text("Hallo\n" + "y" * (MAX_ROW_BYTES + 1) + "\n")
    ref.write_text("Hello\nz\n")
    refused(["generate", "-d", src, "--ref", ref, "-o", tmp_path / "o3.jsonl", "-m", fake_model,
             "--pairs", "de-en"], capsys, f"{src}:2")
    assert not list(tmp_path.glob("o*.jsonl*"))


def test_a_prompt_past_the_context_is_refused_before_decoding(tmp_path, tiny_model_dir, capsys):
    """The tiny model's context is 2048: a long row, or a budget of 32k new tokens, is one line (it
    once allocated for 1e9 positions and hung) and leaves nothing but the resumable files."""
    long_row = {**ROW, "id": "long", "src": "Der Hund schläft im Garten. " * 300}
    d = tmp_path / "d.jsonl"
    d.write_text(json.dumps(long_row) + "\n")
    refused(["generate", "-d", d, "-o", tmp_path / "o.jsonl", "-m", tiny_model_dir, "--max-tokens", "8"], capsys,
            f"{d}: row long", "context of 2048")
    d.write_text(json.dumps(ROW) + "\n")
    refused(["generate", "-d", d, "-o", tmp_path / "o2.jsonl", "-m", tiny_model_dir, "--max-tokens", "32768"],
            capsys, "context of 2048")


BILLION_LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)] + ["methods: [base]", ""])


def test_yaml_aliases_are_bounded(tmp_path, data, capsys):
    p = tmp_path / "laughs.yaml"
    p.write_text(BILLION_LAUGHS)
    refused(["run", p, "--out", tmp_path / "run", "--check"], capsys, "aliases")
    refused(["finetune", "-d", data, "-o", tmp_path / "f", "--config", p], capsys, "aliases")
    flow = "{" + ", ".join(BILLION_LAUGHS.splitlines()[:-1]) + "}"  # the same, as one --set value
    refused(["run", "demo", "--out", tmp_path / "run", "--check", "--set", "name=" + flow], capsys, "not valid YAML")
    small = tmp_path / "small.yaml"  # a few aliases, as yaml.safe_dump writes for a shared value, are fine
    small.write_text("x: &x {lr: 0.001}\ny: *x\nmethods: [base]\n")
    from radis_mlx.fileio import read_yaml
    assert read_yaml(small)["y"] == {"lr": 0.001}


# ---------------------------------------------------------------- confined paths

def test_a_local_path_cannot_leave_the_data_root(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET CONTENTS\n")
    recipe = yaml.safe_load((PACKAGE / "recipes" / "demo.yaml").read_text())
    for bad in ("../secret.txt", str(secret), "a/../../secret.txt"):
        recipe["train_data"] = {"local": bad}
        p = tmp_path / "r.yaml"
        p.write_text(yaml.safe_dump(recipe))
        err = refused(["run", p, "--data-root", root, "--out", tmp_path / "run", "--check"], capsys,
                      "train_data", "outside")
        assert "SECRET" not in err
    err = refused(["run", "demo", "--out", tmp_path / "run", "--check", "--set",
                   "train_data=demo:../../../../../../etc/passwd"], capsys, "outside")
    assert "root:" not in err


@pytest.mark.parametrize("cmd", ["generate", "finetune", "eval", "translate-suite", "run"])
def test_out_may_not_be_inside_the_package(tmp_path, data, fake_model, no_model, capsys, cmd):
    inside = PACKAGE / "demo_data" / "runs-x"
    argv = {"generate": ["generate", "-d", data, "-m", fake_model, "-o", inside / "g.jsonl"],
            "finetune": ["finetune", "-d", data, "-m", fake_model, "-o", inside],
            "eval": ["eval", "--suites", "advbench", "--test-data", data, "-o", inside],
            "translate-suite": ["translate-suite", "--suite", "advbench", "--test-data", data, "-o", inside],
            "run": ["run", "demo", "-o", inside, "--check"]}[cmd]
    refused(argv, capsys, "inside the radis_mlx package")
    assert not inside.exists()


def test_a_failed_model_load_leaves_no_orphan_meta(tmp_path, data, capsys):
    bad_model = tmp_path / "broken"
    bad_model.mkdir()
    (bad_model / "config.json").write_text('{"model_type": "no-such-architecture"}')
    out = tmp_path / "o" / "g.jsonl"
    code, err = run_cli(["generate", "-d", data, "-o", out, "-m", bad_model, "--workers", "1"], capsys)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no .meta.json, no empty output, no lock


def test_temp_files_stay_inside_out_and_a_killed_runs_are_cleaned(tmp_path):
    out = tmp_path / "run"
    (out / TMP).mkdir(parents=True)
    (out / TMP / "left-by-a-kill").write_text("x")
    (out / LOCK).write_text("12345\n")  # a lock file a kill -9 left: nobody holds it
    with claim(out):
        made = Path(tempfile.mkdtemp(prefix="wandb-"))
        assert out / TMP in made.parents and os.environ["RADIS_MLX_TMPDIR"] == str(out / TMP)
        assert not (out / TMP / "left-by-a-kill").exists()
        assert (out / LOCK).read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in out.iterdir()) == []  # temp folder and lock go with the run
    assert os.environ.get("RADIS_MLX_TMPDIR") != str(out / TMP) and tempfile.gettempdir() != str(out / TMP)


def test_a_value_with_line_breaks_still_gives_one_line(tmp_path, no_model, capsys):
    """A path or value holding \\r, \\n or U+2028 is echoed escaped (the fuzz tier found '\\r')."""
    for bad in ("a\rb", "x\ny", "p\u2028q"):
        err = refused(["eval", "--adapter", bad, "--suites", "advbench", "--out", tmp_path / "e"], capsys,
                      "no such adapter directory")
        assert repr(bad)[1:-1] in err
    refused(["generate", "--limit", "0.5"], capsys, "--limit")  # click's usage errors: one line too


def test_out_may_not_be_inside_the_source_tree(tmp_path, capsys):
    root = PACKAGE.parent
    if not (root / "pyproject.toml").is_file():
        pytest.skip("an installed package: no source tree around it")
    for inside in (root, root / "tests" / "runs-x", root / ".git" / "x"):
        refused(["run", "demo", "-o", inside, "--check"], capsys, "inside the source tree")
    assert not (root / "tests" / "runs-x").exists()
