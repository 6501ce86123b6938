"""The commands' flags are made from their settings (cli_options.py): one option per field, with the
field's help and default; only typed flags override the --config file; old names still work."""

from __future__ import annotations

import dataclasses
import json

import pytest
import typer
from typer.testing import CliRunner

from radis_mlx import settings
from radis_mlx.cli import app, main
from radis_mlx.evals.harness import EvalConfig
from radis_mlx.evals.translate_suite import TranslateSuiteConfig
from radis_mlx.generate.config import GenerateConfig
from radis_mlx.translating import TranslateConfig
from radis_mlx.tuner.config import FinetuneConfig, config_hash

ROW = {"src": "Der Hund schläft.", "ref": "The dog sleeps.", "src_lang": "de", "tgt_lang": "en"}

# command -> (its settings, fields that are no option of it, its other parameters). The documented
# exceptions: eval's --model/--adapter/--name make `models` and --limit N|SUITE=N sets `limits`; the
# judge's API key is a secret (environment only); translate's input is its argument.
COMMANDS = {
    "generate": (GenerateConfig, set(), {"config"}),
    "finetune": (FinetuneConfig, set(), {"config", "lora", "dora", "full"}),
    "eval": (EvalConfig, {"models", "limits", "judge_api_key"},
             {"config", "model", "adapter", "name", "responses", "ifeval_conformance"}),
    "translate": (TranslateConfig, {"input"}, {"config", "input_"}),
    "translate-suite": (TranslateSuiteConfig, {"progress"}, {"config"}),
}
# Fields whose option the command declares itself (a repeatable SUITE=PATH or N|SUITE=N list).
OWN = {("eval", "test_data"), ("eval", "limit"), ("eval", "max_tokens"), ("translate-suite", "test_data")}
REQUIRED = {("generate", "data"), ("generate", "out"), ("eval", "out"), ("translate-suite", "suite"),
            ("translate-suite", "out")}  # no default shown: a flag or the --config file gives them


@pytest.fixture(autouse=True)
def fresh_notes(monkeypatch):
    monkeypatch.setattr(settings, "_said", set())  # a note is said once per process: once per test here


def _params(name):
    cmd = typer.main.get_command(app).commands[name]
    return {p.name: p for p in cmd.params}


def _expected_default(f):
    """The dataclass default as a flag would spell it: the list as a comma list, line breaks escaped."""
    v = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if v is None or v == {} or v == [] or v is dataclasses.MISSING:
        return None
    if isinstance(v, list):
        return ",".join(v)
    return v.replace("\\", "\\\\").replace("\n", "\\n") if isinstance(v, str) else v


@pytest.mark.parametrize("name", COMMANDS)
def test_the_options_are_the_settings_fields(name):
    cls, not_options, extra = COMMANDS[name]
    shown = {n for n, p in _params(name).items() if not getattr(p, "hidden", False)}
    assert shown == {f.name for f in dataclasses.fields(cls)} - not_options | extra


@pytest.mark.parametrize("name", COMMANDS)
def test_each_option_has_its_fields_help_and_default(name):
    cls, not_options, _ = COMMANDS[name]
    params = _params(name)
    for f in dataclasses.fields(cls):
        if f.name in not_options:
            continue
        p = params[f.name]
        assert p.help and p.help.strip(), (name, f.name)
        if (name, f.name) in OWN:  # the command's own parameter: its help says the flag's own form
            continue
        if cls is not TranslateSuiteConfig:  # its help is in cli.py until its module is free to edit
            assert p.help.startswith(f.metadata["help"]), (name, f.name)
        want = None if (name, f.name) in REQUIRED else _expected_default(f)
        assert p.default == want, (name, f.name, p.default, want)
        assert bool(p.show_default) == (want is not None), (name, f.name)
        if f.metadata.get("choices"):
            assert p.metavar == "|".join(f.metadata["choices"]), (name, f.name)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_shows_every_option_with_its_help(name):
    cls, not_options, _ = COMMANDS[name]
    r = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "2000", "TERMINAL_WIDTH": "2000"})
    assert r.exit_code == 0, r.output
    params = _params(name)
    for f in dataclasses.fields(cls):
        if f.name not in not_options and f.name != "input":
            p = params[f.name]
            assert p.opts[0] in r.output, (name, p.opts[0])
            assert p.help.split("(")[0].split(",")[0].strip()[:30] in r.output, (name, f.name)
    if name == "finetune":
        assert "[default: 512]" in r.output and "--learning-rate" in r.output and "--lora" in r.output


# ---------------------------------------------------------------- the layers: defaults < --config < typed flags

class Captured(Exception):
    """Raised by a stage replaced for the test: carries the settings the command built."""


