"""The `radis-mlx` command line: a thin Typer layer over the stage functions."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import methods as M, settings
from .evals import suites as registry
from .evals.harness import EvalConfig
from .evals.translate_suite import TranslateSuiteConfig
from .generate.stage import GenerateConfig
from .fileio import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RaDis on MLX: rationale distillation makes a chat LLM a better translator "
                       "without forgetting how to chat, follow instructions and refuse harm.")

ModelOpt = typer.Option(None, "--model", "-m", help="Hugging Face id, mlx-lm directory, .gguf file or an "
                        "offline model's short name (radis-mlx models; default: smollm2-135m)")


def _default(cls, name: str):
    """A config field's default, shown by --help: the dataclass is the one place it is stated."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


@app.command()
def info(measure: bool = typer.Option(True, help="measure float32 matmul GFLOP/s")):
    """Platform, MLX version and device, the BLAS in use, and measured matmul speed."""
    from .backend import info as backend_info
    for k, v in backend_info(measure).items():
        typer.echo(f"{k:28s} {v}")


@app.command()
def convert(gguf: Path = typer.Option(..., "--gguf", help="GGUF file (llama, qwen2, qwen3, gemma3)"),
            out: Path = typer.Option(..., "--out", help="output mlx-lm model directory"),
            dtype: str = typer.Option("keep", help="keep (quantized; K-quants requantized to MLX 8-bit) | "
                                                   "float32 | float16 | bfloat16"),
            overwrite: bool = typer.Option(False, help="replace an existing output directory")):
    """Convert a GGUF file into an mlx-lm model directory (mlx_lm.load / mlx_lm.generate open it)."""
    from .models.gguf import convert_gguf, requantized_note
    from .outdir import check_out
    check_out(out)
    if dtype not in ("keep", "float32", "float16", "bfloat16"):
        raise UserError(f"--dtype {dtype}: choose keep, float32, float16 or bfloat16")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    convert_gguf(gguf, out, dtype=dtype)
    note = requantized_note(out)
    typer.echo(f"wrote {out}" + (f" ({note})" if note else ""))


@app.command()
def export(gguf: Path = typer.Option(..., "--gguf", help="GGUF file to write (for llama.cpp, Ollama, LM Studio)"),
           model: Optional[str] = ModelOpt,
           adapter: Optional[str] = typer.Option(None, "--adapter", help="adapter dir (finetune's --out) to fuse in"),
           type_: str = typer.Option("f16", "--type", help="f16 | q8_0"),
           overwrite: bool = typer.Option(False, help="replace an existing GGUF file")):
    """Fuse the adapters into the model and write one GGUF file (llama, qwen2) with its tokenizer and
    chat template, and an Ollama Modelfile beside it that stops where eval cuts."""
    from .models.gguf_export import export_gguf
    from .outdir import check_out
    check_out(gguf, "--gguf")
    method = M.trained_method(adapter) if adapter else None  # from the adapter's own run files
    out = export_gguf(model, adapter, gguf, type_, overwrite=overwrite,
                      stops=lambda tok: M.runtime_stops(tok, method))
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.0f} MB, {type_}) and {out.with_name('Modelfile')} "
               f"(stops for {method or 'no trained method'})")


@app.command(name="models")
def models_(as_json: bool = typer.Option(False, "--json", help="print the list as JSON")):
    """The offline models (short names for --model): what they are, the pip packages, whether installed."""
    import json
    from .models import format_models, list_models
    rows = list_models()
    typer.echo(json.dumps(rows, indent=2) if as_json else format_models(rows), nl=as_json)


@app.command(name="methods")
def methods_():
    """The training methods and generate modes: what each generates, trains on and mixes in."""
    typer.echo(M.describe())


