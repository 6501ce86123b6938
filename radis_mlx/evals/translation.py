"""Translation quality: BLEU and chrF (sacrebleu) with bootstrap CIs, optional COMET, cut statistics.

A RaDis model may append an explanation after its translation, so every output is cut (cuts.py;
default: the first blank line) before scoring, and we report how often that happened and how many
tokens were spent after the cut: that is decoding time a user pays for. By default decoding stops
at the same cut, so those tokens are only what the stop itself costs (``past_cut``); ``--no-stop``
decodes every row to its end and cuts afterwards, as the published study did.
"""

from __future__ import annotations

import dataclasses

import os
from collections import defaultdict
from typing import Sequence

from .. import cuts, prompts
from ..data import Pair, load_pairs, sample
from ..fileio import atomic_write_jsonl
from ..results import Column, esc, meta, out_block, pick
from .context import Ctx
from .suites import WMT22_HUB, Html, Outcome, items_path, register

COMET_MODEL = "Unbabel/wmt22-comet-da"


def bleu_tokenizer(tgt_lang: str) -> tuple[str, str | None]:
    """sacrebleu's recommended tokenizer for the target language, and a note when we had to fall back."""
    if tgt_lang == "zh":
        return "zh", None
    if tgt_lang in ("ja", "ko"):
        name = f"{tgt_lang}-mecab"
        try:
            from sacrebleu.metrics import BLEU
            BLEU(tokenize=name)  # instantiating imports MeCab and its dictionary
            return name, None
        except Exception as e:  # ImportError, or MeCab present without a dictionary
            pkg = "sacrebleu[ja]" if tgt_lang == "ja" else "sacrebleu[ko]"
            return "char", (f"{name} tokenizer unavailable ({type(e).__name__}); BLEU uses 'char' "
                            f"tokenization instead (pip install '{pkg}' for the standard one)")
    return "13a", None


