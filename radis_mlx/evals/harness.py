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

import math
import time
from dataclasses import dataclass
from pathlib import Path

from .. import __version__, bounds, prompts
from ..cuts import BLANK_LINE, CUTS, DEFAULT_CUT, make_cut
from ..fileio import (UserError, atomic_write_json, atomic_write_text, check_adapter_dir, check_writable_dir, read_json,
                  safe_join)
from ..models.interpolate import check_scalable
from ..results import columns, markdown_table, summarize
from . import general, ifeval, judge, retention, suites
from .context import Ctx, Generator, ModelSpec, log, model_key, parse_model_spec, run_name
from ..outdir import check_out, claim
from ..settings import setting
from ..tcot import TCoT, target_tag
from .tcot_decoder import TCoTDecoder
from .ifeval_conformance import conformance as ifeval_conformance_check
from .suites import DEFAULT_SUITES, SPLITS

@dataclass
class EvalConfig:
    models: list = setting(help="model specs: hub id, mlx-lm dir, .gguf, offline short name, or "
                           "name=MODEL[,adapter=DIR] (default: smollm2-135m)", factory=lambda: [None])
    out: str = setting("eval", "output directory (one folder per model)")
    suites: list = setting(help=f"the suites to run, of {', '.join(suites.names())}",
                           factory=lambda: list(DEFAULT_SUITES))
    test_data: dict = setting(help="SUITE=PATH (repeatable), or a data root laid out like ../shared/data",
                              factory=dict)  # suite -> path; "root" -> a folder laid out as DATA_LAYOUT
    pairs: str | None = setting(None, "translation directions, e.g. de-en,en-de")
    limit: int | None = setting(None, "sample N items per suite (per direction for translation), seeded")
    limits: dict = setting(help="per-suite overrides of limit (SUITE: N)", factory=dict)
    seed: int = setting(0, "seed of the sampling and the bootstrap")
    max_tokens: dict = setting(help="max new tokens per suite (SUITE: N; default: the suite's own)",
                               factory=dict)  # per-suite overrides of DEFAULT_MAX_TOKENS
    batch_size: int = setting(32, "sequences decoded together")
    base_model: str | None = setting(None, "retention base model (default: each model without its adapter)")
    adapter_scale: float | None = setting(None, "evaluate base + A x each LoRA adapter's delta (0 = the base, 1 = "
                                          "as trained; a model's own scale= wins); runs are named NAME@A")
    split: str | None = setting(None, "a fixed seeded part of each general suite's items, dev never overlapping "
                                "test (default: all items)", choices=SPLITS)  # suites.split_items
    # WMT22's second references (B) are in the WMT repositories' files only; "first" scores against
    # reference A alone, so a run from the hub's copy (ALMA's) and one from a data root agree.
    references: str = setting("all", "translation scored against all references or the first (reference A, "
                              "as the hub's WMT22 copy holds it)", choices=("all", "first"))
    stop: str = setting(BLANK_LINE, "the string the blank-line cut cuts translations at ('' = no cut)", text=True)
    cut: str = setting(DEFAULT_CUT, "translation's cut: blank-line (at --stop, the published study's) or "
                       "explanation (where RaDis's explanation starts: blank lines inside a translation stay)",
                       choices=tuple(CUTS))
    paragraph_pairs: str = setting("de-en", "the paragraphs suite's directions (WMT23's de-en and en-de "
                                   "segments are whole paragraphs)")
    paragraph_cut: str = setting("explanation", "the paragraphs suite's cut (as --cut; its translations hold "
                                 "blank lines)", choices=tuple(CUTS))
    stop_decoding: bool = setting(True, "stop decoding each translation at the cut; --no-stop decodes to its end "
                                  "and cuts afterwards (the study's published numbers)",
                                  flag="--stop-decoding/--no-stop")
    translate_template: str = setting(prompts.TRANSLATE, "translation instruction template ({src_name}, "
                                      "{tgt_name}, {src}); match training", text=True)
    system: str | None = setting(None, "translation prompts' system prompt (match training)", text=True)
    gsm8k_template: str = setting(general.GSM8K_TEMPLATE, "GSM8K's prompt ({question})", text=True)
    refusal_keywords: list | None = setting(None, "phrases that make an AdvBench answer a refusal; default: the "
                                            "language's own list")
    n_bootstrap: int = setting(1000, "bootstrap resamples of the translation scores (0: none)")
    comet: bool = setting(True, "also score translations with COMET when it is installed")
    judge_url: str | None = setting(None, "OpenAI-compatible server to judge MT-Bench/AlpacaEval (key from "
                                    "RADIS_JUDGE_API_KEY or OPENAI_API_KEY)")
    judge_model: str | None = setting(None, "local MLX model as the judge")
    judge_api_model: str = setting("gpt-4", "model name sent to --judge-url")
    judge_api_key: str | None = setting(None, "the judge server's key (default: RADIS_JUDGE_API_KEY or "
                                        "OPENAI_API_KEY)", cli=False)  # a secret: not a flag
    judge_max_tokens: int = setting(1024, "max new tokens of each judge reply")
    dtype: str = setting("auto", "weights' dtype (auto: float32 on CPU)", choices=bounds.LOAD_DTYPES)
    tcot: str | None = setting(None, "answer through English (TransLLM's TCoT: <EN> query <RESPONSE> answer <DE> "
                               "answer) for this target language, e.g. de")
    tcot_zero_shot: bool = setting(False, "with --tcot, for a model not trained on TCoT: start each answer at "
                                   "<EN> and re-prompt every missing tag")
    nll_batch_tokens: int = setting(2048, "tokens per forward pass when scoring answers' likelihood (retention, kl)")
    kl_top_k: int = setting(64, "the base's most likely tokens kept per answer token by the kl suite (evals/kl.py)")
    progress: bool = setting(True, "progress lines (--quiet: none)", flag="--progress/--quiet")

    def validate(self) -> "EvalConfig":
        """Check every setting but the models (their adapters may not exist yet when a recipe is
        checked); messages start with the setting's name, as settings.build expects."""
        suites.check(self.suites, "suites: ")
        bounds.batch(self)
        bounds.seed(self)
        bounds.limit(self)
        bounds.dtype(self)
        bounds.directions(self)
        bounds.directions(self, "paragraph_pairs")
        bounds.int_in(self, "judge_max_tokens", 1, bounds.MAX_NEW_TOKENS)
        bounds.int_in(self, "n_bootstrap", 0, 10**6)
        bounds.int_in(self, "nll_batch_tokens", 1, 1 << 20)
        for key in ("limits", "max_tokens"):
            per = getattr(self, key)
            bounds.need(isinstance(per, dict), key, f"expected a mapping SUITE: N, got {per!r:.60}")
            for suite, n in per.items():
                suites.get(suite, f"{key}: ")
                hi = bounds.MAX_NEW_TOKENS if key == "max_tokens" else 10**9
                bounds.need(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= hi, f"{key}.{suite}",
                            f"must be a whole number in [1, {hi}], got {n!r:.40}")
        if self.judge_url and self.judge_model:
            raise UserError("judge_url: pass either --judge-url or --judge-model, not both")
        make_cut(self.cut, self.stop), make_cut(self.paragraph_cut, self.stop)
        bounds.need(self.references in ("all", "first"), "references", f"all or first, got {self.references!r:.40}")
        bounds.need(self.split in (None, *suites.SPLITS), "split",
                    f"must be one of {', '.join(suites.SPLITS)}, got {self.split!r:.40}")
        bounds.need(self.adapter_scale is None or math.isfinite(self.adapter_scale), "adapter_scale",
                    f"must be a finite number, got {self.adapter_scale}")
        if self.tcot is not None:
            target_tag(self.tcot)
        elif self.tcot_zero_shot:
            raise UserError("tcot_zero_shot: needs --tcot LANG (the target language)")
        return self


