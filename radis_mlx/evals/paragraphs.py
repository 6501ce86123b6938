"""Whole paragraphs (WMT23 de-en's segments): a translation with blank lines inside, long enough to
show a model that translates the first sentence and then explains.

Scored as translation is (translation.py), at its own cut (``paragraph_cut``: by default where an
explanation starts, since a blank line is part of a paragraph's translation), plus the share of
outputs much shorter than their reference (a cut or a model that dropped sentences) and the share
that ran out of tokens.
"""

from __future__ import annotations

import re

from .. import cuts
from ..data import Pair, load_pairs, sample
from ..fileio import UserError, atomic_write_jsonl
from ..results import Column, pick
from .context import Ctx
from .suites import WMT23_HUB, Html, Outcome, items_path, register
from .translation import add_stopping, item_cell, item_head, score, translation_prompts, with_tail

SENTENCE_END = re.compile(r"[.!?][\"'\u201c\u201d\u00bb)]*(?=\s|$)")
SHORT = 0.6  # an output under this share of its reference's characters has lost sentences


def load_paragraphs(cfg, path, limit) -> list[Pair]:
    """Multi-sentence test segments of ``paragraph_pairs`` (not ``pairs``: a study translating both ways
    reads WMT23's de-en paragraphs alone), ``limit`` sampled per direction."""
    by_dir: dict = {}
    for p in load_pairs(path, cfg.paragraph_pairs, split="test"):
        if len(SENTENCE_END.findall(p.src.strip())) >= 2:
            by_dir.setdefault((p.src_lang, p.tgt_lang), []).append(p)
    if not by_dir:
        raise UserError(f"{path}: no multi-sentence segments for {cfg.paragraph_pairs}")
    return [p for d in by_dir.values() for p in sample(d, limit, cfg.seed)]


def run_paragraphs(ctx: Ctx, pairs: list[Pair]) -> dict:
    outs = ctx.first("paragraphs", translation_prompts(ctx, pairs))
    rows, summary = score(pairs, outs, ctx.loaded.tokenizer, paragraph_cut(ctx.cfg), ctx.cfg.n_bootstrap,
                          ctx.cfg.seed, ctx.cfg.comet)
    for r in rows:
        r["short"] = len(r["hyp"]) < SHORT * len(r["refs"][0])
    summary.update(short_share=sum(r["short"] for r in rows) / max(1, len(rows)),
                   truncated_share=sum(r["finish"] == "length" for r in rows) / max(1, len(rows)))
    add_stopping(ctx, "paragraphs", rows, summary)
    atomic_write_jsonl(items_path(ctx.run_dir, "paragraphs"), rows)
    return summary


def paragraph_cut(cfg):
    return cuts.make_cut(getattr(cfg, "paragraph_cut", "explanation"), cfg.stop)


def headline(s: dict) -> str:
    return (f"BLEU {s.get('bleu', 0):.2f}, chrF {s.get('chrf', 0):.2f}, short {100 * s.get('short_share', 0):.0f}%, "
            f"truncated {100 * s.get('truncated_share', 0):.0f}%")


def cell(r: dict) -> str:
    return item_cell(r) + ('<div class="meta">short: under 60 % of the reference</div>' if r.get("short") else "")


register(
    name="paragraphs", data="wmt23_general_test", hub=WMT23_HUB, max_tokens=448,
    load=load_paragraphs, prompts=translation_prompts, run=run_paragraphs, cut=paragraph_cut, headline=headline,
    settings=lambda cfg: {"pairs": cfg.paragraph_pairs, "cut": cfg.paragraph_cut, "stop_decoding": cfg.stop_decoding},
    items="paragraphs.jsonl", outcome=Outcome("id", corpus=("para_bleu", "para_chrf")),
    columns=(Column("para_bleu", "paragraph BLEU", "f2", True), Column("para_chrf", "paragraph chrF", "f2", True),
             Column("para_short_share", "paragraphs short", "pct", False),
             Column("para_truncated_share", "paragraphs truncated", "pct", False)),
    summary=lambda s: pick(s, {"para_bleu": "bleu", "para_chrf": "chrf", "para_short_share": "short_share",
                               "para_truncated_share": "truncated_share"}),
    html=Html("Paragraphs", ("source", "reference"), key=lambda r: (r["src_lang"], r["tgt_lang"], str(r["id"])),
              head=item_head, cell=cell, prepare=with_tail),
)
