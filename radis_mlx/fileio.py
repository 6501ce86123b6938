"""Crash-safe file helpers shared by every stage.

Long jobs write JSONL append-only (one flushed+fsynced row at a time) and everything
else atomically (temp file in the same directory, fsync, rename), so a kill -9 at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml


# One input row (a JSONL or text line, one text field): the longest in ../shared/data is 7 kB; one
# 10 MB line made MLX ask for 12 TB and segfault. bounds.py states the other limits.
MAX_ROW_BYTES = 1 << 20


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""


class DataError(UserError):
    """A problem at a known place in an input file: ``file:line: field: message``."""

    def __init__(self, path, line: int | str | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


def atomic_write_bytes(path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_line(obj: Any, **kw) -> str:
    """JSON text that is always valid UTF-8: lone surrogates from odd input get \\u escapes."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True, **kw)
    return text


def atomic_write_json(path, obj: Any) -> None:
    atomic_write_text(path, json_line(obj, indent=2) + "\n")


def atomic_write_jsonl(path, rows) -> None:
    """A whole JSONL file at once (rows written one by one as they come go through JsonlAppender)."""
    atomic_write_text(path, "".join(json_line(r) + "\n" for r in rows))


def read_json(path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(path, None, None, f"not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON: {e.msg}") from None
    except (RecursionError, ValueError) as e:  # absurd nesting, 4300+ digit integers
        raise DataError(path, None, None, f"unreadable JSON ({type(e).__name__}: {str(e)[:80]})") from None


def iter_jsonl(path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)``; blank lines are skipped, anything else bad is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, "rb") as f:
        # readline with a cap: a 10 MB line is refused without reading it whole into memory
        for lineno, raw in enumerate(iter(lambda: f.readline(MAX_ROW_BYTES + 1), b""), 1):
            if len(raw) > MAX_ROW_BYTES:
                raise DataError(path, lineno, None, f"row longer than the limit of {MAX_ROW_BYTES:,} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(path, lineno, None, f"not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(path, lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
            except (RecursionError, ValueError) as e:
                raise DataError(path, lineno, None, f"unreadable JSON ({type(e).__name__})") from None
            if not isinstance(obj, dict):
                raise DataError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def repair_jsonl_tail(path) -> int:
    """Drop a torn last line left by a kill mid-write; returns the bytes removed.

    Only an unterminated final line is removed: every complete row is kept.
    """
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        # Find the last newline by scanning back in blocks.
        pos, block = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            i = chunk.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


class JsonlAppender:
    """Append-only JSONL writer: each row is one write, flushed and fsynced."""

    def __init__(self, path, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl_tail(self.path)
        self.fsync = fsync
        self._f = open(self.path, "ab")

    def write(self, row: dict) -> None:
        self._f.write((json_line(row) + "\n").encode("utf-8"))
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def safe_join(root, name: str) -> Path:
    """Join a name that came from data or a recipe under ``root``, refusing to leave it."""
    root = Path(root).resolve()
    p = (root / name).resolve()
    if p != root and root not in p.parents:
        raise UserError(f"refusing path {name!r}: it points outside {root}")
    return p


def check_writable_dir(path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in the way, no permission, read-only disk
        raise UserError(f"{path}: cannot create output directory ({e.strerror})") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{path}: output directory is not writable")
    return path


MAX_YAML_NODES = 100_000  # a recipe has a few hundred; "billion laughs" aliases expand to 10^9


def _expanded_size(obj, memo: dict) -> int:
    """How many values ``obj`` holds once every alias is expanded (each shared part counted every time
    it is used); a structure that contains itself counts as too big."""
    if not isinstance(obj, (dict, list)):
        return 1
    if id(obj) in memo:
        return memo[id(obj)]
    memo[id(obj)] = MAX_YAML_NODES + 1  # until known: a cycle through here is too big
    items = [*obj.keys(), *obj.values()] if isinstance(obj, dict) else obj
    total = 1
    for x in items:
        total += _expanded_size(x, memo)
        if total > MAX_YAML_NODES:
            break
    memo[id(obj)] = total
    return total


def load_yaml_text(text: str) -> Any:
    """YAML text through yaml's safe loader, refusing aliases that expand past MAX_YAML_NODES values
    (a 1 kB file of nested ``*ref`` can stand for gigabytes); a yaml.YAMLError otherwise."""
    obj = yaml.safe_load(text)
    if _expanded_size(obj, {}) > MAX_YAML_NODES:
        raise yaml.YAMLError(f"more than {MAX_YAML_NODES:,} values once its aliases (*name) are expanded")
    return obj


def read_yaml(path) -> Any:
    """A YAML file through load_yaml_text (aliases bounded); bad bytes or syntax become one-line UserErrors."""
    try:
        return load_yaml_text(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {' '.join(str(e).split())[:300]}") from None
    except RecursionError:
        raise UserError(f"{path}: invalid YAML: nested too deeply") from None


def check_adapter_dir(path) -> Path:
    """An adapter directory as mlx-lm's ``load_adapters`` reads it: adapter_config.json and
    adapters.safetensors (adapters are read only from safetensors). Otherwise one line naming what
    the directory holds, before any model loads."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such adapter directory" if not p.exists() else f"{p}: not a directory")
    missing = [n for n in ("adapter_config.json", "adapters.safetensors") if not (p / n).is_file()]
    if missing:
        names = sorted(q.name for q in p.iterdir())
        found = ", ".join(names[:8]) + (f", ... ({len(names)} entries)" if len(names) > 8 else "") or "nothing"
        raise UserError(f"{p}: not an adapter directory: no {' or '.join(missing)} (found: {found})")
    return p
