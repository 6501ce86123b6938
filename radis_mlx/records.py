"""The generate -> finetune contract: one generated row, as a versioned dataclass.

``radis-mlx generate`` writes one JSON object per line with these fields; finetune reads them
back through ``read``. Rows written before the format had a version (no "version" field) are
version 1; a row from a newer format is refused with a one-line "regenerate" error, rather
than trained on with fields this version does not understand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import methods
from .data import Pair, pair_id
from .fileio import DataError, UserError, atomic_write_text, iter_jsonl, json_line

VERSION = 1
_SOURCE = ("src", "ref", "src_lang", "tgt_lang", "instruction")  # the input row's fields, as read


@dataclass
class Record:
    id: str
    mode: str
    text: str  # the generated text, after the filters' trimming
    kept: bool  # False: a filter rejected it (the reference-only target is used instead)
    reason: str | None = None  # why it was rejected
    n_tokens: int = 0
    finish: str = ""  # stop | length | skipped
    src: str | None = None
    ref: str | None = None
    src_lang: str | None = None
    tgt_lang: str | None = None
    instruction: str | None = None  # replay rows: the general instruction answered
    version: int = VERSION

    @property
    def pair(self) -> Pair:
        return Pair(self.src, self.ref, self.src_lang, self.tgt_lang, self.id)

    def to_row(self) -> dict:
        """The JSON object on disk: the input's fields first, then what was generated."""
        src = {k: getattr(self, k) for k in _SOURCE if getattr(self, k) is not None}
        return {"id": self.id, **src, "mode": self.mode, "text": self.text, "kept": self.kept,
                "reason": self.reason, "n_tokens": self.n_tokens, "finish": self.finish, "version": self.version}

    @classmethod
    def from_row(cls, row: dict, path, line) -> "Record":
        modes = methods.MODES  # read at each call: a test may swap the table for its own copy
        v = row.get("version", 1)  # rows before versioning are version 1
        if not isinstance(v, int) or isinstance(v, bool) or v > VERSION or v < 1:
            raise DataError(path, line, "version", f"format {v!r:.20} is not one this radis-mlx reads "
                            f"(1..{VERSION}); regenerate the file with `radis-mlx generate`")
        mode = row.get("mode")
        if not isinstance(mode, str) or mode not in modes:
            raise DataError(path, line, "mode", f"expected one of {', '.join(modes)}, got {mode!r:.40}")
        if not isinstance(row.get("kept"), bool):
            raise DataError(path, line, "kept", "expected true or false")
        text = str_field(row, "text", path, line, allow_empty=True)
        if modes[mode].reads == "instructions":
            fields = {"instruction": str_field(row, "instruction", path, line)}
            rid = str(row.get("id") or line)
        else:
            fields = {k: str_field(row, k, path, line) for k in ("src", "ref", "src_lang", "tgt_lang")}
            rid = str(row.get("id") or pair_id(*fields.values()))
        n = row.get("n_tokens")
        return cls(rid, mode, text, row["kept"], row.get("reason"), n if isinstance(n, int) else 0,
                   str(row.get("finish") or ""), **fields, version=v)


def str_field(row: dict, key: str, path, line, allow_empty: bool = False) -> str:
    v = row.get(key)
    if not isinstance(v, str):
        raise DataError(path, line, key, "missing" if v is None else f"expected a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise DataError(path, line, key, "empty")
    return v


def read(path) -> list[tuple[int, Record]]:
    """Every record of a generate file with its line number; a bad row is a file:line error."""
    out = [(line, Record.from_row(row, path, line)) for line, row in iter_jsonl(path)]
    if not out:
        raise UserError(f"{path}: no data rows")
    return out


def write(path, records: list[Record]) -> None:
    """Replace ``path`` with these records, atomically."""
    atomic_write_text(path, "".join(json_line(r.to_row()) + "\n" for r in records))


def first_row_has(path, key: str) -> bool:
    p = Path(path)
    if not p.is_file() or p.suffix.lower() not in (".jsonl", ".json"):
        return False
    try:
        for _, row in iter_jsonl(p):
            return key in row
    except UserError:
        return False
    return False


def is_record_file(path) -> bool:
    """A generate file: its first row has 'mode' and 'text'."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        if not f.read(1 << 16).lstrip().startswith(b"{"):
            return False
    for _, row in iter_jsonl(p):
        return "mode" in row and "text" in row
    return False
