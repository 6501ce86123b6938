"""Translation pairs: ALMA JSON/JSONL, WMT plain-text folders, src/ref JSONL, plain source + reference
files, Hugging Face datasets; language directions and their names."""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..fileio import DataError, UserError
from . import hub
from .hub import parquet_rows
from .rows import array_rows, check_encodable, jsonl_rows, read_text, row_id, sample, string_field, text_lines

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


# Matches the WMT layout: sources/<prefix>.<s>-<t>.src.<s> and references/<prefix>.<s>-<t>.ref.<label>.<t>.
_WMT_SRC = re.compile(r"^(?P<prefix>.+)\.(?P<s>[a-z]+)-(?P<t>[a-z]+)\.src\.(?P=s)$")

_ALMA_NAME = re.compile(r"^(?P<split>[^.]+)\.(?P<s>[a-z]+)-(?P<t>[a-z]+)\.jsonl?$")

_NAME_DIRECTION = re.compile(r"\.(?P<s>[a-z]+)-(?P<t>[a-z]+)\.jsonl?$")

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+){0,2}$")  # NAME[:CONFIG[:SPLIT]]

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


def _lang(obj: dict, key: str, path, where) -> str:
    code = string_field(obj, key, path, where)
    try:
        lang_name(code)
    except UserError as e:
        raise DataError(path, where, key, str(e)) from None
    return code


def _direction_column(row: dict) -> str | None:
    """The column of a row like ``{"de-en": {"de": ..., "en": ...}}`` (ALMA's WMT22-Test on the hub:
    one struct column named for the direction), else None."""
    if len(row) == 1:
        (key, value), = row.items()
        m = re.fullmatch(r"([a-z]+)-([a-z]+)", str(key))
        if m and isinstance(value, dict) and _known_direction(m[1], m[2]):
            return key
    return None


def _rows_to_pairs(label, rows: Iterable[tuple[Any, dict]], dirs, default_dirs) -> list[Pair]:
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        raise UserError(f"{label}: no data rows")
    rows = itertools.chain([first], rows)
    where, row = first
    column = _direction_column(row)
    if column:  # the same object as ALMA's "translation", under the direction's name
        s, t = column.split("-")
        default_dirs = [(s, t)]
        rows = ((w, {"translation": r.get(column)}) for w, r in rows)
        row = {"translation": row[column]}
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
            src = string_field(tr, s, label, where, f"translation.{s}")
            ref = string_field(tr, t, label, where, f"translation.{t}")
            by_dir[(s, t)].append(Pair(src, ref, s, t, pair_id(src, ref, s, t)))
    # Direction-major, so both directions of one file come out as two readable blocks.
    return [p for d in dirs for p in by_dir[d]]


def _src_ref_pairs(label, rows, dirs) -> list[Pair]:
    out = []
    for where, row in rows:
        src, ref = string_field(row, "src", label, where), string_field(row, "ref", label, where)
        s, t = _lang(row, "src_lang", label, where), _lang(row, "tgt_lang", label, where)
        refs: tuple[str, ...] = ()
        if row.get("refs") is not None:
            r = row["refs"]
            if not isinstance(r, list) or not r or not all(isinstance(x, str) and x.strip() for x in r):
                raise DataError(label, where, "refs", "expected a non-empty list of non-empty strings")
            for i, x in enumerate(r):
                check_encodable(x, label, where, f"refs[{i}]")
            refs = tuple(r) if ref in r else (ref, *r)
            refs = () if refs == (ref,) else refs
        rid = row_id(row, ("id",), label, where) or pair_id(src, ref, s, t)
        if dirs is None or (s, t) in dirs:
            out.append(Pair(src, ref, s, t, rid, refs))
    if not out:
        raise UserError(f"{label}: no rows for direction(s) {_fmt_dirs(dirs)}")
    return out


def _plain_pairs(src: Path, refs: list[Path], s: str, t: str) -> list[Pair]:
    src_lines = text_lines(src)
    ref_lines = []
    for r in refs:
        lines = text_lines(r)
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


def _load_parquet(path: Path, dirs) -> list[Pair]:
    # Hub layout <s>-<t>/<split>-*.parquet: the folder names the direction.
    m = re.fullmatch(r"([a-z]+)-([a-z]+)", path.parent.name)
    return _rows_to_pairs(path, parquet_rows(path), dirs, _known_direction(m[1], m[2]) if m else None)


