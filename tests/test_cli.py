"""CLI basics (cli.py, radis_mlx/cli.py): `info` reports the BLAS and its speed; errors are one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_info_reports_blas_and_speed():
    r = _cli("info")
    assert r.returncode == 0, r.stderr
    assert "mlx " in r.stdout and "matmul_float32_1024_gflops" in r.stdout
    if sys.platform.startswith("linux"):
        from radis_mlx.backend import find_openblas
        if find_openblas():  # the CLI re-executed itself with OpenBLAS preloaded
            assert "OpenBLAS" in r.stdout


def test_cli_errors_are_one_line_exit_2(tmp_path):
    r = _cli("convert", "--gguf", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "GGUF file not found" in r.stderr and "Traceback" not in r.stderr
    r = _cli("no-such-command")
    assert r.returncode == 2
