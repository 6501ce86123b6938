"""`radis-mlx translate`: the trained translator on the user's own text.

Input: a plain-text file (one segment per line; blank lines kept as blank lines), stdin, or JSONL
rows with ``src``. Every segment gets eval's own translation prompt (the adapter's training
template and system prompt when its run recorded them), decoded in one batch and stopped at the
cut (cuts.py), so an appended explanation is neither shown nor paid for. Output is aligned line for
line (row for row for JSONL, which gains ``translation``).

With ``--out`` the translations go through an append-only cache beside it (OUT.cache/), written as
each row finishes: after a kill -9 the same command translates only what is missing, and OUT is
written once, atomically, in input order. A text line holds one translation: line breaks inside
one (a paragraph translated into several) become spaces.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import bounds, cuts, models, prompts
from .data import Pair, lang_name
from .fileio import (MAX_ROW_BYTES, DataError, UserError, atomic_write_text, check_adapter_dir, iter_jsonl, json_line,
                 read_yaml)
from .evals.context import Generator, model_key
from .outdir import check_out, claim
from .settings import MODEL_HELP, setting


@dataclass
class TranslateConfig:
    input: str | None = setting(None, "text file (one segment per line, blank lines kept), JSONL with 'src' "
                                "(.jsonl), or - / nothing for stdin")
    out: str | None = setting(None, "output file (default stdout); with --out a killed run resumes (OUT.cache/)")
    model: str | None = setting(None, MODEL_HELP)
    adapter: str | None = setting(None, "adapter dir (finetune's --out)")
    src: str = setting("de", "source language code")
    tgt: str = setting("en", "target language code")
    batch_size: int = setting(32, "segments decoded together")
    max_tokens: int = setting(512, "max new tokens per segment (a paragraph fits)")
    cut: str = setting("explanation", "where a translation ends: explanation (where an appended explanation "
                       "starts; blank lines inside a paragraph's translation stay) or blank-line",
                       choices=tuple(cuts.CUTS))
    stop_decoding: bool = setting(True, "stop decoding at the cut; --no-stop decodes to the end of turn and cuts "
                                  "afterwards", flag="--stop-decoding/--no-stop")
    translate_template: str | None = setting(None, "translation instruction template ({src_name}, {tgt_name}, "
                                             "{src}) (default: the adapter's training template, else eval's)",
                                             text=True)
    system: str | None = setting(None, "system prompt (default: the adapter's training one)", text=True)
    dtype: str = setting("auto", "weights' dtype (auto: float32 on CPU)", choices=bounds.LOAD_DTYPES)
    progress: bool = setting(True, "progress lines on stderr (--quiet: none)", flag="--progress/--quiet")

    OLD_NAMES = {"template": "translate_template", "stop": "stop_decoding"}  # old key -> setting (with a note)


@dataclass
class Segments:
    texts: list[str]  # one per line/row; "" for a blank line (passed through)
    rows: list[dict] | None  # the JSONL rows, None for plain text
    name: str


def read_input(path: str | None) -> Segments:
    """The segments to translate, checked before any model loads."""
    if path in (None, "-"):
        return _plain(sys.stdin.read(), "<stdin>")
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    if p.suffix == ".jsonl":
        rows, texts = [], []
        for line, row in iter_jsonl(p):
            if not isinstance(row.get("src"), str):
                raise DataError(p, line, "src", "missing or not a string (each JSONL row needs the text to translate)")
            rows.append(row)
            texts.append(row["src"])
        if not rows:
            raise UserError(f"{p}: empty (no JSONL rows to translate)")
        return Segments(texts, rows, str(p))
    try:
        return _plain(p.read_text(encoding="utf-8"), str(p))
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _plain(text: str, name: str) -> Segments:
    if not text.strip():
        raise UserError(f"{name}: empty (nothing to translate)")
    lines = text.split("\n")
    for i, ln in enumerate(lines, 1):  # the readers' row limit: MLX is never handed a prompt it cannot hold
        if len(ln) > MAX_ROW_BYTES // 4 and len(ln.encode("utf-8", "surrogatepass")) > MAX_ROW_BYTES:
            raise DataError(name, i, None, f"line longer than the limit of {MAX_ROW_BYTES:,} bytes")
    if lines[-1] == "":
        lines.pop()  # the file's final newline ends its last line: it is not a line of its own
    return Segments([ln.rstrip("\r") for ln in lines], None, name)


def adapter_templates(adapter: str | None, cfg: TranslateConfig) -> prompts.Templates:
    """The prompt the adapter was trained with (its run's config.yaml), unless given."""
    saved = {}
    f = Path(adapter) / "config.yaml" if adapter else None
    if f is not None and f.is_file():
        saved = read_yaml(f) or {}
    trained = saved.get("translate_template") or saved.get("template")  # the key's old name: older runs
    return prompts.Templates(translate=cfg.translate_template or trained or prompts.TRANSLATE,
                             system=cfg.system if cfg.system is not None else saved.get("system"))


def check_config(cfg: TranslateConfig) -> None:
    lang_name(cfg.src), lang_name(cfg.tgt)  # an unknown code is refused by name
    if cfg.src == cfg.tgt:
        raise UserError(f"--src and --tgt are both {cfg.src!r}")
    cuts.make_cut(cfg.cut)
    bounds.batch(cfg)
    bounds.new_tokens(cfg)
    bounds.dtype(cfg)
    if cfg.adapter:
        check_adapter_dir(cfg.adapter)


def translate_segments(loaded, texts: list[str], cfg: TranslateConfig, cache_dir: Path, key: str) -> list[str]:
    """Each non-blank text's translation ("" for a blank one), through the cache in ``cache_dir``."""
    t = adapter_templates(cfg.adapter, cfg)
    todo = sorted({s for s in texts if s.strip()})
    asks = [prompts.translation_prompt(loaded.tokenizer, Pair(s, "", cfg.src, cfg.tgt, ""), t) for s in todo]
    rule = cuts.make_cut(cfg.cut)
    gen = Generator(loaded, key, cache_dir, cfg.batch_size, 0, f"translate {cfg.src}->{cfg.tgt}", cfg.progress,
                    {"translate": rule} if cfg.stop_decoding else None)
    outs = gen("translate", asks, cfg.max_tokens)
    done = {s: cuts.cut(o["text"], rule)[0] if o["finish"] != "cut" else o["text"].strip()
            for s, o in zip(todo, outs)}
    return [done[s] if s.strip() else "" for s in texts]


def format_output(seg: Segments, translations: list[str]) -> str:
    if seg.rows is not None:
        return "".join(json_line({**r, "translation": tr}) + "\n" for r, tr in zip(seg.rows, translations))
    return "".join(" ".join(tr.split()) + "\n" for tr in translations)


def translate_file(cfg: TranslateConfig) -> dict:
    """Translate ``cfg.input`` into ``cfg.out`` (or stdout); returns a summary."""
    check_config(cfg)
    seg = read_input(cfg.input)
    out = Path(cfg.out) if cfg.out else None
    if out is None:
        return _translate_to(cfg, seg, None)
    if not out.parent.is_dir():
        raise UserError(f"{out}: the output's directory {out.parent} does not exist")
    with claim(check_out(out), is_file=True):  # one writer per output file
        return _translate_to(cfg, seg, out)


def _translate_to(cfg: TranslateConfig, seg: Segments, out: Path | None) -> dict:
    loaded = models.load(cfg.model, cfg.adapter, dtype=cfg.dtype)
    key = model_key(loaded.path, cfg.adapter, loaded.dtype)
    cache = out.with_name(out.name + ".cache") if out else Path(tempfile.mkdtemp(prefix="radis-translate-"))
    try:
        translations = translate_segments(loaded, seg.texts, cfg, cache, key)
        text = format_output(seg, translations)
        if out is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            atomic_write_text(out, text)
    finally:
        if out is None or (out.is_file()):
            shutil.rmtree(cache, ignore_errors=True)  # the output is whole: the cache has served
    return {"segments": sum(1 for s in seg.texts if s.strip()), "lines": len(seg.texts), "out": str(out or "-"),
            "input": seg.name}


def translate(texts: list[str], model: str | None = None, adapter: str | None = None, src: str = "de",
              tgt: str = "en", **kw) -> list[str]:
    """The Python API: translations of ``texts`` (aligned; "" for a blank text). ``kw``: TranslateConfig's."""
    kw = {TranslateConfig.OLD_NAMES.get(k, k): v for k, v in kw.items()}  # the old names still work here
    cfg = TranslateConfig(model=model, adapter=adapter, src=src, tgt=tgt, **{"progress": False, **kw})
    check_config(cfg)
    loaded = models.load(cfg.model, cfg.adapter, dtype=cfg.dtype)
    with tempfile.TemporaryDirectory(prefix="radis-translate-") as d:
        return translate_segments(loaded, list(texts), cfg, Path(d), model_key(loaded.path, adapter, loaded.dtype))
