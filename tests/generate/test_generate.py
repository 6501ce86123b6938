"""The generate stage on the tiny model: modes, filters, ratio, resume after kill -9, settings guard."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from radis_mlx.fileio import UserError
from radis_mlx.generate import GenerateConfig, format_summary, generate
from radis_mlx.generate.filters import in_ratio, rationale_filter, trim_to_sentence
from radis_mlx.repetition import repeat_share

from handmade import write_pairs

ROOT = Path(__file__).resolve().parents[2]


def rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines()]


def cfg(tmp_path, model, **kw) -> GenerateConfig:
    data = write_pairs(tmp_path / "train.de-en.json", kw.pop("n", 6))
    return GenerateConfig(data=str(data), out=str(tmp_path / "out.jsonl"), model=str(model),
                          max_tokens=kw.pop("max_tokens", 8), batch_size=4, **kw)


@pytest.mark.parametrize("mode", ["rationale-continue", "rationale-explain", "seqkd", "sdft"])
def test_every_mode_writes_one_row_per_pair(tmp_path, tiny_model_dir, mode):
    c = cfg(tmp_path, tiny_model_dir, mode=mode)
    s = generate(c, progress=False)
    out = rows(Path(c.out))
    assert len(out) == 6 and len({r["id"] for r in out}) == 6
    assert all(r["mode"] == mode and r["src_lang"] == "de" and r["tgt_lang"] == "en" for r in out)
    assert all(set(r) >= {"id", "src", "ref", "text", "kept", "reason", "n_tokens", "finish"} for r in out)
    assert s["rows"] == 6 and s["kept"] + sum(s["rejected"].values()) == 6
    meta = json.loads(Path(c.out + ".meta.json").read_text())
    assert meta["settings"]["mode"] == mode and meta["settings"]["max_tokens"] == 8


def test_replay_mode_reads_instructions(tmp_path, tiny_model_dir):
    inst = tmp_path / "inst.jsonl"
    inst.write_text("".join(json.dumps({"instruction": f"Say hello {i}"}) + "\n" for i in range(3)))
    c = GenerateConfig(data=str(inst), out=str(tmp_path / "r.jsonl"), mode="replay",
                       model=str(tiny_model_dir), max_tokens=6)
    generate(c, progress=False)
    out = rows(Path(c.out))
    assert [r["instruction"] for r in out] == [f"Say hello {i}" for i in range(3)]


def test_rerun_skips_done_rows_and_refuses_other_settings(tmp_path, tiny_model_dir):
    c = cfg(tmp_path, tiny_model_dir)
    generate(c, progress=False)
    first = Path(c.out).read_bytes()
    runs = json.loads(Path(c.out + ".summary.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["rows"] == len(rows(Path(c.out))) and runs[0]["tokens_per_s"] > 0
    generate(c, progress=False)  # nothing left to do: file unchanged, the first run's speed kept
    assert Path(c.out).read_bytes() == first
    s = json.loads(Path(c.out + ".summary.json").read_text())
    assert s["runs"] == runs and s["tokens_per_s_this_run"] is None
    assert "nothing generated this run" in format_summary(s)
    c.max_tokens = 9
    with pytest.raises(UserError, match="different settings.*max_tokens"):
        generate(c, progress=False)
    assert Path(c.out).read_bytes() == first


def test_ratio_keeps_a_seeded_fraction(tmp_path, tiny_model_dir):
    c = cfg(tmp_path, tiny_model_dir, n=20, ratio=0.5, unfinished="keep", max_repeat=1.0)
    generate(c, progress=False)
    out = rows(Path(c.out))
    skipped = [r for r in out if r["reason"] == "ratio"]
    assert 0 < len(skipped) < 20
    assert all(not in_ratio(r["id"], 0.5, 0) for r in skipped)
    assert all(r["text"] == "" and not r["kept"] for r in skipped)


def test_filters():
    c = GenerateConfig(data="x", out="y", mode="sdft", max_len=5, min_tokens=2)
    assert rationale_filter(c, "  ", [1, 2], "stop")[1:] == (False, "empty")
    assert rationale_filter(c, "ok", [1], "stop")[1:] == (False, "too-short")
    assert rationale_filter(c, "long", list(range(6)), "stop")[1:] == (False, "too-long")
    assert rationale_filter(c, "As the reference answer says", [1, 2, 3], "stop")[1:] == (False, "sdft-banned")
    assert rationale_filter(c, "Your turn: hi", [1, 2, 3], "stop")[1:] == (False, "sdft-banned")
    assert rationale_filter(c, "A fine rewrite.", [1, 2, 3], "stop")[1:] == (True, None)
    c = GenerateConfig(data="x", out="y", mode="rationale-explain")
    assert rationale_filter(c, "loop", [7, 8, 9, 10] * 10, "stop")[1:] == (False, "repetition")
    assert repeat_share([1, 2, 3, 4, 5, 6]) == 0.0
    c.unfinished = "drop"
    assert rationale_filter(c, "cut off", [1, 2, 3], "length")[1:] == (False, "unfinished")
    c.unfinished = "trim"
    assert rationale_filter(c, "One sentence. And half a", [1, 2, 3], "length")[0] == "One sentence."
    assert trim_to_sentence("Done.") == "Done."


def test_seqkd_cuts_after_translation():
    c = GenerateConfig(data="x", out="y", mode="seqkd")
    assert rationale_filter(c, "The dog.\n\nThis translation keeps", [1, 2, 3], "stop")[0] == "The dog."


def test_bad_data_fails_before_loading_and_writes_nothing(tmp_path):
    bad = tmp_path / "train.de-en.json"
    bad.write_text('{"translation": {"de": "a", "en": "b"}}\n{"translation": {"de": "a"}}\n')
    c = GenerateConfig(data=str(bad), out=str(tmp_path / "o.jsonl"), model="/nonexistent")
    with pytest.raises(UserError, match=r"train.de-en.json:2: translation.en"):
        generate(c, progress=False)
    assert not (tmp_path / "o.jsonl").exists()


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "radis_mlx.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_then_rerun_equals_uninterrupted_run(tmp_path, tiny_model_dir, workers):
    """kill -9 while rows are being appended (by this process, or by its worker processes, which
    must stop with it), then a rerun: the same file as one straight single-process run."""
    data = write_pairs(tmp_path / "train.de-en.json", 40)
    args = ["generate", "--data", str(data), "--model", str(tiny_model_dir), "--max-tokens", "24",
            "--batch-size", "2", "--mode", "rationale-explain", "--max-repeat", "1.0", "--unfinished", "keep"]
    ref = tmp_path / "straight.jsonl"
    p = _cli([*args, "--out", str(ref), "--workers", "1"])
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    killed = tmp_path / "killed.jsonl"
    written = lambda: [killed, *sorted(tmp_path.glob("killed.jsonl.part*"))]  # noqa: E731
    rng = random.Random(1)
    for attempt in range(3):  # kill at several moments: while rows are being appended
        p = _cli([*args, "--out", str(killed), "--workers", str(workers)])
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            n = sum(f.read_bytes().count(b"\n") for f in written() if f.exists())
            if n >= 5 + attempt * 8 + rng.randint(0, 3):
                break
            time.sleep(0.02)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait()
        if workers > 1:  # orphaned workers notice within a second and stop writing
            time.sleep(2.5)
            sizes = [f.stat().st_size for f in written() if f.exists()]
            time.sleep(1.5)
            assert sizes == [f.stat().st_size for f in written() if f.exists()]
        ids = [json.loads(l)["id"] for f in written() if f.exists()
               for l in f.read_bytes().splitlines() if l.strip().endswith(b"}")]
        assert len(ids) == len(set(ids))  # never a duplicated row
    p = _cli([*args, "--out", str(killed), "--workers", str(workers)])
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert killed.read_bytes() == ref.read_bytes()
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith("killed")) == \
        ["killed.jsonl", "killed.jsonl.meta.json", "killed.jsonl.summary.json"]  # no parts or logs left


def test_worker_processes_write_what_one_process_writes(tmp_path, tiny_model_dir):
    one = cfg(tmp_path, tiny_model_dir, n=10, workers=1, ratio=0.7)
    generate(one, progress=False)
    two = GenerateConfig(**{**asdict(one), "out": str(tmp_path / "two.jsonl"), "workers": 2})
    s = generate(two, progress=False)
    assert Path(two.out).read_bytes() == Path(one.out).read_bytes()
    assert s["runs"][-1]["workers"] == 2
    assert s["runs"][-1]["rows"] == sum(in_ratio(r["id"], 0.7, 0) for r in rows(Path(one.out)))
    assert {r["reason"] for r in rows(Path(two.out))} >= {"ratio"}  # skipped rows keep their fields too
    assert all(r["src"] and r["ref"] for r in rows(Path(two.out)))


def test_a_one_process_rerun_clears_what_a_killed_parallel_run_left(tmp_path, tiny_model_dir):
    """A kill -9 leaves part files and worker logs; the rerun may need fewer (or no) workers, and
    must still merge the parts and leave only the output, its meta and its summary."""
    from radis_mlx.generate import files
    c = cfg(tmp_path, tiny_model_dir, n=6, workers=1)
    generate(c, progress=False)
    straight = Path(c.out).read_bytes()
    lines = straight.splitlines(keepends=True)
    for f in tmp_path.glob("out.jsonl*"):
        f.unlink()
    files.part_file(Path(c.out), 0, 2).write_bytes(b"".join(lines[0::2]))
    files.part_file(Path(c.out), 1, 2).write_bytes(b"".join(lines[1:4:2]))  # one row still to do
    for r in range(2):
        files.worker_log(Path(c.out), r).write_text("loading model\n")
    generate(c, progress=False)
    assert Path(c.out).read_bytes() == straight
    assert sorted(f.name for f in tmp_path.glob("out.jsonl*")) == \
        ["out.jsonl", "out.jsonl.meta.json", "out.jsonl.summary.json"]


def test_a_failed_worker_is_reported_and_finished_rows_stay(tmp_path, tiny_model_dir, monkeypatch):
    from radis_mlx.generate import files, workers
    c = cfg(tmp_path, tiny_model_dir, n=8, workers=2)
    part = files.part_file(Path(c.out), 0, 2)
    kept = json.dumps({"id": "x", "text": "done before"}) + "\n"
    part.write_text(kept)  # a row an earlier, interrupted run finished
    monkeypatch.setattr(workers.sys, "executable", "/bin/false")  # every worker exits 1 at once
    with pytest.raises(UserError, match=r"worker \d of 2 failed \(exit 1\).*rerun to resume"):
        generate(c, progress=False)
    assert part.read_text() == kept


def test_automatic_worker_count(tmp_path, tiny_model_dir, monkeypatch):
    import radis_mlx.models as M
    from radis_mlx.generate import workers as W
    c = GenerateConfig(data="x", out="y", model=str(tiny_model_dir))
    monkeypatch.setattr(W.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert W.n_workers(c, 63) == 1  # too few rows to pay for starting processes
    assert W.n_workers(c, 96) == 3 and W.n_workers(c, 1000) == 4
    monkeypatch.setattr(M, "model_bytes", lambda path: 10**15)
    assert W.n_workers(c, 1000) == 1  # no memory for a second copy of the model
    c.workers = 3
    assert W.n_workers(c, 1000) == 3 and W.n_workers(c, 2) == 2  # asked for: as many as rows allow


def test_fast_exp_decoding_matches_plain_mlx(tiny_model_dir):
    """The pow-based SiLU/attention swapped in for CPU decoding picks the same greedy tokens,
    with left-padded rows of different lengths in one batch, and is undone afterwards."""
    import sys

    from mlx_lm.models import activations, base

    from radis_mlx.runtime.decode import DecodeConfig, decode
    from radis_mlx.models import load

    L = load(str(tiny_model_dir))
    prompts_ = [[1, 5, 9, 2], [3] * 11, [7, 8, 9, 10, 11, 12, 13], [4, 4]]
    plain = decode(L.model, L.tokenizer, prompts_, DecodeConfig(max_tokens=12, batch_size=4, fast_exp=False))
    fast = decode(L.model, L.tokenizer, prompts_, DecodeConfig(max_tokens=12, batch_size=4, fast_exp=True))
    assert [c.tokens for c in fast] == [c.tokens for c in plain]
    mod = sys.modules[type(L.model).__module__]
    assert mod.swiglu is activations.swiglu and mod.scaled_dot_product_attention is base.scaled_dot_product_attention


@pytest.mark.slow
def test_mlx_launch_two_ranks_write_what_one_process_writes(tmp_path, tiny_model_dir):
    """Under mlx.launch (ring backend, 2 local ranks) each rank writes its own part; rank 0 merges
    them into the file one process writes."""
    launch = Path(sys.executable).with_name("mlx.launch")
    if not launch.exists():
        pytest.skip("mlx.launch not installed")
    data = write_pairs(tmp_path / "train.de-en.json", 12)
    args = ["generate", "--data", str(data), "--model", str(tiny_model_dir), "--max-tokens", "12",
            "--batch-size", "4", "--mode", "rationale-explain", "--workers", "1"]
    port = 20000 + (os.getpid() + 7) % 20000
    r = subprocess.run([str(launch), "-n", "2", "--backend", "ring", "-p", str(port), "--", sys.executable, "-m",
                        "radis_mlx.cli", *args, "--out", str(tmp_path / "two.jsonl")],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode != 0 and "ring" in (r.stderr or "").lower() and "error" in r.stderr.lower():
        pytest.skip(f"ring backend unavailable: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stderr[-2000:]
    p = _cli([*args, "--out", str(tmp_path / "one.jsonl")])
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert not list(tmp_path.glob("two.jsonl.part*"))
    run = json.loads((tmp_path / "two.jsonl.summary.json").read_text())["runs"][-1]
    assert run["workers"] == 2 and run["rows"] == 12  # both ranks' rows, counted on rank 0


def test_generate_names_its_files_for_a_run(tmp_path):
    """One file per mode for the run's shared settings; a method's own settings get their own file, named
    by their hash (the names existing run directories were written with, so they still resume)."""
    from radis_mlx.generate.files import output_for
    common = {"mode": "rationale-explain", "max_tokens": 48}
    assert output_for(tmp_path, dict(common), common) == tmp_path.resolve() / "rationale-explain.jsonl"
    own = {**common, "ratio": 0.5}
    assert output_for(tmp_path, own, common).name == "rationale-explain-982e2a54.jsonl"
    with pytest.raises(UserError, match="refusing path"):
        output_for(tmp_path, {"mode": "../../x"}, {})


def test_every_composite_mode_has_a_runner():
    """The registry declares a composite mode by name only; the stage holds the code that runs it."""
    from radis_mlx import methods
    from radis_mlx.generate import stage
    assert {n for n, m in methods.MODES.items() if m.composite} == set(stage.COMPOSITE)
