"""`generate --mode tcot`: TransLLM's training rows, from English general instructions.

Three steps, each resumable on its own:
1. the model's own English answers: a `replay` generate run into ``OUT.answers.jsonl``, or the
   file the settings name (a recipe points it at its replay method's file, so the answers are
   made once), with that run's workers, filters, progress and resume;
2. the instruction and the answer translated into the target language by the translator the
   settings name (the model itself by default, the model with adapters, or another model),
   through an append-only cache in ``OUT.translations/``;
3. the rows, written whole: per instruction a TCoT row (user: the translated query; assistant:
   ``<EN> query <RESPONSE> answer <DE> translated answer``) and a recovery-KD row (user: the
   English query; assistant: ``<RESPONSE> answer``). A TCoT row whose translations fail a check
   (empty, degenerate, too short, wrong language) is kept out (kept=false) with its reason.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .. import models, records
from ..fileio import atomic_write_json, atomic_write_text, json_line
from ..records import Record
from ..tcot import TCoT
from ..evals.translator import Translator, check_translation
from .files import check_meta, summary_path


def answers_path(cfg) -> Path:
    out = Path(cfg.out)
    return Path(cfg.answers) if cfg.answers else out.with_name(f"{out.name}.answers.jsonl")


def share_answers(stages) -> None:
    """Recipe stages (``.config``, ``.out``): a tcot stage whose English answers a replay stage of
    the same settings also makes takes them from that stage's file (made by whichever runs first),
    instead of decoding them twice."""
    import json

    def key(cfg) -> str:
        return json.dumps(cfg.fingerprint(), sort_keys=True, default=str)
    replays = {key(st.config): st for st in stages if st.config.mode == "replay"}
    for st in stages:
        twin = replays.get(key(replace(st.config, mode="replay"))) if st.config.mode == "tcot" else None
        if twin:
            st.config = replace(st.config, answers=str(twin.out))


def generate_tcot(cfg, generate: Callable, progress: bool = True) -> dict:
    """The tcot rows of ``cfg``; ``generate`` is the stage's own entry (stage.generate, which runs this
    composite mode), here making the English answers as a replay run."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    fmt = TCoT(cfg.tcot_lang)
    _check_tags(cfg, fmt)
    check_meta(cfg, out)
    generate(replace(cfg, mode="replay", out=str(answers_path(cfg)), answers=None), progress)
    answers = [r for _, r in records.read(answers_path(cfg))]
    usable = [a for a in answers if a.kept and a.text.strip()]
    tr = Translator(cfg.translator or cfg.model, cfg.tcot_lang, out.with_name(f"{out.name}.translations"),
                    cfg.batch_size, cfg.max_tokens, cfg.seed, cfg.dtype, progress)
    done = tr([x for a in usable for x in (a.instruction, a.text.strip())]) if usable else {}
    rows, reasons = [], Counter()
    for a in answers:
        ok = a.kept and bool(a.text.strip())
        why = None if not ok else next((w for s in (a.instruction, a.text.strip())
                                        if (w := check_translation(s, done[s], cfg.tcot_lang))), None)
        reason = (a.reason or "empty") if not ok else (f"translation-{why}" if why else None)
        reasons[reason or "kept"] += 1
        query = done.get(a.instruction, a.instruction) if reason is None else a.instruction
        text = fmt.answer(a.instruction, a.text, done[a.text.strip()]) if reason is None else ""
        rows.append(Record(f"{a.id}:tcot", "tcot", text, reason is None, reason, a.n_tokens, a.finish,
                           instruction=query))
        rows.append(Record(f"{a.id}:recovery", "tcot", fmt.recovery(a.text) if ok else "", ok,
                           None if ok else (a.reason or "empty"), a.n_tokens, a.finish, instruction=a.instruction))
    atomic_write_text(out, "".join(json_line(r.to_row()) + "\n" for r in rows))
    summary = {"out": str(out), "mode": "tcot", "model": cfg.model, "translator": tr.name or tr.spec,
               "lang": cfg.tcot_lang, "instructions": len(answers), "rows": len(rows),
               "kept": sum(r.kept for r in rows), "tcot_rows": reasons.get("kept", 0),
               "rejected": {k: v for k, v in reasons.items() if k != "kept"},
               "unfinished": sum(a.finish == "length" for a in answers),
               "mean_tokens_kept": round(sum(a.n_tokens for a in usable) / max(len(usable), 1), 1),
               "generated_tokens_this_run": tr.tokens, "tokens_per_s_this_run": None,
               "wall_s": round(time.perf_counter() - t0, 1), "settings": cfg.fingerprint()}
    atomic_write_json(summary_path(out), summary)
    return summary


def _check_tags(cfg, fmt: TCoT) -> None:
    """Refuse tags that are special tokens of the model trained on these rows, before any work."""
    path = Path(models.resolve(cfg.model, cfg.dtype))
    if (path / "tokenizer_config.json").is_file():
        from mlx_lm.utils import load_tokenizer
        fmt.check_tokenizer(load_tokenizer(path))
