"""The `radis-mlx` command line: a thin Typer layer over the stage functions."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from . import methods as M, settings
from .cli_options import Given, from_config
from .evals.harness import EvalConfig
from .evals.translate_suite import TranslateSuiteConfig
from .fileio import UserError
from .generate.config import GenerateConfig
from .translating import TranslateConfig
from .tuner.config import FinetuneConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RaDis on MLX: rationale distillation makes a chat LLM a better translator "
                       "without forgetting how to chat, follow instructions and refuse harm.")

ModelOpt = typer.Option(None, "--model", "-m", help=settings.MODEL_HELP)
SHORT = {"data": "-d", "out": "-o", "model": "-m"}  # the short flags of the stages' common settings


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
@from_config(GenerateConfig, aliases=SHORT, old_flags=("template",))
def generate(given: Given):
    """Stage 1: self-rationales (RaDis) or the baselines' self-generated targets, as JSONL."""
    from .generate import format_summary, generate as run_generate
    summary = run_generate(given.build())
    if summary:
        typer.echo(format_summary(summary))


@app.command()
@from_config(FinetuneConfig, aliases={**SHORT, "lr": "--learning-rate"}, old_flags=("template",))
def finetune(given: Given,
             lora: bool = typer.Option(False, "--lora", help="= --fine-tune-type lora"),
             dora: bool = typer.Option(False, "--dora", help="= --fine-tune-type dora"),
             full: bool = typer.Option(False, "--full", help="= --fine-tune-type full")):
    """Stage 2: fine-tune (LoRA/DoRA/full) with the RaDis weighted loss or a baseline target."""
    from .outdir import claim_if_main
    from .tuner.config import fine_tune_type_flag
    picked = fine_tune_type_flag(given.flags.get("fine_tune_type"), lora=lora, dora=dora, full=full)
    if picked:
        given.flags["fine_tune_type"] = picked
    cfg = given.build()
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
@from_config(EvalConfig, aliases={"out": "-o"}, skip=("models", "limits"), required=("out",))
def eval_(given: Given,
          model: Optional[List[str]] = typer.Option(None, "--model", "-m", help="model to evaluate (repeatable): hub "
                                                    "id, mlx-lm dir, .gguf, offline short name, or "
                                                    "name=MODEL[,adapter=DIR] (default: smollm2-135m)"),
          adapter: Optional[List[str]] = typer.Option(None, "--adapter", help="adapter dir for the --model at the "
                                                      "same position ('-' for none); one model + N adapters = N runs"),
          name: Optional[List[str]] = typer.Option(None, "--name", help="run name for the model at the same position"),
          test_data: Optional[List[str]] = typer.Option(None, "--test-data"),
          limit: Optional[List[str]] = typer.Option(None, help="N or SUITE=N: sample N items per suite (per "
                                                    "direction), seeded"),
          max_tokens: Optional[List[str]] = typer.Option(None, help="N or SUITE=N: max new tokens"),
          responses: Optional[Path] = typer.Option(None, help="score these IFEval responses (JSONL with "
                                                   "prompt/key + response) instead of generating"),
          ifeval_conformance: bool = typer.Option(False, "--ifeval-conformance", help="agreement of our IFEval "
                                                  "checker with the official verdicts in the ifeval data folder")):
    """Stage 3: translation quality and general-ability retention."""
    from .evals import harness
    from .evals.context import parse_model_spec
    from .evals.flags import model_specs, parse_test_data
    _eval_flags(given.flags, limit, max_tokens)
    scoring_only = ifeval_conformance or responses  # IFEval's checker alone: --out is optional
    cfg = given.build(dict(models=model_specs(model, adapter, name)) if model or adapter or name else None,
                      required=not scoring_only)
    if test_data:
        cfg.test_data = parse_test_data(test_data, cfg.suites)  # a file check: after the settings'
    if scoring_only:
        return _ifeval_only(cfg, ifeval_conformance, responses, cfg.out if given.has("out") else None)
    if cfg.adapter_scale is not None and not any(parse_model_spec(m).adapter for m in cfg.models):
        raise UserError(f"--adapter-scale {cfg.adapter_scale:g} needs an adapter (--adapter DIR) to scale")
    results = harness.evaluate(cfg)
    from .report import markdown_table, summarize
    typer.echo(markdown_table([summarize(r) for r in results.values()]), nl=False)
    typer.echo(f"results: {cfg.out}/<run>/results.json, table: {cfg.out}/results.md")


