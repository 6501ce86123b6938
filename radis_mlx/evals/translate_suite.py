"""`radis-mlx translate-suite`: an English eval suite's prompts in another language, by a named
translator, for target-language evaluation (TransLLM asks in the target language).

Each prompt is translated paragraph by paragraph with the toolkit's translation prompt (greedy,
cut at the first blank line as eval cuts translations), through an append-only cache beside the
output, so a killed run resumes and a rerun translates nothing. Items whose translation fails a
check (empty, degenerate, not in the target language, much shorter than the source) are left
out and counted by reason. The output keeps each item's id and fields (GSM8K's worked answer,
MT-Bench's question_id), adds ``lang`` (which picks the refusal keywords and the GSM8K
instruction) and the English original, and is read by ``eval --test-data SUITE=FILE``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import bounds
from ..fileio import atomic_write_json, atomic_write_jsonl, check_writable_dir
from ..outdir import check_out, claim
from .translator import Translator, check_translation
from . import suites

TRANSLATABLE = ("advbench", "alpacaeval", "mtbench", "gsm8k")


@dataclass
class TranslateSuiteConfig:
    suite: str = "advbench"
    lang: str = "de"
    translator: str | None = None  # MODEL[,adapter=DIR]; None: the offline default model
    test_data: dict | None = None  # as eval's: {"root": DIR} or {suite: PATH}
    limit: int | None = None
    seed: int = 0
    out: str = "translated"
    batch_size: int = 32
    max_tokens: int = 384  # per paragraph
    dtype: str = "auto"
    progress: bool = True

    def validate(self) -> "TranslateSuiteConfig":
        """Check every setting before any data or model is read."""
        from ..tcot import target_tag

        bounds.need(self.suite in TRANSLATABLE, "suite",
                    f"{self.suite!r:.40} cannot be translated (choose from {', '.join(TRANSLATABLE)})")
        target_tag(self.lang)  # a language code
        bounds.need(self.lang != "en", "lang", "the suites are English already; pass another --lang")
        bounds.batch(self)
        bounds.new_tokens(self)
        bounds.limit(self)
        bounds.seed(self)
        bounds.dtype(self)
        return self


def output_path(cfg: TranslateSuiteConfig) -> Path:
    return Path(cfg.out) / f"{cfg.suite}.{cfg.lang}.jsonl"


def _texts(suite: str, item: dict) -> list[str]:
    return list(item["turns"]) if suite == "mtbench" else [item["instruction"]]


def translate_suite(cfg: TranslateSuiteConfig) -> dict:
    """Translate the suite's (sampled) prompts; returns the summary (also OUT/SUITE.LANG.summary.json)."""
    from .harness import EvalConfig

    cfg.validate()
    check_out(cfg.out)
    ecfg = EvalConfig(suites=[cfg.suite], test_data=cfg.test_data or {}, limits={cfg.suite: cfg.limit}, seed=cfg.seed)
    items = suites.load_inputs(ecfg, cfg.suite)  # bad data fails before the model loads
    out = check_writable_dir(cfg.out)
    with claim(out):  # one writer per output
        return _translate(cfg, items, out)


def _translate(cfg: TranslateSuiteConfig, items: list, out: Path) -> dict:
    tr = Translator(cfg.translator, cfg.lang, out / "cache", cfg.batch_size, cfg.max_tokens, cfg.seed, cfg.dtype,
                    cfg.progress).load()
    done = tr([t for it in items for t in _texts(cfg.suite, it)])
    rows, reasons = [], Counter()
    for it in items:
        src = _texts(cfg.suite, it)
        why = next((w for s in src if (w := check_translation(s, done[s], cfg.lang))), None)
        if why:
            reasons[why] += 1
            continue
        row = {**it, "instruction": done[src[0]], "lang": cfg.lang, "en": src[0]}
        if cfg.suite == "mtbench":
            row.update(turns=[done[s] for s in src], en_turns=src)
        rows.append(row)
    atomic_write_jsonl(output_path(cfg), rows)
    summary = {"suite": cfg.suite, "lang": cfg.lang, "translator": tr.name, "items": len(items), "kept": len(rows),
               "rejected": dict(reasons), "out": str(output_path(cfg)), "settings": asdict(cfg)}
    atomic_write_json(out / f"{cfg.suite}.{cfg.lang}.summary.json", summary)
    return summary


def format_summary(s: dict) -> str:
    rej = ", ".join(f"{k} {v}" for k, v in sorted(s["rejected"].items())) or "none"
    return f"{s['kept']} of {s['items']} {s['suite']} items in {s['lang']} -> {s['out']} (left out: {rej})"
