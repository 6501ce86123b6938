"""The `radis-mlx` command line: a thin Typer layer over the stage functions."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .io import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="RaDis on MLX: rationale distillation makes a chat LLM a better translator "
                       "without forgetting how to chat, follow instructions and refuse harm.")

ModelOpt = typer.Option(None, "--model", "-m", help="Hugging Face id, mlx-lm directory or .gguf file "
                        "(default: the offline SmolLM2-135M-Instruct)")


def _not_yet(name: str):
    typer.echo(f"radis-mlx {name}: not implemented yet", err=True)
    raise typer.Exit(2)


@app.command()
def info(measure: bool = typer.Option(True, help="measure float32 matmul GFLOP/s")):
    """Platform, MLX version and device, the BLAS in use, and measured matmul speed."""
    from .backend import info as backend_info
    for k, v in backend_info(measure).items():
        typer.echo(f"{k:28s} {v}")


@app.command()
def convert(gguf: Path = typer.Option(..., "--gguf", help="llama-architecture GGUF file"),
            out: Path = typer.Option(..., "--out", help="output mlx-lm model directory"),
            dtype: str = typer.Option("keep", help="keep (quantized as stored) | float32 | float16 | bfloat16"),
            overwrite: bool = typer.Option(False, help="replace an existing output directory")):
    """Convert a GGUF file into an mlx-lm model directory (mlx_lm.load / mlx_lm.generate open it)."""
    from .gguf import convert_gguf
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    convert_gguf(gguf, out, dtype=dtype)
    typer.echo(f"wrote {out}")


@app.command()
def generate(
    data: str = typer.Option(..., "--data", "-d", help="ALMA JSON/JSONL, WMT source file or dir, JSONL "
                             "(src/ref/src_lang/tgt_lang), instruction file (replay), or a HF dataset id"),
    out: Path = typer.Option(..., "--out", "-o", help="output JSONL (resumes if it exists)"),
    mode: str = typer.Option("rationale-continue", help="rationale-continue | rationale-explain | seqkd | "
                             "sdft | replay"),
    model: Optional[str] = ModelOpt,
    teacher: Optional[str] = typer.Option(None, help="generate with this model instead (teacher ablation)"),
    pairs: Optional[str] = typer.Option(None, help="directions, e.g. de-en,en-de"),
    ref: Optional[str] = typer.Option(None, help="reference file, when --data is a plain-text source file"),
    split: str = typer.Option("train", help="split for ALMA dirs / HF datasets"),
    limit: Optional[int] = typer.Option(None, help="sample N rows (reproducible with --seed)"),
    seed: int = typer.Option(0),
    max_tokens: int = typer.Option(256, help="max new tokens per row"),
    temperature: float = typer.Option(0.0, help="0 = greedy (deterministic)"),
    top_p: float = typer.Option(1.0),
    batch_size: int = typer.Option(64, help="sequences decoded together"),
    template: Optional[str] = typer.Option(None, help="translation instruction template ({src_name}, "
                                           "{tgt_name}, {src})"),
    explain_template: Optional[str] = typer.Option(None, help="explain-mode user prompt ({instruction}, {ref})"),
    system: Optional[str] = typer.Option(None, help="system prompt"),
    thinking: bool = typer.Option(False, help="leave thinking on for thinking-capable templates"),
    min_tokens: int = typer.Option(1, help="reject shorter outputs"),
    max_len: Optional[int] = typer.Option(None, help="reject outputs longer than this many tokens"),
    max_repeat: float = typer.Option(0.5, help="reject when this share of 4-grams repeat"),
    unfinished: str = typer.Option("trim", help="outputs that hit --max-tokens: keep | trim | drop"),
    ratio: float = typer.Option(1.0, help="keep rationales for this seeded fraction of rows"),
    dtype: str = typer.Option("auto", help="auto (float32 on CPU) | keep | float32 | float16 | bfloat16"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code"),
):
    """Stage 1: self-rationales (RaDis) or the baselines' self-generated targets, as JSONL."""
    from .rationale import GenerateConfig, format_summary, generate as run
    from . import prompts as P
    cfg = GenerateConfig(data=data, out=str(out), mode=mode, model=model, teacher=teacher, pairs=pairs,
                         ref=ref, split=split, limit=limit, seed=seed, max_tokens=max_tokens,
                         temperature=temperature, top_p=top_p, batch_size=batch_size,
                         translate_template=template or P.TRANSLATE,
                         explain_template=explain_template or P.EXPLAIN, system=system, thinking=thinking,
                         min_tokens=min_tokens, max_len=max_len, max_repeat=max_repeat, unfinished=unfinished,
                         ratio=ratio, dtype=dtype, trust_remote_code=trust_remote_code)
    summary = run(cfg)
    if summary:
        typer.echo(format_summary(summary))


@app.command()
def finetune():
    """Stage 2: fine-tune (LoRA/DoRA/full) with the RaDis weighted loss or a baseline target."""
    _not_yet("finetune")


@app.command(name="eval")
def eval_():
    """Stage 3: translation quality and general-ability retention."""
    _not_yet("eval")


def main(argv: Optional[List[str]] = None) -> None:
    from .backend import maybe_reexec_with_openblas
    if argv is None:
        maybe_reexec_with_openblas()
    try:
        rc = app(args=argv, prog_name="radis-mlx", standalone_mode=False)
        if isinstance(rc, int) and rc:  # click returns typer.Exit's code when not standalone
            sys.exit(rc)
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished work is saved; re-run the same command to resume", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click's usage errors (typer vendors click)
            e.show()
            sys.exit(2)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise

if __name__ == "__main__":
    main()
