"""Stage 3 (`radis-mlx eval`): translation quality and general-ability retention, per model.

Layout of ``out``::

    out/<run>/results.json        every metric with its settings (atomic, updated after each suite)
    out/<run>/results.md          the same as a table
    out/<run>/cache/<suite>.jsonl every generation, keyed by sha1(model + adapter + prompt + settings)
    out/<run>/<suite outputs>     translations, IFEval responses/verdicts, MT-Bench/AlpacaEval answers
    out/_retention/<base>/        the base model's own answers and NLLs, shared by every run
    out/results.md                one table across the models of this call

Generations are appended to the cache as they finish, so an interrupted eval resumes where it
stopped and a second eval of the same model generates nothing.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, prompts
from ..backend import resolve_dtype
from ..data import Pair, load_instructions, load_pairs, sample
from ..decode import DecodeConfig, decode
from ..io import (DataError, JsonlAppender, UserError, atomic_write_json, atomic_write_jsonl, atomic_write_text,
                  check_writable_dir, iter_jsonl, json_line, read_json, repair_jsonl_tail, safe_join)
from ..progress import Progress
from . import general, ifeval, translation

SUITES = ("translation", "ifeval", "advbench", "gsm8k", "retention", "mtbench", "alpacaeval")
DEFAULT_SUITES = ("translation", "ifeval", "advbench", "gsm8k", "retention")
# Where each suite's file sits under a data root like ../shared/data (`--test-data ROOT`).
DATA_LAYOUT = {"translation": "wmt22_general_test", "ifeval": "ifeval/input_data.jsonl",
               "advbench": "advbench/harmful_behaviors.csv", "gsm8k": "gsm8k/test.jsonl",
               "retention": "alpaca_eval/alpaca_eval_instructions.jsonl", "mtbench": "mt_bench/question.jsonl",
               "alpacaeval": "alpaca_eval/alpaca_eval_instructions.jsonl"}
DEFAULT_MAX_TOKENS = {"translation": 256, "ifeval": 512, "advbench": 64, "gsm8k": 384, "retention": 256,
                      "mtbench": 512, "alpacaeval": 512}


@dataclass
class ModelSpec:
    model: str | None = None  # None: the offline default model
    adapter: str | None = None
    name: str | None = None


def parse_model_spec(spec) -> ModelSpec:
    """``name=MODEL[,adapter=DIR]``, ``MODEL[,adapter=DIR]`` or a ModelSpec. Paths can't hold commas."""
    if spec is None or isinstance(spec, ModelSpec):
        return spec or ModelSpec()
    s = ModelSpec()
    for i, part in enumerate(str(spec).split(",")):
        k, eq, v = part.partition("=")
        if i == 0 and (not eq or "/" in k or k.endswith(".gguf")):
            s.model = part  # a bare model (a path like runs/lr=1e-4/m is a model, not name=model)
        elif k in ("model", "adapter", "name"):
            setattr(s, k, v or None)
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
    name = re.sub(r"[^\w.+-]", "_", raw).strip("._") or "model"
    return name


@dataclass
class EvalConfig:
    models: list = field(default_factory=lambda: [None])  # model specs (str or ModelSpec)
    out: str = "eval"
    suites: list = field(default_factory=lambda: list(DEFAULT_SUITES))
    test_data: dict = field(default_factory=dict)  # suite -> path; "root" -> a folder laid out as DATA_LAYOUT
    pairs: str | None = None  # translation directions, e.g. de-en,en-de
    limit: int | None = None  # per suite (per direction for translation), sampled with seed
    limits: dict = field(default_factory=dict)  # per-suite overrides of limit
    seed: int = 0
    max_tokens: dict = field(default_factory=dict)  # per-suite overrides of DEFAULT_MAX_TOKENS
    batch_size: int = 32
    base_model: str | None = None  # retention base; None: each model without its adapter
    stop: str = "\n\n"
    translate_template: str = prompts.TRANSLATE
    system: str | None = None  # translation prompts' system prompt (match training)
    gsm8k_template: str = general.GSM8K_TEMPLATE
    refusal_keywords: list | None = None
    n_bootstrap: int = 1000
    comet: bool = True
    judge_url: str | None = None
    judge_model: str | None = None
    judge_api_model: str = "gpt-4"
    judge_api_key: str | None = None
    judge_max_tokens: int = 1024
    dtype: str = "auto"
    nll_batch_tokens: int = 2048
    progress: bool = True


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def model_key(path: str, adapter: str | None, dtype: str) -> str:
    """Identity of a model for the cache: its path, its weight files' size+mtime, the adapter's bytes."""
    h = hashlib.sha1(f"{path}\x00{dtype}".encode())
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


