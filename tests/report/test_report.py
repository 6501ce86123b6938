"""report (report/): the table and plots over eval runs, seeds as mean and sd, a target-language eval's
columns, training cost, and the interpolation paths of scaled runs."""

from __future__ import annotations

import json

import pytest

from radis_mlx.fileio import UserError


# ------------------------------------------------------------------ report

def fake_results(name, bleu, ifeval, refusal, gsm, nll_inc) -> dict:
    return {"name": name, "suites": {
        "translation": {"bleu": bleu, "bleu_ci": [bleu - 1, bleu + 1], "chrf": bleu + 20, "comet": None,
                        "cut_share": 0.1, "directions": {"de-en": {"bleu": bleu}}},
        "ifeval": {"prompt_level_strict": ifeval, "n_prompts": 50},
        "advbench": {"refusal_rate": refusal, "n": 50}, "gsm8k": {"accuracy": gsm, "n": 50},
        "retention": {"nll": 1.0 + nll_inc, "base_nll": 1.0, "nll_increase": nll_inc},
        "mtbench": {"score": None, "judged": False}}}


def test_report_table_and_plot_for_two_runs(tmp_path):
    from radis_mlx.report import report

    runs = []
    for name, args in (("base", (20.0, 0.4, 0.9, 0.2, 0.0)), ("radis", (25.0, 0.38, 0.88, 0.2, 0.05))):
        d = tmp_path / "eval" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(fake_results(name, *args)))
        runs.append(d)
    r = report([tmp_path / "eval"], tmp_path / "rep")  # an eval --out dir expands to its runs
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| base |" in md and "| radis |" in md and "BLEU" in md and "NLL increase" in md
    assert "not judged" in md
    assert (tmp_path / "rep" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {x["name"]: x for x in json.loads((tmp_path / "rep" / "report.json").read_text())["runs"]}
    assert rows["base"]["general"] == pytest.approx((0.4 + 0.9 + 0.2) / 3)
    lo, hi = rows["radis"]["general_ci"]
    assert lo < rows["radis"]["general"] < hi and r["translation_metric"] == "bleu"
    with pytest.raises(UserError):
        report([tmp_path / "missing"], tmp_path / "rep2")


def test_report_groups_seeds_into_mean_and_sd(tmp_path):
    from radis_mlx.report import report

    runs = []
    for name, bleu in (("base", 10.0), ("sft-s0", 20.0), ("sft-s1", 24.0)):
        d = tmp_path / "eval" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(fake_results(name, bleu, 0.4, 0.9, 0.2, 0.1)))
        runs.append(d)
    r = report(runs, tmp_path / "rep")
    m = {x["name"]: x for x in r["methods"]}
    assert m["sft"]["seeds"] == 2 and m["sft"]["bleu"] == pytest.approx(22.0)
    assert m["sft"]["bleu_sd"] == pytest.approx(2 ** 0.5 * 2)  # sample sd of 20 and 24
    assert m["base"]["seeds"] == 1 and "bleu_sd" not in m["base"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## By method" in md and "| sft (n=2) | 22.00 ± 2.83" in md
    assert (tmp_path / "rep" / "tradeoff-methods.png").read_bytes()[:4] == b"\x89PNG"
    from radis_mlx.report import _err
    assert _err(m["sft"], "bleu") == [[m["sft"]["bleu_sd"]], [m["sft"]["bleu_sd"]]]  # seed sd, not a CI


def test_report_columns_of_a_target_language_eval(tmp_path):
    """Translated suites: the answer-language rate and TCoT's format failures and tokens, n-weighted
    over the suites, per run and as mean and sd over seeds."""
    from radis_mlx.report import report

    def res(name, lang, tcot):
        r = fake_results(name, 20.0, 0.4, 0.9, 0.2, 0.0)
        r["suites"]["advbench"].update(answer_language_rate=lang[0], answer_language="de")
        r["suites"]["gsm8k"].update(n=150, answer_language_rate=lang[1], answer_language="de")
        if tcot:
            r["suites"]["advbench"]["tcot"] = {"n": 50, "format_failures_first": 10, "format_failures": 0,
                                               "extra_tokens_mean": 40.0}
            r["suites"]["gsm8k"]["tcot"] = {"n": 150, "format_failures_first": 30, "format_failures": 6,
                                            "extra_tokens_mean": 80.0}
        return r
    for name, lang, tcot in (("base", (0.5, 0.1), False), ("tl-s0", (1.0, 0.9), True), ("tl-s1", (0.8, 0.9), True)):
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "results.json").write_text(json.dumps(res(name, lang, tcot)))
    r = report([tmp_path / "eval"], tmp_path / "rep")
    runs = {x["name"]: x for x in r["runs"]}
    assert runs["base"]["answer_lang"] == pytest.approx((0.5 * 50 + 0.1 * 150) / 200)
    assert "tcot_fail" not in runs["base"]
    t = runs["tl-s0"]
    assert (t["tcot_fail_first"], t["tcot_fail"]) == (pytest.approx(0.2), pytest.approx(0.03))
    assert t["tcot_tokens"] == pytest.approx((40 * 50 + 80 * 150) / 200)
    m = {x["name"]: x for x in r["methods"]}
    assert m["tl"]["answer_lang"] == pytest.approx((0.925 + 0.875) / 2) and m["tl"]["answer_lang_sd"] > 0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "answer in target language" in md and "TCoT format failures" in md and "| tl-s0 |" in md


