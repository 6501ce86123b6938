"""--report-to wandb,tensorboard: the logs each tracker writes, read back with that library's own reader
(TensorBoard's EventAccumulator; W&B's record protos from the run's .wandb file), equal metrics.jsonl."""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest

from radis_mlx.fileio import UserError
from test_train import _cfg, rows_file  # noqa: F401 (a fixture)

# (metrics.jsonl key, tracker key): the trackers get mlx-lm's report names, metrics.jsonl its own
TRAIN_KEYS = [("loss", "train_loss"), ("lr", "learning_rate"), ("tok_s", "tokens_per_second"),
              ("peak_mem_gb", "peak_memory"), ("grad_norm", "grad_norm")]
WANDB_ENV = ("WANDB_MODE", "WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_RUN_ID",
             "WANDB_RESUME", "WANDB_SILENT", "WANDB_API_KEY")
VAL_KEYS = [("val_loss", "val_loss"), ("val_ref_loss", "val_ref_loss"), ("val_rat_loss", "val_rat_loss")]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh HOME and working directory, no W&B settings from the environment: whatever a tracker
    writes outside the run directory shows up here."""
    pytest.importorskip("wandb")
    pytest.importorskip("tensorboard")
    for k in WANDB_ENV:
        monkeypatch.delenv(k, raising=False)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))  # matplotlib's font cache is not ours to check
    monkeypatch.chdir(cwd)
    yield tmp_path
    assert not any(home.iterdir()) and not any(cwd.iterdir()), "written outside the run directory"
    assert not [k for k in WANDB_ENV if k in os.environ]  # the environment is restored


def _metrics(out: Path) -> tuple[dict, dict]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return ({r["step"]: r for r in rows if r["type"] == "train"}, {r["step"]: r for r in rows if r["type"] == "val"})


def tb_scalars(logdir: Path) -> dict:
    """{tag: {step: value}} as TensorBoard shows them (earlier events purged by a restart's START)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    ea.Reload()
    out = {}
    for tag in ea.Tags()["scalars"]:
        steps = [e.step for e in ea.Scalars(tag)]
        assert len(steps) == len(set(steps)), f"{tag}: steps shown twice {steps}"
        out[tag] = {e.step: e.value for e in ea.Scalars(tag)}
    return out


def wandb_records(path: Path):
    """The records of a .wandb file (W&B's LevelDB-log framing, CRC-checked) as wandb.proto Records. The
    installed wandb (0.2x+, Go core) ships no Python reader any more; the record type is its own."""
    from wandb.proto import wandb_internal_pb2 as pb
    buf, block, hdr = path.read_bytes(), 32768, 7
    assert struct.unpack("<4sHB", buf[:7]) == (b":W&B", 0xBEE1, 0)
    pos, part = 7, b""
    while pos + hdr <= len(buf):
        if block - pos % block < hdr:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        crc, n, kind = struct.unpack("<IHB", buf[pos:pos + hdr])
        data, pos = buf[pos + hdr:pos + hdr + n], pos + hdr + n
        if kind == 0:
            continue
        assert zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc
        part = data if kind in (1, 2) else part + data  # full/first start a record, middle/last extend it
        if kind in (1, 4):
            r = pb.Record()
            r.ParseFromString(part)
            yield r


def wandb_run(run_dir: Path) -> dict:
    """Every offline W&B file of a run directory in order: run ids, names, {key: {step: value}}, summary."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    out = {"files": len(files), "ids": set(), "names": [], "projects": set(), "history": {}, "summary": {}}
    for f in files:
        for r in wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                out["ids"].add(r.run.run_id)
                out["names"].append(r.run.display_name)  # the last one is what W&B shows
                out["projects"].add(r.run.project)
            elif kind == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
                for k, v in items.items():
                    out["history"].setdefault(k, {})[r.history.step.num] = v  # a resumed step: the last value
            elif kind == "summary":
                out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                       for i in r.summary.update})
    return out


def _check_against_metrics(out: Path, tb: dict, wb: dict) -> None:
    train, val = _metrics(out)
    for mkey, tkey in TRAIN_KEYS:
        want = {s: r[mkey] for s, r in train.items()}
        assert tb[tkey] == pytest.approx(want, rel=1e-6), tkey  # TensorBoard stores float32
        assert wb["history"][tkey] == want, tkey
    for mkey, tkey in VAL_KEYS:
        want = {s: r[mkey] for s, r in val.items()}
        if not want:  # no validation set
            assert tkey not in tb and tkey not in wb["history"]
            continue
        assert tb[tkey] == pytest.approx(want, rel=1e-6), tkey
        assert {s: wb["history"][tkey][s] for s in want} == want, tkey


def test_report_to_logs_every_report_to_both_trackers(tiny_model_dir, rows_file, isolated):  # noqa: F811
    from radis_mlx import tracking
    from radis_mlx.tuner import finetune
    out = isolated / "run"
    finetune(_cfg(tiny_model_dir, rows_file, out, iters=12, val_fraction=0.2, steps_per_eval=6, steps_per_report=3,
                  report_to="wandb, TensorBoard"))
    train, val = _metrics(out)
    assert sorted(train) == [3, 6, 9, 12] and sorted(val) == [0, 6, 12]
    assert all(v["val_rat_loss"] is not None for v in val.values())  # the rationale loss is there to log
    tb, wb = tb_scalars(out / "tensorboard"), wandb_run(out)
    _check_against_metrics(out, tb, wb)
    state = json.loads((out / "tracking.json").read_text())
    assert wb["files"] == 1 and wb["ids"] == {state["wandb"]["id"]} and state["step"] == 12
    assert wb["projects"] == {"radis-mlx"} and wb["names"][-1].endswith("/run")  # the run directory's path

    # Eval's headline numbers go into the same runs at the last step; lists and text are not numbers.
    scores = {"name": "x", "bleu": 12.5, "bleu_ci": [11.0, 14.0], "chrf": 40.25, "mtbench": "not judged"}
    assert tracking.log_scores(out, scores) == ["wandb", "tensorboard"]
    tb, wb = tb_scalars(out / "tensorboard"), wandb_run(out)
    assert tb["eval/bleu"] == {12: 12.5} and tb["eval/chrf"] == {12: 40.25} and "eval/bleu_ci" not in tb
    assert wb["files"] == 2 and wb["ids"] == {state["wandb"]["id"]}  # reopened, not a new run
    assert wb["history"]["eval/bleu"] == {12: 12.5} and wb["summary"]["eval/chrf"] == 40.25
    _check_against_metrics(out, tb, wb)  # the training curves are untouched
    assert tracking.log_scores(out, scores) == []  # a recipe run again does not log them twice


def test_a_resumed_run_continues_the_same_tracker_runs(tiny_model_dir, rows_file, isolated):  # noqa: F811
    from radis_mlx.tuner import finetune
    out = isolated / "run"
    kw = dict(iters=6, save_every=2, steps_per_report=1, val_fraction=0.2, steps_per_eval=2,
              report_to=["wandb", "tensorboard"])

    def kill(step, _):
        if step == 3:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        finetune(_cfg(tiny_model_dir, rows_file, out, **kw), on_step=kill)
    first = wandb_run(out)
    assert set(first["history"]["train_loss"]) == {1, 2, 3}
    finetune(_cfg(tiny_model_dir, rows_file, out, resume=True, **kw))  # resumes at step 2: step 3 runs again
    tb, wb = tb_scalars(out / "tensorboard"), wandb_run(out)
    assert wb["files"] == 2 and wb["ids"] == first["ids"]
    assert sorted(tb["train_loss"]) == [1, 2, 3, 4, 5, 6] and sorted(tb["val_loss"]) == [0, 2, 4, 6]
    _check_against_metrics(out, tb, wb)  # each step once, the resumed run's step 3 where it ran twice


def test_a_tracker_that_is_not_installed_fails_before_any_work(tiny_model_dir, rows_file, tmp_path, monkeypatch,  # noqa: F811
                                                               capsys):
    from radis_mlx.cli import main
    from radis_mlx.tuner import load_config
    monkeypatch.setitem(sys.modules, "wandb", None)  # what importlib sees when the package is absent
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as e:
        main(["finetune", "--model", str(tiny_model_dir), "--data", str(rows_file), "--out", str(out), "--quiet",
              "--report-to", "tensorboard,wandb"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "pip install 'radis-mlx[tracking]'" in err
    assert "wandb" in err and not out.exists()
    with pytest.raises(UserError, match="report_to: unknown 'mlflow'"):
        load_config(data="x", report_to=["tensorboard", "mlflow"])
    y = tmp_path / "c.yaml"
    y.write_text("report_to: [wandb]\n")  # a recipe or --config file names the file
    with pytest.raises(UserError, match=r"c\.yaml: report_to: wandb not installed"):
        load_config(y, data="x")
    assert load_config(data="x", report_to="").report_to is None


def test_a_recipe_logs_each_methods_eval_scores_into_its_tracker_runs(tiny_model_dir, isolated):
    import yaml
    from radis_mlx.pipeline import RECIPES, load_recipe, run
    recipe = yaml.safe_load((RECIPES / "demo.yaml").read_text())
    recipe.update(model=str(tiny_model_dir), methods=["base", "sft"])
    recipe["finetune"].update(iters=2, batch_size=2, save_every=1, report_to="wandb,tensorboard")
    recipe["eval"].update(suites=["translation", "advbench"], limit=2, max_tokens={"translation": 4, "advbench": 4})
    p = isolated / "tiny.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = isolated / "run"
    res = run(load_recipe(p), out, progress=False)
    train = out / "sft" / "train"
    tb, wb = tb_scalars(train / "tensorboard"), wandb_run(train)
    _check_against_metrics(train, tb, wb)
    scores = res["results"]["sft"]["suites"]
    want = {"eval/bleu": scores["translation"]["bleu"], "eval/advbench": scores["advbench"]["refusal_rate"]}
    for k, v in want.items():
        assert tb[k] == pytest.approx({2: v}, rel=1e-6), k
        assert wb["history"][k] == {2: v} and wb["summary"][k] == v, k
    assert "eval/train_tokens" not in tb  # the report's cost columns are not scores
    assert wb["names"][-1] == "run/sft/train" and len(wb["ids"]) == 1  # not just "train", as every method's
    assert not (out / "base" / "train").exists()  # an untrained method has no tracker run
