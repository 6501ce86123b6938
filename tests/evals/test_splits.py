"""split: dev|test: the dev phase's general items never overlap the test items (evals/suites.py)."""

from __future__ import annotations

import pytest

from radis_mlx.evals import suites
from radis_mlx.evals.harness import EvalConfig, check_config
from radis_mlx.fileio import UserError

from handmade import write_data


def ids(cfg, suite) -> set:
    return {suites.item_id(x) for x in suites.load_inputs(cfg, suite)}


@pytest.mark.parametrize("suite,rel", [("ifeval", "ifeval/input_data.jsonl"),
                                       ("advbench", "advbench/harmful_behaviors.csv"),
                                       ("gsm8k", "gsm8k/test.jsonl"),
                                       ("kl", "alpaca_eval/alpaca_eval_instructions.jsonl")])
def test_dev_and_test_items_never_overlap_whatever_the_seed_and_limit(shared_data, suite, rel):
    every = ids(EvalConfig(test_data={suite: str(shared_data / rel)}), suite)
    dev = ids(EvalConfig(test_data={suite: str(shared_data / rel)}, split="dev"), suite)
    test = ids(EvalConfig(test_data={suite: str(shared_data / rel)}, split="test"), suite)
    assert dev and test and not dev & test and dev | test == every
    assert 0.15 < len(dev) / len(every) < 0.35  # DEV_SHARE = 0.25 of each suite
    for seed, limit in [(0, 100), (1, 64), (7, 20)]:  # the study's limits and other seeds sample within a part
        d = ids(EvalConfig(test_data={suite: str(shared_data / rel)}, split="dev", seed=seed, limit=limit), suite)
        t = ids(EvalConfig(test_data={suite: str(shared_data / rel)}, split="test", seed=seed + 1, limit=limit), suite)
        assert len(d) == min(limit, len(dev)) and len(t) == limit and d <= dev and t <= test


def test_no_split_keeps_the_old_sample_and_translation_ignores_the_split(tmp_path):
    data = write_data(tmp_path / "data", n=12)
    old = [x["id"] for x in suites.load_inputs(EvalConfig(test_data=data, limit=5, seed=3), "gsm8k")]
    assert old == [x["id"] for x in suites.get("gsm8k").load(EvalConfig(seed=3), data["gsm8k"], 5)]
    pairs = suites.load_inputs(EvalConfig(test_data=data, split="dev"), "translation")
    assert len(pairs) == 12  # translation's dev set is its own test data (WMT21), not a part of WMT22
    with pytest.raises(UserError, match="split: must be one of dev, test"):
        check_config(EvalConfig(suites=["gsm8k"], split="valid"))


def test_the_translation_dev_set_is_wmt21_both_directions_and_shares_no_sentence_with_wmt22(shared_data):
    dev = suites.load_inputs(EvalConfig(test_data={"translation": str(
        shared_data / "alma_human_parallel/deen/valid.de-en.json")}, pairs="de-en,en-de", limit=100), "translation")
    test = suites.load_inputs(EvalConfig(test_data={"translation": str(shared_data / "wmt22_general_test")},
                                         pairs="de-en,en-de"), "translation")
    assert {(p.src_lang, p.tgt_lang) for p in dev} == {("de", "en"), ("en", "de")} and len(dev) == 200
    assert not {p.src for p in dev} & {p.src for p in test}
