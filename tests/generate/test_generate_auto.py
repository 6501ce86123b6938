"""rationale-auto on the tiny model: it tries continuation on the first rows, falls back to explain mode
where continuation yields no rationales, records its choice in the output's meta, and keeps it on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radis_mlx import methods
from radis_mlx.generate import GenerateConfig, format_summary, generate
from radis_mlx.generate import auto
from radis_mlx.fileio import UserError

from handmade import write_pairs
from test_generate import rows


def auto_cfg(tmp_path, model, **kw) -> GenerateConfig:
    data = write_pairs(tmp_path / "train.de-en.json", 6)
    return GenerateConfig(data=str(data), out=str(tmp_path / "out.jsonl"), model=str(model), mode="rationale-auto",
                          batch_size=4, auto_probe_rows=3, workers=1, **kw)


def meta(c) -> dict:
    return json.loads(Path(c.out + ".meta.json").read_text())


def test_falls_back_to_explain_when_continuation_yields_no_rationale(tmp_path, tiny_model_dir):
    # 4 new tokens can never make a rationale (AUTO_MIN_TOKENS = 8): continuation yields 0 of 3.
    c = auto_cfg(tmp_path, tiny_model_dir, max_tokens=4)
    s = generate(c, progress=False)
    choice = meta(c)["auto"]
    assert choice == {"mode": "rationale-explain", "tried": "rationale-continue", "probe_rows": 3,
                      "rationales": 0, "yield": 0.0}
    out = rows(Path(c.out))
    assert len(out) == 6 and {r["mode"] for r in out} == {"rationale-explain"}
    assert meta(c)["settings"]["mode"] == "rationale-auto"  # the file's settings: what the recipe asked for
    assert s["auto"] == choice and "chose rationale-explain (rationale-continue gave 0 of 3" in format_summary(s)
    assert not auto.probe_path(Path(c.out)).exists()


def test_keeps_continuation_and_its_probe_rows_when_it_yields(tmp_path, tiny_model_dir):
    c = auto_cfg(tmp_path, tiny_model_dir, max_tokens=12, auto_min_yield=0.0)
    generate(c, progress=False)
    assert meta(c)["auto"]["mode"] == "rationale-continue"
    out = rows(Path(c.out))
    assert len(out) == 6 and len({r["id"] for r in out}) == 6
    assert {r["mode"] for r in out} == {"rationale-continue"}


def test_a_resumed_run_keeps_the_choice_without_probing_again(tmp_path, tiny_model_dir, monkeypatch):
    c = auto_cfg(tmp_path, tiny_model_dir, max_tokens=4)
    generate(c, progress=False)
    out = Path(c.out)
    whole = out.read_bytes()
    # As if killed after two rows: the rows so far and the meta stay, the summary is not written yet.
    out.write_text("".join(line + "\n" for line in out.read_text().splitlines()[:2]))
    Path(c.out + ".summary.json").unlink()

    def no_probe(*a, **k):
        raise AssertionError("probed again")
    monkeypatch.setattr(auto, "_probe", no_probe)
    generate(c, progress=False)
    assert out.read_bytes() == whole
    assert {r["mode"] for r in rows(out)} == {"rationale-explain"}


def test_registered_for_radis_and_listed():
    assert "rationale-auto" in methods.get("radis").generate
    assert "rationale-auto" not in methods.get("radis").data.modes  # its rows carry the mode it chose
    text = methods.describe()
    assert "rationale-auto" in text.split("radis ")[1].splitlines()[1]  # radis's generate list
    assert any(line.startswith("rationale-auto") for line in text.splitlines())


def test_its_settings_count_only_for_its_own_outputs(tmp_path):
    a = GenerateConfig(data="x", out="y", mode="rationale-auto")
    e = GenerateConfig(data="x", out="y", mode="rationale-explain")
    assert a.fingerprint()["auto_min_yield"] == 0.5 and "auto_min_yield" not in e.fingerprint()
    assert "tcot_lang" not in a.fingerprint() and "tcot_lang" in GenerateConfig(data="x", out="y",
                                                                                 mode="tcot").fingerprint()
    with pytest.raises(UserError, match="auto_min_yield"):
        GenerateConfig(data="x", out="y", mode="rationale-auto", auto_min_yield=2.0).validate()
