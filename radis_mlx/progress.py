"""A dependency-free progress line: items, tokens/s, ETA. One line per update on a TTY,
one line every few seconds otherwise (CI logs, nohup files)."""

from __future__ import annotations

import sys
import time


def _fmt_time(s: float) -> str:
    if s != s or s == float("inf"):
        return "?"
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    def __init__(self, total: int, desc: str = "", unit: str = "rows", every: float = 5.0,
                 stream=None, enabled: bool = True):
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.tokens = 0
        self.extra: dict = {}
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = 0.2 if self.tty else every
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._last = 0.0

    def update(self, n: int = 0, tokens: int = 0, **extra) -> None:
        self.done += n
        self.tokens += tokens
        self.extra.update(extra)
        now = time.perf_counter()
        final = self.done >= self.total and not getattr(self, "_final_shown", False)
        if final:
            self._final_shown = True
        if now - self._last >= self.every or final:
            self._last = now
            self._print()

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        rate = self.done / el if el > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        parts = [f"{self.desc} {self.done}/{self.total} {self.unit}".strip()]
        if self.tokens:
            parts.append(f"{self.tokens / max(el, 1e-9):.1f} tok/s")
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.extra.items()]
        parts.append(f"elapsed {_fmt_time(el)} ETA {_fmt_time(eta) if self.done < self.total else '0:00'}")
        return " | ".join(parts)

    def _print(self) -> None:
        if not self.enabled:
            return
        end = "\r" if self.tty and self.done < self.total else "\n"
        print(self.line().ljust(100 if self.tty else 0), end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty and self.done < self.total:
            print(file=self.stream)