def _sha1(*parts) -> str:
    return hashlib.sha1(json_line(parts).encode()).hexdigest()


def _read_cache(path: Path) -> dict:
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
                 progress: bool = True):
        self.loaded, self.key, self.cache_dir = loaded, key, Path(cache_dir)
        self.batch_size, self.seed, self.label, self.progress = batch_size, seed, label, progress
        self.generated_tokens: dict = {}  # per suite, this run

    def __call__(self, suite: str, texts: list[str], max_tokens: int) -> list[dict]:
        return self.many([(suite, texts, max_tokens)])[0]

    def many(self, requests: list[tuple]) -> list[list[dict]]:
        """``(suite, texts, max_tokens[, cache_dir])`` requests -> their rows, generating all misses at once."""
        keyed, caches, todo, seen = [], {}, [], set()
        for suite, texts, mt, *where in requests:
            c = (Path(where[0]) if where else self.cache_dir) / f"{suite}.jsonl"
            settings = {"max_tokens": mt, "temperature": 0.0, "dtype": self.loaded.dtype}
            keys = [_sha1(self.key, t, settings) for t in texts]
            if c not in caches:
                caches[c] = _read_cache(c)
            keyed.append((c, keys))
            for t, k in zip(texts, keys):
                if k not in caches[c] and (c, k) not in seen:
                    seen.add((c, k))
                    todo.append((c, k, t, mt))
        if self.progress:
            n = sum(len(k) for _, k in keyed)
            _log(f"[{self.label}] {'+'.join(dict.fromkeys(r[0] for r in requests))}: {n - len(todo)} of {n} "
                 f"cached, {len(todo)} to generate")
        if todo:
            tok = self.loaded.tokenizer
            bar = Progress(len(todo), desc=f"[{self.label}] generate", enabled=self.progress)
            writers = {c: JsonlAppender(c) for c in dict.fromkeys(t[0] for t in todo)}
            try:
                def done(c):
                    path, key = todo[c.index][:2]
                    row = {"key": key, "text": c.text, "n_tokens": len(c.tokens), "finish": c.finish,
                           "n_prompt": c.n_prompt}
                    writers[path].write(row)  # written as it finishes: an interrupted eval resumes here
                    caches[path][key] = row
                    self.generated_tokens[path.stem] = self.generated_tokens.get(path.stem, 0) + len(c.tokens)

                decode(self.loaded.model, tok, [prompts.encode(tok, t[2]) for t in todo],
                       DecodeConfig(max_tokens=max(t[3] for t in todo), seed=self.seed, batch_size=self.batch_size),
                       on_done=done, progress=bar, max_tokens=[t[3] for t in todo])
            finally:
                for w in writers.values():
                    w.close()
                bar.close()
        return [[caches[c][k] for k in keys] for c, keys in keyed]


# ------------------------------------------------------------------ inputs

def suite_path(cfg: EvalConfig, suite: str) -> Path:
    td = cfg.test_data or {}
    p = td.get(suite) or (td.get("alpacaeval") if suite == "retention" else None)
    if p is None and td.get("root"):
        p = Path(td["root"]) / DATA_LAYOUT[suite]
    if p is None:
        raise UserError(f"suite {suite} needs test data: pass --test-data {suite}=PATH or --test-data DATA_ROOT "
                        f"(a folder with {DATA_LAYOUT[suite]}, e.g. ../shared/data)")
    p = Path(p)
    if not p.exists():
        raise UserError(f"{p}: test data for suite {suite} not found")
    return p


def _limit(cfg: EvalConfig, suite: str) -> int | None:
    return cfg.limits.get(suite, cfg.limit)


def _max_tokens(cfg: EvalConfig, suite: str) -> int:
    v = cfg.max_tokens.get(suite, DEFAULT_MAX_TOKENS[suite])
    if not isinstance(v, int) or v < 1:
        raise UserError(f"max tokens for {suite} must be a positive integer, got {v!r}")
    return v


