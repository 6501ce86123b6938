"""`radis-mlx translate`: the user's own text, aligned line for line, resumable, one-line errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radis_mlx.cli import main
from radis_mlx.translating import TranslateConfig, read_input, translate, translate_file

ROOT = Path(__file__).resolve().parents[1]


def _err(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_bad_input_is_one_line_before_any_model_loads(tmp_path, capsys, tiny_model_dir):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert _err(capsys, ["translate", str(empty)]) == f"error: {empty}: empty (nothing to translate)"
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"src": "Hallo."}\n{"text": "Welt."}\n')
    assert _err(capsys, ["translate", str(rows)]) == \
        f"error: {rows}:2: src: missing or not a string (each JSONL row needs the text to translate)"
    ok = tmp_path / "ok.txt"
    ok.write_text("Hallo.\n")
    assert "unknown language code 'xx'" in _err(capsys, ["translate", str(ok), "--src", "xx"])
    # adapters trained on another base model: named, before their weights are read
    other = tmp_path / "other-base"
    other.mkdir()
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "hidden_size": cfg["hidden_size"] * 2}))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"model": str(other), "fine_tune_type": "lora"}))
    import mlx.core as mx
    mx.save_safetensors(str(adapter / "adapters.safetensors"), {"x": mx.zeros((1,))})
    line = _err(capsys, ["translate", str(ok), "--model", str(tiny_model_dir), "--adapter", str(adapter)])
    assert line.startswith(f"error: {adapter}: adapters for another base model: trained on {other} (hidden_size")
    # the settings' bounds and the readers' row limit, as every other command has them
    assert _err(capsys, ["translate", str(ok), "--batch-size", "0"]) == "error: batch_size: must be in [1, 4096], got 0"
    assert _err(capsys, ["translate", str(ok), "--max-tokens", "-5"]).startswith("error: max_tokens: must be in [1, ")
    huge = tmp_path / "huge.txt"
    huge.write_text("Hallo.\n" + "x" * (2 << 20) + "\n")
    assert _err(capsys, ["translate", str(huge)]).startswith(f"error: {huge}:2: line longer than the limit of ")


def test_plain_text_keeps_blank_lines_and_jsonl_rows(tmp_path):
    p = tmp_path / "in.txt"
    p.write_text("Eins.\n\nZwei.\r\n")
    assert read_input(str(p)).texts == ["Eins.", "", "Zwei."]
    j = tmp_path / "in.jsonl"
    j.write_text('{"id": 1, "src": "Eins."}\n{"id": 2, "src": "Zwei."}\n')
    s = read_input(str(j))
    assert s.texts == ["Eins.", "Zwei."] and s.rows[0]["id"] == 1


def _args(tiny_model_dir, src, out):
    return ["translate", str(src), "--model", str(tiny_model_dir), "--out", str(out), "--batch-size", "4",
            "--max-tokens", "24"]


def test_kill_9_then_the_same_command_gives_every_line_once(tmp_path, tiny_model_dir):
    src = tmp_path / "in.txt"
    lines = [f"Der Hund {i} schläft im Garten." if i % 5 else "" for i in range(40)]
    src.write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight = tmp_path / "straight.txt"
    subprocess.run([sys.executable, "-m", "radis_mlx.cli", *_args(tiny_model_dir, src, straight)], env=env,
                   check=True, capture_output=True, timeout=300)
    out = tmp_path / "killed.txt"
    cache = tmp_path / "killed.txt.cache" / "translate.jsonl"
    rng, kills = random.Random(3), 0
    for want in (2, 12):
        p = subprocess.Popen([sys.executable, "-m", "radis_mlx.cli", *_args(tiny_model_dir, src, out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None and \
                not (cache.is_file() and len(cache.read_text().splitlines()) >= want):
            time.sleep(0.01)
        time.sleep(rng.uniform(0, 0.05))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate()
    assert kills >= 1 and not out.exists() and cache.is_file()
    done_before = len(cache.read_text().splitlines())
    r = subprocess.run([sys.executable, "-m", "radis_mlx.cli", *_args(tiny_model_dir, src, out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{done_before} of 32 cached" in r.stderr and "rows" in r.stderr and "tok/s" in r.stderr
    assert out.read_text() == straight.read_text()
    got = out.read_text().split("\n")[:-1]
    assert len(got) == len(lines) and all(g == "" for g, s in zip(got, lines) if s == "")
    assert not cache.parent.exists()  # the output is whole: the cache is gone


def test_python_api_and_jsonl_output(tmp_path, tiny_model_dir):
    texts = ["Der Hund schläft.", "", "Die Katze trinkt."]
    got = translate(texts, model=str(tiny_model_dir), max_tokens=8, cut="blank-line")
    # the tiny random model writes noise: each answer is its raw decoding, cut as eval cuts it
    from radis_mlx import prompts
    from radis_mlx.data import Pair
    from radis_mlx.runtime.decode import DecodeConfig, decode
    from radis_mlx.models import load
    m = load(str(tiny_model_dir))
    raw = decode(m.model, m.tokenizer, [prompts.encode(m.tokenizer, prompts.translation_prompt(
        m.tokenizer, Pair(t, "", "de", "en", ""))) for t in texts if t], DecodeConfig(max_tokens=8))
    assert got == [prompts.cut_translation(raw[0].text)[0], "", prompts.cut_translation(raw[1].text)[0]]
    j = tmp_path / "in.jsonl"
    j.write_text("".join(json.dumps({"id": i, "src": t}) + "\n" for i, t in enumerate(texts) if t))
    translate_file(TranslateConfig(input=str(j), out=str(tmp_path / "out.jsonl"), model=str(tiny_model_dir),
                                   max_tokens=8, progress=False))
    rows = [json.loads(l) for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 2] and [r["translation"] for r in rows] == [got[0], got[2]]


@pytest.mark.slow
def test_real_qwen_translates_the_gguf_issue_sentence(qwen_dir):
    """The sentence the GGUF issue checked, through translate() and the CLI: the same translation."""
    src = "Die Regierung hat am Montag neue Maßnahmen gegen die steigenden Energiepreise angekündigt."
    got = translate([src], model=str(qwen_dir), max_tokens=64)[0]
    assert "government" in got.lower() and "energy" in got.lower(), got
    r = subprocess.run([sys.executable, "-m", "radis_mlx.cli", "translate", "--model", str(qwen_dir),
                        "--max-tokens", "64"], input=src + "\n", capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and r.stdout == " ".join(got.split()) + "\n", (r.stdout, r.stderr[-500:])
