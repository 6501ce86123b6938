"""What every eval suite runs with: the model being evaluated, its run folder, and generation
through an append-only cache (an interrupted eval resumes; a second eval of the same model
generates nothing).
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import prompts
from ..runtime.decode import DecodeConfig, decode
from ..models.interpolate import scale_suffix
from ..fileio import DataError, JsonlAppender, UserError, iter_jsonl, json_line, repair_jsonl_tail
from ..progress import Progress


@dataclass
class ModelSpec:
    model: str | None = None  # None: the offline default model
    adapter: str | None = None
    name: str | None = None
    scale: float | None = None  # base + scale x the adapter's delta (models/interpolate.py); None: as trained


def parse_model_spec(spec) -> ModelSpec:
    """``name=MODEL[,adapter=DIR][,scale=A]``, ``MODEL[,adapter=DIR]`` or a ModelSpec. Paths can't hold commas."""
    if spec is None or isinstance(spec, ModelSpec):
        return spec or ModelSpec()
    s = ModelSpec()
    for i, part in enumerate(str(spec).split(",")):
        k, eq, v = part.partition("=")
        if i == 0 and (not eq or "/" in k or k.endswith(".gguf")):
            s.model = part  # a bare model (a path like runs/lr=1e-4/m is a model, not name=model)
        elif k in ("model", "adapter", "name"):
            setattr(s, k, v or None)
        elif k == "scale":
            try:
                s.scale = float(v)
            except ValueError:
                raise UserError(f"bad model spec {spec!r}: scale={v!r} is not a number") from None
        elif i == 0:
            s.name, s.model = k, v
        else:
            raise UserError(f"bad model spec {spec!r}: {part!r} (expected name=MODEL,adapter=DIR)")
    if s.model in ("", "default"):
        s.model = None
    return s


def run_name(s: ModelSpec) -> str:
    from ..models import DEFAULT_MODEL

    a = Path(s.adapter).resolve() if s.adapter else None
    if a is not None and a.name in ("adapters", "adapter", "lora"):  # mlx_lm's default folder name says nothing
        a = Path(f"{a.parent.name}-{a.name}")
    raw = s.name or (a.name if a else None) or \
        (Path(s.model).stem if s.model and s.model.endswith(".gguf") else Path(s.model or DEFAULT_MODEL).name)
    name = re.sub(r"[^\w.+@-]", "_", raw).strip("._") or "model"  # @: a scaled adapter (sft-s0@0.5)
    return name if s.name else name + scale_suffix(s.scale)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_key(path: str, adapter: str | None, dtype: str, scale: float | None = None) -> str:
    """Identity of a model for the cache: its path, its weight files' size+mtime, the adapter's bytes and
    its scale (left out at 1, the adapter as trained, so those keys and caches stay as they were)."""
    h = hashlib.sha1(f"{path}\x00{dtype}".encode())
    if adapter and scale is not None and scale != 1:
        h.update(f"\x00scale={float(scale)!r}".encode())
    p = Path(path)
    if p.is_dir():
        for f in sorted([*p.glob("*.safetensors"), p / "config.json"]):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    if adapter:
        for name in ("adapter_config.json", "adapters.safetensors"):
            f = Path(adapter) / name
            h.update(name.encode() + (f.read_bytes() if f.is_file() else b"-"))
    return h.hexdigest()


def sha1(*parts) -> str:
    return hashlib.sha1(json_line(parts).encode()).hexdigest()


def read_cache(path: Path) -> dict:
    if not path.exists():
        return {}
    repair_jsonl_tail(path)
    try:
        return {row["key"]: row for _, row in iter_jsonl(path) if "key" in row}
    except DataError as e:
        raise UserError(f"{e} (a damaged eval cache: delete {path} to regenerate)") from None