def check_config(cfg: EvalConfig) -> list[ModelSpec]:
    """Check the settings and name every model's run (its folder); loads nothing."""
    cfg.validate()
    specs = name_runs(cfg)
    for s in specs:
        if s.adapter:
            check_adapter_dir(s.adapter)
        if s.scale is not None:
            check_scalable(s.adapter, s.scale)
    return specs


def name_runs(cfg: EvalConfig) -> list[ModelSpec]:
    """The models to evaluate, each with its run's name (its folder under ``out``)."""
    specs = [parse_model_spec(m) for m in (cfg.models or [None])]
    for s in specs:
        if s.scale is None and s.adapter and cfg.adapter_scale is not None:
            s.scale = cfg.adapter_scale
    names = [run_name(s) for s in specs]
    for i, n in enumerate(names):
        if names.count(n) > 1:
            if specs[i].name:
                raise UserError(f"two models are both named {n!r}; give each a distinct name")
            names[i] = f"{n}-{i + 1}"
    for s, n in zip(specs, names):
        s.name = n
    return specs

def run_dirs(cfg: EvalConfig) -> list[Path]:
    """Where each model's results go: what a report reads."""
    return [Path(cfg.out) / s.name for s in name_runs(cfg)]


def output_status(cfg: EvalConfig) -> str:
    """How far an eval into ``cfg.out`` got: "to do", or how many models have results (it resumes)."""
    dirs = run_dirs(cfg)
    have = sum((d / "results.json").exists() for d in dirs)
    return "to do" if not have else f"{have} of {len(dirs)} models have results (resumes)"


