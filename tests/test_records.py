"""The generate -> finetune contract (records.py), the method registry and the settings rule."""

from __future__ import annotations

import json

import pytest

from radis_mlx import methods, records, settings
from radis_mlx.fileio import UserError
from radis_mlx.generate import GenerateConfig

OLD_ROW = {"id": "a", "src": "Der Hund.", "ref": "The dog.", "src_lang": "de", "tgt_lang": "en",
           "mode": "rationale-explain", "text": "It is a dog.", "kept": True, "reason": None, "n_tokens": 4,
           "finish": "stop"}  # as generate wrote rows before the format had a version


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rows_round_trip_and_keep_their_field_names(tmp_path):
    f = _write(tmp_path / "old.jsonl", [OLD_ROW, {**OLD_ROW, "id": "b", "version": 1}])
    recs = records.read(f)
    assert [line for line, _ in recs] == [1, 2] and recs[0][1].version == 1
    assert recs[0][1].to_row() == {**OLD_ROW, "version": 1}  # same names, same order, plus the version
    records.write(tmp_path / "new.jsonl", [r for _, r in recs])
    assert [r for _, r in records.read(tmp_path / "new.jsonl")] == [r for _, r in recs]
    replay = {"id": "q", "mode": "replay", "instruction": "Say hi.", "text": "Hi!", "kept": True}
    assert records.Record.from_row(replay, "f", 1).to_row()["instruction"] == "Say hi."


def test_a_newer_format_asks_to_regenerate(tmp_path):
    f = _write(tmp_path / "future.jsonl", [OLD_ROW, {**OLD_ROW, "id": "b", "version": 2}])
    with pytest.raises(UserError) as e:
        records.read(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:2: version: ") and "regenerate" in msg and "\n" not in msg
    with pytest.raises(UserError, match=r":1: mode: expected one of"):
        records.read(_write(tmp_path / "bad.jsonl", [{**OLD_ROW, "mode": "nope"}]))


def test_registry_lookups_have_one_message():
    assert methods.get("radis").generate[0] == methods.DEFAULT_MODE == GenerateConfig("x", "y").mode
    assert set(methods.RADIS) <= set(methods.get("radis").generate)
    with pytest.raises(UserError, match=r"^r\.yaml: unknown method 'nope' \(choose from base, sft"):
        methods.get("nope", "r.yaml")
    with pytest.raises(UserError, match=r"^unknown mode 'nope' \(choose from rationale-continue"):
        methods.get_mode("nope")
    text = methods.describe()  # `radis-mlx methods`
    assert all(f"\n{name} " in "\n" + text for name in [*methods.METHODS, *methods.MODES])


def test_settings_defaults_then_yaml_then_flags():
    layers = [("r.yaml: generate", {"max_tokens": 5, "ratio": 0.5}), ("--set generate", {"max_tokens": "7"})]
    c = settings.build(GenerateConfig, layers, {"data": "d", "out": "o"})
    assert (c.max_tokens, c.ratio, c.temperature) == (7, 0.5, 0.0)
    with pytest.raises(UserError, match=r"^--set generate\.bogus: unknown setting \(known: "):
        settings.build(GenerateConfig, [("--set generate", {"bogus": 1})], {"data": "d", "out": "o"})
    with pytest.raises(UserError, match=r"^r\.yaml: generate\.max_tokens: expected int, got \{"):
        settings.build(GenerateConfig, [("r.yaml: generate", {"max_tokens": {"a": 1}})], {"data": "d", "out": "o"})
    with pytest.raises(UserError, match=r"^r\.yaml: generate\.ratio: must be in \[0, 1\]"):
        settings.build(GenerateConfig, [("r.yaml: generate", {"ratio": 2})], {"data": "d", "out": "o"})
