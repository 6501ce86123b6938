"""Instruction sets (IFEval, AdvBench, GSM8K, MT-Bench, AlpacaEval, replay data): JSONL, a JSON array, CSV or
parquet (a hub dataset's file)."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Iterator

from ..fileio import DataError, UserError
from .hub import parquet_rows
from .rows import array_rows, check_encodable, jsonl_rows, keys_of, read_text, row_id, sample, string_field

_INSTRUCTION_FIELDS = ("instruction", "prompt", "question", "goal")

_ID_FIELDS = ("question_id", "key", "id")


def _instruction_row(row: dict, path, where) -> dict:
    for key in _INSTRUCTION_FIELDS:
        if key in row:
            text = string_field(row, key, path, where)
            break
    else:
        if "turns" not in row:
            raise DataError(path, where, "instruction",
                            f"missing (expected one of {', '.join(_INSTRUCTION_FIELDS)}, turns)")
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(x, str) and x.strip() for x in turns):
            raise DataError(path, where, "turns", "expected a non-empty list of non-empty strings")
        for i, x in enumerate(turns):
            check_encodable(x, path, where, f"turns[{i}]")
        text = turns[0]
    rid = row_id(row, _ID_FIELDS, path, where) or hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    return {"id": rid, "instruction": text, **{k: v for k, v in row.items() if k not in ("id", "instruction")}}


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        if not set(header) & {"goal", "instruction", "prompt", "question"}:
            has = keys_of(dict.fromkeys(header))
            raise DataError(path, 1, None, f"CSV header needs a goal, instruction or prompt column (has: {has})")
        start = reader.line_num + 1
        for rec in reader:
            if rec:
                if len(rec) != len(header):
                    raise DataError(path, start, None, f"expected {len(header)} fields, got {len(rec)}")
                yield start, dict(zip(header, rec))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(path, reader.line_num, None, f"bad CSV: {e}") from None


def load_instructions(source, limit=None, seed=0) -> list[dict]:
    path = Path(source)
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(path)
    elif path.suffix.lower() == ".parquet":  # a hub dataset's file (hub.py fetches it)
        if not path.is_file():
            raise UserError(f"{path}: file not found")
        rows = parquet_rows(path)
    else:
        text = read_text(path)
        head = text.lstrip()[:1]
        if head == "[":
            rows = array_rows(path, text)
        elif head == "{":
            rows = jsonl_rows(path)
        elif not head:
            rows = iter(())
        else:
            raise UserError(f"{path}: not JSON Lines, a JSON array or a .csv file (starts with {head!r})")
    out = [_instruction_row(row, path, where) for where, row in rows]
    if not out:
        raise UserError(f"{path}: no data rows")
    return sample(out, limit, seed)
