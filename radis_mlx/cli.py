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
def generate():
    """Stage 1: self-rationales (RaDis) or the baselines' self-generated targets, as JSONL."""
    _not_yet("generate")


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
