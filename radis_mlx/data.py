"""Readers for the data stage: translation pairs and instruction prompts.

Every reader either returns clean, validated rows or raises a UserError/DataError that
names the file, the line (or ``[i]``, the 0-based element of a one-line JSON array)
and the field, so a bad row deep in a file costs the user one look, not a debug session.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from radis_mlx.io import DataError, UserError, iter_jsonl

LANG_NAMES: dict[str, str] = {
    "en": "English", "de": "German", "cs": "Czech", "ru": "Russian", "zh": "Chinese",
    "is": "Icelandic", "ja": "Japanese", "fr": "French", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "pl": "Polish", "uk": "Ukrainian", "tr": "Turkish",
    "ar": "Arabic", "ko": "Korean", "hi": "Hindi", "hr": "Croatian", "liv": "Livonian",
    "sah": "Yakut", "ha": "Hausa", "fi": "Finnish", "et": "Estonian", "lt": "Lithuanian",
    "ro": "Romanian", "sv": "Swedish", "da": "Danish", "no": "Norwegian", "hu": "Hungarian",
    "el": "Greek", "bg": "Bulgarian", "sk": "Slovak", "sl": "Slovenian", "lv": "Latvian",
    "sr": "Serbian", "mk": "Macedonian", "be": "Belarusian", "ca": "Catalan", "eu": "Basque",
    "gl": "Galician", "ga": "Irish", "cy": "Welsh", "af": "Afrikaans", "sq": "Albanian",
    "mt": "Maltese", "he": "Hebrew", "fa": "Persian", "ur": "Urdu", "bn": "Bengali",
    "ta": "Tamil", "te": "Telugu", "mr": "Marathi", "gu": "Gujarati", "ne": "Nepali",
    "si": "Sinhala", "km": "Khmer", "ps": "Pashto", "th": "Thai", "vi": "Vietnamese",
    "id": "Indonesian", "ms": "Malay", "sw": "Swahili", "xh": "Xhosa", "zu": "Zulu",
    "kk": "Kazakh", "ka": "Georgian", "hy": "Armenian", "iu": "Inuktitut",
}

_INSTRUCTION_FIELDS = ("instruction", "prompt", "question", "goal")
_ID_FIELDS = ("question_id", "key", "id")
# Matches the WMT layout: sources/<prefix>.<s>-<t>.src.<s> and references/<prefix>.<s>-<t>.ref.<label>.<t>.
_WMT_SRC = re.compile(r"^(?P<prefix>.+)\.(?P<s>[a-z]+)-(?P<t>[a-z]+)\.src\.(?P=s)$")
_ALMA_NAME = re.compile(r"^(?P<split>[^.]+)\.(?P<s>[a-z]+)-(?P<t>[a-z]+)\.jsonl?$")
_NAME_DIRECTION = re.compile(r"\.(?P<s>[a-z]+)-(?P<t>[a-z]+)\.jsonl?$")
_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
_FILE_SUFFIXES = (".json", ".jsonl", ".txt", ".csv", ".tsv")


@dataclass(frozen=True)
class Pair:
    src: str
    ref: str
    src_lang: str
    tgt_lang: str
    id: str
    refs: tuple[str, ...] = ()  # all references incl. ref; () means (ref,)

    @property
    def all_refs(self) -> tuple[str, ...]:
        return self.refs or (self.ref,)


def pair_id(src: str, ref: str, src_lang: str, tgt_lang: str) -> str:
    key = f"{src_lang}-{tgt_lang}\x00{src}\x00{ref}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:16]


def lang_name(code) -> str:
    if isinstance(code, str) and code in LANG_NAMES:
        return LANG_NAMES[code]
    raise UserError(f"unknown language code {code!r} (known: {', '.join(sorted(LANG_NAMES))})")


def parse_directions(spec: str | None) -> list[tuple[str, str]] | None:
    if spec is None or not spec.strip():
        return None
    out: list[tuple[str, str]] = []
    for part in spec.split(","):
        bits = part.strip().split("-")
        if len(bits) != 2 or not all(bits):
            raise UserError(f"bad direction {part.strip()!r} in {spec!r}: expected e.g. 'de-en' or 'de-en,en-de'")
        s, t = bits
        lang_name(s), lang_name(t)
        if s == t:
            raise UserError(f"bad direction {part.strip()!r}: source and target language are the same")
        if (s, t) not in out:
            out.append((s, t))
    return out


def _directions(directions) -> list[tuple[str, str]] | None:
    if directions is None or isinstance(directions, str):
        return parse_directions(directions)
    out = []
    for d in directions:
        if not (isinstance(d, (tuple, list)) and len(d) == 2):
            raise UserError(f"bad direction {d!r}: expected a (source, target) pair like ('de', 'en')")
        lang_name(d[0]), lang_name(d[1])
        if d[0] == d[1]:
            raise UserError(f"bad direction {d[0]}-{d[1]}: source and target language are the same")
        out.append((d[0], d[1]))
    return out or None


def _known_direction(s: str, t: str) -> list[tuple[str, str]] | None:
    # A name like 'my.data-set.json' is not a direction; fall through to "pass --pairs".
    return [(s, t)] if s != t and s in LANG_NAMES and t in LANG_NAMES else None


def _fmt_dirs(dirs) -> str:
    return ",".join(f"{s}-{t}" for s, t in dirs)


def sample(items: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 0:
        raise UserError(f"limit must be >= 0, got {limit}")
    # Sorted indices keep file order, so a sample of a document-ordered test set stays readable.
    keep = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in keep]


# ---------------------------------------------------------------- low-level reading

def _read_text(path: Path) -> str:
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # io.read_json reports no line here; the line is what the user needs to find the byte.
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(path, line, None, f"not UTF-8 ({e.reason} at byte {e.start} of the file)") from None


def _jsonl_rows(path: Path) -> Iterator[tuple[Any, dict]]:
    last = 0
    try:
        for last, row in iter_jsonl(path):
            yield last, row
    except (RecursionError, ValueError) as e:
        # iter_jsonl catches only JSONDecodeError; deep nesting and huge ints escape it.
        raise DataError(path, None, None, f"invalid JSON after line {last}: {type(e).__name__}: {e}") from None


def _array_rows(path: Path, text: str) -> Iterator[tuple[Any, dict]]:
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


def _text_lines(path: Path) -> list[str]:
    text = _read_text(path)
    if text.endswith("\n"):
        text = text[:-1]
    # split("\n"), not splitlines(): U+2028 and friends inside a segment must not break alignment.
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")] if text else []
    if not lines:
        raise UserError(f"{path}: no data rows")
    for i, ln in enumerate(lines, 1):
        if not ln.strip():
            raise DataError(path, i, None, "empty line")
    return lines


def _string(obj: dict, key: str, path, where, field: str | None = None) -> str:
    field = field or key
    if key not in obj:
        raise DataError(path, where, field, f"missing (row has: {_keys(obj)})")
    v = obj[key]
    if not isinstance(v, str):
        raise DataError(path, where, field, f"expected a string, got {type(v).__name__}")
    if not v.strip():
        raise DataError(path, where, field, "empty")
    _encodable(v, path, where, field)
    return v


def _encodable(v: str, path, where, field) -> None:
    # json.loads turns a "\ud800" escape into a lone surrogate that later crashes every UTF-8 writer.
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataError(path, where, field, f"not encodable as UTF-8 ({e.reason} at character {e.start})") from None


def _keys(obj: dict) -> str:
    # Keys come from the data: escape them so the message stays one line, and cap the length.
    shown = ", ".join(json.dumps(str(k), ensure_ascii=False)[1:-1][:40] for k in list(obj)[:8])
    return (shown + (", ..." if len(obj) > 8 else "")) or "nothing"


def _lang(obj: dict, key: str, path, where) -> str:
    code = _string(obj, key, path, where)
    try:
        lang_name(code)
    except UserError as e:
        raise DataError(path, where, key, str(e)) from None
    return code


def _row_id(row: dict, keys: Iterable[str], path, where) -> str | None:
    for k in keys:
        v = row.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (str, int)) or (isinstance(v, str) and not v.strip()):
            raise DataError(path, where, k, f"expected a non-empty string or integer id, got {v!r:.40}")
        _encodable(str(v), path, where, k)
        return str(v)
    return None


# ---------------------------------------------------------------- pairs

def _rows_to_pairs(label, rows: Iterable[tuple[Any, dict]], dirs, default_dirs) -> list[Pair]:
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{label}: no data rows")
    rows = itertools.chain([first], rows)
    where, row = first
    if "translation" in row:
        dirs = dirs or default_dirs
        if not dirs:
            tr = row["translation"]
            hint = "-".join(tr) if isinstance(tr, dict) and len(tr) == 2 and set(tr) <= set(LANG_NAMES) else "de-en"
            raise UserError(f"{label}: can't tell the translation direction from the name; pass --pairs (e.g. {hint})")
        return _alma_pairs(label, rows, dirs)
    if "src" in row or "ref" in row:
        return _src_ref_pairs(label, rows, dirs)
    raise UserError(f"{label}: can't tell the format: the first row ({where}) has neither 'translation' "
                    f"(ALMA) nor 'src'/'ref' (pairs JSONL) fields")


def _alma_pairs(label, rows, dirs) -> list[Pair]:
    by_dir: dict[tuple[str, str], list[Pair]] = {d: [] for d in dirs}
    for where, row in rows:
        tr = row.get("translation")
        if not isinstance(tr, dict):
            what = "missing" if tr is None else f"expected an object, got {type(tr).__name__}"
            raise DataError(label, where, "translation", what)
        for s, t in dirs:
            src = _string(tr, s, label, where, f"translation.{s}")
            ref = _string(tr, t, label, where, f"translation.{t}")
            by_dir[(s, t)].append(Pair(src, ref, s, t, pair_id(src, ref, s, t)))
    # Direction-major, so both directions of one file come out as two readable blocks.
    return [p for d in dirs for p in by_dir[d]]


def _src_ref_pairs(label, rows, dirs) -> list[Pair]:
    out = []
    for where, row in rows:
        src, ref = _string(row, "src", label, where), _string(row, "ref", label, where)
        s, t = _lang(row, "src_lang", label, where), _lang(row, "tgt_lang", label, where)
        refs: tuple[str, ...] = ()
        if row.get("refs") is not None:
            r = row["refs"]
            if not isinstance(r, list) or not r or not all(isinstance(x, str) and x.strip() for x in r):
                raise DataError(label, where, "refs", "expected a non-empty list of non-empty strings")
            for i, x in enumerate(r):
                _encodable(x, label, where, f"refs[{i}]")
            refs = tuple(r) if ref in r else (ref, *r)
            refs = () if refs == (ref,) else refs
        rid = _row_id(row, ("id",), label, where) or pair_id(src, ref, s, t)
        if dirs is None or (s, t) in dirs:
            out.append(Pair(src, ref, s, t, rid, refs))
    if not out:
        raise UserError(f"{label}: no rows for direction(s) {_fmt_dirs(dirs)}")
    return out


def _plain_pairs(src: Path, refs: list[Path], s: str, t: str) -> list[Pair]:
    src_lines = _text_lines(src)
    ref_lines = []
    for r in refs:
        lines = _text_lines(r)
        if len(lines) != len(src_lines):
            raise UserError(f"line counts differ: {src} has {len(src_lines)} lines, {r} has {len(lines)}")
        ref_lines.append(lines)
    out = []
    for i, x in enumerate(src_lines):
        all_refs = tuple(rl[i] for rl in ref_lines)
        out.append(Pair(x, all_refs[0], s, t, pair_id(x, all_refs[0], s, t), all_refs if len(all_refs) > 1 else ()))
    return out


def _load_plain(src: Path, ref: Path, dirs) -> list[Pair]:
    if dirs and len(dirs) > 1:
        raise UserError(f"a plain-text source/reference pair is one direction, got --pairs {_fmt_dirs(dirs)}")
    named = tuple(p.suffix[1:] if p.suffix[1:] in LANG_NAMES else None for p in (src, ref))
    if dirs:
        for code, want, p in zip(named, dirs[0], (src, ref)):
            if code is not None and code != want:
                raise UserError(f"{p}: file name says language '{code}' but --pairs says '{want}'")
        s, t = dirs[0]
    elif None in named or named[0] == named[1]:
        raise UserError(f"can't tell the languages of {src} and {ref} from their names; pass --pairs (e.g. de-en)")
    else:
        s, t = named
    return _plain_pairs(src, [ref], s, t)


def _wmt_refs(src: Path, prefix: str, s: str, t: str) -> list[Path]:
    refs = sorted((src.parent.parent / "references").glob(f"{prefix}.{s}-{t}.ref.*.{t}"))
    if not refs:
        raise UserError(f"{src}: no references found at {src.parent.parent / 'references'}/{prefix}.{s}-{t}.ref.*.{t}")
    main = [r for r in refs if r.name.split(".")[-2] in ("A", "refA")]
    return main + [r for r in refs if r not in main]


def _load_wmt_dir(root: Path, dirs) -> list[Pair]:
    found: dict[tuple[str, str], list[tuple[Path, str]]] = {}
    for f in sorted((root / "sources").iterdir()):
        m = _WMT_SRC.match(f.name)
        if m:
            found.setdefault((m["s"], m["t"]), []).append((f, m["prefix"]))
    if dirs is None:
        dirs = _directions(list(found))
        if not dirs:
            raise UserError(f"{root}: no source files like sources/<name>.<s>-<t>.src.<s>")
    out = []
    for s, t in dirs:
        srcs = found.get((s, t), [])
        if len(srcs) != 1:
            what = "no source file" if not srcs else f"{len(srcs)} source files"
            raise UserError(f"{root}: {what} for {s}-{t} (available: {_fmt_dirs(found) or 'none'})")
        src, prefix = srcs[0]
        out += _plain_pairs(src, _wmt_refs(src, prefix, s, t), s, t)
    return out


def _load_alma_dir(root: Path, dirs, split: str) -> list[Pair]:
    files: dict[tuple[str, str], Path] = {}
    for f in sorted([*root.glob("*.json*"), *root.glob("*/*.json*")]):
        m = _ALMA_NAME.match(f.name)
        if m and m["split"] == split:
            if (m["s"], m["t"]) in files:
                raise UserError(f"{root}: two {split} files for {m['s']}-{m['t']}: {files[(m['s'], m['t'])]} and {f}")
            files[(m["s"], m["t"])] = f
    if not files:
        raise UserError(f"{root}: no '{split}.<s>-<t>.json' files here or one folder down")
    wanted = dirs or _directions(list(files))
    plan: dict[Path, list[tuple[str, str]]] = {}
    for s, t in wanted:
        # Prefer the file named for the direction (test.en-de.json for en->de), else read the reverse one.
        f = files.get((s, t)) or files.get((t, s))
        if f is None:
            raise UserError(f"{root}: no {split} file for {s}-{t} (available: {_fmt_dirs(files)})")
        plan.setdefault(f, []).append((s, t))
    got = {}
    for f, ds in plan.items():
        for p in _load_file(f, ds):
            got.setdefault((p.src_lang, p.tgt_lang), []).append(p)
    return [p for d in wanted for p in got.get(d, [])]


def _load_file(path: Path, dirs) -> list[Pair]:
    text = _read_text(path)
    head = text.lstrip()[:1]
    if not head:
        raise UserError(f"{path}: no data rows")
    m = _NAME_DIRECTION.search(path.name)
    default = _known_direction(m["s"], m["t"]) if m else None
    if head == "[":
        return _rows_to_pairs(path, _array_rows(path, text), dirs, default)
    if head == "{":
        return _rows_to_pairs(path, _jsonl_rows(path), dirs, default)
    w = _WMT_SRC.match(path.name)
    if w and (path.parent.parent / "references").is_dir():
        s, t = w["s"], w["t"]
        if dirs and dirs != [(s, t)]:
            raise UserError(f"{path}: this file is {s}-{t}, but --pairs asks for {_fmt_dirs(dirs)}")
        lang_name(s), lang_name(t)
        return _plain_pairs(path, _wmt_refs(path, w["prefix"], s, t), s, t)
    raise UserError(f"{path}: not JSON Lines or a JSON array (starts with {head!r}); "
                    f"for a plain-text source file also pass ref=<reference file>")


def _looks_like_hf(source: str) -> bool:
    if not _HF_ID.match(source) or source.lower().endswith(_FILE_SUFFIXES):
        return False
    return not Path(source.split("/")[0]).exists()  # 'data/x' with a local data/ is a missing file


def _load_hf(source: str, dirs, split: str) -> list[Pair]:
    name, _, config = source.partition(":")
    if not config:
        if not dirs:
            raise UserError(f"{source}: pass --pairs (e.g. de-en) or a config as {name}:de-en")
        config = f"{dirs[0][0]}-{dirs[0][1]}"
    m = re.fullmatch(r"([a-z]+)-([a-z]+)", config)
    default = _known_direction(m[1], m[2]) if m else None
    try:
        import datasets  # lazy: importing it costs seconds and the other formats don't need it

        ds = datasets.load_dataset(name, config, split=split)
    except Exception as e:  # network, missing dataset/config/split: all the user's to fix
        why = " ".join(f"{type(e).__name__}: {e}".split())  # one line for the CLI
        raise UserError(f"{source}: no such local path, and could not load it as a Hugging Face dataset "
                        f"(config {config!r}, split {split!r}): {why}") from None
    label = f"{name}:{config}:{split}"

    def rows():
        for i, row in enumerate(ds):
            if not isinstance(row, dict):
                raise DataError(label, f"[{i}]", None, f"expected an object, got {type(row).__name__}")
            yield f"[{i}]", row

    return _rows_to_pairs(label, rows(), dirs, default)


def load_pairs(source, directions=None, limit=None, seed=0, ref=None, split="train") -> list[Pair]:
    dirs = _directions(directions)
    if not str(source).strip() or "\x00" in str(source):
        raise UserError(f"{str(source)!r}: not a file, directory or dataset name")
    p = Path(source)
    if ref is not None:
        pairs = _load_plain(p, Path(ref), dirs)
    elif p.is_dir():
        if (p / "sources").is_dir() and (p / "references").is_dir():
            pairs = _load_wmt_dir(p, dirs)
        else:
            pairs = _load_alma_dir(p, dirs, split)
    elif p.exists():
        pairs = _load_file(p, dirs)
    elif _looks_like_hf(str(source)):
        pairs = _load_hf(str(source), dirs, split)
    else:
        raise UserError(f"{p}: file not found")
    return sample(pairs, limit, seed)


# ---------------------------------------------------------------- instructions

def _instruction_row(row: dict, path, where) -> dict:
    for key in _INSTRUCTION_FIELDS:
        if key in row:
            text = _string(row, key, path, where)
            break
    else:
        if "turns" not in row:
            raise DataError(path, where, "instruction",
                            f"missing (expected one of {', '.join(_INSTRUCTION_FIELDS)}, turns)")
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not all(isinstance(x, str) and x.strip() for x in turns):
            raise DataError(path, where, "turns", "expected a non-empty list of non-empty strings")
        for i, x in enumerate(turns):
            _encodable(x, path, where, f"turns[{i}]")
        text = turns[0]
    rid = _row_id(row, _ID_FIELDS, path, where) or hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]
    return {"id": rid, "instruction": text, **{k: v for k, v in row.items() if k not in ("id", "instruction")}}


def _csv_rows(path: Path) -> Iterator[tuple[int, dict]]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return
        if not set(header) & {"goal", "instruction", "prompt", "question"}:
            has = _keys(dict.fromkeys(header))
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
    else:
        text = _read_text(path)
        head = text.lstrip()[:1]
        if head == "[":
            rows = _array_rows(path, text)
        elif head == "{":
            rows = _jsonl_rows(path)
        elif not head:
            rows = iter(())
        else:
            raise UserError(f"{path}: not JSON Lines, a JSON array or a .csv file (starts with {head!r})")
    out = [_instruction_row(row, path, where) for where, row in rows]
    if not out:
        raise UserError(f"{path}: no data rows")
    return sample(out, limit, seed)
