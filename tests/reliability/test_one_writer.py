"""One writer per output, with real processes: while a stage writes into --out, a second process
aimed at the same --out fails with one line naming the first one's pid; a kill -9 of the first
frees the output for the next run.

The first process is the real CLI with ``models.load`` replaced by a wait (it has taken the lock,
checked its settings and data, and reached the model), so each case costs a process start and no
model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from radis_mlx.outdir import PACKAGE

ROOT = Path(__file__).resolve().parents[2]
HARMFUL = PACKAGE / "demo_data" / "harmful.jsonl"

# argv[1]: a file written once the stage reaches its model load; argv[2:]: the CLI's arguments.
HOLDER = """
import sys, time, pathlib
import radis_mlx.models as m
def wait(*a, **k):
    pathlib.Path(sys.argv[1]).write_text("at the model")
    time.sleep(300)
m.load = wait
from radis_mlx.cli import main
main(sys.argv[2:])
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _holder(ready: Path, argv: list) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(ready), *map(str, argv)], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not ready.exists():
        if p.poll() is not None:
            raise AssertionError(f"the first process ended ({p.returncode}): {p.stderr.read().decode()[-2000:]}")
        assert time.time() < deadline, "the first process never reached its model load"
        time.sleep(0.05)
    return p


def _stage_args(stage: str, tmp: Path) -> tuple[list, Path]:
    model = tmp / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    data = tmp / "d.jsonl"
    data.write_text(json.dumps({"src": "Hallo.", "ref": "Hello.", "src_lang": "de", "tgt_lang": "en"}) + "\n")
    out = tmp / "out"
    return {
        "generate": (["generate", "-d", data, "-o", out / "g.jsonl", "-m", model, "--workers", "1"], out / "g.jsonl"),
        "finetune": (["finetune", "-d", data, "-o", out, "-m", model, "--quiet"], out),
        "eval": (["eval", "-m", model, "--suites", "advbench", "--test-data", f"advbench={HARMFUL}", "-o", out], out),
        "translate-suite": (["translate-suite", "--suite", "advbench", "--test-data", f"advbench={HARMFUL}",
                             "--translator", model, "-o", out], out),
        "translate": (["translate", data, "-m", model, "-o", tmp / "t.jsonl"], tmp / "t.jsonl"),
        "run": (["run", "demo", "--only", "base", "--quiet", "-o", out, "--set", f"model={model}",
                 "--set", "eval.suites=[advbench]"], out),
    }[stage]


@pytest.mark.parametrize("stage", ["generate", "finetune", "eval", "translate-suite", "translate", "run"])
def test_a_second_writer_is_refused_and_a_kill_9_frees_the_output(tmp_path, stage):
    argv, out = _stage_args(stage, tmp_path)
    first = _holder(tmp_path / "ready1", argv)
    try:
        second = subprocess.run([sys.executable, "-m", "radis_mlx.cli", *map(str, argv)], env=_env(),
                                capture_output=True, text=True, timeout=120)
        err = second.stderr.strip()
        assert second.returncode == 2 and len(err.splitlines()) == 1, err
        assert f"{out}: in use by another radis-mlx process (pid {first.pid})" in err, err
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = _holder(tmp_path / "ready2", argv)  # the lock died with the killed process
    third.send_signal(signal.SIGKILL)
    third.wait()