@app.command()
def generate(
    data: str = typer.Option(..., "--data", "-d", help="ALMA JSON/JSONL, WMT source file or dir, JSONL "
                             "(src/ref/src_lang/tgt_lang), instruction file (replay), or a HF dataset id"),
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL (resumes if it exists)"),
    mode: str = typer.Option(_default(GenerateConfig, "mode"), help=M.modes_help()),
    model: Optional[str] = ModelOpt,
    teacher: Optional[str] = typer.Option(None, help="generate with this model instead (teacher ablation)"),
    pairs: Optional[str] = typer.Option(None, help="directions, e.g. de-en,en-de"),
    ref: Optional[str] = typer.Option(None, help="reference file, when --data is a plain-text source file"),
    split: str = typer.Option(_default(GenerateConfig, "split"), help="split for ALMA dirs / HF datasets"),
    limit: Optional[int] = typer.Option(None, help="sample N rows (reproducible with --seed)"),
    seed: int = typer.Option(_default(GenerateConfig, "seed")),
    max_tokens: int = typer.Option(_default(GenerateConfig, "max_tokens"), help="max new tokens per row"),
    temperature: float = typer.Option(_default(GenerateConfig, "temperature"), help="0 = greedy (deterministic)"),
    top_p: float = typer.Option(_default(GenerateConfig, "top_p")),
    batch_size: int = typer.Option(_default(GenerateConfig, "batch_size"), help="sequences decoded together"),
    workers: int = typer.Option(_default(GenerateConfig, "workers"), help="local processes sharing the rows "
                                "(CPU); 0: one per core when there are 64+ rows and memory for a model each"),
    template: Optional[str] = typer.Option(None, help="translation instruction template ({src_name}, "
                                           "{tgt_name}, {src})"),
    explain_template: Optional[str] = typer.Option(None, help="explain-mode user prompt ({instruction}, {ref})"),
    system: Optional[str] = typer.Option(None, help="system prompt"),
    thinking: bool = typer.Option(False, help="leave thinking on for thinking-capable templates"),
    min_tokens: int = typer.Option(_default(GenerateConfig, "min_tokens"), help="reject shorter outputs"),
    max_len: Optional[int] = typer.Option(None, help="reject outputs longer than this many tokens"),
    max_repeat: float = typer.Option(_default(GenerateConfig, "max_repeat"),
                                     help="reject when this share of 4-grams repeat"),
    unfinished: str = typer.Option(_default(GenerateConfig, "unfinished"),
                                   help="outputs that hit --max-tokens: keep | trim | drop"),
    ratio: float = typer.Option(_default(GenerateConfig, "ratio"),
                                help="keep rationales for this seeded fraction of rows"),
    dtype: str = typer.Option(_default(GenerateConfig, "dtype"),
                              help="auto (float32 on CPU) | keep | float32 | float16 | bfloat16"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
    tcot_lang: str = typer.Option(_default(GenerateConfig, "tcot_lang"), help="--mode tcot: the target language"),
    translator: Optional[str] = typer.Option(None, help="--mode tcot: MODEL[,adapter=DIR] that translates "
                                             "(default: the model itself)"),
    auto_probe_rows: int = typer.Option(16, help="--mode rationale-auto: try continuation on this many first rows"),
    auto_min_yield: float = typer.Option(0.5, help="--mode rationale-auto: keep continuation when this share of "
                                         "them gets a rationale"),
):
    """Stage 1: self-rationales (RaDis) or the baselines' self-generated targets, as JSONL."""
    flags = dict(locals())  # before the imports
    from .generate import format_summary, generate as run_generate
    flags.update(out=str(out), translate_template=flags.pop("template"))
    cfg = settings.build(GenerateConfig, [(settings.FLAGS, {k: v for k, v in flags.items() if v is not None})])
    summary = run_generate(cfg)
    if summary:
        typer.echo(format_summary(summary))


@app.command()
def finetune(
    data: Optional[str] = typer.Option(None, "--data", "-d", help="generate's JSONL (radis/seqkd/sdft/replay "
                                       "rows), or parallel data for --method sft"),
    out: Optional[str] = typer.Option(None, "--out", "-o", help="run directory (default runs/finetune)"),
    model: Optional[str] = ModelOpt,
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file of settings (flags override it)"),
    method: Optional[str] = typer.Option(None, help=" | ".join(M.trained()) + f" (default {M.DEFAULT_METHOD})"),
    adapter_path: Optional[str] = typer.Option(None, help="start from these adapters"),
    pairs: Optional[str] = typer.Option(None, help="directions of plain parallel data, e.g. de-en"),
    replay_data: Optional[str] = typer.Option(None, help="generate's replay JSONL (or instruction+output rows)"),
    replay_ratio: Optional[float] = typer.Option(None, help="share of each epoch from --replay-data/--mix-data"),
    mix_data: Optional[str] = typer.Option(None, help="second dataset for --method mix"),
    separator: Optional[str] = typer.Option(None, help="between reference and explain-mode rationale"),
    template: Optional[str] = typer.Option(None, help="translation instruction template (as in generate)"),
    system: Optional[str] = typer.Option(None, help="system prompt (as in generate)"),
    fine_tune_type: Optional[str] = typer.Option(None, help="lora | dora | full"),
    lora: bool = typer.Option(False, "--lora", help="= --fine-tune-type lora"),
    dora: bool = typer.Option(False, "--dora", help="= --fine-tune-type dora"),
    full: bool = typer.Option(False, "--full", help="= --fine-tune-type full"),
    lora_rank: Optional[int] = typer.Option(None),
    lora_scale: Optional[float] = typer.Option(None),
    lora_dropout: Optional[float] = typer.Option(None),
    num_layers: Optional[int] = typer.Option(None, help="train the last N blocks (-1: all)"),
    lora_keys: Optional[str] = typer.Option(None, help="comma-separated module keys, e.g. self_attn.q_proj,"
                                            "self_attn.v_proj (default: every linear layer)"),
    train_embeddings: Optional[bool] = typer.Option(None, "--train-embeddings/--no-train-embeddings",
                                                    help="also train embed_tokens/lm_head in full (TransLLM); "
                                                    "saved as OUT/embeddings.safetensors (mlx-lm: use --fuse)"),
    w_ref: Optional[float] = typer.Option(None, help="loss weight of reference (and end-of-turn) tokens"),
    w_rat: Optional[float] = typer.Option(None, help="loss weight of rationale tokens"),
    normalize: Optional[str] = typer.Option(None, help="tokens | segments"),
    optimizer: Optional[str] = typer.Option(None, help="adamw | adam | sgd | adafactor | lion | muon"),
    lr: Optional[float] = typer.Option(None, "--lr", "--learning-rate"),
    lr_min: Optional[float] = typer.Option(None, help="cosine decay floor"),
    schedule: Optional[str] = typer.Option(None, help="cosine | constant"),
    warmup: Optional[int] = typer.Option(None, help="linear warm-up steps"),
    weight_decay: Optional[float] = typer.Option(None),
    max_grad_norm: Optional[float] = typer.Option(None, help="clip the gradient norm (0: off)"),
    grad_accum: Optional[int] = typer.Option(None, help="batches per optimizer step"),
    grad_checkpoint: Optional[bool] = typer.Option(None, "--grad-checkpoint/--no-grad-checkpoint"),
    memory_limit_gb: Optional[float] = typer.Option(None, help="stop at the first step whose peak memory is over "
                                                    "this (default: on Metal, the GPU's working set)"),
    batch_size: Optional[int] = typer.Option(None),
    epochs: Optional[float] = typer.Option(None),
    iters: Optional[int] = typer.Option(None, help="optimizer steps (overrides --epochs)"),
    max_seq_len: Optional[int] = typer.Option(None, help="longer rows lose rationale tokens, then are dropped"),
    pad_multiple: Optional[int] = typer.Option(None),
    bucket: Optional[int] = typer.Option(None, help="batches per length-sorted bucket"),
    seed: Optional[int] = typer.Option(None),
    val_data: Optional[str] = typer.Option(None),
    val_fraction: Optional[float] = typer.Option(None, help="hold out this share of --data for validation"),
    val_batch_size: Optional[int] = typer.Option(None),
    steps_per_eval: Optional[int] = typer.Option(None),
    steps_per_report: Optional[int] = typer.Option(None),
    save_every: Optional[int] = typer.Option(None, help="checkpoint every N steps (0: only at the end)"),
    keep_checkpoints: Optional[int] = typer.Option(None),
    best_metric: Optional[str] = typer.Option(None, help="val_loss | val_ref_loss"),
    dtype: Optional[str] = typer.Option(None, help="auto (float32 on CPU) | keep | float32 | float16 | bfloat16"),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile"),
    slice_head: Optional[bool] = typer.Option(None, "--slice-head/--no-slice-head"),
    fuse: Optional[bool] = typer.Option(None, "--fuse/--no-fuse", help="also write OUT/fused (a full model)"),
    fuse_bits: Optional[int] = typer.Option(None, help="quantize the fused layers to 4 or 8 bits (default: keep "
                                            "them in float; 4 bits can erase the adapters)"),
    resume: Optional[bool] = typer.Option(None, "--resume/--no-resume", help="continue a stopped run in --out"),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite/--no-overwrite", help="replace --out"),
    quiet: Optional[bool] = typer.Option(None, "--quiet/--no-quiet"),
    trust_remote_code: Optional[bool] = typer.Option(None, "--trust-remote-code/--no-trust-remote-code"),
    report_to: Optional[str] = typer.Option(None, help="experiment trackers, e.g. wandb,tensorboard (offline, "
                                            "logs in --out; pip install 'radis-mlx[tracking]')"),
    project_name: Optional[str] = typer.Option(None, help="W&B project (default radis-mlx)"),
    yes: Optional[bool] = typer.Option(None, "--yes", help="allow a run of more optimizer steps than a day's "
                                       "worth (see bounds.MAX_ITERS)"),
):
    """Stage 2: fine-tune (LoRA/DoRA/full) with the RaDis weighted loss or a baseline target."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "lora", "dora", "full")}  # before imports
    from .outdir import claim_if_main
    from .tuner.config import fine_tune_type_flag, load_config
    flags["fine_tune_type"] = fine_tune_type_flag(fine_tune_type, lora=lora, dora=dora, full=full)
    cfg = load_config(config, settings.FLAGS, **flags)
    try:
        with claim_if_main(cfg.out):  # before the trainer's import: mlx-lm imports W&B, which makes temp folders
            from .tuner import finetune as run_finetune, format_summary
            summary = run_finetune(cfg)  # an OSError (disk full, permissions) is main's one line
    except KeyboardInterrupt:
        typer.echo(f"interrupted: rerun with --resume --out {cfg.out} to continue from the last checkpoint",
                   err=True)
        raise typer.Exit(130)
    typer.echo(format_summary(summary))


@app.command(name="eval")
def eval_(
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="model to evaluate (repeatable): hub "
                                              "id, mlx-lm dir, .gguf, offline short name, or "
                                              "name=MODEL[,adapter=DIR] (default: smollm2-135m)"),
    adapter: Optional[List[str]] = typer.Option(None, "--adapter", help="adapter dir for the --model at the same "
                                                "position ('-' for none); one model + N adapters = N runs"),
    name: Optional[List[str]] = typer.Option(None, "--name", help="run name for the model at the same position"),
    adapter_scale: Optional[float] = typer.Option(None, help="evaluate base + A x each LoRA adapter's delta "
                                                  "(0 = the base, 1 = as trained); runs are named NAME@A"),
    suites: str = typer.Option(",".join(_default(EvalConfig, "suites")),
                               help=f"comma list of {', '.join(registry.names())}"),
    split: Optional[str] = typer.Option(None, help="dev | test: a fixed seeded part of each general suite's "
                                        "items, dev never overlapping test (default: all items)"),
    test_data: Optional[List[str]] = typer.Option(None, "--test-data", help="SUITE=PATH (repeatable), or a data "
                                                  "root laid out like ../shared/data"),
    pairs: Optional[str] = typer.Option(None, help="translation directions, e.g. de-en,en-de"),
    references: Optional[str] = typer.Option(None, help="translation scored against all references (default) or "
                                             "the first (reference A, as the hub's WMT22 copy holds it)"),
    limit: Optional[List[str]] = typer.Option(None, help="N or SUITE=N: sample N items per suite (per direction)"),
    seed: int = typer.Option(_default(EvalConfig, "seed")),
    max_tokens: Optional[List[str]] = typer.Option(None, help="N or SUITE=N: max new tokens"),
    batch_size: int = typer.Option(_default(EvalConfig, "batch_size"), help="sequences decoded together"),
    base_model: Optional[str] = typer.Option(None, help="retention base model (default: each model without "
                                             "its adapter)"),
    stop: str = typer.Option("\\n\\n", help="cut translations at this string ('' = no cut; \\n allowed)"),
    cut: str = typer.Option("blank-line", help="translation's cut: blank-line (at --stop, the published study's) | "
                            "explanation (where RaDis's explanation starts: blank lines inside a translation stay)"),
    paragraph_cut: str = typer.Option("explanation", help="the paragraphs suite's cut (as --cut)"),
    no_stop: bool = typer.Option(False, "--no-stop", help="decode every translation to its end and cut afterwards "
                                 "(the study's published numbers) instead of stopping at the cut"),
    responses: Optional[Path] = typer.Option(None, help="score these IFEval responses (JSONL with "
                                             "prompt/key + response) instead of generating"),
    ifeval_conformance: bool = typer.Option(False, "--ifeval-conformance", help="agreement of our IFEval "
                                            "checker with the official verdicts in the ifeval data folder"),
    judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server to judge MT-Bench/AlpacaEval "
                                            "(key from RADIS_JUDGE_API_KEY or OPENAI_API_KEY)"),
    judge_api_model: str = typer.Option(_default(EvalConfig, "judge_api_model"), help="model name sent to --judge-url"),
    judge_model: Optional[str] = typer.Option(None, help="local MLX model as the judge"),
    judge_max_tokens: int = typer.Option(_default(EvalConfig, "judge_max_tokens"),
                                         help="max new tokens of each judge reply"),
    dtype: str = typer.Option(_default(EvalConfig, "dtype"),
                              help="auto (float32 on CPU) | keep | float32 | float16 | bfloat16"),
    tcot: Optional[str] = typer.Option(None, help="answer through English (TransLLM's TCoT: <EN> query "
                                       "<RESPONSE> answer <DE> answer) for this target language, e.g. de"),
    tcot_zero_shot: bool = typer.Option(False, "--tcot-zero-shot", help="with --tcot, for a model not trained on "
                                        "TCoT: start each answer at <EN> and re-prompt every missing tag"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output directory (one folder per model)"),
):
    """Stage 3: translation quality and general-ability retention."""
    from .evals import harness
    from .evals.flags import model_specs, parse_per_suite, parse_test_data, unescape

    suite_list = registry.check([s.strip() for s in suites.split(",") if s.strip()], "--suites: ")
    data = parse_test_data(test_data, suite_list)
    if ifeval_conformance or responses:
        return _ifeval_only(data, suite_list, ifeval_conformance, responses, out)
    if out is None:
        raise UserError("pass --out DIR for the results")
    specs = model_specs(model, adapter, name)
    if adapter_scale is not None and not any(s.adapter for s in specs):
        raise UserError(f"--adapter-scale {adapter_scale:g} needs an adapter (--adapter DIR) to scale")
    lim, limits = parse_per_suite(limit, "limit")
    default_mt, mts = parse_per_suite(max_tokens, "max-tokens")
    if default_mt is not None:
        mts = {**{s: default_mt for s in registry.names()}, **mts}
    specs = model_specs(model, adapter, name)
    if adapter_scale is not None and not any(s.adapter for s in specs):
        raise UserError(f"--adapter-scale {adapter_scale:g} needs an adapter (--adapter DIR) to scale")
    flags = dict(out=str(out), suites=suite_list, test_data=data, pairs=pairs, limit=lim, limits=limits, seed=seed,
                 max_tokens=mts, batch_size=batch_size, base_model=base_model, stop=unescape(stop), cut=cut,
                 paragraph_cut=paragraph_cut, stop_decoding=not no_stop, adapter_scale=adapter_scale, split=split,
                 references=references,
                 judge_url=judge_url, judge_model=judge_model, judge_api_model=judge_api_model,
                 judge_max_tokens=judge_max_tokens, dtype=dtype, tcot=tcot, tcot_zero_shot=tcot_zero_shot)
    cfg = settings.build(EvalConfig, [(settings.FLAGS, {k: v for k, v in flags.items() if v is not None})],
                         fixed=dict(models=specs))
    results = harness.evaluate(cfg)
    from .report import markdown_table, summarize
    typer.echo(markdown_table([summarize(r) for r in results.values()]), nl=False)
    typer.echo(f"results: {out}/<run>/results.json, table: {out}/results.md")


def _ifeval_only(data: dict, suite_list: list, conformance: bool, responses, out) -> None:
    """eval --ifeval-conformance / --responses: IFEval's checker without a model."""
    from .evals import harness

    if conformance:
        src = data.get("root") or (str(Path(data["ifeval"]).parent) if "ifeval" in data else None)
        if not src:
            raise UserError("--ifeval-conformance needs --test-data DATA_ROOT or ifeval=PATH")
        typer.echo(harness.format_conformance(harness.ifeval_conformance(src, out)))
    if responses:
        if suite_list != ["ifeval"]:
            raise UserError("--responses scores IFEval only: pass --suites ifeval")
        if out is None:
            raise UserError("--responses needs --out DIR")
        s = harness.score_ifeval_responses(registry.suite_path(harness.EvalConfig(test_data=data), "ifeval"),
                                           responses, out)
        typer.echo(f"{harness.format_ifeval_scores(s)} -> {out}/eval_results_strict.jsonl, eval_results_loose.jsonl")


@app.command()
def report(runs: List[Path] = typer.Argument(..., help="eval run dirs (or an eval --out dir, or results.json "
                                             "files)"),
           out: Path = typer.Option(..., "--out", "-o", help="where report.md, report.json, tradeoff.png go"),
           html: bool = typer.Option(True, "--html/--no-html", help="also write report.html: one self-contained "
                                     "page with the table, the plots and every item run by run, filterable"),
           baselines: str = typer.Option("sft,radis", help="methods the paired tests compare every other method "
                                         "with (comma-separated; runs METHOD or METHOD-sN)")):
    """One table and a translation-vs-general-ability plot across eval runs."""
    from .outdir import check_out
    from .report import markdown_table, report as make_report
    check_out(out)
    r = make_report(runs, out, html=html, baselines=[b.strip() for b in baselines.split(",") if b.strip()])
    typer.echo(markdown_table(r["runs"]), nl=False)
    for n in r["notes"]:
        typer.echo(f"note: {n}")
    typer.echo(f"wrote {out}/report.md, report.json, tradeoff.png" + (", report.html" if html else ""))


@app.command()
def run(recipe: str = typer.Argument(..., help="recipe YAML (or a name in recipes/, e.g. demo)"),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="run directory (default runs/<name>)"),
        set_: Optional[List[str]] = typer.Option(None, "--set", help="override a recipe key: key.sub=value"),
        data_root: Optional[str] = typer.Option(None, help="read the recipe's data from local copies under "
                                                "this folder (e.g. ../shared/data) instead of the hub"),
        only: Optional[str] = typer.Option(None, help="run only these of the recipe's methods: names or "
                                           "patterns, comma-separated (e.g. 'base,*-s0': every first seed)"),
        quiet: bool = typer.Option(False, help="no progress lines"),
        check: bool = typer.Option(False, "--check", help="check every setting and print the plan (stages, "
                                   "their files, what is done, estimated memory) without running anything"),
        fit_for: Optional[str] = typer.Option(None, help="check memory for this machine (here, the default), "
                                              "another (mac-16gb, mac-32gb, cpu-64gb), or not at all (off)"),
        yes: bool = typer.Option(False, "--yes", help="allow finetune runs longer than a day's worth of steps")):
    """Run a recipe: generate -> finetune -> eval -> report for every method; resumes where it stopped."""
    from .pipeline import format_plan, load_recipe, only_methods, run as run_recipe
    r = load_recipe(recipe, set_ or [], data_root)
    r["_yes"] = yes
    if only:
        r = only_methods(r, only)
    out = out or Path("runs") / str(r.get("name") or Path(recipe).stem)
    res = run_recipe(r, out, progress=not quiet, check=check, fit_for=fit_for)
    if check:
        typer.echo(format_plan(r, out, res["plan"], res["target"]))
        typer.echo(f"sources:\n{res['sources']}")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="run directory"),
         set_: Optional[List[str]] = typer.Option(None, "--set", help="override a recipe key: key.sub=value")):
    """The offline end-to-end demo (recipes/demo.yaml): base vs SFT vs RaDis on SmolLM2-135M."""
    from .pipeline import load_recipe, run as run_recipe
    run_recipe(load_recipe("demo", set_ or []), out)
    typer.echo((out / "report" / "report.md").read_text())


