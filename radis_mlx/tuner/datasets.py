"""Finetune's data: generated rows and plain files -> training targets -> token examples with segments.

How a file's rows become ``Target``s is read off the method registry (methods.py): the rule of the
method's input says which rows it accepts, and each generate mode says how its row's answer splits
into segments (``Mode.pieces``). Every example is then one string, prompt + target + end-of-turn,
tokenised ONCE (so the tokens are exactly what the model sees at inference), and each token gets a
segment id from its character offsets:

    0 prompt (no loss)   1 reference   2 rationale   3 end-of-turn

The loss weights (w_ref, w_rat) and the normalisation are applied per segment in losses.py.
``load_data`` reads a run's main, extra (replay/mix) and validation sets through the method registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import methods, prompts, records
from ..data import load_pairs
from ..fileio import DataError, UserError, iter_jsonl, read_json
from ..targets import EOT, PROMPT, RAT, REF, BuildStats, Target


@dataclass
class Example:
    tokens: list[int]
    segments: list[int]  # one per token
    id: str
    source: int = 0  # 0: main data, 1: the replay/mix dataset

    def __len__(self):
        return len(self.tokens)


# ---------------------------------------------------------------- rows and files -> targets

def row_target(rec, tokenizer, templates: prompts.Templates, ref_only: bool = False,
               separator: str = "\n\n", stats: BuildStats | None = None, layout=None) -> Target | None:
    """The training target of one generated record (None: nothing to train on)."""
    mode = methods.get_mode(rec.mode)
    if mode.reads == "instructions":
        if not rec.kept or not rec.text.strip():
            if stats:
                stats.dropped_rejected += 1  # no reference to fall back on
            return None
        return Target(rec.id, prompts.chat(tokenizer, rec.instruction, templates.system), [(rec.text.strip(), REF)])
    pair = rec.pair
    prompt = prompts.translation_prompt(tokenizer, pair, templates)
    if ref_only or not rec.kept or (mode.rationale and not rec.text.strip()):
        if stats and not ref_only and mode.rationale:
            stats.reference_only += 1
        return Target(pair.id, prompt, [(pair.ref, REF)])
    pieces = mode.pieces(rec.text, pair.ref, separator)
    return Target(pair.id, prompt, layout(tokenizer, pair, templates, pieces) if layout else pieces)


def load_targets(source, tokenizer, templates: prompts.Templates, rule: methods.Rule, *, directions=None,
                 separator="\n\n", stats: BuildStats | None = None, what="--data") -> list[Target]:
    """Read ``source`` as ``rule`` allows: generate JSONL, or a plain file of an allowed kind
    ("pairs": anything ``data.load_pairs`` reads; "instructions": rows with instruction + output)."""
    if not Path(source).exists() and "pairs" not in rule.plain:
        raise UserError(f"{source}: file not found")
    if records.is_record_file(source):
        recs = records.read(source)
        for line, r in recs:
            if rule.modes is not None and r.mode not in rule.modes:
                raise DataError(source, line, "mode", f"{what} expects {', '.join(rule.modes)} rows, got {r.mode!r}")
        out = [row_target(r, tokenizer, templates, rule.ref_only, separator, stats, rule.layout) for _, r in recs]
        if stats:
            stats.rows += len(recs)
        return [t for t in out if t is not None]
    if "instructions" in rule.plain and records.first_row_has(source, "instruction"):
        return _instruction_targets(source, tokenizer, templates, stats)
    if "pairs" not in rule.plain:
        raise UserError(f"{source}: {what} needs `radis-mlx generate` output with "
                        f"{', '.join(rule.modes or methods.MODES)} rows (rows with 'mode' and 'text')")
    pairs = load_pairs(source, directions)
    if stats:
        stats.rows += len(pairs)
    return [Target(p.id, prompts.translation_prompt(tokenizer, p, templates), [(p.ref, REF)]) for p in pairs]


def _instruction_targets(source, tokenizer, templates, stats) -> list[Target]:
    """Alpaca-style {"instruction", "output"} rows as replay data."""
    out = []
    for line, row in iter_jsonl(source):
        instr = records.str_field(row, "instruction", source, line)
        answer = row.get("output", row.get("answer"))
        if not isinstance(answer, str) or not answer.strip():
            raise DataError(source, line, "output", "missing or empty (replay rows need an answer)")
        out.append(Target(str(row.get("id") or line), prompts.chat(tokenizer, instr, templates.system),
                          [(answer.strip(), REF)]))
    if stats:
        stats.rows += len(out)
    if not out:
        raise UserError(f"{source}: no data rows")
    return out


# ---------------------------------------------------------------- targets -> token examples

def _hf(tokenizer):
    return getattr(tokenizer, "_tokenizer", tokenizer)


def tokenize_segments(tokenizer, prompt: str, pieces: list[tuple[str, int]], eot: str):
    """Tokenise prompt + pieces + eot once; each token's segment comes from its character span.

    A token that straddles a boundary gets the lowest non-prompt segment it touches: a token
    that is half prompt, half reference is a reference token (it must be predicted), and one
    that is half reference, half rationale is a reference token (w_rat=0 still trains on it).
    """
    texts = [(prompt, PROMPT), *pieces, (eot, EOT)]
    full = "".join(t for t, _ in texts)
    char_seg = np.empty(len(full), np.int8)
    pos = 0
    for t, s in texts:
        char_seg[pos:pos + len(t)] = s
        pos += len(t)
    add = prompts.adds_special_tokens(tokenizer, full)
    try:
        enc = _hf(tokenizer)(full, return_offsets_mapping=True, add_special_tokens=add)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    except (TypeError, NotImplementedError, KeyError):
        # Slow (Python) tokenizers have no offsets: tokenise piece by piece (boundaries may differ
        # by a token from the joint tokenisation, which is fine for training).
        ids, segs = [], []
        for i, (t, s) in enumerate(texts):
            part = tokenizer.encode(t, add_special_tokens=add and i == 0) if t else []
            ids += part
            segs += [s] * len(part)
        return ids, segs
    segs = []
    for a, b in offsets:
        if b <= a:  # special tokens added by the tokenizer (BOS) have empty spans
            segs.append(PROMPT if a == 0 else int(char_seg[min(a, len(full) - 1)]))
            continue
        span = char_seg[a:b]
        nz = span[span > 0]
        segs.append(int(nz.min()) if len(nz) else PROMPT)
    return ids, segs


def fit_length(tokens: list[int], segments: list[int], max_len: int | None):
    """Truncation policy: never cut the prompt; shorten the rationale first (the end-of-turn
    stays); if it still doesn't fit, return None (the row is dropped). -> (tokens, segs, truncated)"""
    if not max_len or len(tokens) <= max_len:
        return tokens, segments, False
    over = len(tokens) - max_len
    rat = [i for i, s in enumerate(segments) if s == RAT]
    if len(rat) < over:
        return None
    cut = set(rat[len(rat) - over:])
    keep = [i for i in range(len(tokens)) if i not in cut]
    return [tokens[i] for i in keep], [segments[i] for i in keep], True