def ref_streams(refs: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-sentence reference tuples -> sacrebleu's reference streams; None pads a missing reference."""
    n = max((len(r) for r in refs), default=1)
    return [[r[j] if j < len(r) else None for r in refs] for j in range(n)]


def _resampled_scores(metric, hyps, streams, n: int, seed: int) -> list[float]:
    """Scores of ``n`` seeded bootstrap resamples over sentences (sufficient stats summed, so it's fast)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    try:
        stats = np.asarray(metric._extract_corpus_statistics(hyps, streams))
        idx = rng.integers(0, len(hyps), size=(n, len(hyps)))
        return [metric._compute_score_from_stats(stats[i].sum(0).tolist()).score for i in idx]
    except AttributeError:  # a future sacrebleu without the private helpers: slow but correct
        idx = rng.integers(0, len(hyps), size=(n, len(hyps)))
        return [metric.corpus_score([hyps[j] for j in i], [[s[j] for j in i] for s in streams]).score
                for i in idx]


def percentile_ci(samples: Sequence[float], level: float = 0.95) -> list[float]:
    import numpy as np

    lo, hi = np.percentile(np.asarray(samples, dtype=float), [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def corpus_metrics(hyps: Sequence[str], refs: Sequence[Sequence[str]], tgt_lang: str,
                   n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """BLEU and chrF of one direction, with sacrebleu signatures and 95% bootstrap CIs.

    The raw bootstrap samples are returned under ``_samples`` so callers can build a CI for a
    mean over directions from the same resamples; they are dropped before saving.
    """
    from sacrebleu.metrics import BLEU, CHRF

    hyps = list(hyps)
    tok, note = bleu_tokenizer(tgt_lang)
    streams = ref_streams(refs)
    bleu, chrf = BLEU(tokenize=tok, trg_lang=tgt_lang), CHRF()
    b, c = bleu.corpus_score(hyps, streams), chrf.corpus_score(hyps, streams)
    out = {"bleu": b.score, "chrf": c.score, "n": len(hyps), "n_refs": len(streams), "tokenize": tok,
           "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}
    if note:
        out["note"] = note
    if n_bootstrap and len(hyps) > 1:
        sb = _resampled_scores(bleu, hyps, streams, n_bootstrap, seed)
        sc = _resampled_scores(chrf, hyps, streams, n_bootstrap, seed)
        out.update(bleu_ci=percentile_ci(sb), chrf_ci=percentile_ci(sc), n_bootstrap=n_bootstrap,
                   _samples={"bleu": sb, "chrf": sc})
    return out


def cut_output(output: dict | str, rule, tokenizer=None) -> dict:
    """The scored hypothesis of one raw output, whether it was cut, and the tokens after the cut.

    A row that decoding stopped at its cut (finish "cut") holds the kept text already; its tokens
    after the cut are the ones the stop itself cost."""
    o = {"text": output} if isinstance(output, str) else output
    rule = cuts.StringCut(rule) if isinstance(rule, str) else rule
    if o.get("finish") == "cut":
        return {"hyp": o["text"].strip(), "cut": True, "extra_tokens": o.get("past_cut", 0)}
    text = o["text"]
    at = rule.find(text, final=True)
    if at is None:
        return {"hyp": text.strip(), "cut": False, "extra_tokens": 0}
    tail = text[at:].rstrip()  # the stop itself counts: it was decoded too
    extra = len(tokenizer.encode(tail, add_special_tokens=False)) if tokenizer is not None else 0
    return {"hyp": text[:at].strip(), "cut": True, "extra_tokens": extra}


def comet_score(srcs: Sequence[str], hyps: Sequence[str], refs: Sequence[str],
                batch_size: int = 8) -> tuple[dict | None, str | None]:
    """COMET system score when the package and the model are already here; never downloads."""
    try:
        import comet  # noqa: F401
    except ImportError:
        return None, "COMET skipped: the `comet` package is not installed (pip install unbabel-comet)"
    ckpt = os.environ.get("RADIS_COMET_CHECKPOINT")
    if not ckpt:
        try:
            from huggingface_hub import snapshot_download
            ckpt = os.path.join(snapshot_download(COMET_MODEL, local_files_only=True), "checkpoints", "model.ckpt")
        except Exception:
            return None, (f"COMET skipped: {COMET_MODEL} is not in the local Hugging Face cache "
                          f"(fetch it once with `huggingface-cli download {COMET_MODEL}`, "
                          "or set RADIS_COMET_CHECKPOINT to a model.ckpt)")
    try:
        from comet import load_from_checkpoint
        model = load_from_checkpoint(ckpt)
        data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(srcs, hyps, refs)]
        pred = model.predict(data, batch_size=batch_size, gpus=0, progress_bar=False)
        return {"comet": float(pred.system_score) * 100, "comet_model": COMET_MODEL,
                "comet_scores": [float(x) for x in pred.scores]}, None
    except Exception as e:  # a broken COMET install must not lose the BLEU numbers
        return None, f"COMET skipped: {type(e).__name__}: {' '.join(str(e).split())[:200]}"


def score(pairs: Sequence[Pair], outputs: Sequence[dict], tokenizer=None, stop="\n\n",
          n_bootstrap: int = 1000, seed: int = 0, use_comet: bool = True) -> tuple[list[dict], dict]:
    """Score raw outputs (``{"text", "n_tokens", "finish"}``, aligned with ``pairs``).

    Returns per-sentence rows and a summary: per-direction metrics, their mean over directions
    (with a CI from the same bootstrap resamples), cut share and tokens spent after the cut.
    """
    import numpy as np

    rows = []
    for p, o in zip(pairs, outputs):
        c = cut_output(o, stop, tokenizer)  # stop: a cut rule (cuts.py), or a string to cut at
        rows.append({"id": p.id, "src_lang": p.src_lang, "tgt_lang": p.tgt_lang, "src": p.src,
                     "refs": list(p.all_refs), "hyp": c["hyp"], "raw": o["text"], "cut": c["cut"],
                     "n_tokens": o.get("n_tokens", 0), "extra_tokens": c["extra_tokens"],
                     "finish": o.get("finish"), "stopped": o.get("finish") == "cut"})
    by_dir: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_dir[f"{r['src_lang']}-{r['tgt_lang']}"].append(r)
    directions, samples, notes = {}, defaultdict(list), []
    for d, rs in by_dir.items():
        m = corpus_metrics([r["hyp"] for r in rs], [r["refs"] for r in rs], rs[0]["tgt_lang"], n_bootstrap, seed)
        for k, v in m.pop("_samples", {}).items():
            samples[k].append(v)
        if "note" in m:
            notes.append(f"{d}: {m['note']}")
        gen = sum(r["n_tokens"] for r in rs)
        extra = sum(r["extra_tokens"] for r in rs)
        m.update(cut_share=sum(r["cut"] for r in rs) / len(rs), extra_tokens=extra,
                 extra_tokens_mean=extra / len(rs), generated_tokens=gen,
                 extra_token_share=extra / gen if gen else 0.0,
                 unfinished_share=sum(r["finish"] == "length" for r in rs) / len(rs),
                 stopped_share=sum(r["stopped"] for r in rs) / len(rs))
        if use_comet:
            cm, why = comet_score([r["src"] for r in rs], [r["hyp"] for r in rs], [r["refs"][0] for r in rs])
            if cm:
                for r, s in zip(rs, cm.pop("comet_scores")):
                    r["comet"] = s
                m.update(cm)
            elif why and why not in notes:
                notes.append(why)
        directions[d] = m
    summary: dict = {"directions": directions, "n": len(rows),
                     "stop": stop if isinstance(stop, str) else "|".join(stop.stop_strings),
                     "cut": "blank-line" if isinstance(stop, str) else stop.name}
    if directions:
        for k in ("bleu", "chrf", "cut_share", "extra_tokens_mean", "extra_token_share", "unfinished_share",
                  "stopped_share"):
            summary[k] = float(np.mean([m[k] for m in directions.values()]))
        for k, ss in samples.items():
            if len(ss) == len(directions):
                summary[f"{k}_ci"] = percentile_ci(np.mean(np.asarray(ss), axis=0))
        if all("comet" in m for m in directions.values()):
            summary["comet"] = float(np.mean([m["comet"] for m in directions.values()]))
        else:
            summary["comet"] = None
    if notes:
        summary["notes"] = notes
    return rows, summary


# ------------------------------------------------------------------ the suite: data, prompts, run

def load_test_pairs(cfg, path, limit) -> list[Pair]:
    """The test pairs, ``limit`` sampled per direction."""
    by_dir: dict = {}
    first_only = getattr(cfg, "references", "all") == "first"
    for p in load_pairs(path, cfg.pairs, split="test"):
        # "first": reference A alone, as the hub's WMT22 copy (ALMA's) holds it; the id keys on it either way
        by_dir.setdefault((p.src_lang, p.tgt_lang), []).append(dataclasses.replace(p, refs=()) if first_only else p)
    return [p for d in by_dir.values() for p in sample(d, limit, cfg.seed)]


def translation_prompts(ctx: Ctx, pairs: list[Pair]) -> list[str]:
    t = prompts.Templates(translate=ctx.cfg.translate_template, system=ctx.cfg.system)
    return [prompts.translation_prompt(ctx.loaded.tokenizer, p, t) for p in pairs]  # exactly the training prompt


def translation_cut(cfg):
    """The cut this eval scores at (and, unless --no-stop, decoding stops at)."""
    return cuts.make_cut(getattr(cfg, "cut", "blank-line"), cfg.stop)


def add_stopping(ctx: Ctx, suite: str, rows: list[dict], summary: dict) -> None:
    """What stopping at the cut saved, at most: a stopped row would otherwise have run on to its end
    of turn or to max_tokens (which of the two, only a --no-stop run can tell). Seconds at this
    run's decoding rate (none when every row came from the cache)."""
    gen = getattr(ctx.gen, "gen", ctx.gen)  # under TCoT, the Generator it wraps
    if suite not in getattr(gen, "cuts", {}):
        return
    stopped = [r for r in rows if r["stopped"]]
    saved = sum(ctx.max_tokens[suite] - r["n_tokens"] for r in stopped)
    summary["stopping"] = {"stopped_rows": len(stopped), "past_cut_tokens": sum(r["extra_tokens"] for r in stopped),
                           "tokens_saved_at_most": saved}
    made = sum(gen.generated_tokens.values())
    if gen.decode_s and made:
        summary["seconds_saved_at_most_this_run"] = round(saved / (made / gen.decode_s), 1)


def run_translation(ctx: Ctx, pairs: list[Pair]) -> dict:
    outs = ctx.first("translation", translation_prompts(ctx, pairs))
    rows, summary = score(pairs, outs, ctx.loaded.tokenizer, translation_cut(ctx.cfg), ctx.cfg.n_bootstrap,
                          ctx.cfg.seed, ctx.cfg.comet)
    add_stopping(ctx, "translation", rows, summary)
    atomic_write_jsonl(items_path(ctx.run_dir, "translation"), rows)
    return summary


def translation_settings(cfg) -> dict:
    return dict(pairs=cfg.pairs, references=getattr(cfg, "references", "all"), stop=cfg.stop,
                cut=getattr(cfg, "cut", "blank-line"),
                stop_decoding=getattr(cfg, "stop_decoding", False), template=cfg.translate_template,
                system=cfg.system, n_bootstrap=cfg.n_bootstrap)


def translation_headline(s: dict) -> str:
    ci = s.get("bleu_ci")
    return (f"BLEU {s.get('bleu', 0):.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            + f", chrF {s.get('chrf', 0):.2f}, cut {100 * s.get('cut_share', 0):.0f}%"
            + (f", stopped {s['stopping']['stopped_rows']} rows ({s['stopping']['past_cut_tokens']} tokens past "
               f"the cut, <= {s['stopping']['tokens_saved_at_most']} saved)" if s.get("stopping") else ""))


# ------------------------------------------------------------------ report.html: an item

def item_head(r: dict) -> list[str]:
    tag = f'<div class="tag">{esc(r["src_lang"])}→{esc(r["tgt_lang"])} · {esc(r["id"])}</div>'
    refs = [str(x) for x in r["refs"]]
    more = "".join(f'<div class="alt">{esc(x)}</div>' for x in refs[1:])
    return [tag + f'<div class="out">{esc(r["src"])}</div>', f'<div class="out">{esc(refs[0])}</div>' + more]


def item_cell(r: dict) -> str:
    from sacrebleu import sentence_chrf

    chrf = sentence_chrf(str(r["hyp"]), [str(x) for x in r["refs"]]).score
    n = int(r.get("extra_tokens") or 0)
    note = f"cut off by eval ({n} tokens), not scored" if r.get("tail") else ""
    cut = f'<span class="dim">cut: {n} tokens</span>' if r.get("tail") else ""
    return out_block(r["hyp"], r.get("tail", ""), note) + meta(f"chrF {chrf:.1f}", cut)


def with_tail(row: dict, summary: dict) -> dict:
    """The row and what its cut left off: the raw text after the scored part (at a stop string or
    where an explanation starts, whichever cut the suite used)."""
    body, hyp = str(row.get("raw") or "").strip(), str(row.get("hyp") or "").strip()
    return {**row, "tail": body[len(hyp):] if row.get("cut") and body.startswith(hyp) else ""}


def summary_row(s: dict) -> dict:
    row = pick(s, {k: k for k in ("bleu", "bleu_ci", "chrf", "chrf_ci", "comet", "cut_share", "extra_tokens_mean")})
    if s.get("directions"):
        row["directions"] = {d: m.get("bleu") for d, m in s["directions"].items()}
    return row


register(
    name="translation", data="wmt22_general_test", hub=WMT22_HUB, splits=False, max_tokens=256,
    load=load_test_pairs, prompts=translation_prompts, run=run_translation, cut=translation_cut,
    headline=translation_headline, settings=translation_settings,
    items="translation.jsonl", outcome=Outcome("id", corpus=("bleu", "chrf")),
    columns=(Column("bleu", "BLEU", "ci", True, axis="BLEU"), Column("chrf", "chrF", "ci", True),
             Column("comet", "COMET", "f1", True, axis="COMET (wmt22-comet-da)"),
             Column("cut_share", "cut %", "pct"), Column("extra_tokens_mean", "tokens after cut", "f1", False)),
    summary=summary_row,
    html=Html("Translation", ("source", "reference"), key=lambda r: (r["src_lang"], r["tgt_lang"], str(r["id"])),
              head=item_head, cell=item_cell, prepare=with_tail),
)