def test_report_reads_training_cost_only_from_uninterrupted_runs(tmp_path):
    from radis_mlx.report import report

    runs = []
    for name, steps_this_run in (("sft-s0", 40), ("sft-s1", 40), ("radis-s0", 25)):
        train = tmp_path / name / "train"
        train.mkdir(parents=True)
        (train / "summary.json").write_text(json.dumps({"steps": 40, "steps_this_run": steps_this_run,
                                                        "tokens_this_run": 1000 * len(runs) + 9000,
                                                        "wall_s": 600.0 + len(runs)}))
        d = tmp_path / "eval" / name
        d.mkdir(parents=True)
        res = {**fake_results(name, 20.0, 0.4, 0.9, 0.2, 0.1), "adapter": str(train)}
        res["suites"]["ifeval"]["prompt_level_loose"] = 0.5
        (d / "results.json").write_text(json.dumps(res))
        runs.append(d)
    r = report(runs, tmp_path / "rep")
    rows = {x["name"]: x for x in r["runs"]}
    assert rows["sft-s0"]["train_tokens"] == 9000 and rows["sft-s1"]["train_wall_s"] == 601.0
    assert "train_tokens" not in rows["radis-s0"]  # resumed, and written before runs kept their total tokens
    assert rows["sft-s0"]["ifeval_loose"] == 0.5
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "IFEval loose" in md and "| sft (n=2) |" in md and "9500 ± 707" in md


def test_a_report_draws_the_interpolation_paths_of_scaled_runs(tmp_path):
    """RUN@A runs put a dashed path on the plots (report.plot once wrote the PNG to the path's rows)."""
    from radis_mlx.report import report
    for name, bleu, refusal in (("base", 10.0, 0.9), ("sft", 20.0, 0.5), ("sft@0.5", 15.0, 0.7)):
        d = tmp_path / "eval" / name
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps({"name": name, "suites": {
            "translation": {"bleu": bleu, "chrf": bleu + 20}, "advbench": {"refusal_rate": refusal, "n": 10}}}))
    r = report([tmp_path / "eval"], tmp_path / "rep", html=False)
    assert r["translation_metric"] == "bleu" and [x["general"] for x in r["runs"]] == [0.9, 0.5, 0.7]
    assert (tmp_path / "rep" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scaled_runs_group_by_seed_and_trace_a_path_from_the_base():
    from radis_mlx.report import by_method, interpolation_paths, method_of
    assert [method_of(n) for n in ("sft-s1@0.5", "sft-s1", "radis-turn-s0", "base", "x@y")] == \
        ["sft@0.5", "sft", "radis-turn", "base", "x@y"]
    rows = [{"name": n, "bleu": b, "general": g} for n, b, g in [
        ("base", 10, 0.6), ("sft-s0@0.5", 14, 0.55), ("sft-s0", 18, 0.4), ("sft-s0@0.25", 12, 0.58),
        ("sft-s1@0.5", 15, 0.5), ("radis-s0", 17, 0.55)]]
    paths = interpolation_paths(rows)
    assert list(paths) == ["sft-s0", "sft-s1"]
    assert [r["name"] for r in paths["sft-s0"]] == ["base", "sft-s0@0.25", "sft-s0@0.5", "sft-s0"]
    assert [r["name"] for r in paths["sft-s1"]] == ["base", "sft-s1@0.5"]  # no sft-s1 row: the path stops there
    means = {m["name"]: m for m in by_method(rows)}
    assert means["sft@0.5"]["seeds"] == 2 and means["sft@0.5"]["bleu"] == 14.5
