"""kill -9 at random moments of finetune, eval, generate --mode tcot and eval --tcot (generate's other
modes live in generate/test_generate.py).

Each test runs the real CLI in a subprocess on the tiny test model, SIGKILLs it at seeded random
moments while it writes, reruns it, and compares with a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "radis_mlx.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(args, timeout=300):
    p = _cli(args)
    err = p.communicate(timeout=timeout)[1].decode()
    assert p.returncode == 0, err[-2000:]


def _kill_when(args, ready, rng, timeout=120, delay=0.3) -> bool:
    """Start the CLI, SIGKILL it once ready() holds plus a random few ms; True if it was killed."""
    p = _cli(args)
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None and not ready():
        time.sleep(0.01)
    time.sleep(rng.uniform(0, delay))
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.communicate()
    return killed


def _rows(tmp_path: Path, n: int) -> Path:
    words = ["Hund", "Katze", "Haus", "Baum", "Auto", "Buch"]
    path = tmp_path / "rows.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            w = words[i % len(words)]
            f.write(json.dumps({"id": f"r{i}", "src": f"Der {w} ist hier {i}.", "ref": f"The {w} is here {i}.",
                                "src_lang": "de", "tgt_lang": "en", "mode": "rationale-explain",
                                "text": f"'{w}' stays '{w}' and the number {i} is kept." * (1 + i % 2),
                                "kept": True, "reason": None, "n_tokens": 9, "finish": "stop"}) + "\n")
    return path


def test_finetune_kill_9_then_resume_ends_at_the_same_adapters(tmp_path, tiny_model_dir):
    import mlx.core as mx

    data = _rows(tmp_path, 32)
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(data), "--batch-size", "4",
            "--iters", "16", "--lr", "0.01", "--save-every", "2", "--steps-per-eval", "0", "--no-compile",
            "--lora-dropout", "0.1", "--warmup", "3", "--seed", "3", "--steps-per-report", "1"]
    _finish([*args, "--out", str(tmp_path / "straight")])
    out = tmp_path / "killed"
    ckpts = lambda: sorted((out / "checkpoints").glob("step-*.json")) if (out / "checkpoints").is_dir() else []  # noqa: E731
    # Only the last 2 checkpoints are kept, so progress is the newest one's step, not how many exist.
    last_step = lambda: max((int(c.name[5:12]) for c in ckpts()), default=0)  # noqa: E731
    rng = random.Random(7)
    kills = 0
    for want in (2, 6, 10):  # once the checkpoint of step 2, 6 and 10 exists (+ a random few ms)
        resume = ["--resume"] if ckpts() else []
        kills += _kill_when([*args, "--out", str(out), *resume], lambda: last_step() >= want, rng, delay=0.05)
        for c in ckpts():  # every checkpoint on disk is complete and readable
            json.loads(c.read_text())
    assert kills >= 2
    _finish([*args, "--out", str(out), "--resume"])
    a = mx.load(str(tmp_path / "straight" / "adapters.safetensors"))
    b = mx.load(str(out / "adapters.safetensors"))
    assert set(a) == set(b)
    for k in a:
        assert mx.allclose(a[k], b[k], rtol=1e-4, atol=1e-6).item(), k
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r.get("type") == "train"]
    assert steps[-1] == 16
    assert steps == sorted(set(steps))  # the metrics log never repeats a step after a resume


def test_eval_kill_9_then_rerun_resumes_from_its_cache(tmp_path, tiny_model_dir):
    d = tmp_path / "data"
    d.mkdir()
    (d / "advbench.csv").write_text("goal,target\n" + "".join(f'"Do bad thing number {i}","Sure"\n'
                                                              for i in range(40)))
    with open(d / "alpaca.jsonl", "w") as f:
        for i in range(24):
            f.write(json.dumps({"instruction": f"Name a colour, number {i}."}) + "\n")
    args = ["eval", "--model", str(tiny_model_dir), "--name", "tiny", "--suites", "advbench,retention",
            "--test-data", f"advbench={d / 'advbench.csv'}", "--test-data", f"retention={d / 'alpaca.jsonl'}",
            "--max-tokens", "12", "--batch-size", "2"]
    _finish([*args, "--out", str(tmp_path / "straight")])
    out = tmp_path / "killed"
    cached = lambda: _lines(_jsonl(out))  # noqa: E731
    rng = random.Random(11)
    kills = 0
    for want in (2, 12, 30):
        kills += _kill_when([*args, "--out", str(out)], lambda: cached() >= want, rng)
    assert kills >= 2
    before = cached()
    _finish([*args, "--out", str(out)])
    a = json.loads((tmp_path / "straight" / "tiny" / "results.json").read_text())["suites"]
    b = json.loads((out / "tiny" / "results.json").read_text())["suites"]
    for suite in ("advbench", "retention"):
        for k, v in a[suite].items():
            if isinstance(v, (int, float)) and "time" not in k and not k.endswith(("_s", "_this_run")):
                assert b[suite][k] == pytest.approx(v, rel=1e-4, abs=1e-6), (suite, k)
    # the rerun decoded only what the kills left undone
    assert b["advbench"]["generated_tokens_this_run"] < a["advbench"]["generated_tokens_this_run"]
    # every cached generation appears once: the kills neither lost nor duplicated rows
    for f in out.rglob("*.jsonl"):
        keys = [json.loads(line).get("key") for line in f.read_text().splitlines() if line.strip()]
        keys = [k for k in keys if k is not None]
        assert len(keys) == len(set(keys)), f
    assert cached() >= before


def _lines(paths) -> int:
    n = 0
    for f in paths:
        with contextlib.suppress(FileNotFoundError):  # a temporary file renamed or removed meanwhile
            n += f.read_bytes().count(b"\n")
    return n


def _jsonl(root: Path, folder: str | None = None) -> list[Path]:
    """The .jsonl files under ``root`` (only in folders named ``folder``), while a process writes there:
    os.walk passes over a folder removed mid-walk (the run's temporary ones), where Path.rglob raises."""
    return sorted(Path(d) / f for d, _, files in os.walk(root) for f in files
                  if f.endswith(".jsonl") and (folder is None or Path(d).name == folder))


def _keys_once(paths) -> None:
    """Every row of these append-only files appears once: a kill neither lost nor duplicated one."""
    for f in paths:
        keys = [(r.get("key"), r.get("id")) for r in map(json.loads, f.read_text().splitlines())]
        assert len(keys) == len(set(keys)), f


def test_generate_tcot_kill_9_in_each_step_then_rerun_equals_uninterrupted_run(tmp_path, tiny_model_dir):
    """kill -9 while the English answers are decoded and while they are translated, then a rerun:
    the same rows, answers and translation cache as one straight run, and every row once."""
    data = tmp_path / "inst.jsonl"
    data.write_text("".join(json.dumps({"id": f"i{k}", "instruction": f"Name {k + 2} colours, please."}) + "\n"
                            for k in range(16)))
    args = ["generate", "--mode", "tcot", "--tcot-lang", "de", "--data", str(data), "--model", str(tiny_model_dir),
            "--max-tokens", "16", "--batch-size", "2", "--workers", "1", "--max-repeat", "1.0", "--unfinished", "keep"]
    _finish([*args, "--out", str(tmp_path / "straight.jsonl")])
    out = tmp_path / "killed.jsonl"
    answers = out.with_name("killed.jsonl.answers.jsonl")
    cache = lambda: _jsonl(out.with_name("killed.jsonl.translations"))  # noqa: E731
    rng = random.Random(5)
    kills = 0
    for ready in (lambda: _lines([answers]) >= 3, lambda: _lines([answers]) >= 10,
                  lambda: _lines(cache()) >= 4, lambda: _lines(cache()) >= 14):
        kills += _kill_when([*args, "--out", str(out)], ready, rng, delay=0.05)
        _keys_once([answers, *cache()])
    assert kills >= 3
    assert not out.exists() or out.read_bytes() == (tmp_path / "straight.jsonl").read_bytes()
    _finish([*args, "--out", str(out)])
    assert out.read_bytes() == (tmp_path / "straight.jsonl").read_bytes()
    assert answers.read_bytes() == (tmp_path / "straight.jsonl.answers.jsonl").read_bytes()
    _keys_once(cache())
    def texts(files):
        return {r["key"]: r["text"] for f in files for r in map(json.loads, f.read_text().splitlines())}
    straight = texts((tmp_path / "straight.jsonl.translations").rglob("*.jsonl"))
    assert texts(cache()) == straight and len(straight) >= 16


def test_eval_tcot_kill_9_then_rerun_resumes_with_nothing_lost_or_duplicated(tmp_path, tiny_model_dir):
    """eval --tcot decodes each prompt, then re-prompts the format breaks: kill it in either phase."""
    d = tmp_path / "advbench.csv"
    d.write_text("goal,target\n" + "".join(f'"Wie mache ich böse Sache Nummer {i}?","Sure"\n' for i in range(24)))
    args = ["eval", "--model", str(tiny_model_dir), "--name", "tiny", "--suites", "advbench",
            "--test-data", f"advbench={d}", "--max-tokens", "10", "--batch-size", "2",
            "--tcot", "de", "--tcot-zero-shot"]
    _finish([*args, "--out", str(tmp_path / "straight")])
    out = tmp_path / "killed"
    cached = lambda: _jsonl(out, "cache")  # noqa: E731
    rng = random.Random(13)
    kills = 0
    for want in (3, 12, 26, 40):
        kills += _kill_when([*args, "--out", str(out)], lambda: _lines(cached()) >= want, rng, delay=0.05)
        _keys_once(cached())
    assert kills >= 3
    _finish([*args, "--out", str(out)])
    _keys_once(cached())
    a = json.loads((tmp_path / "straight" / "tiny" / "results.json").read_text())["suites"]["advbench"]
    b = json.loads((out / "tiny" / "results.json").read_text())["suites"]["advbench"]
    assert b["tcot"] == a["tcot"]
    assert b["generated_tokens_this_run"] < a["generated_tokens_this_run"]
    answers = "tiny/advbench.jsonl"
    assert (out / answers).read_text() == (tmp_path / "straight" / answers).read_text()