@app.command()
def translate(
    input_: Optional[str] = typer.Argument(None, metavar="[INPUT]", help="text file (one segment per line, blank "
                                           "lines kept), JSONL with 'src' (.jsonl), or - / nothing for stdin"),
    model: Optional[str] = ModelOpt,
    adapter: Optional[str] = typer.Option(None, "--adapter", help="adapter dir (finetune's --out)"),
    src: str = typer.Option("de", "--src", help="source language code"),
    tgt: str = typer.Option("en", "--tgt", help="target language code"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output file (default stdout); with --out a "
                                       "killed run resumes (OUT.cache/)"),
    batch_size: int = typer.Option(32, help="segments decoded together"),
    max_tokens: int = typer.Option(512, help="max new tokens per segment"),
    cut: str = typer.Option("explanation", help="where a translation ends: explanation (where an appended "
                            "explanation starts) | blank-line"),
    no_stop: bool = typer.Option(False, "--no-stop", help="decode to the end of turn and cut afterwards"),
    dtype: str = typer.Option("auto", help="auto (float32 on CPU) | keep | float32 | float16 | bfloat16")):
    """Translate your own text with a model (+ adapters), stopping where the translation ends."""
    from .translating import TranslateConfig, translate_file
    s = translate_file(TranslateConfig(input=input_, out=str(out) if out else None, model=model, adapter=adapter,
                                       src=src, tgt=tgt, batch_size=batch_size, max_tokens=max_tokens, cut=cut,
                                       stop=not no_stop, dtype=dtype))
    if out:
        typer.echo(f"{s['segments']} segments ({s['lines']} lines) of {s['input']} -> {s['out']}", err=True)


