"""Which experiment trackers ``finetune --report-to`` knows, checked without importing any of them.

Kept apart from ``tracking`` (the callbacks), which imports mlx-lm's trainer and through it W&B:
importing W&B makes temporary folders in the system's temp directory, and settings are checked
before a stage holds its --out (where ``outdir.claim`` sends temporary files).
"""

from __future__ import annotations

import importlib.util

from .fileio import UserError

TRACKERS = {"wandb": "wandb", "tensorboard": "tensorboard"}  # name -> the module it needs
EXTRA = "radis-mlx[tracking]"


def check(report_to) -> list[str] | None:
    """``report_to`` (a list or 'a,b') as known tracker names, each importable; else a one-line
    UserError naming the extra, raised while settings are checked, before any training work."""
    names = [n.strip().lower() for n in (report_to.split(",") if isinstance(report_to, str) else report_to or [])]
    names = list(dict.fromkeys(n for n in names if n))
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise UserError(f"report_to: unknown {', '.join(map(repr, bad))} (choose from {', '.join(TRACKERS)})")
    missing = [n for n in names if importlib.util.find_spec(TRACKERS[n]) is None]
    if missing:
        raise UserError(f"report_to: {' and '.join(missing)} not installed: pip install '{EXTRA}'")
    return names or None