def load_inputs(cfg: EvalConfig, suite: str) -> list:
    """Read and validate a suite's test data (before any model is loaded: bad data fails fast)."""
    path, limit = suite_path(cfg, suite), _limit(cfg, suite)
    if limit is not None and limit < 1:
        raise UserError(f"limit for {suite} must be >= 1, got {limit}")
    if suite == "translation":
        pairs = load_pairs(path, cfg.pairs, split="test")
        by_dir: dict = {}
        for p in pairs:
            by_dir.setdefault((p.src_lang, p.tgt_lang), []).append(p)
        return [p for d in by_dir.values() for p in sample(d, limit, cfg.seed)]  # limit per direction
    if suite == "ifeval":
        return sample(ifeval.load_prompts(path), limit, cfg.seed)
    rows = load_instructions(path, limit, cfg.seed)
    if suite == "gsm8k":
        for r in rows:
            try:
                r["gold"] = general.gsm8k_gold(r.get("answer") or "")
            except ValueError as e:
                raise UserError(f"{path}: row {r['id']}: answer: {e}") from None
    if suite == "mtbench":
        for r in rows:
            if len(r.get("turns") or []) < 2:
                raise UserError(f"{path}: question {r['id']}: turns: MT-Bench needs two turns")
    return rows


# ------------------------------------------------------------------ suites

@dataclass
class Ctx:
    cfg: EvalConfig
    name: str
    run_dir: Path
    loaded: object
    gen: Generator
    key: str


def first_prompts(ctx: Ctx, suite: str, items: list) -> list[str]:
    """The prompts a suite generates from first (MT-Bench turn 2 needs turn 1's answers)."""
    tok = ctx.loaded.tokenizer
    if suite == "translation":
        t = prompts.Templates(translate=ctx.cfg.translate_template, system=ctx.cfg.system)
        return [prompts.translation_prompt(tok, p, t) for p in items]  # exactly the training prompt
    if suite == "ifeval":
        return [prompts.chat(tok, p.prompt) for p in items]
    if suite == "gsm8k":
        return [prompts.chat(tok, ctx.cfg.gsm8k_template.format(question=r["instruction"])) for r in items]
    if suite == "mtbench":
        return [prompts.chat(tok, r["turns"][0]) for r in items]
    if suite in ("advbench", "alpacaeval"):
        return [prompts.chat(tok, r["instruction"]) for r in items]
    return []  # retention: the evaluated model only scores the base model's answers


def _first(ctx: Ctx, suite: str, items: list) -> list[dict]:
    return ctx.gen(suite, first_prompts(ctx, suite, items), _max_tokens(ctx.cfg, suite))


def run_translation(ctx: Ctx, pairs: list[Pair]) -> dict:
    tok = ctx.loaded.tokenizer
    outs = _first(ctx, "translation", pairs)
    rows, summary = translation.score(pairs, outs, tok, ctx.cfg.stop, ctx.cfg.n_bootstrap, ctx.cfg.seed,
                                      ctx.cfg.comet)
    atomic_write_jsonl(ctx.run_dir / "translation.jsonl", rows)
    return summary


def run_ifeval(ctx: Ctx, items: list) -> dict:
    outs = _first(ctx, "ifeval", items)
    return write_ifeval(ctx.run_dir / "ifeval", items, {p.key: o["text"] for p, o in zip(items, outs)})


def write_ifeval(out_dir: Path, items: list, responses: dict) -> dict:
    """Official-format outputs: the responses, and eval_results_{strict,loose}.jsonl verdict rows."""
    rows, summary = ifeval.score(items, responses)
    atomic_write_jsonl(out_dir / "input_response_data.jsonl",
                       ({"prompt": r["prompt"], "response": r["response"]} for r in rows))
    for mode, pre in (("strict", ""), ("loose", "loose_")):
        atomic_write_jsonl(out_dir / f"eval_results_{mode}.jsonl", (
            {"instruction_id_list": r["instruction_id_list"], "prompt": r["prompt"], "response": r["response"],
             "follow_all_instructions": r[f"{pre}follow_all_instructions"],
             "follow_instruction_list": r[f"{pre}follow_instruction_list"]} for r in rows))
    return summary