def _load_parquet_dir(root: Path, dirs, split: str) -> list[Pair]:
    """A hub dataset's snapshot laid out as push_to_hub writes it: ``<s>-<t>/<split>-*.parquet``."""
    found = {}
    for d in sorted(root.iterdir()):
        m = re.fullmatch(r"([a-z]+)-([a-z]+)", d.name)
        shards = sorted(d.glob(f"{split}-*.parquet")) if d.is_dir() and m else []
        if shards and _known_direction(m[1], m[2]):
            found[(m[1], m[2])] = shards
    out = []
    for s, t in dirs or list(found):
        if (s, t) not in found:
            raise UserError(f"{root}: no {split} files for {s}-{t} (available: {_fmt_dirs(found) or 'none'})")
        out += [p for f in found[(s, t)] for p in _load_parquet(f, [(s, t)])]
    return out


def _load_file(path: Path, dirs) -> list[Pair]:
    if path.suffix == ".parquet":
        return _load_parquet(path, dirs)
    text = read_text(path)
    head = text.lstrip()[:1]
    if not head:
        raise UserError(f"{path}: no data rows")
    m = _NAME_DIRECTION.search(path.name)
    default = _known_direction(m["s"], m["t"]) if m else None
    if head == "[":
        return _rows_to_pairs(path, array_rows(path, text), dirs, default)
    if head == "{":
        return _rows_to_pairs(path, jsonl_rows(path), dirs, default)
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


looks_like_hub_id = _looks_like_hf  # for a recipe's --check: a path that is missing, or a dataset id


def _hf_plan(source: str, dirs, split: str) -> list[tuple["hub.HubFiles", list | None, Any]]:
    """NAME, NAME:CONFIG or NAME:CONFIG:SPLIT (the split overrides the caller's, e.g. a dev set read
    where a test split is expected) -> (the files of one config's split, the directions read from
    it, its default direction). Without a config, each direction reads the config named for it or
    for its reverse (ALMA's de-en config holds en-de too)."""
    name, _, rest = source.partition(":")
    config, _, own_split = rest.partition(":")
    split = own_split or split
    if config:
        m = re.fullmatch(r"([a-z]+)-([a-z]+)", config)
        return [(hub.split_files(name, config, split), dirs, _known_direction(m[1], m[2]) if m else None)]
    if not dirs:
        raise UserError(f"{source}: pass --pairs (e.g. de-en) or a config as {name}:de-en")
    by_config: dict[str, list] = {}
    for s, t in dirs:
        try:
            hub.split_files(name, f"{s}-{t}", split)
            by_config.setdefault(f"{s}-{t}", []).append((s, t))
        except UserError as e:
            if "no config" not in str(e):
                raise
            by_config.setdefault(f"{t}-{s}", []).append((s, t))
    return [(hub.split_files(name, c, split), ds, None) for c, ds in by_config.items()]


def hub_sources(source: str, directions=None, split: str = "train") -> list["hub.HubFiles"]:
    """The hub files a pairs source reads ([] for a local path), without reading them (for --check)."""
    if not _looks_like_hf(str(source)):
        return []
    return [files for files, _, _ in _hf_plan(str(source), _directions(directions), split)]


def _load_hf(source: str, dirs, split: str) -> list[Pair]:
    """A hub dataset's split, read through the hub cache (hub.py); see _hf_plan for the names."""
    got: dict[tuple[str, str], list[Pair]] = {}
    for files, ds, default in _hf_plan(source, dirs, split):
        root = hub.download(files)
        for f in hub.matching(root, files.patterns):
            label = f"{files.label}:{f.relative_to(root).as_posix()}"  # errors name the hub file, not the cache
            pairs = (_rows_to_pairs(label, parquet_rows(f), ds, default) if f.suffix == ".parquet"
                     else _load_file(f, ds or default))
            for p in pairs:
                got.setdefault((p.src_lang, p.tgt_lang), []).append(p)
    return [p for d in (dirs or list(got)) for p in got.get(d, [])]


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
        elif any(p.glob(f"*-*/{split}-*.parquet")):
            pairs = _load_parquet_dir(p, dirs, split)
        else:
            pairs = _load_alma_dir(p, dirs, split)
    elif p.exists():
        pairs = _load_file(p, dirs)
    elif _looks_like_hf(str(source)):
        pairs = _load_hf(str(source), dirs, split)
    else:
        raise UserError(f"{p}: file not found")
    return sample(pairs, limit, seed)
