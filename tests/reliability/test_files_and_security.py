"""Disk faults, torn writes, unwritable outputs, path traversal, sandboxed chat templates, no pickle."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import edited_copy
from radis_mlx import fileio as rio
from radis_mlx.fileio import JsonlAppender, UserError, atomic_write_json, iter_jsonl, repair_jsonl_tail, safe_join

ROOT = Path(__file__).resolve().parents[2]


def test_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    atomic_write_json(target, {"v": 1})

    def enospc(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(rio.os, "fsync", enospc)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"v": 2, "big": "x" * 10000})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_torn_last_line_is_dropped_and_complete_rows_kept(tmp_path):
    p = tmp_path / "rows.jsonl"
    with JsonlAppender(p) as w:
        for i in range(3):
            w.write({"id": i})
    with open(p, "ab") as f:  # what a kill -9 in the middle of a write leaves
        f.write(b'{"id": 3, "te')
    assert repair_jsonl_tail(p) == len(b'{"id": 3, "te')
    assert [r["id"] for _, r in iter_jsonl(p)] == [0, 1, 2]
    with JsonlAppender(p) as w:  # appending after a crash repairs first, then continues
        w.write({"id": 3})
    assert [r["id"] for _, r in iter_jsonl(p)] == [0, 1, 2, 3]


def test_write_failing_midway_never_corrupts_earlier_rows(tmp_path, monkeypatch):
    p = tmp_path / "rows.jsonl"
    w = JsonlAppender(p)
    w.write({"id": 0})
    real_write = w._f.write

    def half_write(b):
        real_write(b[: len(b) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(w._f, "write", half_write)
    with pytest.raises(OSError):
        w.write({"id": 1, "text": "x" * 100})
    w.close()
    with JsonlAppender(p) as w2:
        w2.write({"id": 1})
    assert [r["id"] for _, r in iter_jsonl(p)] == [0, 1]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_dir_is_a_clear_error(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    with pytest.raises(UserError, match="not writable"):
        rio.check_writable_dir(d)


def test_unwritable_output_is_one_line_exit_2(tmp_path, tiny_model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the output directory should go
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "generate", "--data", str(tmp_path / "d.jsonl"),
                        "--out", str(blocker / "sub" / "r.jsonl"), "--model", str(tiny_model_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") <= 2


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/etc/passwd"])
def test_names_from_data_cannot_leave_the_output_dir(tmp_path, name):
    with pytest.raises(UserError, match="outside"):
        safe_join(tmp_path, name)
    assert safe_join(tmp_path, "ok/name") == (tmp_path / "ok" / "name").resolve()


def test_eval_run_names_are_sanitised():
    from radis_mlx.evals.context import ModelSpec, run_name
    assert "/" not in run_name(ModelSpec(name="../../etc/x")) and ".." not in run_name(ModelSpec(name="../.."))


def test_chat_templates_render_in_a_sandbox(tmp_path, tiny_model_dir):
    from radis_mlx import prompts
    from radis_mlx.models import load
    d = edited_copy(tiny_model_dir, tmp_path / "m", "tokenizer_config.json",
                    chat_template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
    tok = load(str(d)).tokenizer
    with pytest.raises(Exception) as e:
        prompts.chat(tok, "hi")
    assert "unsafe" in str(e.value).lower() or "security" in type(e.value).__name__.lower()


def test_no_pickle_anywhere_in_the_package():
    src = "\n".join(p.read_text() for p in (ROOT / "radis_mlx").rglob("*.py"))
    assert not re.search(r"^\s*(import pickle|from pickle|import dill|import joblib)", src, re.M)
    assert "allow_pickle=True" not in src and "trust_remote_code=True" not in src