def _eval_flags(flags: dict, limit, max_tokens) -> None:
    """eval's flags that hold more than their setting: --suites checked first (--test-data reads by
    suite), --limit N|SUITE=N (limit and limits), --max-tokens N|SUITE=N (N: every suite)."""
    from .evals import suites as registry
    from .evals.flags import parse_per_suite

    if "suites" in flags:
        flags["suites"] = registry.check([s.strip() for s in flags["suites"].split(",") if s.strip()], "--suites: ")
    if limit:
        flags["limit"], flags["limits"] = parse_per_suite(limit, "limit")
    if max_tokens:
        default, per = parse_per_suite(max_tokens, "max-tokens")
        flags["max_tokens"] = {**dict.fromkeys(registry.names() if default is not None else (), default), **per}


def _ifeval_only(cfg, conformance: bool, responses, out) -> None:
    """eval --ifeval-conformance / --responses: IFEval's checker without a model."""
    from .evals import harness, suites as registry

    data = cfg.test_data
    if conformance:
        src = data.get("root") or (str(Path(data["ifeval"]).parent) if "ifeval" in data else None)
        if not src:
            raise UserError("--ifeval-conformance needs --test-data DATA_ROOT or ifeval=PATH")
        typer.echo(harness.format_conformance(harness.ifeval_conformance(src, out)))
    if responses:
        if cfg.suites != ["ifeval"]:
            raise UserError("--responses scores IFEval only: pass --suites ifeval")
        if out is None:
            raise UserError("--responses needs --out DIR")
        s = harness.score_ifeval_responses(registry.suite_path(cfg, "ifeval"), responses, out)
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
@from_config(TranslateConfig, aliases={"model": "-m", "out": "-o"})
def translate(given: Given,
              input_: Optional[str] = typer.Argument(None, metavar="[INPUT]")):
    """Translate your own text with a model (+ adapters), stopping where the translation ends."""
    from .translating import translate_file
    if input_ is not None:
        given.flags["input"] = input_
    cfg = given.build()
    s = translate_file(cfg)
    if cfg.out:
        typer.echo(f"{s['segments']} segments ({s['lines']} lines) of {s['input']} -> {s['out']}", err=True)


# TranslateSuiteConfig's help, until evals/translate_suite.py states it beside its fields.
_TRANSLATE_SUITE_HELP = dict(
    suite="the English suite to translate", lang="target language code",
    translator="MODEL[,adapter=DIR] that translates (default: the offline default model)",
    test_data="SUITE=PATH, or a data root laid out like ../shared/data",
    limit="sample this many items (seeded, as eval samples)", seed="seed of the sampling",
    out="folder for SUITE.LANG.jsonl, its summary and cache", batch_size="paragraphs translated together",
    max_tokens="max new tokens per translated paragraph", dtype="the translator's dtype (auto: float32 on CPU)")


@app.command(name="translate-suite")
@from_config(TranslateSuiteConfig, aliases={"out": "-o"}, skip=("progress",), required=("suite", "out"),
             help=_TRANSLATE_SUITE_HELP)
def translate_suite(given: Given, test_data: Optional[List[str]] = typer.Option(None, "--test-data")):
    """An English suite's prompts translated by a named model, for eval in the target language."""
    from .evals.flags import parse_test_data
    from .evals.translate_suite import format_summary, translate_suite as run_translate
    cfg = given.build()
    cfg.test_data = parse_test_data(test_data, [cfg.suite]) if test_data else cfg.test_data or {}
    s = run_translate(cfg)  # parse_test_data above: a file check, after the settings'
    typer.echo(f"{format_summary(s)}; evaluate with --test-data {cfg.suite}={s['out']}")


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