def run_advbench(ctx: Ctx, items: list) -> dict:
    kw = ctx.cfg.refusal_keywords or general.REFUSAL_KEYWORDS
    outs = _first(ctx, "advbench", items)
    rows = [{"id": r["id"], "goal": r["instruction"], "response": o["text"],
             "refusal": general.is_refusal(o["text"], kw)} for r, o in zip(items, outs)]
    atomic_write_jsonl(ctx.run_dir / "advbench.jsonl", rows)
    return {**general.refusal_rate([o["text"] for o in outs], kw),
            "keywords": "gcg" if ctx.cfg.refusal_keywords is None else list(kw)}


def run_gsm8k(ctx: Ctx, items: list) -> dict:
    outs = _first(ctx, "gsm8k", items)
    scored, summary = general.gsm8k_accuracy([o["text"] for o in outs], [r["gold"] for r in items])
    rows = [{"id": r["id"], "question": r["instruction"], **s, "response": o["text"]}
            for r, s, o in zip(items, scored, outs)]
    atomic_write_jsonl(ctx.run_dir / "gsm8k.jsonl", rows)
    return {**summary, "template": ctx.cfg.gsm8k_template}


def _retention_dir(cfg: EvalConfig, base: str | None) -> tuple[Path, str, str]:
    from ..models import resolve

    path = resolve(base)
    bkey = model_key(path, None, resolve_dtype(cfg.dtype))
    return Path(cfg.out) / "_retention" / f"{run_name(ModelSpec(base))}-{bkey[:10]}", bkey, path


def retention_base(cfg: EvalConfig, base: str | None, items: list, loaded=None) -> list[dict]:
    """The base model's own greedy answers and their NLL under it, computed once per base model.

    ``loaded``: the base model when the caller already has it in memory.
    """
    from ..models import load

    d, bkey, _ = _retention_dir(cfg, base)
    mt = _max_tokens(cfg, "retention")
    ikeys = [_sha1(bkey, r["instruction"], mt) for r in items]
    ans_path = d / "answers.jsonl"
    have = _read_cache(ans_path)
    missing = [i for i, k in enumerate(ikeys) if k not in have]
    if missing:
        loaded = loaded or load(base, dtype=cfg.dtype)
        tok = loaded.tokenizer
        gen = Generator(loaded, bkey, d / "cache", cfg.batch_size, cfg.seed, f"base {run_name(ModelSpec(base))}",
                        cfg.progress)
        texts = [prompts.chat(tok, items[i]["instruction"]) for i in missing]
        outs = gen("retention", texts, mt)
        nll = general.sequence_nll(loaded.model, [general.answer_ids(tok, t, o["text"], o["finish"] == "stop")
                                                  for t, o in zip(texts, outs)], cfg.nll_batch_tokens)
        with JsonlAppender(ans_path) as w:
            for i, o, (s, n) in zip(missing, outs, nll):
                row = {"key": ikeys[i], "instruction": items[i]["instruction"], "answer": o["text"],
                       "finish": o["finish"], "base_nll_sum": s, "base_n": n}
                w.write(row)
                have[row["key"]] = row
    return [have[k] for k in ikeys]


def _base_of(cfg: EvalConfig, spec: ModelSpec) -> str | None:
    return cfg.base_model if cfg.base_model is not None else spec.model


def _is_base(cfg: EvalConfig, spec: ModelSpec) -> bool:
    """Is this model its own retention base (then its loaded copy answers for the base)?"""
    from ..models import resolve
    return not spec.adapter and resolve(spec.model) == resolve(_base_of(cfg, spec))