def evaluate(cfg: EvalConfig) -> dict:
    """Run every suite on every model; returns ``{run name: results}`` (also saved per run)."""
    specs = check_config(cfg)
    check_out(cfg.out)
    inputs = {s: suites.load_inputs(cfg, s) for s in cfg.suites}  # all data checked before any output or model
    out = check_writable_dir(cfg.out)
    with claim(out):  # one writer per output
        return _evaluate(cfg, specs, out, inputs)


def _evaluate(cfg: EvalConfig, specs: list[ModelSpec], out: Path, inputs: dict) -> dict:
    in_order = specs
    specs = _prepare_bases(cfg, specs, inputs)
    results = {spec.name: evaluate_model(cfg, spec, out, inputs) for spec in specs}
    results = {s.name: results[s.name] for s in in_order}
    if (cfg.judge_url or cfg.judge_model) and {"mtbench", "alpacaeval"} & set(cfg.suites):
        ask = judge.judge_fn(cfg, out / "_judge" / "cache")
        for name, res in results.items():
            judge.judge_run(cfg, out / name, res, ask)
            atomic_write_json(out / name / "results.json", res)
    atomic_write_text(out / "results.md", "# Eval results\n\n" + _table(results.values()))
    return results


def _prepare_bases(cfg: EvalConfig, specs: list[ModelSpec], inputs: dict) -> list[ModelSpec]:
    """Suites that read the base model (retention's answers, kl's top-k) get them computed once: a model
    that is its own base goes first and answers for it while loaded; other bases answer here, before
    any evaluated model is loaded (so two models are never in memory at once)."""
    from ..models import resolve

    need = [s for s in cfg.suites if suites.get(s).base_prep]
    if not need:
        return specs
    specs = sorted(specs, key=lambda s: not retention.is_base(cfg, s))
    selfs = {resolve(retention.base_of(cfg, s)) for s in specs if retention.is_base(cfg, s)}
    for base in dict.fromkeys(retention.base_of(cfg, s) for s in specs):
        if resolve(base) not in selfs:
            for s in need:
                suites.get(s).base_prep(cfg, base, inputs[s], suites.max_tokens(cfg, s))
    return specs