@app.command(name="translate-suite")
def translate_suite(
    suite: str = typer.Option(..., help="advbench | alpacaeval | mtbench | gsm8k"),
    lang: str = typer.Option(_default(TranslateSuiteConfig, "lang"), help="target language code"),
    translator: Optional[str] = typer.Option(None, help="MODEL[,adapter=DIR] that translates (default: the "
                                             "offline default model)"),
    test_data: Optional[List[str]] = typer.Option(None, "--test-data", help="SUITE=PATH, or a data root laid out "
                                                  "like ../shared/data"),
    limit: Optional[int] = typer.Option(None, help="sample this many items (seeded, as eval samples)"),
    seed: int = typer.Option(_default(TranslateSuiteConfig, "seed")),
    batch_size: int = typer.Option(_default(TranslateSuiteConfig, "batch_size")),
    max_tokens: int = typer.Option(_default(TranslateSuiteConfig, "max_tokens"),
                                   help="max new tokens per translated paragraph"),
    out: Path = typer.Option(..., "--out", "-o", help="folder for SUITE.LANG.jsonl, its summary and cache")):
    """An English suite's prompts translated by a named model, for eval in the target language."""
    flags = dict(locals())  # before the imports
    from .evals.flags import parse_test_data
    from .evals.translate_suite import format_summary, translate_suite as run_translate
    flags.update(out=str(out), test_data=None)
    cfg = settings.build(TranslateSuiteConfig, [(settings.FLAGS, {k: v for k, v in flags.items() if v is not None})])
    cfg.test_data = parse_test_data(test_data, [suite])  # a file check: after the settings'
    s = run_translate(cfg)
    typer.echo(f"{format_summary(s)}; evaluate with --test-data {suite}={s['out']}")