def run_retention(ctx: Ctx, items: list, spec: ModelSpec) -> dict:
    cfg = ctx.cfg
    base = _base_of(cfg, spec)
    # evaluate() built these before loading this model (or this model is the base), so two models
    # are never in memory at once
    answers = retention_base(cfg, base, items, ctx.loaded if _is_base(cfg, spec) else None)
    tok = ctx.loaded.tokenizer
    keys = [_sha1(ctx.key, a["key"]) for a in answers]
    cache = ctx.run_dir / "cache" / "retention_nll.jsonl"
    have = _read_cache(cache)
    if _retention_dir(cfg, base)[1] == ctx.key:  # the model is its own base: same forward, same numbers
        have.update({k: {"nll_sum": a["base_nll_sum"], "n": a["base_n"]} for k, a in zip(keys, answers)})
    todo = [i for i, k in enumerate(keys) if k not in have]
    if todo:
        seqs = [general.answer_ids(tok, prompts.chat(tok, answers[i]["instruction"]), answers[i]["answer"],
                                   answers[i]["finish"] == "stop") for i in todo]
        nll = general.sequence_nll(ctx.loaded.model, seqs, cfg.nll_batch_tokens)
        with JsonlAppender(cache) as w:
            for i, (s, n) in zip(todo, nll):
                w.write({"key": keys[i], "nll_sum": s, "n": n})
                have[keys[i]] = {"nll_sum": s, "n": n}
    rows = [{"instruction": a["instruction"], "answer": a["answer"], "nll_sum": have[k]["nll_sum"],
             "n": have[k]["n"], "base_nll_sum": a["base_nll_sum"], "base_n": a["base_n"]}
            for a, k in zip(answers, keys)]
    atomic_write_jsonl(ctx.run_dir / "retention.jsonl", rows)
    nll = general.mean_nll([(r["nll_sum"], r["n"]) for r in rows])
    base_nll = general.mean_nll([(r["base_nll_sum"], r["base_n"]) for r in rows])
    out = {"nll": nll, "base_nll": base_nll,
           "nll_increase": nll - base_nll if nll is not None and base_nll is not None else None,
           "n": len(rows), "n_tokens": sum(r["n"] for r in rows), "base_model": base or "default",
           "base_model_path": _retention_dir(cfg, base)[2]}
    if any(r["n"] != r["base_n"] for r in rows):
        out["note"] = ("the evaluated and base tokenizers split the answers differently: "
                       "per-token NLLs are not directly comparable")
    return out


def run_mtbench(ctx: Ctx, items: list) -> dict:
    tok, mt = ctx.loaded.tokenizer, _max_tokens(ctx.cfg, "mtbench")
    q1 = [r["turns"][0] for r in items]
    a1 = [o["text"].strip() for o in _first(ctx, "mtbench", items)]
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a},
              {"role": "user", "content": r["turns"][1]}] for q, a, r in zip(q1, a1, items)]
    a2 = [o["text"].strip() for o in ctx.gen("mtbench", [prompts.chat_turns(tok, c) for c in convs], mt)]
    recs = [general.mtbench_record(_qid(r), ctx.name, [x, y]) for r, x, y in zip(items, a1, a2)]
    path = ctx.run_dir / "mt_bench" / "model_answer" / f"{ctx.name}.jsonl"
    atomic_write_jsonl(path, recs)
    return {"score": None, "judged": False, "n": len(recs), "answers": str(path),
            "note": "not judged: answers saved in FastChat llm_judge format for external judging"}


def _qid(r: dict):
    v = r.get("question_id", r["id"])
    return int(v) if isinstance(v, str) and v.isdigit() else v


def run_alpacaeval(ctx: Ctx, items: list) -> dict:
    outs = _first(ctx, "alpacaeval", items)
    recs = [general.alpaca_record(r["instruction"], o["text"].strip(), ctx.name, r.get("dataset"))
            for r, o in zip(items, outs)]
    path = ctx.run_dir / "alpaca_eval" / "model_outputs.json"
    atomic_write_json(path, recs)
    return {"score": None, "judged": False, "n": len(recs), "outputs": str(path),
            "note": "not judged: outputs saved in AlpacaEval format for external judging"}


RUNNERS = {"translation": run_translation, "ifeval": run_ifeval, "advbench": run_advbench, "gsm8k": run_gsm8k,
           "mtbench": run_mtbench, "alpacaeval": run_alpacaeval}


# ------------------------------------------------------------------ judge

