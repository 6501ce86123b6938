"""A Hugging Face hub cache filled from ../shared/data, laid out as huggingface_hub lays it out, so
the hub path is tested offline.

Each dataset gets ``datasets--ORG--NAME/`` with ``blobs/`` (content-addressed: sha256 for the
files the hub stores in LFS, git's blob SHA-1 for the others), ``snapshots/<commit>/<path>``
symlinks to them, and ``refs/<branch>`` holding the commit where the revision is a branch. Files
are converted to the format each dataset ships on the hub: parquet (WMT22-Test, WMT23-Test, ALMA's parallel
data, AdvBench, GSM8K), JSON Lines (IFEval, MT-Bench) or a JSON array (AlpacaEval).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

from radis_mlx.data.hub import HubFiles
from radis_mlx.evals import suites

ALMA_PARALLEL = "haoranxu/ALMA-Human-Parallel"


def _parquet(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _commit(repo: str, revision: str) -> str:
    """The commit a revision names: itself when it is a SHA, else a stand-in SHA for the branch."""
    if len(revision) == 40:
        return revision
    return hashlib.sha1(f"{repo}@{revision}".encode()).hexdigest()


def put(cache: Path, repo: str, revision: str, path: str, data: bytes, repo_type: str = "dataset") -> Path:
    """One file of a hub repository, stored the way hf_hub_download stores it."""
    root = cache / f"{repo_type}s--{repo.replace('/', '--')}"
    lfs = path.endswith(".parquet")
    blob_id = (hashlib.sha256(data).hexdigest() if lfs else
               hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
    blob = root / "blobs" / blob_id
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    commit = _commit(repo, revision)
    link = root / "snapshots" / commit / path
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
    if commit != revision:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / revision).write_text(commit)
    return link


def _wmt22(data: Path, name: str) -> bytes:
    pair = name.split("/")[0]
    x = next(lang for lang in pair.split("-") if lang != "en")
    rows = json.loads((data / "alma_human_parallel" / f"{x}en" / f"test.{pair}.json").read_text())
    return _parquet([{pair: r["translation"]} for r in rows])


def _wmt23(data: Path, name: str) -> bytes:
    """ALMA's WMT23-Test rows: the WMT files' source and reference A, line by line."""
    pair = name.split("/")[0]
    s, t = pair.split("-")
    root = data / "wmt23_general_test"
    src = (root / "sources" / f"generaltest2023.{pair}.src.{s}").read_text().splitlines()
    ref = (root / "references" / f"generaltest2023.{pair}.ref.refA.{t}").read_text().splitlines()
    return _parquet([{pair: {s: a, t: b}} for a, b in zip(src, ref, strict=True)])


def _advbench(data: Path) -> bytes:
    rows = list(csv.DictReader(io.StringIO((data / "advbench" / "harmful_behaviors.csv").read_text(), newline="")))
    return _parquet([{"prompt": r["goal"], "target": r["target"]} for r in rows])


def _gsm8k(data: Path) -> bytes:
    lines = (data / "gsm8k" / "test.jsonl").read_text().splitlines()
    return _parquet([{"question": r["question"], "answer": r["answer"]} for r in map(json.loads, filter(None, lines))])


def _suite_file(data: Path, src: HubFiles, name: str) -> bytes:
    if src.repo == suites.WMT22_HUB.repo:
        return _wmt22(data, name)
    if src.repo == suites.WMT23_HUB.repo:
        return _wmt23(data, name)
    if src.repo == suites.ADVBENCH_HUB.repo:
        return _advbench(data)
    if src.repo == suites.GSM8K_HUB.repo:
        return _gsm8k(data)
    # The hub's alpaca_eval.json is AlpacaEval 1.0's table: the 805 instructions with
    # text-davinci-003's outputs, the same rows as the local copy of that model's outputs.
    local = {suites.IFEVAL_HUB.repo: "ifeval/input_data.jsonl", suites.MTBENCH_HUB.repo: "mt_bench/question.jsonl",
             suites.ALPACAEVAL_HUB.repo: "alpaca_eval/text_davinci_003_model_outputs.json"}[src.repo]
    return (data / local).read_bytes()


def _alma_parallel(cache: Path, data: Path, revision: str = "main") -> None:
    """ALMA's human-written parallel data as push_to_hub wrote it: a config per xx-en pair with train
    (and validation) parquet shards, named in the card's ``configs`` metadata."""
    configs = []
    for folder in sorted((data / "alma_human_parallel").glob("??en")):
        pair = f"{folder.name[:2]}-en"
        files = []
        for split, local in (("train", f"train.{pair}.json"), ("validation", f"valid.{pair}.json")):
            f = folder / local
            if not f.exists():
                continue
            text = f.read_text()
            is_array = text.lstrip().startswith("[")  # valid files: an array; train files: JSON Lines
            rows = json.loads(text) if is_array else [json.loads(x) for x in text.splitlines() if x]
            put(cache, ALMA_PARALLEL, revision, f"{pair}/{split}-00000-of-00001.parquet",
                _parquet([{"translation": r["translation"]} for r in rows]))
            files.append({"split": split, "path": f"{pair}/{split}-*"})
        configs.append({"config_name": pair, "data_files": files})
    card = "---\n" + json.dumps({"configs": configs}) + "\n---\n# ALMA-Human-Parallel (test copy)\n"
    put(cache, ALMA_PARALLEL, revision, "README.md", card.encode())


def fill_hub_cache(cache: Path, data: Path, skip: tuple[str, ...] = ()) -> Path:
    """Every suite's hub copy and ALMA's parallel data, from the local copies under ``data``;
    ``skip``: repositories left out (to test a missing cache entry)."""
    seen = set()
    for s in suites.REGISTRY.values():
        src = s.hub
        if src is None or src.repo in seen or src.repo in skip:
            continue
        seen.add(src.repo)
        for name in src.files:
            put(cache, src.repo, src.revision, name, _suite_file(data, src, name))
    if ALMA_PARALLEL not in skip:
        _alma_parallel(cache, data)
    return cache


def offline_env(home: Path) -> dict[str, str]:
    """The environment of a process that may use only the cache under ``home``."""
    return {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_DATASETS_CACHE": str(home / "datasets"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def use_cache(monkeypatch, home: Path) -> Path:
    """This process and its children read the hub cache under ``home`` only, offline."""
    from huggingface_hub import constants

    for k, v in offline_env(home).items():
        monkeypatch.setenv(k, v)
    # huggingface_hub reads its settings once, at import: set them where it looks at call time.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return home