# What str.splitlines breaks a line at: a path or value from the user holding one must not turn the
# one-line error into several.
_BREAKS = {c: repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


def one_line(text: str) -> str:
    return str(text).translate(str.maketrans(_BREAKS))


def main(argv: Optional[List[str]] = None) -> None:
    from .backend import maybe_reexec_with_openblas
    if argv is None:
        maybe_reexec_with_openblas()
    try:
        rc = app(args=argv, prog_name="radis-mlx", standalone_mode=False)
        if isinstance(rc, int) and rc:  # click returns typer.Exit's code when not standalone
            sys.exit(rc)
    except UserError as e:
        typer.echo(f"error: {one_line(e)}", err=True)
        sys.exit(2)
    except OSError as e:  # disk full, permissions: say it in one line; finished work is already saved
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        typer.echo(f"error: {one_line(f'{where}{e.strerror or e}')}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is saved; re-run the same command to resume", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if hasattr(e, "format_message") and hasattr(e, "exit_code"):  # click's usage errors (typer vendors click)
            # One line, as every other bad input: click's own show() prints four.
            ctx = getattr(e, "ctx", None)
            hint = f" (radis-mlx {ctx.command_path.split(' ', 1)[-1]} --help)" if ctx and " " in ctx.command_path \
                else " (radis-mlx --help)"
            typer.echo(f"error: {one_line(' '.join(e.format_message().split()))}{hint}", err=True)
            sys.exit(e.exit_code if e.exit_code else 2)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise

if __name__ == "__main__":
    main()