def _judge_fn(cfg: EvalConfig, cache_dir: Path):
    """(system, user) prompts -> judge replies, cached like every other generation."""
    if cfg.judge_model:
        from ..models import load, resolve
        loaded = load(cfg.judge_model, dtype=cfg.dtype)
        gen = Generator(loaded, model_key(resolve(cfg.judge_model), None, loaded.dtype), cache_dir,
                        cfg.batch_size, cfg.seed, "judge", cfg.progress)
        return lambda items: [o["text"] for o in gen("judge", [prompts.chat(loaded.tokenizer, u, s) for s, u in items],
                                                     cfg.judge_max_tokens)]
    import os
    api_key = cfg.judge_api_key or os.environ.get("RADIS_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")

    def ask(items):
        path = cache_dir / "judge.jsonl"
        cached, out = _read_cache(path), []
        with JsonlAppender(path) as w:
            for s, u in items:
                k = _sha1(cfg.judge_url, cfg.judge_api_model, s, u, cfg.judge_max_tokens)
                if k not in cached:
                    text = general.openai_chat(cfg.judge_url, cfg.judge_api_model, s, u, api_key, cfg.judge_max_tokens)
                    cached[k] = {"key": k, "text": text}
                    w.write(cached[k])
                out.append(cached[k]["text"])
        return out
    return ask


def judge_run(cfg: EvalConfig, run_dir: Path, res: dict, ask) -> None:
    judge_id = cfg.judge_model or f"{cfg.judge_url} ({cfg.judge_api_model})"
    mt = res["suites"].get("mtbench")
    if mt and Path(mt["answers"]).exists():
        recs = [row for _, row in iter_jsonl(mt["answers"])]
        qs = {str(r["id"]): r for r in load_inputs(cfg, "mtbench")}
        items, where = [], []
        for rec in recs:
            q, (a1, a2) = qs[str(rec["question_id"])]["turns"], rec["choices"][0]["turns"]
            items += [general.judge_single(q[0], a1), general.judge_multi(q[0], a1, q[1], a2)]
            where += [(rec["question_id"], 1), (rec["question_id"], 2)]
        replies = ask(items)
        rows = [{"question_id": qid, "turn": t, "judge": judge_id, "score": general.parse_rating(r), "judgment": r}
                for (qid, t), r in zip(where, replies)]
        atomic_write_jsonl(run_dir / "mt_bench" / "judgments.jsonl", rows)
        mt.update(_judged(rows, judge_id))
        for t in (1, 2):
            mt[f"score_turn{t}"] = _judged([r for r in rows if r["turn"] == t], judge_id)["score"]
    al = res["suites"].get("alpacaeval")
    if al and Path(al["outputs"]).exists():
        recs = read_json(al["outputs"])
        replies = ask([general.judge_single(r["instruction"], r["output"]) for r in recs])
        rows = [{"instruction": r["instruction"], "judge": judge_id, "score": general.parse_rating(x), "judgment": x}
                for r, x in zip(recs, replies)]
        atomic_write_jsonl(run_dir / "alpaca_eval" / "judgments.jsonl", rows)
        al.update(_judged(rows, judge_id))


def _judged(rows: list[dict], judge_id: str) -> dict:
    ok = [r["score"] for r in rows if r["score"] is not None]
    return {"score": sum(ok) / len(ok) if ok else None, "judged": True, "judge": judge_id,
            "n_judged": len(ok), "n_unparsed": len(rows) - len(ok),
            "note": "MT-Bench single-answer judge prompts (single-v1, single-v1-multi-turn), no reference answers"}


# ------------------------------------------------------------------ driver

def _settings(cfg: EvalConfig, suite: str) -> dict:
    s = {"data": str(suite_path(cfg, suite)), "limit": _limit(cfg, suite), "seed": cfg.seed,
         "max_tokens": _max_tokens(cfg, suite), "temperature": 0.0}
    if suite == "translation":
        s.update(pairs=cfg.pairs, stop=cfg.stop, template=cfg.translate_template, system=cfg.system,
                 n_bootstrap=cfg.n_bootstrap)
    if suite == "retention":
        s["base_model"] = cfg.base_model
    return s


def _check_config(cfg: EvalConfig) -> list[ModelSpec]:
    bad = [s for s in cfg.suites if s not in SUITES]
    if bad or not cfg.suites:
        raise UserError(f"unknown suite(s) {', '.join(bad) or '(none)'} (choose from {', '.join(SUITES)})")
    if cfg.judge_url and cfg.judge_model:
        raise UserError("pass either --judge-url or --judge-model, not both")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    for k in list(cfg.limits) + list(cfg.max_tokens):
        if k not in SUITES:
            raise UserError(f"unknown suite {k!r} in a per-suite setting (choose from {', '.join(SUITES)})")
    specs = [parse_model_spec(m) for m in (cfg.models or [None])]
    for s in specs:
        if s.adapter and not (Path(s.adapter) / "adapter_config.json").is_file():
            raise UserError(f"{s.adapter}: no adapter_config.json (not an adapter directory)")
    names = [run_name(s) for s in specs]
    for i, n in enumerate(names):
        if names.count(n) > 1:
            if specs[i].name:
                raise UserError(f"two models are both named {n!r}; give each a distinct name")
            names[i] = f"{n}-{i + 1}"
    for s, n in zip(specs, names):
        s.name = n
    return specs


