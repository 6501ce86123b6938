"""The eval runner on the tiny model (evals/harness.py): cache, resume, adapters against their base, the
eval CLI, and every judge-free suite on the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radis_mlx.cli import main
from radis_mlx.evals.flags import model_specs
from radis_mlx.evals import context, harness
from radis_mlx.evals.suites import SUITES
from radis_mlx.evals.harness import EvalConfig, evaluate
from radis_mlx.fileio import UserError

from conftest import make_adapter
from handmade import small_cfg, write_data


@pytest.fixture
def count_decode(monkeypatch):
    calls: list[int] = []
    real = context.decode

    def counting(model, tok, token_lists, *a, **k):
        calls.append(len(token_lists))
        return real(model, tok, token_lists, *a, **k)

    monkeypatch.setattr(context, "decode", counting)
    return calls


# ------------------------------------------------------------------ runner: cache, resume, outputs

def test_second_eval_is_all_cache_hits(tmp_path, tiny_model_dir, count_decode):
    cfg = small_cfg(tmp_path, tiny_model_dir)
    r1 = evaluate(cfg)
    # the model is its own retention base: its answers join every suite's prompts in one batch
    assert count_decode == [4 + 2 + 4 + 4 + 4]
    r2 = evaluate(cfg)
    assert len(count_decode) == 1, "second eval of the same model generated again"
    s1, s2 = r1["model"]["suites"], r2["model"]["suites"]
    def strip(d):
        return {k: v for k, v in d.items() if k != "wall_s" and not k.endswith("_this_run")}
    for suite in cfg.suites:
        assert strip(s1[suite]) == strip(s2[suite])
    assert s2["translation"]["generated_tokens_this_run"] == 0
    run = Path(cfg.out) / "model"
    res = json.loads((run / "results.json").read_text())
    assert set(res["suites"]) == set(cfg.suites) and res["suites"]["advbench"]["settings"]["max_tokens"] == 6
    assert res["suites"]["retention"]["nll_increase"] == pytest.approx(0, abs=1e-6)  # the model is its own base
    assert (Path(cfg.out) / "results.md").read_text().count("| model |") == 1
    rows = [json.loads(l) for l in (run / "ifeval" / "eval_results_strict.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    assert {"follow_all_instructions", "follow_instruction_list", "prompt", "response"} <= set(rows[0])
    # a different max_tokens is a different generation: everything is generated again
    cfg.max_tokens = {s: 5 for s in SUITES}
    cfg.suites = ["advbench"]
    evaluate(cfg)
    assert count_decode[-1] == 4


def test_interrupted_eval_resumes(tmp_path, tiny_model_dir, monkeypatch, count_decode):
    cfg = small_cfg(tmp_path, tiny_model_dir, suites=["advbench"])
    real = context.decode

    def dies_after_two(model, tok, token_lists, dcfg, on_done=None, **k):
        n = [0]

        def cb(c):
            on_done(c)
            n[0] += 1
            if n[0] == 2:
                raise KeyboardInterrupt

        return real(model, tok, token_lists, dcfg, on_done=cb, **k)

    monkeypatch.setattr(context, "decode", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        evaluate(cfg)
    cache = Path(cfg.out) / "model" / "cache" / "advbench.jsonl"
    assert len(cache.read_text().splitlines()) == 2
    with open(cache, "ab") as f:
        f.write(b'{"key": "torn')  # a kill -9 mid-write
    monkeypatch.setattr(context, "decode", real)
    calls = []
    monkeypatch.setattr(context, "decode", lambda m, t, tl, *a, **k: calls.append(len(tl)) or real(m, t, tl, *a, **k))
    r = evaluate(cfg)
    assert calls == [2]  # only the rows the interrupted run didn't finish
    assert r["model"]["suites"]["advbench"]["n"] == 4 and len(cache.read_text().splitlines()) == 4


def test_adapter_specs_names_and_retention_against_another_base(tmp_path, tiny_model_dir):
    from conftest import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=1)
    cfg = small_cfg(tmp_path, tiny_model_dir, suites=["retention"], base_model=str(other))
    cfg.models = [f"mine={tiny_model_dir}", str(other)]
    r = evaluate(cfg)
    assert set(r) == {"mine", "other"}
    assert r["other"]["suites"]["retention"]["nll_increase"] == pytest.approx(0, abs=1e-6)
    assert r["mine"]["suites"]["retention"]["nll_increase"] != pytest.approx(0, abs=1e-3)
    assert len(list((Path(cfg.out) / "_retention").iterdir())) == 1  # one base, answered once
    s = context.parse_model_spec("ft=org/model,adapter=runs/a1")
    assert (s.name, s.model, s.adapter) == ("ft", "org/model", "runs/a1")
    assert context.parse_model_spec("runs/lr=1e-4/model").model == "runs/lr=1e-4/model"
    specs = model_specs(["base"], ["a1", "a2"], ["x", "y"])
    assert [(s.model, s.adapter, s.name) for s in specs] == [("base", "a1", "x"), ("base", "a2", "y")]
    with pytest.raises(UserError, match="adapter_config.json"):
        evaluate(EvalConfig(models=[f"{tiny_model_dir},adapter={tmp_path}"], out=str(tmp_path / "o2"),
                            suites=["advbench"], test_data=cfg.test_data, progress=False))


def test_adapter_run_measures_forgetting_against_its_base(tmp_path, tiny_model_dir, count_decode):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    cfg = small_cfg(tmp_path, tiny_model_dir, suites=["advbench", "retention"])
    cfg.models = [context.ModelSpec(str(tiny_model_dir), str(adapter), "lora"), str(tiny_model_dir)]
    r = evaluate(cfg)
    assert list(r) == ["lora", "model"]  # results keep the given order; the base ran first
    assert r["model"]["suites"]["retention"]["nll_increase"] == pytest.approx(0, abs=1e-6)
    assert abs(r["lora"]["suites"]["retention"]["nll_increase"]) > 1e-3
    assert r["lora"]["suites"]["retention"]["base_nll"] == pytest.approx(r["model"]["suites"]["retention"]["nll"])
    assert r["lora"]["model_key"] != r["model"]["model_key"]
    # base answers + advbench in one batch for the base model, then advbench for the adapter
    assert count_decode == [4 + 4, 4]
    lora_out = [json.loads(l)["response"] for l in (Path(cfg.out) / "lora" / "advbench.jsonl").read_text().splitlines()]
    base_out = [json.loads(line)["response"]
                for line in (Path(cfg.out) / "model" / "advbench.jsonl").read_text().splitlines()]
    assert lora_out != base_out


# ------------------------------------------------------------------ CLI

@pytest.mark.parametrize("argv,msg", [
    (["--suites", "translation,nope"], "unknown suite"),
    (["--suites", "advbench", "--limit", "abc"], "--limit"),
    (["--suites", "advbench", "--limit", "gsm9k=3"], "unknown suite"),
    (["--suites", "gsm8k"], "openai/gsm8k@main: main/test-00000-of-00001.parquet is not in the Hugging Face cache"),
    (["--suites", "advbench", "--test-data", "/no/such/file.csv"], "no such file"),
    (["--suites", "translation", "--responses", "r.jsonl"], "IFEval only"),
    (["--suites", "advbench", "--model", "a", "--model", "b", "--adapter", "x", "--adapter", "y",
      "--adapter", "z"], "--adapter"),
    (["--suites", "advbench", "--adapter-scale", "0.5"], "needs an adapter"),
    (["--suites", "advbench", "--split", "valid"], "split: must be one of dev, test"),
])
def test_eval_cli_exits_2_on_bad_input(tmp_path, capsys, monkeypatch, argv, msg):
    from hub_data import use_cache
    use_cache(monkeypatch, tmp_path / "hf")  # no data given: the hub copy, which an empty offline cache lacks
    with pytest.raises(SystemExit) as e:
        main(["eval", "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_eval_cli_scores_given_ifeval_responses(tmp_path, capsys):
    data = write_data(tmp_path / "data")
    resp = tmp_path / "responses.jsonl"
    greeting = "hello my friend. it is a lovely sunny day and i hope you are well."
    resp.write_text(json.dumps({"prompt": "Write a greeting without commas.", "response": "Hello there, friend"}) + "\n"
                    + json.dumps({"key": 2, "response": greeting}) + "\n")
    main(["eval", "--suites", "ifeval", "--responses", str(resp), "--test-data", f"ifeval={data['ifeval']}",
          "--out", str(tmp_path / "scored")])
    rows = [json.loads(l) for l in (tmp_path / "scored" / "eval_results_strict.jsonl").read_text().splitlines()]
    verdicts = [(r["follow_all_instructions"], r["follow_instruction_list"]) for r in rows]
    assert verdicts == [(False, [False]), (True, [True])]
    assert rows[0]["instruction_id_list"] == ["punctuation:no_comma"]
    assert (tmp_path / "scored" / "eval_results_loose.jsonl").exists()
    assert "prompt strict 0.5000" in capsys.readouterr().out


def test_scored_responses_with_lone_surrogates_are_valid_utf8(tmp_path):
    """A lone surrogate in a response (legal in JSON's \\u escapes) is written escaped, not a crash."""
    data = write_data(tmp_path / "data")
    resp = tmp_path / "responses.jsonl"
    resp.write_text(json.dumps({"key": 2, "response": "odd \ud800 bytes"}) + "\n")
    harness.score_ifeval_responses(data["ifeval"], resp, tmp_path / "scored")
    for mode in ("strict", "loose"):
        row, = [json.loads(l) for l in (tmp_path / "scored" / f"eval_results_{mode}.jsonl").read_text().splitlines()]
        assert row["response"] == "odd \ud800 bytes"


def test_ifeval_refusals_are_counted_and_reported_as_over_refusal(tmp_path):
    from radis_mlx.report import report

    data = write_data(tmp_path / "data")
    resp = tmp_path / "responses.jsonl"
    resp.write_text(json.dumps({"key": 1, "response": "I\u2019m sorry, but I can't assist with that."}) + "\n"
                    + json.dumps({"key": 2, "response": "hello my friend, a lovely day."}) + "\n")
    s = harness.score_ifeval_responses(data["ifeval"], resp, tmp_path / "scored")
    assert s["refusal_rate"] == 0.5 and s["n_prompts"] == 2
    r = report([tmp_path / "scored"], tmp_path / "rep", html=False)
    assert r["runs"][0]["ifeval_refusal"] == 0.5
    md = (tmp_path / "rep" / "report.md").read_text()
    head, _, row = md.splitlines()[2:5]
    assert row.split("|")[head.split("|").index(" IFEval refusals ")].strip() == "50.0"


def test_eval_cli_ifeval_conformance(tmp_path, shared_data, capsys):
    main(["eval", "--suites", "ifeval", "--ifeval-conformance", "--test-data", str(shared_data),
          "--out", str(tmp_path / "c")])
    c = json.loads((tmp_path / "c" / "ifeval_conformance.json").read_text())
    assert c["n_prompts"] == 540 and c["instruction_agreement_strict"] > 0.95
    assert "instruction agreement strict" in capsys.readouterr().out


def test_eval_and_report_cli_end_to_end(tmp_path, tiny_model_dir, capsys):
    data = write_data(tmp_path / "data")
    main(["eval", "--model", str(tiny_model_dir), "--name", "tiny", "--suites", "translation,advbench",
          "--test-data", f"translation={data['translation']}", "--test-data", f"advbench={data['advbench']}",
          "--limit", "2", "--max-tokens", "4", "--stop", "\\n", "--out", str(tmp_path / "ev")])
    res = json.loads((tmp_path / "ev" / "tiny" / "results.json").read_text())
    assert res["suites"]["translation"]["stop"] == "\n" and res["suites"]["advbench"]["n"] == 2
    assert "| tiny |" in capsys.readouterr().out
    main(["report", str(tmp_path / "ev" / "tiny"), "--out", str(tmp_path / "rep")])
    assert (tmp_path / "rep" / "tradeoff.png").exists()


# ------------------------------------------------------------------ the real model

@pytest.mark.slow
def test_real_model_all_judge_free_suites(tmp_path, real_model_dir, shared_data):
    suites = ["translation", "ifeval", "advbench", "gsm8k", "retention"]
    cfg = EvalConfig(models=[str(real_model_dir)], out=str(tmp_path / "out"), suites=suites,
                     test_data={"root": str(shared_data)}, pairs="de-en", limit=4,
                     max_tokens={s: 16 for s in suites}, batch_size=32, n_bootstrap=200, progress=False)
    r = evaluate(cfg)
    s = next(iter(r.values()))["suites"]
    assert s["translation"]["directions"]["de-en"]["n"] == 4 and 0 <= s["translation"]["bleu"] <= 100
    assert s["translation"]["directions"]["de-en"]["n_refs"] == 2
    assert s["ifeval"]["n_prompts"] == 4 and s["advbench"]["n"] == 4 and s["gsm8k"]["n"] == 4
    assert s["retention"]["n"] == 4 and s["retention"]["nll"] == pytest.approx(s["retention"]["base_nll"], abs=1e-5)
    assert 0 < s["retention"]["nll"] < 10
