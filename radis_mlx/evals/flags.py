"""`radis-mlx eval` flags -> settings: per-suite numbers, test data and the models to run."""

from __future__ import annotations

import re
from pathlib import Path

from ..fileio import UserError


def parse_per_suite(values, what: str) -> tuple[int | None, dict]:
    """``["50", "gsm8k=20"]`` -> (50, {"gsm8k": 20}) for --limit and --max-tokens."""
    from . import suites

    default, per = None, {}
    for v in values or []:
        k, eq, n = str(v).rpartition("=")
        if eq:
            suites.get(k, f"--{what} {v!r}: ")
        try:
            num = int(n)
        except ValueError:
            raise UserError(f"--{what} {v!r}: expected N or SUITE=N with an integer N") from None
        if num < 1:
            raise UserError(f"--{what} {v!r}: must be >= 1")
        if eq:
            per[k] = num
        else:
            default = num
    return default, per


def parse_test_data(values, names) -> dict:
    """``SUITE=PATH`` entries, or a data root (a folder laid out like ../shared/data)."""
    from . import suites

    out, layout = {}, {s.data for s in suites.registered()}
    for v in values or []:
        k, eq, p = str(v).partition("=")
        if eq and k in (*suites.names(), "root"):
            out[k] = p
            continue
        path = Path(v)
        if path.is_dir() and any((path / rel).exists() for rel in layout):
            out["root"] = str(path)
        elif len(names) == 1 and path.exists():
            out[names[0]] = str(path)
        elif not path.exists():
            raise UserError(f"--test-data {v!r}: no such file or directory (or pass SUITE=PATH)")
        else:
            raise UserError(f"--test-data {v!r}: with several suites, pass SUITE=PATH or a data root with "
                            f"{', '.join(sorted(layout))}")
    return out


def model_specs(models, adapters, names) -> list:
    """Pair repeated --model/--adapter/--name flags; one model with N adapters means N runs on that model."""
    from .context import parse_model_spec

    models, adapters, names = list(models or []), list(adapters or []), list(names or [])
    if not models:
        models = [None]
    if adapters and len(models) == 1 and len(adapters) > 1:
        models = models * len(adapters)
    if adapters and len(adapters) != len(models):
        raise UserError(f"got {len(models)} --model and {len(adapters)} --adapter flags: pass one adapter per "
                        "model ('-' for none), or one model with several adapters")
    if names and len(names) != len(models):
        raise UserError(f"got {len(names)} --name flags for {len(models)} models: pass one per model")
    specs = []
    for i, m in enumerate(models):
        s = parse_model_spec(m)
        if adapters and adapters[i] not in ("-", "none", ""):
            s.adapter = adapters[i]
        if names:
            s.name = names[i]
        specs.append(s)
    return specs


def unescape(s: str) -> str:
    """Shell-friendly ``--stop '\\n\\n'``: \\n, \\t and \\\\ become the characters."""
    return re.sub(r"\\(n|t|\\)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], s)