class Generator:
    """Greedy generation through an append-only cache: finished rows are never generated twice.

    ``many`` decodes the misses of several suites in ONE continuous batch (each prompt with its
    own max_tokens): on a bandwidth-bound CPU a decode step costs about the same for 4 or 32
    rows, so one full batch beats five small ones.
    """

    def __init__(self, loaded, key: str, cache_dir: Path, batch_size: int, seed: int, label: str,
                 progress: bool = True, cuts: dict | None = None):
        self.loaded, self.key, self.cache_dir = loaded, key, Path(cache_dir)
        self.batch_size, self.seed, self.label, self.progress = batch_size, seed, label, progress
        self.cuts = cuts or {}  # suite -> the cut its rows stop at (cuts.py); others decode to the end
        self.generated_tokens: dict = {}  # per suite, this run
        self.decode_s = 0.0  # seconds spent decoding, this run

    def __call__(self, suite: str, texts: list[str], max_tokens: int) -> list[dict]:
        return self.many([(suite, texts, max_tokens)])[0]

    def many(self, requests: list[tuple]) -> list[list[dict]]:
        """``(suite, texts, max_tokens[, cache_dir])`` requests -> their rows, generating all misses at once."""
        keyed, caches, todo, seen = [], {}, [], set()
        for suite, texts, mt, *where in requests:
            c = (Path(where[0]) if where else self.cache_dir) / f"{suite}.jsonl"
            settings = {"max_tokens": mt, "temperature": 0.0, "dtype": self.loaded.dtype}
            if self.cuts.get(suite) is not None:  # only then: the caches of runs without a stop stay valid
                settings["stopped_at"] = repr(self.cuts[suite])
            keys = [sha1(self.key, t, settings) for t in texts]
            if c not in caches:
                caches[c] = read_cache(c)
            keyed.append((c, keys))
            for t, k in zip(texts, keys):
                if k not in caches[c] and (c, k) not in seen:
                    seen.add((c, k))
                    todo.append((c, k, t, mt, self.cuts.get(suite)))
        if self.progress:
            n = sum(len(k) for _, k in keyed)
            log(f"[{self.label}] {'+'.join(dict.fromkeys(r[0] for r in requests))}: {n - len(todo)} of {n} "
                 f"cached, {len(todo)} to generate")
        if todo:
            tok = self.loaded.tokenizer
            bar = Progress(len(todo), desc=f"[{self.label}] generate", enabled=self.progress)
            writers = {c: JsonlAppender(c) for c in dict.fromkeys(t[0] for t in todo)}
            t0 = time.perf_counter()
            try:
                def done(c):
                    path, key = todo[c.index][:2]
                    row = {"key": key, "text": c.text, "n_tokens": len(c.tokens), "finish": c.finish,
                           "n_prompt": c.n_prompt, "past_cut": c.past_cut}
                    writers[path].write(row)  # written as it finishes: an interrupted eval resumes here
                    caches[path][key] = row
                    self.generated_tokens[path.stem] = self.generated_tokens.get(path.stem, 0) + len(c.tokens)

                decode(self.loaded.model, tok, [prompts.encode(tok, t[2]) for t in todo],
                       DecodeConfig(max_tokens=max(t[3] for t in todo), seed=self.seed, batch_size=self.batch_size),
                       on_done=done, progress=bar, max_tokens=[t[3] for t in todo], cuts=[t[4] for t in todo])
            finally:
                self.decode_s += time.perf_counter() - t0
                for w in writers.values():
                    w.close()
                bar.close()
        return [[caches[c][k] for k in keys] for c, keys in keyed]


@dataclass
class Ctx:
    cfg: object  # harness.EvalConfig
    name: str
    run_dir: Path
    loaded: object
    gen: "Generator"
    key: str
    spec: ModelSpec
    max_tokens: dict  # suite -> max new tokens (the suite's default unless the settings say otherwise)

    def first(self, suite: str, texts: list[str]) -> list[dict]:
        """Generate (or read from the cache) a suite's answers to these prompts."""
        return self.gen(suite, texts, self.max_tokens[suite])