@pytest.fixture
def capture(monkeypatch):
    import radis_mlx.evals.harness as harness
    import radis_mlx.generate as generate
    import radis_mlx.translating as translating
    import radis_mlx.tuner as tuner

    def stage(cfg, *a, **k):
        raise Captured(cfg)
    for mod, attr in ((generate, "generate"), (tuner, "finetune"), (harness, "evaluate"),
                      (translating, "translate_file")):
        monkeypatch.setattr(mod, attr, stage)

    def run(argv):
        with pytest.raises(Captured) as e:
            main([str(a) for a in argv])
        return e.value.args[0]
    return run


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_a_typed_flag_overrides_the_config_file_and_an_untyped_one_does_not(tmp_path, capture):
    y = _yaml(tmp_path, "batch_size: 2\nlr: 3e-4\nmax_seq_len: 256\nslice_head: false\n")
    cfg = capture(["finetune", "-d", "x", "-o", tmp_path / "f", "--config", y, "--batch-size", "4"])
    assert (cfg.batch_size, cfg.lr, cfg.max_seq_len, cfg.slice_head) == (4, 3e-4, 256, False)
    y = _yaml(tmp_path, "max_tokens: 99\ntemperature: 0.5\nout: from-yaml.jsonl\n")
    cfg = capture(["generate", "-d", "x", "-c", y, "--temperature", "0.7"])
    assert (cfg.max_tokens, cfg.temperature, cfg.out, cfg.batch_size) == (99, 0.7, "from-yaml.jsonl", 64)
    y = _yaml(tmp_path, "suites: [advbench]\nbatch_size: 7\nstop_decoding: false\nlimits: {advbench: 3}\n")
    cfg = capture(["eval", "-o", tmp_path / "e", "--config", y, "--seed", "3", "--limit", "5"])
    assert (cfg.suites, cfg.batch_size, cfg.stop_decoding, cfg.seed, cfg.limit, cfg.limits) == \
        (["advbench"], 7, False, 3, 5, {})
    cfg = capture(["eval", "-o", tmp_path / "e", "--config", y, "--stop-decoding", "--max-tokens", "9"])
    assert cfg.stop_decoding and cfg.limits == {"advbench": 3} and set(cfg.max_tokens.values()) == {9}


def test_flags_reach_the_settings_as_typed(tmp_path, capture):
    cfg = capture(["eval", "-o", tmp_path / "e", "--suites", "advbench", "--stop", "\\t", "--no-stop", "--quiet",
                   "--refusal-keywords", "nein,no", "--no-comet"])
    assert (cfg.stop, cfg.stop_decoding, cfg.progress, cfg.refusal_keywords, cfg.comet) == \
        ("\t", False, False, ["nein", "no"], False)
    src = tmp_path / "in.txt"
    src.write_text("Hallo\n")
    cfg = capture(["translate", src, "--no-stop", "--translate-template", "{src}\\n=>", "--src", "en", "--tgt", "de"])
    assert (cfg.input, cfg.stop_decoding, cfg.translate_template, cfg.src) == (str(src), False, "{src}\n=>", "en")
    cfg = capture(["finetune", "-d", "x", "-o", tmp_path / "f", "--dora", "--learning-rate", "2e-5",
                   "--lora-keys", "self_attn.q_proj,self_attn.v_proj"])
    assert (cfg.fine_tune_type, cfg.lr, cfg.lora_keys) == ("dora", 2e-5, ["self_attn.q_proj", "self_attn.v_proj"])


def test_an_old_flag_works_with_one_note(tmp_path, capture, capsys):
    cfg = capture(["generate", "-d", "x", "-o", tmp_path / "g.jsonl", "--template", "T: {src}\\n"])
    assert cfg.translate_template == "T: {src}\n"
    assert capsys.readouterr().err.strip() == "note: --template is deprecated: use --translate-template"
    settings._said.clear()
    cfg = capture(["finetune", "-d", "x", "-o", tmp_path / "f", "--template", "{src}"])
    assert cfg.translate_template == "{src}"
    assert "note: --template is deprecated: use --translate-template" in capsys.readouterr().err


def test_an_old_config_key_works_with_a_note(tmp_path, capture, capsys):
    y = _yaml(tmp_path, "template: '{src}'\n")
    cfg = capture(["finetune", "-d", "x", "-o", tmp_path / "f", "--config", y])
    assert cfg.translate_template == "{src}"
    assert capsys.readouterr().err.strip() == f"note: {y}: template is deprecated: use translate_template"
    y = _yaml(tmp_path, "stop: false\n")
    assert settings.build(TranslateConfig, [settings.file_layer(y)]).stop_decoding is False


def test_an_old_recipe_key_works_with_a_note(tmp_path, capsys):
    main(["run", "demo", "--out", str(tmp_path / "run"), "--check", "--set", "finetune.template='{src}'"])
    err = capsys.readouterr().err
    assert "--set finetune.template is deprecated: use translate_template" in err


def test_bad_input_stays_one_line(tmp_path, capture, capsys):
    for argv, words in [
        (["generate", "-d", "x", "-o", tmp_path / "g.jsonl", "--template", "x", "--batch-size", "0"], "--batch-size"),
        (["generate", "-d", "x", "-o", tmp_path / "g.jsonl", "--template", "x", "--translate-template", "y"],
         "--template: the old name of --translate-template"),
        (["generate", "-d", "x"], "--out: required"),
        (["eval", "--suites", "advbench", "--config", tmp_path / "none.yaml", "-o", tmp_path / "e"],
         "config file not found"),
        (["finetune", "-d", "x", "-o", tmp_path / "f", "--config", _yaml(tmp_path, "lr: fast\n")], "c.yaml: lr"),
        (["eval", "--suites", "advbench", "-o", tmp_path / "e", "--mtbench-judge", "x"], "No such option"),
    ]:
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and words in err, \
            (argv, err)


def test_a_renamed_setting_keeps_the_runs_hash():
    """A run stopped before translate_template was renamed (from template) still resumes."""
    traj = FinetuneConfig(data="x").trajectory()
    old = {("template" if k == "translate_template" else k): v for k, v in traj.items()}
    assert "translate_template" in traj and config_hash(traj) == config_hash(old)
    assert json.dumps(sorted(traj)) != json.dumps(sorted(old))
