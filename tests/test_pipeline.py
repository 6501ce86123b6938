"""Recipes: every shipped recipe resolves (no downloads), and a whole recipe runs on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from radis_mlx.fileio import UserError
from radis_mlx.pipeline import RECIPES, load_recipe, run

ALL = sorted(p.name for p in RECIPES.glob("*.yaml"))


def test_recipes_are_shipped():
    assert {"demo.yaml", "radis-llama2-7b-chat.yaml", "radis-mistral-7b-instruct-v0.2.yaml",
            "radis-qwen2.5-1.5b-instruct.yaml"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_recipe_resolves_to_hub_ids_or_local_files(name, shared_data):
    text = (RECIPES / name).read_text()
    assert text.startswith("#") and "Run:" in text  # header says what it reproduces and how to run it
    hub = load_recipe(RECIPES / name)
    local = load_recipe(RECIPES / name, data_root=str(shared_data))
    for r in (hub, local):
        assert r["methods"] and r["train_data"]
    if name != "demo.yaml":
        assert "/" in hub["train_data"] and not Path(hub["train_data"]).exists()  # a hub id
    for path in [local["train_data"], *local["eval"]["test_data"].values()]:
        assert Path(path).exists(), path  # --data-root points every file at a real local copy


def test_overrides_beat_the_yaml():
    r = load_recipe("demo", ["finetune.iters=3", "methods=[base]", "eval.suites=[translation]"])
    assert r["finetune"]["iters"] == 3 and list(r["methods"]) == ["base"]
    assert r["eval"]["suites"] == ["translation"]


def test_bad_recipes_are_clear_errors(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("model: x\nmethods: [base, magic]\n")
    with pytest.raises(UserError, match="unknown method 'magic'"):
        load_recipe(p)
    p.write_text("modle: x\n")
    with pytest.raises(UserError, match="unknown recipe key.*modle"):
        load_recipe(p)
    p.write_text("a: [\n")
    with pytest.raises(UserError, match="invalid YAML"):
        load_recipe(p)
    with pytest.raises(UserError, match="recipe not found"):
        load_recipe(tmp_path / "none.yaml")


def test_whole_recipe_runs_and_resumes_on_tiny_model(tmp_path, tiny_model_dir):
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(model=str(tiny_model_dir), methods=["base", "sft", "radis"])
    recipe["generate"]["max_tokens"] = 8
    recipe["finetune"].update(iters=2, batch_size=2, save_every=1)
    recipe["eval"]["max_tokens"] = {"translation": 8, "advbench": 8, "retention": 8}
    recipe["eval"]["limit"] = 3
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = run(load_recipe(p), out, progress=False)
    assert set(res["results"]) == {"base", "sft", "radis"}
    for m in ("sft", "radis"):
        assert (out / m / "train" / "adapters.safetensors").exists()
    rows = [json.loads(l) for l in (out / "generate" / "rationale-explain.jsonl").read_text().splitlines()]
    assert len(rows) == 48
    assert (out / "report" / "tradeoff.png").stat().st_size > 1000
    table = (out / "report" / "report.md").read_text()
    assert all(m in table for m in ("base", "sft", "radis"))
    assert "](report.html)" in table and (out / "report" / "report.html").stat().st_size > 1000
    cost = {r["name"]: r.get("gen_tokens") for r in res["report"]["runs"]}
    assert cost == {"base": None, "sft": 0, "radis": sum(r["n_tokens"] for r in rows)} and cost["radis"] > 0
    assert "## Paired tests" in table and {(t["method"], t["vs"]) for t in res["report"]["tests"]} == {
        ("base", "sft"), ("radis", "sft"), ("base", "radis"), ("sft", "radis")}
    before = (out / "radis" / "train" / "adapters.safetensors").read_bytes()
    run(load_recipe(p), out, progress=False)  # complete: every stage is skipped or served from cache
    assert (out / "radis" / "train" / "adapters.safetensors").read_bytes() == before
    # Other settings over finished runs: refused at planning, before any stage runs.
    with pytest.raises(UserError, match=r"sft/train: trained with other settings.*lr \(0\.0002 -> 0\.0005\)"):
        run(load_recipe(p, ["finetune.lr=0.0005"]), out, progress=False)
    assert (out / "radis" / "train" / "adapters.safetensors").read_bytes() == before


def test_methods_with_their_own_generate_settings_get_their_own_file(tmp_path, tiny_model_dir):
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(model=str(tiny_model_dir), methods={
        "radis": {}, "radis-r50-s0": {"method": "radis", "generate": {"ratio": 0.5}},
        "radis-r50-s1": {"method": "radis", "generate": {"ratio": 0.5}, "finetune": {"seed": 1}}})
    recipe["generate"]["max_tokens"] = 4
    recipe["finetune"].update(iters=1, batch_size=2, save_every=1)
    recipe["eval"].update(suites=["advbench"], limit=2, max_tokens={"advbench": 4})
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    run(load_recipe(p), out, progress=False)
    files = sorted((out / "generate").glob("*.jsonl"), key=lambda f: len(f.name))
    assert files[0].name == "rationale-explain.jsonl" and len(files) == 2  # both seeds share one
    full, half = ([json.loads(line) for line in f.read_text().splitlines()] for f in files)
    assert len(full) == len(half) == 48
    assert all(r["reason"] != "ratio" for r in full)
    assert 10 < sum(r["reason"] == "ratio" for r in half) < 38


def test_a_method_listed_at_several_adapter_scales_is_one_training_and_a_row_per_scale(tmp_path, tiny_model_dir):
    from radis_mlx.pipeline import plan
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(model=str(tiny_model_dir), methods={"base": {}, "sft-s0": {"method": "sft", "scales": [0.25, 0.5]}})
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    stages = plan(load_recipe(p), tmp_path / "run", progress=False)
    assert [st.kind for st in stages].count("finetune") == 1
    (ev,) = [st for st in stages if st.kind == "eval"]
    got = [(s.name, s.adapter, s.scale) for s in ev.config.models]
    train = str(tmp_path / "run" / "sft-s0" / "train")
    assert got == [("base", None, None), ("sft-s0", train, None), ("sft-s0@0.25", train, 0.25),
                   ("sft-s0@0.5", train, 0.5)]
    assert [Path(d).name for d in stages[-1].config["runs"]] == ["base", "sft-s0", "sft-s0@0.25", "sft-s0@0.5"]


# ---------------------------------------------------------------- settings checked before any work

BAD_KEYS = ["generate.bogus=1", "finetune.bogus=1", "eval.bogus=1", "methods.radis.generate.bogus=1",
            "methods.sft.finetune.bogus=1", "generate.max_tokens=many", "finetune.lr=[1]", "eval.limit=x",
            "finetune.report_to=[wandb, mlflow]",
            "eval.suites=[nope]", "methods.radis.generate.mode=seqkd", "generate.mode=nope", "finetune.normalize=mean",
            "methods.radis.finetune.w_ref=0", "generate.ratio=2", "seed=x", "limit=-1",
            "methods.sft.scales=[0.5, x]", "methods.sft.scales=[0.5, 1]", "methods.base.scales=[0.5]",
            "eval.split=valid"]


@pytest.mark.parametrize("override", BAD_KEYS)
def test_a_bad_setting_anywhere_fails_before_any_work(tmp_path, capsys, override):
    from radis_mlx.cli import main
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["run", "demo", "--out", str(out), "--set", override])
    err = capsys.readouterr().err.strip()
    key = override.partition("=")[0]
    assert e.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and (f"--set {key}" in err or "--set eval:" in err), err  # names key + source
    assert not out.exists()  # nothing ran, nothing was written


@pytest.mark.parametrize("section", ["generate", "finetune", "eval", "methods.radis.generate",
                                     "methods.radis.finetune"])
def test_a_bad_key_in_a_recipe_file_names_the_file(tmp_path, section):
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe["methods"] = {"base": {}, "radis": {}}
    d = recipe
    for k in section.split("."):
        d = d.setdefault(k, {})
    d["bogus"] = 1
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    with pytest.raises(UserError, match=rf"^{p}: {section}\.bogus: unknown setting"):
        run(load_recipe(p), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_check_prints_the_plan_and_runs_nothing(tmp_path, capsys):
    from radis_mlx.cli import main
    out = tmp_path / "run"
    main(["run", "demo", "--out", str(out), "--check", "--set", "methods=[base, sft, radis, seqkd]"])
    text = capsys.readouterr().out
    assert not out.exists()
    for line in ("sft  ", "finetune sft", "generate rationale-explain", "finetune radis", "generate seqkd",
                 "eval: base, sft, radis, seqkd", "report"):
        assert line in text, text
    assert str(out / "generate" / "rationale-explain.jsonl") in text and str(out / "radis" / "train") in text
    assert text.count("[to do]") == 7


# ---------------------------------------------------------------- the registry is the only place to edit

def test_a_method_registered_in_a_test_runs_through_run(tmp_path, tiny_model_dir, monkeypatch):
    from radis_mlx import methods, prompts
    from radis_mlx.targets import RAT, REF

    monkeypatch.setattr(methods, "MODES", dict(methods.MODES))  # registered for this test only
    monkeypatch.setattr(methods, "METHODS", dict(methods.METHODS))

    class Paraphrase(methods.Mode):
        name, help = "toy-paraphrase", "the model paraphrases the reference; trained as reference + paraphrase"

        def prompt(self, tokenizer, pair, t):
            return prompts.chat(tokenizer, f"Say this another way: {pair.ref}", t.system)

        def pieces(self, text, ref, separator):
            return [(ref, REF), (separator + text.strip(), RAT)]

    methods.register_mode(Paraphrase())
    methods.register(methods.Method("toy", "reference + the model's paraphrase", methods.Rule(("toy-paraphrase",)),
                                    generate=("toy-paraphrase",)))
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(model=str(tiny_model_dir), methods=["base", "toy"], limit=8)
    recipe["generate"] = {"max_tokens": 4}
    recipe["finetune"].update(iters=1, batch_size=2, save_every=1)
    recipe["eval"].update(suites=["advbench"], limit=2, max_tokens={"advbench": 4})
    p = tmp_path / "toy.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = run(load_recipe(p), out, progress=False)
    rows = [json.loads(line) for line in (out / "generate" / "toy-paraphrase.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["mode"] for r in rows} == {"toy-paraphrase"}
    assert (out / "toy" / "train" / "adapters.safetensors").exists() and set(res["results"]) == {"base", "toy"}
    assert "toy" in (out / "report" / "report.md").read_text()
    assert all(st.status() == "done" for st in run(load_recipe(p), out, check=True)["plan"]
               if st.kind in ("sample", "generate", "finetune", "report"))


# ---------------------------------------------------------------- general data stays out of the retention test

def _general_recipe(tmp_path, replay):
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"instruction": f"Name a colour, {i}.", "output": f"Blue {i}."}) + "\n"
                               for i in range(12)))
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(methods=["base", "replay", "mix"], replay_data=replay, mix_data=replay)
    recipe["eval"].update(suites=["retention"], test_data={"retention": str(general)}, limits={"retention": 5})
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(recipe))
    return p, general


def test_replay_and_mix_never_train_on_retention_test_items(tmp_path):
    from radis_mlx.data import load_instructions
    from radis_mlx.pipeline import RUN, plan

    p, general = _general_recipe(tmp_path, None)
    p.write_text(p.read_text().replace("replay_data: null", f"replay_data: {general}"))
    with pytest.raises(UserError, match=rf"{p}: replay_data: .*holds 5 instruction\(s\) of the eval suites"):
        plan(load_recipe(p), tmp_path / "run", progress=False)  # a whole file: refused before any work
    p, general = _general_recipe(tmp_path, {"local": "general.jsonl", "limit": 7})
    stages = plan(load_recipe(p, data_root=str(tmp_path)), tmp_path / "run", progress=False)
    subsets = [st for st in stages if st.kind == "subset"]
    assert [st.name for st in subsets] == ["replay_data", "mix_data"]
    for st in subsets:
        RUN["subset"](st, False)
    held_out = {r["id"] for r in load_instructions(general, 5, 0)}  # what the eval stage samples
    for st in subsets:
        ids = [json.loads(line)["id"] for line in st.out.read_text().splitlines()]
        assert len(ids) == 7 and not set(ids) & held_out
    assert all(json.loads(line)["output"] for line in subsets[1].out.read_text().splitlines())  # mix keeps answers
    p, _ = _general_recipe(tmp_path, {"local": "general.jsonl", "limit": 8})  # 12 - 5 left: too few
    with pytest.raises(UserError, match="has 7 instructions besides the eval suites', fewer than limit 8"):
        RUN["subset"]([st for st in plan(load_recipe(p, data_root=str(tmp_path)), tmp_path / "run2", False)
                       if st.kind == "subset"][0], False)


def test_recipe_json_keeps_every_method_when_only_some_run():
    from radis_mlx.recipe import only_methods, record
    r = load_recipe("demo")
    part = only_methods(r, "base")
    assert list(part["methods"]) == ["base"]
    assert record(part)["methods"] == r["methods"] and record(part)["only"] == "base"
    assert "only" not in record(r) and record(r)["methods"] == r["methods"]
    json.dumps(record(part))  # what recipe.json holds


def test_only_runs_the_matching_methods(tmp_path, capsys):
    from radis_mlx.cli import main
    out = tmp_path / "run"
    main(["run", "demo", "--out", str(out), "--check", "--only", "base,*-s0",
          "--set", "methods={base: {}, sft-s0: {method: sft}, sft-s1: {method: sft}, radis-s0: {method: radis}}"])
    text = capsys.readouterr().out
    assert "eval: base, sft-s0, radis-s0 on" in text and "sft-s1" not in text
    with pytest.raises(SystemExit):
        main(["run", "demo", "--out", str(out), "--check", "--only", "nope"])
    assert "--only nope: matches none" in capsys.readouterr().err


def test_radis_turn_runs_through_run_on_the_radis_rows(tmp_path, tiny_model_dir):
    """radis-turn through `run`: it shares radis's generate file, trains on its rows laid out in two
    exchanges, and is evaluated and reported like any method."""
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(model=str(tiny_model_dir), methods=["radis", "radis-turn"])
    # the tiny model's noise is the rationale
    recipe["generate"].update(max_tokens=8, unfinished="keep", max_repeat=1.0)
    recipe["finetune"].update(iters=2, batch_size=2, save_every=1)
    recipe["eval"].update(max_tokens={"translation": 8, "advbench": 8, "retention": 8}, limit=3)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    res = run(load_recipe(p), out, progress=False)
    assert set(res["results"]) == {"radis", "radis-turn"}
    assert [f.name for f in (out / "generate").glob("*.jsonl")] == ["rationale-explain.jsonl"]  # one file, shared
    cfg = yaml.safe_load((out / "radis-turn" / "train" / "config.yaml").read_text())
    assert cfg["method"] == "radis-turn"
    a, b = (json.loads((out / m / "train" / "summary.json").read_text())["data"]["main"]["tokens"]
            for m in ("radis", "radis-turn"))
    assert a["ref"] == b["ref"] and b["eot"] > a["eot"] and b["prompt"] > a["prompt"]
    assert "radis-turn" in (out / "report" / "report.md").read_text()