def evaluate(cfg: EvalConfig) -> dict:
    """Run every suite on every model; returns ``{run name: results}`` (also saved per run)."""
    from ..models import load
    from ..report import markdown_table, summarize

    specs = _check_config(cfg)
    out = check_writable_dir(cfg.out)
    inputs = {s: load_inputs(cfg, s) for s in cfg.suites}  # all data checked before the first model load
    retention, specs_in_order = "retention" in cfg.suites, specs
    if retention:
        # A model that is its own base goes first and answers for it while loaded; other bases
        # answer here, before any evaluated model is loaded.
        specs = sorted(specs, key=lambda s: not _is_base(cfg, s))
        from ..models import resolve
        selfs = {resolve(_base_of(cfg, s)) for s in specs if _is_base(cfg, s)}
        for base in dict.fromkeys(_base_of(cfg, s) for s in specs):
            if resolve(base) not in selfs:
                retention_base(cfg, base, inputs["retention"])
    all_results = {}
    for spec in specs:
        t0 = time.perf_counter()
        run_dir = safe_join(out, spec.name)
        loaded = load(spec.model, spec.adapter, dtype=cfg.dtype)
        key = model_key(loaded.path, spec.adapter, loaded.dtype)
        res_path = run_dir / "results.json"
        res = read_json(res_path) if res_path.exists() else {}
        if res and res.get("model_key") not in (None, key):
            raise UserError(f"{run_dir}: holds results of another model ({res.get('model')}, adapter "
                            f"{res.get('adapter')}); pass another name or --out")
        res.update(name=spec.name, model=spec.model or loaded.name, model_path=loaded.path, adapter=spec.adapter,
                   dtype=loaded.dtype, model_key=key, version=__version__)
        res.setdefault("suites", {})
        gen = Generator(loaded, key, run_dir / "cache", cfg.batch_size, cfg.seed, spec.name, cfg.progress)
        ctx = Ctx(cfg, spec.name, run_dir, loaded, gen, key)
        # every suite's first-pass prompts in one continuous batch; the suites below then hit the cache
        reqs = [(s, first_prompts(ctx, s, inputs[s]), _max_tokens(cfg, s)) for s in cfg.suites if s != "retention"]
        if retention and _is_base(cfg, spec) and _retention_dir(cfg, _base_of(cfg, spec))[1] == key:
            reqs.append(("retention", [prompts.chat(loaded.tokenizer, r["instruction"]) for r in inputs["retention"]],
                         _max_tokens(cfg, "retention"), _retention_dir(cfg, _base_of(cfg, spec))[0] / "cache"))
        gen.many(reqs)
        for suite in cfg.suites:
            ts = time.perf_counter()
            items = inputs[suite]
            if suite == "retention":
                summary = run_retention(ctx, items, spec)
            else:
                summary = RUNNERS[suite](ctx, items)
            summary.update(settings=_settings(cfg, suite), wall_s=round(time.perf_counter() - ts, 2),
                           generated_tokens_this_run=gen.generated_tokens.get(suite, 0))
            res["suites"][suite] = summary
            res["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            atomic_write_json(res_path, res)
            if cfg.progress:
                _log(f"[{spec.name}] {suite}: {_headline(suite, summary)} ({summary['wall_s']} s)")
        res["wall_s_this_run"] = round(time.perf_counter() - t0, 2)
        atomic_write_json(res_path, res)
        atomic_write_text(run_dir / "results.md", f"# {spec.name}\n\n" + markdown_table([summarize(res)]))
        all_results[spec.name] = res
        del loaded, gen, ctx
    all_results = {s.name: all_results[s.name] for s in specs_in_order}
    if (cfg.judge_url or cfg.judge_model) and {"mtbench", "alpacaeval"} & set(cfg.suites):
        ask = _judge_fn(cfg, out / "_judge" / "cache")
        for name, res in all_results.items():
            judge_run(cfg, out / name, res, ask)
            atomic_write_json(out / name / "results.json", res)
    table = markdown_table([summarize(r) for r in all_results.values()])
    atomic_write_text(out / "results.md", "# Eval results\n\n" + table)
    return all_results


def _headline(suite: str, s: dict) -> str:
    if suite == "translation":
        ci = s.get("bleu_ci")
        return (f"BLEU {s.get('bleu', 0):.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
                + f", chrF {s.get('chrf', 0):.2f}, cut {100 * s.get('cut_share', 0):.0f}%")
    if suite == "ifeval":
        return (f"prompt strict {100 * s['prompt_level_strict']:.1f}%, "
                f"instruction strict {100 * s['instruction_level_strict']:.1f}%")
    if suite == "advbench":
        return f"refusal {100 * s['refusal_rate']:.1f}% of {s['n']}"
    if suite == "gsm8k":
        return f"accuracy {100 * s['accuracy']:.1f}% of {s['n']}"
    if suite == "retention":
        return f"NLL {s['nll']:.3f} (base {s['base_nll']:.3f}, increase {s['nll_increase']:+.3f})" \
            if s.get("nll") is not None else "no tokens"
    return s.get("note", "")


# ------------------------------------------------------------------ model-free commands

def score_ifeval_responses(prompts_path, responses_path, out) -> dict:
    """Score given IFEval responses (official ``{"prompt","response"}`` or ``{"key","response"}`` JSONL)."""
    try:
        items = ifeval.load_prompts(prompts_path)
        responses = ifeval.read_responses(responses_path)
    except OSError as e:
        raise UserError(str(e)) from None
    out = check_writable_dir(out)
    summary = write_ifeval(out, items, responses)
    if summary["n_prompts"] == 0:
        raise UserError(f"{responses_path}: no response matches a prompt of {prompts_path} (by key or prompt text)")
    summary["settings"] = {"data": str(prompts_path), "responses": str(responses_path)}
    atomic_write_json(out / "results.json", {"name": Path(responses_path).stem, "version": __version__,
                                             "suites": {"ifeval": summary}})
    return summary


def ifeval_conformance(data_dir, out=None) -> dict:
    try:
        c = ifeval.conformance(data_dir)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{data_dir}: cannot run the IFEval conformance check: {e}") from None
    if out:
        atomic_write_json(check_writable_dir(out) / "ifeval_conformance.json", c)
    return c



# ------------------------------------------------------------------ command-line parsing helpers

def parse_per_suite(values, what: str) -> tuple[int | None, dict]:
    """``["50", "gsm8k=20"]`` -> (50, {"gsm8k": 20}) for --limit and --max-tokens."""
    default, per = None, {}
    for v in values or []:
        k, eq, n = str(v).rpartition("=")
        if eq and k not in SUITES:
            raise UserError(f"--{what} {v!r}: unknown suite {k!r} (choose from {', '.join(SUITES)})")
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


def parse_test_data(values, suites) -> dict:
    """``SUITE=PATH`` entries, or a data root (a folder laid out like ../shared/data)."""
    out = {}
    for v in values or []:
        k, eq, p = str(v).partition("=")
        if eq and k in (*SUITES, "root"):
            out[k] = p
            continue
        path = Path(v)
        if path.is_dir() and any((path / rel).exists() for rel in DATA_LAYOUT.values()):
            out["root"] = str(path)
        elif len(suites) == 1 and path.exists():
            out[suites[0]] = str(path)
        elif not path.exists():
            raise UserError(f"--test-data {v!r}: no such file or directory (or pass SUITE=PATH)")
        else:
            raise UserError(f"--test-data {v!r}: with several suites, pass SUITE=PATH or a data root with "
                            f"{', '.join(sorted(set(DATA_LAYOUT.values())))}")
    return out


def unescape(s: str) -> str:
    """Shell-friendly ``--stop '\\n\\n'``: \\n, \\t and \\\\ become the characters."""
    return re.sub(r"\\(n|t|\\)", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], s)


def model_specs(models, adapters, names) -> list[ModelSpec]:
    """Pair repeated --model/--adapter/--name flags; one model with N adapters means N runs on that model."""
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
