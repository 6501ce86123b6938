"""Test sets, training pairs and replay data from the Hugging Face hub, offline: a hub cache filled
from ../shared/data (tests/hub_data.py) must give every suite the very items the local files give,
`eval` and `run --check` must work from it with no data root, and a missing entry is one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hub_data import _parquet, fill_hub_cache, put, use_cache

from radis_mlx.cli import main
from radis_mlx.data import load_pairs
from radis_mlx.evals import suites
from radis_mlx.evals.harness import EvalConfig
from radis_mlx.fileio import UserError
from radis_mlx.pipeline import RECIPES

RECIPE_NAMES = sorted(p.stem for p in RECIPES.glob("*.yaml"))


@pytest.fixture(scope="module")
def filled_home(tmp_path_factory, shared_data) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    fill_hub_cache(home / "hub", shared_data)
    return home


@pytest.fixture
def hub_only(filled_home, monkeypatch) -> Path:
    return use_cache(monkeypatch, filled_home)


def _item(x) -> tuple:
    """What a suite's item is, whichever file it came from: its id and every text a prompt or score uses."""
    if hasattr(x, "src"):  # a translation pair
        return x.id, x.src_lang, x.tgt_lang, x.src, x.ref
    if hasattr(x, "key"):  # an IFEval prompt
        return x.key, x.prompt, tuple(x.instruction_id_list), json.dumps(x.kwargs, sort_keys=True)
    return x["id"], x["instruction"], tuple(x.get("turns") or ()), x.get("gold"), x.get("dataset")


HUB_SUITES = tuple(s for s in suites.SUITES if suites.get(s).hub)


def test_a_suite_without_a_hub_copy_is_one_line(hub_only, monkeypatch):
    # every shipped suite has a hub copy now; a suite declared without one reads local files only
    assert set(HUB_SUITES) == set(suites.SUITES)
    monkeypatch.setitem(suites.REGISTRY, "paragraphs", dataclasses.replace(suites.get("paragraphs"), hub=None))
    with pytest.raises(UserError, match=r"suite paragraphs has no hub copy: pass --test-data paragraphs=PATH"):
        suites.load_inputs(EvalConfig(suites=["paragraphs"]), "paragraphs")


def test_paragraphs_read_their_own_directions_whatever_the_translation_pairs(hub_only, shared_data):
    # a study translating both ways still reads WMT23's de-en paragraphs alone, from either copy
    for td in ({}, {"root": str(shared_data)}):
        items = suites.load_inputs(EvalConfig(suites=["paragraphs"], pairs="de-en,en-de", test_data=td), "paragraphs")
        assert {(p.src_lang, p.tgt_lang) for p in items} == {("de", "en")} and len(items) > 100
        both = EvalConfig(suites=["paragraphs"], paragraph_pairs="de-en,en-de", limit=5, test_data=td)
        assert [(p.src_lang, p.tgt_lang) for p in suites.load_inputs(both, "paragraphs")] == [("de", "en")] * 5 + [
            ("en", "de")] * 5


@pytest.mark.parametrize("suite", HUB_SUITES)
def test_every_suite_reads_the_same_items_from_the_hub_and_locally(suite, hub_only, shared_data):
    hub_cfg = EvalConfig(suites=[suite])
    local_cfg = EvalConfig(suites=[suite], test_data={"root": str(shared_data)})
    assert suites.data_status(hub_cfg, suite).startswith("cached (")
    assert suites.data_status(local_cfg, suite).startswith(f"local {shared_data}")
    from_hub, local = suites.load_inputs(hub_cfg, suite), suites.load_inputs(local_cfg, suite)
    assert len(from_hub) == len(local) > 0
    assert [_item(x) for x in from_hub] == [_item(x) for x in local]
    # a seeded sample picks the same items too (eval caches and paired tests key on the ids)
    pick = lambda cfg: [_item(x)[0] for x in suites.load_inputs(cfg, suite)]  # noqa: E731
    assert pick(EvalConfig(suites=[suite], limit=5)) == pick(EvalConfig(suites=[suite], limit=5,
                                                                           test_data={"root": str(shared_data)}))


def test_a_recipe_hub_id_picks_the_suites_hub_copy(hub_only, shared_data):
    cfg = EvalConfig(suites=["gsm8k", "retention"],
                     test_data={"gsm8k": "openai/gsm8k:main", "retention": "HuggingFaceH4/mt_bench_prompts"})
    assert suites.data_label(cfg, "gsm8k") == f"hf:openai/gsm8k@{suites.GSM8K_HUB.revision}"
    # the dev recipe's retention reads MT-Bench's first turns: ids are FastChat's question ids
    assert [r["id"] for r in suites.load_inputs(cfg, "retention")][:2] == ["81", "82"]
    with pytest.raises(UserError, match="nobody/nothing: test data for suite gsm8k not found"):
        suites.load_inputs(EvalConfig(test_data={"gsm8k": "nobody/nothing"}), "gsm8k")


