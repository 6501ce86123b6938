"""backend: `import radis_mlx` before mlx gives Python API users the system OpenBLAS, as the CLI has (too
late, it warns); the "auto" dtype rule; what the process re-executed with OpenBLAS gets (kernels, malloc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from radis_mlx import backend

ROOT = Path(__file__).resolve().parents[1]
linux_openblas = pytest.mark.skipif(not (sys.platform.startswith("linux") and backend.find_openblas()),
                                    reason="needs Linux with a system OpenBLAS")


def _python(code: str, **env_extra) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that has no OpenBLAS preloaded and no kernel choice made."""
    clean = ("OPENBLAS_CORETYPE", "RADIS_MLX_BLAS_REEXEC", "RADIS_MLX_NO_OPENBLAS", "LD_PRELOAD")
    env = {k: v for k, v in os.environ.items() if k not in clean}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**env, "PYTHONPATH": str(ROOT), **env_extra})


MEASURE = ("import json, os, mlx.core; from radis_mlx.backend import loaded_blas, matmul_gflops; "
           "print(json.dumps([loaded_blas(), matmul_gflops(512, 8), os.environ.get('OPENBLAS_CORETYPE')]))")


def _measure(first: str, **env_extra) -> tuple[str, float, str | None]:
    r = _python(first + MEASURE, **env_extra)
    assert r.returncode == 0, r.stderr
    return tuple(json.loads(r.stdout.splitlines()[-1]))


@linux_openblas
def test_importing_radis_mlx_first_makes_mlx_multiply_with_openblas():
    blas, fast, core = _measure("import radis_mlx; ")
    ref_blas, slow, ref_core = _measure("import mlx.core; ")  # too late: radis_mlx is imported second
    assert "OpenBLAS" in blas and "OpenBLAS" not in ref_blas
    # The mapping alone proves nothing (a library loaded after mlx.core is mapped but never called):
    # the speed does. Measured 157 against 4.5 GFLOP/s on 2 AVX-512 cores; 3x leaves room for noise.
    assert fast > 3 * slow, (fast, slow)
    assert core == backend.openblas_coretype(backend._cpu_flags())  # set before OpenBLAS read it
    assert _measure("import radis_mlx; ", OPENBLAS_CORETYPE="Haswell")[2] == "Haswell"  # the user's wins
    assert "OpenBLAS" not in _measure("import radis_mlx; ", RADIS_MLX_NO_OPENBLAS="1")[0]  # the opt-out


@linux_openblas
def test_importing_mlx_first_warns_once_with_the_fix():
    r = _python("import mlx.core, radis_mlx, radis_mlx.backend, radis_mlx.fileio")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("RuntimeWarning") == 1, r.stderr
    assert "import radis_mlx before mlx" in r.stderr and "LD_PRELOAD=" in r.stderr
    r = _python("import radis_mlx, mlx.core", LD_PRELOAD=backend.find_openblas())
    assert r.returncode == 0 and "Warning" not in r.stderr, r.stderr  # already fast: nothing to say


def test_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(backend, "find_openblas", lambda: pytest.fail("looked for OpenBLAS on macOS"))
    assert backend.preload_openblas() is None


def test_auto_dtype_is_float32_on_the_cpu_and_other_choices_pass_through():
    import mlx.core as mx

    want = "float32" if mx.default_device().type == mx.cpu else "keep"
    assert backend.resolve_dtype("auto") == want
    assert [backend.resolve_dtype(d) for d in ("keep", "bfloat16", "float16")] == ["keep", "bfloat16", "float16"]


def _after_reexec(var: str, **env_extra) -> str:
    """`var` as the process re-executed by maybe_reexec_with_openblas sees it, from a clean start."""
    code = ("from radis_mlx.backend import maybe_reexec_with_openblas as m; m(); import os; "
            f"print(os.environ.get({var!r}))")
    clean = ("OPENBLAS_CORETYPE", "RADIS_MLX_BLAS_REEXEC", "LD_PRELOAD", "GLIBC_TUNABLES")
    env = {k: v for k, v in os.environ.items() if k not in clean}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**env, "PYTHONPATH": str(ROOT), **env_extra}).stdout.strip()


def test_openblas_kernels_follow_the_cpu_flags():
    from radis_mlx.backend import _cpu_flags, find_openblas, openblas_coretype

    avx512 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx2", "fma", "sse3"}
    assert openblas_coretype(avx512) == "SkylakeX"
    assert openblas_coretype(avx512 - {"avx512bw"}) == "Haswell"  # Knights Landing has no BW/DQ/VL
    assert openblas_coretype({"avx2", "sse3"}) is None  # let OpenBLAS decide
    if sys.platform.startswith("linux") and find_openblas() and openblas_coretype(_cpu_flags()):
        assert _after_reexec("OPENBLAS_CORETYPE") == openblas_coretype(_cpu_flags())  # set when re-executed
        assert _after_reexec("OPENBLAS_CORETYPE", OPENBLAS_CORETYPE="Haswell") == "Haswell"  # the user's wins


def test_reexec_keeps_large_buffers_in_the_malloc_heap():
    """The re-executed process gets glibc malloc settings (see backend._MALLOC_TUNABLES) added to
    the user's own tunables, and the user's malloc settings win."""
    from radis_mlx.backend import _MALLOC_TUNABLES, find_openblas
    if not (sys.platform.startswith("linux") and find_openblas()):
        pytest.skip("no re-execution without a system OpenBLAS on Linux")
    assert _after_reexec("GLIBC_TUNABLES") == _MALLOC_TUNABLES
    assert _after_reexec("GLIBC_TUNABLES", GLIBC_TUNABLES="glibc.pthread.rseq=0") == \
        f"glibc.pthread.rseq=0:{_MALLOC_TUNABLES}"
    mine = "glibc.malloc.mmap_threshold=65536"
    assert _after_reexec("GLIBC_TUNABLES", GLIBC_TUNABLES=mine) == mine
