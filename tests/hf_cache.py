"""A Hugging Face hub cache filled by hand, laid out as huggingface_hub lays it out, so a test can use
a hub id with HF_HUB_OFFLINE=1 and no network:

    HF_HUB_CACHE/models--ORG--NAME/blobs/<sha256 of the file>
                                  /snapshots/<revision>/<file> -> ../../blobs/<sha256>
                                  /refs/main                   (the revision)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REVISION = "0123456789abcdef0123456789abcdef01234567"  # a commit hash's shape: 40 hex digits


def put_in_hf_cache(hub_cache: Path, repo_id: str, files: Path, revision: str = REVISION) -> Path:
    """Every file under ``files`` as ``repo_id``'s model snapshot at ``revision`` (also refs/main);
    returns the snapshot directory."""
    repo = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in Path(files).rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.relative_to(files)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def offline_env(hf_home: Path) -> dict:
    """The environment of a process that may only read ``hf_home``'s cache."""
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(Path(hf_home) / "hub"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