def build_examples(tokenizer, targets: list[Target], max_len: int | None, source: int = 0,
                   stats: BuildStats | None = None) -> list[Example]:
    stats = stats if stats is not None else BuildStats()
    eot = prompts.end_of_turn(tokenizer)
    out = []
    for t in targets:
        ids, segs = tokenize_segments(tokenizer, t.prompt, t.pieces, eot)
        fitted = fit_length(ids, segs, max_len)
        if fitted is None:
            stats.dropped_too_long += 1
            continue
        ids, segs, cut = fitted
        stats.truncated += cut
        counts = np.bincount(np.asarray(segs, np.int64), minlength=4)
        for k, name in enumerate(("prompt", "ref", "rationale", "eot")):
            stats.tokens[name] += int(counts[k])
        out.append(Example(ids, segs, t.id, source))
    stats.examples += len(out)
    return out


def examples_hash(*groups: list[Example]) -> str:
    h = hashlib.sha256()
    for g in groups:
        h.update(b"\x01")
        for e in g:
            h.update(e.id.encode("utf-8", "replace") + b"\x00")
            h.update(np.asarray(e.tokens, np.int64).tobytes())
            h.update(np.asarray(e.segments, np.int8).tobytes())
    return h.hexdigest()[:16]


def load_data(cfg, tokenizer, rank_print=print) -> dict:
    """The run's main, extra (replay/mix) and validation examples, their build statistics, the hashes of
    the generate files' settings, and one hash of every token (a resumed run must see the same)."""
    t = prompts.Templates(translate=cfg.translate_template, system=cfg.system)
    method = methods.get(cfg.method)
    kw = dict(directions=cfg.pairs, separator=cfg.separator)
    st_main, st_extra, st_val = BuildStats(), BuildStats(), BuildStats()
    targets = load_targets(cfg.data, tokenizer, t, method.data, stats=st_main,
                                   what=f"--method {cfg.method}", **kw)
    val_targets = []
    if cfg.val_data:
        val_rule = dataclasses.replace(method.data, plain=("pairs", "instructions"))
        val_targets = load_targets(cfg.val_data, tokenizer, t, val_rule, stats=st_val, what="--val-data", **kw)
    elif cfg.val_fraction > 0:
        k = max(1, int(round(len(targets) * cfg.val_fraction)))
        pick = set(np.random.default_rng([cfg.seed, 11]).permutation(len(targets))[:k].tolist())
        val_targets = [x for i, x in enumerate(targets) if i in pick]
        targets = [x for i, x in enumerate(targets) if i not in pick]
    extra_src = getattr(cfg, method.extra.setting)
    extra_targets = []
    if extra_src:
        extra_targets = load_targets(extra_src, tokenizer, t, method.extra.rule, stats=st_extra,
                                             what=f"--{method.extra.setting.replace('_', '-')}", **kw)
    main = build_examples(tokenizer, targets, cfg.max_seq_len, 0, st_main)
    extra = build_examples(tokenizer, extra_targets, cfg.max_seq_len, 1, st_extra)
    val = build_examples(tokenizer, val_targets, cfg.max_seq_len, 0, st_val)
    if not main:
        raise UserError(f"{cfg.data}: no training examples left (all rows dropped: "
                        f"{st_main.dropped_too_long} too long for --max-seq-len {cfg.max_seq_len})")
    if extra_src and not extra:
        raise UserError(f"{extra_src}: no usable rows")
    if cfg.val_data and not val:
        raise UserError(f"{cfg.val_data}: no validation examples left")
    meta = {}
    for src in (cfg.data, extra_src):
        mp = Path(str(src) + ".meta.json") if src else None
        if mp and mp.is_file():
            meta[str(src)] = hashlib.sha256(mp.read_bytes()).hexdigest()[:16]
            used = read_json(mp).get("settings", {}).get("translate_template")
            if used and used != cfg.translate_template:
                rank_print(f"warning: {src} was generated with another translation template than --template; "
                           "training prompts will differ from generation prompts")
    return {"main": main, "extra": extra, "val": val, "meta_hashes": meta,
            "stats": {"main": st_main.as_dict(), "extra": st_extra.as_dict() if extra_src else None,
                      "val": st_val.as_dict() if val else None},
            "hash": examples_hash(main, extra, val)}