def test_training_pairs_from_the_hub_equal_the_local_files(hub_only, shared_data):
    alma = shared_data / "alma_human_parallel"
    for directions in ("de-en,en-de", "cs-en"):
        hub = load_pairs("haoranxu/ALMA-Human-Parallel", directions, limit=50, seed=1)
        local = load_pairs(alma, directions, limit=50, seed=1)
        assert [(p.id, p.src, p.ref) for p in hub] == [(p.id, p.src, p.ref) for p in local]
    dev = load_pairs("haoranxu/ALMA-Human-Parallel:de-en:validation", split="test")
    assert [p.id for p in dev] == [p.id for p in load_pairs(alma / "deen" / "valid.de-en.json")]


def test_a_missing_cache_entry_is_one_line_naming_the_dataset(tmp_path, shared_data, monkeypatch, capsys):
    home = use_cache(monkeypatch, tmp_path / "hf")
    fill_hub_cache(home / "hub", shared_data, skip=("openai/gsm8k",))
    with pytest.raises(SystemExit) as e:
        main(["eval", "--suites", "advbench,gsm8k", "--limit", "2", "--out", str(tmp_path / "ev")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "openai/gsm8k@main: main/test-00000-of-00001.parquet is not in the Hugging Face cache" in err
    assert "hf download openai/gsm8k main/test-00000-of-00001.parquet --repo-type dataset --revision main" in err
    assert not (tmp_path / "ev").exists()  # refused before any work


def _results(out: Path) -> dict:
    """Every suite's summary, its output paths made relative to the eval's folder."""
    res = json.loads(next(out.glob("*/results.json")).read_text().replace(str(out), "OUT"))["suites"]
    for s in res.values():
        s.pop("settings"), s.pop("wall_s", None)
    return res


def test_eval_runs_every_suite_offline_from_the_cache_as_from_the_data_root(tmp_path, hub_only, shared_data,
                                                                             tiny_model_dir):
    argv = ["eval", "--model", str(tiny_model_dir), "--suites", ",".join(HUB_SUITES), "--limit", "2",
            "--max-tokens", "4", "--batch-size", "64"]
    main([*argv, "--out", str(tmp_path / "hub")])
    main([*argv, "--out", str(tmp_path / "local"), "--test-data", str(shared_data)])
    hub, local = _results(tmp_path / "hub"), _results(tmp_path / "local")
    assert set(hub) == set(HUB_SUITES)
    # scored against reference A alone, the data root's WMT22 gives the hub copy's scores exactly
    main([*argv, "--out", str(tmp_path / "local-a"), "--test-data", str(shared_data), "--references", "first"])
    assert _results(tmp_path / "local-a")["translation"] == hub["translation"]
    # The hub's WMT22 copy (ALMA's) has reference A only; the local one adds the second references,
    # so BLEU/chrF may differ. The same sources were translated to the same outputs:
    def hyps(out: Path) -> list:
        return [(r["id"], r["hyp"]) for r in map(json.loads, next(out.glob("*/translation.jsonl")).open())]
    assert hyps(tmp_path / "hub") == hyps(tmp_path / "local")
    for s in set(HUB_SUITES) - {"translation"}:
        assert hub[s] == local[s], s


def _sources(out: str) -> dict[str, str]:
    lines = out.split("sources:\n", 1)[1].strip().splitlines()
    return dict(line.strip().split(None, 1) if not line.strip().startswith("eval ") else
                (" ".join(line.split()[:2]), " ".join(line.split()[2:])) for line in lines)


def _named_suites(name: str) -> set[str]:
    """Every suite a recipe names: in its eval section and in any method's own."""
    import yaml

    r = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    ms = r["methods"].values() if isinstance(r["methods"], dict) else []  # a list names methods only
    evals = [r.get("eval") or {}, *((m or {}).get("eval") or {} for m in ms)]
    return {s for e in evals for s in e.get("suites", ())}


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_every_recipe_checks_offline_from_the_cache(name, hub_only, tmp_path, capsys):
    main(["run", name, "--check", "--quiet", "--out", str(tmp_path / "run")])
    src = _sources(capsys.readouterr().out)
    data = {k: v for k, v in src.items() if k != "model"}
    assert any(k.startswith("eval ") for k in data) and "train_data" in data
    assert {f"eval {s}" for s in _named_suites(name)} <= set(data)  # a method's own suites too
    for what, where in data.items():  # no data root: the hub cache (or the demo's shipped files)
        assert where.startswith("cached (") or "/demo_data/" in where, (what, where)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", RECIPE_NAMES)
def test_every_recipe_checks_with_a_data_root(name, tmp_path, monkeypatch, shared_data, capsys):
    use_cache(monkeypatch, tmp_path / "empty")  # offline with nothing cached: every file must be local
    main(["run", name, "--check", "--quiet", "--data-root", str(shared_data), "--out", str(tmp_path / "run")])
    src = _sources(capsys.readouterr().out)
    for what, where in src.items():
        if what != "model":
            assert where.startswith("local "), (what, where)


def test_check_refuses_a_recipe_whose_test_set_is_missing_before_any_work(tmp_path, shared_data, monkeypatch,
                                                                          capsys):
    home = use_cache(monkeypatch, tmp_path / "hf")
    fill_hub_cache(home / "hub", shared_data, skip=("google/IFEval",))
    with pytest.raises(SystemExit) as e:
        main(["run", "radis-qwen2.5-1.5b-instruct", "--check", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1
    assert "eval.test_data.ifeval: google/IFEval@966cd89545d6: ifeval_input_data.jsonl is not in" in err
    assert "hf download google/IFEval ifeval_input_data.jsonl" in err


def test_check_finds_replay_data_that_holds_eval_items(hub_only, tmp_path, capsys):
    # the paper recipes' replay data before the fix: the whole AlpacaEval set, which the eval tests
    with pytest.raises(SystemExit):
        main(["run", "radis-llama2-7b-chat", "--check", "--quiet", "--set", "replay_data=tatsu-lab/alpaca_eval",
              "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert "--set replay_data:" in err and "alpaca_eval.json holds 200 instruction(s) of the eval suites" in err


def test_model_status_reads_a_cached_config(tmp_path, monkeypatch):
    from radis_mlx.preflight import model_status

    home = use_cache(monkeypatch, tmp_path / "hf")
    put(home / "hub", "acme/tiny", "main", "config.json", b'{"model_type": "llama"}', repo_type="model")
    assert model_status("acme/tiny") == "cached acme/tiny (llama)"
    assert "fetch it first with `hf download acme/other`" in model_status("acme/other")
    put(home / "hub", "acme/broken", "main", "config.json", b'{"model_type": ', repo_type="model")
    with pytest.raises(UserError, match="acme/broken: its cached config.json .* is unreadable"):
        model_status("acme/broken")
    with pytest.raises(UserError, match="not a Hugging Face id"):
        model_status("a/b/c")


def test_translation_reads_only_the_declared_directions(hub_only):
    # a whole-repository download also brings WMT21's is-en into the snapshot folder
    src = suites.WMT22_HUB
    extra = put(hub_only / "hub", src.repo, src.revision, "is-en/test-00000-of-00001-bb3b8280f4b7ff31.parquet",
                _parquet([{"is-en": {"is": "Halló", "en": "Hello"}}]))
    try:
        pairs = suites.load_inputs(EvalConfig(suites=["translation"], limit=1), "translation")
    finally:
        extra.unlink()  # the cache is the module's
    assert sorted({f"{p.src_lang}-{p.tgt_lang}" for p in pairs}) == sorted(f.split("/")[0] for f in src.files)


def test_online_check_asks_the_hub_which_files_it_has(tmp_path, monkeypatch):
    """Online and not cached: --check asks the hub for the repository's file list (no download)."""
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub import constants

    from radis_mlx.data import hub

    use_cache(monkeypatch, tmp_path / "hf")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    asked = []

    def repo_info(self, repo, repo_type=None, revision=None, files_metadata=False):
        asked.append((repo, repo_type, revision))
        return SimpleNamespace(siblings=[SimpleNamespace(rfilename="main/test-00000-of-00001.parquet")])

    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", repo_info)
    assert hub.status(suites.GSM8K_HUB) == "on the hub, downloaded on first use (openai/gsm8k@main)"
    assert asked == [("openai/gsm8k", "dataset", "main")]
    with pytest.raises(UserError, match=r"google/IFEval@966cd89545d6: no file ifeval_input_data.jsonl in the repo"):
        hub.status(suites.IFEVAL_HUB)


def test_replay_data_names_a_file_or_a_known_hub_dataset(hub_only, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "demo", "--check", "--set", "methods=[replay]", "--set", "replay_data=nobody/nothing",
              "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --set replay_data: nobody/nothing: no such file, and not a hub dataset "
                          "radis-mlx reads instructions from (") and "tatsu-lab/alpaca_eval" in err
