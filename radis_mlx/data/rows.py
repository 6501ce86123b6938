"""Reading rows out of data files with errors that name ``file:line`` (or ``[i]``, the 0-based element
of a one-line JSON array) and the field, so a bad row deep in a file costs the user one look."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..fileio import MAX_ROW_BYTES, DataError, UserError, iter_jsonl


def sample(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 0:
        raise UserError(f"limit must be >= 0, got {limit}")
    # Sorted indices keep file order, so a sample of a document-ordered test set stays readable.
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


def read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # io.read_json reports no line here; the line is what the user needs to find the byte.
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, line, None, f"not UTF-8 ({e.reason} at byte {e.start} of the file)") from None


def jsonl_rows(path: Path) -> Iterator[tuple[Any, dict]]:
    last = 0
    try:
        for last, row in iter_jsonl(path):
            yield last, row
    except (RecursionError, ValueError) as e:
        # iter_jsonl catches only JSONDecodeError; deep nesting and huge ints escape it.
        raise DataError(path, None, None, f"invalid JSON after line {last}: {type(e).__name__}: {e}") from None


def array_rows(path: Path, text: str) -> Iterator[tuple[Any, dict]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    except (RecursionError, ValueError) as e:
        raise DataError(path, None, None, f"invalid JSON: {type(e).__name__}: {e}") from None
    if not isinstance(data, list):
        raise DataError(path, 1, None, f"expected a JSON array, got {type(data).__name__}")
    lines = _element_lines(text, len(data))
    for i, obj in enumerate(data):
        where = lines[i] if lines else f"[{i}]"
        if not isinstance(obj, dict):
            raise DataError(path, where, None, f"expected a JSON object, got {type(obj).__name__}")
        yield where, obj


def _element_lines(text: str, n: int) -> list[int] | None:
    """Start line of each array element, or None when elements share lines (then ``[i]`` is clearer)."""
    newlines = text.strip().count("\n")
    if n == 0 or newlines == 0 or newlines < n - 1:
        return None
    dec, ws = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")
    pos = ws.match(text, ws.match(text).end() + 1).end()  # just past '['
    starts = []
    while len(starts) < n:
        starts.append(pos)
        _, pos = dec.raw_decode(text, pos)
        pos = ws.match(text, pos).end() + 1  # past ','
        pos = ws.match(text, pos).end()
    lines, line, prev = [], 1, 0
    for s in starts:
        line += text.count("\n", prev, s)
        prev = s
        if lines and lines[-1] == line:
            return None
        lines.append(line)
    return lines


def text_lines(path: Path) -> list[str]:
    text = read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    # split("\n"), not splitlines(): U+2028 and friends inside a segment must not break alignment.
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")] if text else []
    if not lines:
        raise UserError(f"{path}: no data rows")
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            raise DataError(path, i, None, "empty line")
        if len(ln) > MAX_ROW_BYTES // 4 and len(ln.encode("utf-8", "surrogatepass")) > MAX_ROW_BYTES:
            raise DataError(path, i, None, f"line longer than the limit of {MAX_ROW_BYTES:,} bytes")
    return lines


def string_field(obj: dict, key: str, path, where, field: str | None = None) -> str:
    field = field or key
    if key not in obj:
        raise DataError(path, where, field, f"missing (row has: {keys_of(obj)})")
    v = obj[key]
    if not isinstance(v, str):
        raise DataError(path, where, field, f"expected a string, got {type(v).__name__}")
    if not v.strip():
        raise DataError(path, where, field, "empty")
    if len(v) > MAX_ROW_BYTES // 4 and len(v.encode("utf-8", "surrogatepass")) > MAX_ROW_BYTES:
        raise DataError(path, where, field, f"longer than the limit of {MAX_ROW_BYTES:,} bytes")
    check_encodable(v, path, where, field)
    return v


def check_encodable(v: str, path, where, field) -> None:
    # json.loads turns a "\ud800" escape into a lone surrogate that later crashes every UTF-8 writer.
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(path, where, field, f"not encodable as UTF-8 ({e.reason} at character {e.start})") from None


def keys_of(obj: dict) -> str:
    # Keys come from the data: escape them so the message stays one line, and cap the length.
    shown = ", ".join(json.dumps(str(k), ensure_ascii=False)[1:-1][:40] for k in list(obj)[:8])
    return (shown + (", ..." if len(obj) > 8 else "")) or "nothing"


def row_id(row: dict, keys: Iterable[str], path, where) -> str | None:
    for k in keys:
        v = row.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
            raise DataError(path, where, k, f"expected a non-empty string or integer id, got {v!r:.40}")
        check_encodable(str(v), path, where, k)
        return str(v)
    return None