def evaluate_model(cfg: EvalConfig, spec: ModelSpec, out: Path, inputs: dict) -> dict:
    """Every suite on one model; results.json is rewritten after each suite (an interrupted eval resumes)."""
    from ..models import load

    t0 = time.perf_counter()
    run_dir = safe_join(out, spec.name)
    loaded = load(spec.model, spec.adapter, dtype=cfg.dtype, adapter_scale=spec.scale)
    key = model_key(loaded.path, spec.adapter, loaded.dtype, spec.scale)
    res_path = run_dir / "results.json"
    res = read_json(res_path) if res_path.exists() else {}
    if res and res.get("model_key") not in (None, key):
        raise UserError(f"{run_dir}: holds results of another model ({res.get('model')}, adapter "
                        f"{res.get('adapter')}); pass another name or --out")
    res.update(name=spec.name, model=spec.model or loaded.name, model_path=loaded.path, adapter=spec.adapter,
               dtype=loaded.dtype, model_key=key, version=__version__)
    if spec.scale is not None:
        res["adapter_scale"] = spec.scale
    res.setdefault("suites", {})
    stops = {}
    if cfg.stop_decoding:  # a cut that cuts nothing stops nothing (and keeps the cache keys of old runs)
        stops = {s.name: rule for s in suites.registered() if s.cut and (rule := s.cut(cfg)).stop_strings}
    gen = Generator(loaded, key, run_dir / "cache", cfg.batch_size, cfg.seed, spec.name, cfg.progress, stops)
    if cfg.tcot:
        gen = TCoTDecoder(gen, TCoT(cfg.tcot), loaded.tokenizer, cfg.tcot_zero_shot)
    ctx = Ctx(cfg, spec.name, run_dir, loaded, gen, key, spec, {s: suites.max_tokens(cfg, s) for s in cfg.suites})
    gen.many(_first_requests(ctx, inputs))  # every suite's first prompts in one batch; the suites then hit the cache
    for suite in cfg.suites:
        ts = time.perf_counter()
        summary = suites.get(suite).run(ctx, inputs[suite])
        summary.update(settings=suites.suite_settings(cfg, suite), wall_s=round(time.perf_counter() - ts, 2),
                       generated_tokens_this_run=gen.generated_tokens.get(suite, 0))
        if cfg.tcot and suite in getattr(gen, "stats", {}):
            summary["tcot"] = gen.stats[suite]
        res["suites"][suite] = summary
        res["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(res_path, res)
        if cfg.progress:
            log(f"[{spec.name}] {suite}: {suites.get(suite).headline(summary)} ({summary['wall_s']} s)")
    res["wall_s_this_run"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(res_path, res)
    atomic_write_text(run_dir / "results.md", f"# {spec.name}\n\n" + _table([res]))
    return res


def _table(results) -> str:
    """results.json's headline numbers as the report's table (results.py: the report reads them so too)."""
    every = suites.registered()
    return markdown_table([summarize(r, every) for r in results], columns(every))


def _first_requests(ctx: Ctx, inputs: dict) -> list[tuple]:
    """Generation requests for every suite's first prompts; a model that is its own retention base
    also answers the retention prompts for it (into the base's cache)."""
    cfg = ctx.cfg
    based = [s for s in cfg.suites if suites.get(s).base_prep]
    reqs = [(s, suites.first_prompts(ctx, s, inputs[s]), ctx.max_tokens[s]) for s in cfg.suites if s not in based]
    if based and retention.is_base(cfg, ctx.spec):
        where, bkey, _ = retention.retention_dir(cfg, retention.base_of(cfg, ctx.spec))
        if bkey == ctx.key:
            for s in based:  # the base answers (retention's cache), shared by retention and kl
                texts = [prompts.chat(ctx.loaded.tokenizer, r["instruction"]) for r in inputs[s]]
                reqs.append(("retention", texts, ctx.max_tokens[s], where / "cache"))
    return reqs


# ------------------------------------------------------------------ model-free commands

def score_ifeval_responses(prompts_path, responses_path, out) -> dict:
    """Score given IFEval responses (official ``{"prompt","response"}`` or ``{"key","response"}`` JSONL)."""
    try:
        items = ifeval.load_prompts(prompts_path)
        responses = ifeval.read_responses(responses_path)
    except OSError as e:
        raise UserError(str(e)) from None
    out = check_writable_dir(out)
    summary = ifeval.write_results(out, items, responses)
    if summary["n_prompts"] == 0:
        raise UserError(f"{responses_path}: no response matches a prompt of {prompts_path} (by key or prompt text)")
    summary["settings"] = {"data": str(prompts_path), "responses": str(responses_path)}
    atomic_write_json(out / "results.json", {"name": Path(responses_path).stem, "version": __version__,
                                             "suites": {"ifeval": summary}})
    return summary


def ifeval_conformance(data_dir, out=None) -> dict:
    try:
        c = ifeval_conformance_check(data_dir)
    except (ValueError, OSError, KeyError) as e:
        raise UserError(f"{data_dir}: cannot run the IFEval conformance check: {e}") from None
    if out:
        atomic_write_json(check_writable_dir(out) / "ifeval_conformance.json", c)
    return c


def format_conformance(c: dict) -> str:
    return (f"IFEval conformance on {c['n_prompts']} prompts / {c['n_instructions']} instructions: "
            f"instruction agreement strict {c['instruction_agreement_strict']:.4f} loose "
            f"{c['instruction_agreement_loose']:.4f}; prompt agreement strict {c['prompt_agreement_strict']:.4f} "
            f"loose {c['prompt_agreement_loose']:.4f}; {len(c['disagreements'])} differing verdicts")


def format_ifeval_scores(s: dict) -> str:
    return (f"IFEval on {s['n_prompts']} prompts ({s['n_missing']} without a response): prompt strict "
            f"{s['prompt_level_strict']:.4f} loose {s['prompt_level_loose']:.4f}; instruction strict "
            f"{s['instruction_level_strict']:.4f} loose {s['instruction_level_loose']:.4f}")
