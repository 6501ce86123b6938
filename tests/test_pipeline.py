"""Recipes: every shipped recipe resolves (no downloads), and a whole recipe runs on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from radis_mlx.io import UserError
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
    before = (out / "radis" / "train" / "adapters.safetensors").read_bytes()
    run(load_recipe(p), out, progress=False)  # complete: every stage is skipped or served from cache
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
