"""Where MLX computes and how fast: device, BLAS, and the Linux OpenBLAS fast path.

The Linux ``mlx[cpu]`` wheel links a bundled reference BLAS (~5 GFLOP/s for float32
matmul on 2 cores); the system OpenBLAS is ~60x faster and exports the same symbols.
The dynamic linker only lets a library win if it is loaded first: ``import radis_mlx`` loads it
into the global symbol scope before mlx.core (preload_openblas), and the CLI also re-executes itself
once with ``LD_PRELOAD`` (and with malloc settings that suit MLX, see _MALLOC_TUNABLES).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
import time
import warnings
from pathlib import Path

_REEXEC_FLAG = "RADIS_MLX_BLAS_REEXEC"
_CANDIDATES = [
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
    "/usr/local/lib/libopenblas.so.0",
]


def find_openblas() -> str | None:
    if os.environ.get("RADIS_MLX_OPENBLAS"):
        return os.environ["RADIS_MLX_OPENBLAS"]
    for c in _CANDIDATES:
        if Path(c).exists():
            return c
    name = ctypes.util.find_library("openblas")
    return name


def loaded_blas() -> str:
    """The BLAS library mapped into this process (Linux), or what macOS always uses."""
    if sys.platform == "darwin":
        return "Accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    libs = {line.split()[-1] for line in maps.splitlines() if "blas" in line.lower() and "/" in line}
    for lib in sorted(libs):
        if "openblas" in lib and "scipy_openblas" not in lib:  # numpy's private copy is not MLX's
            return f"OpenBLAS ({lib})"
    for lib in sorted(libs):
        if "mlx_cpu.libs" in lib or "libblas" in lib:
            return f"bundled reference BLAS ({lib})"
    return "none loaded yet"


# OpenBLAS builds older than the CPU (Debian 12 ships 0.3.21) fail to recognise new x86 models and fall
# back to the SSE3 "Prescott" kernels, several times slower (BENCHMARKS.md, "OpenBLAS kernels"). Name the
# kernel family from the CPU's own flags instead, unless the user chose one.
_CORETYPES = (("SkylakeX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}), ("Haswell", {"avx2", "fma"}))


def openblas_coretype(cpu_flags: set[str]) -> str | None:
    for name, needed in _CORETYPES:
        if needed <= cpu_flags:
            return name
    return None


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def set_openblas_coretype(env) -> None:
    """Name OpenBLAS's kernels from the CPU's flags in env (x86), unless the user chose them already."""
    if "OPENBLAS_CORETYPE" not in env and platform.machine() in ("x86_64", "AMD64"):
        core = openblas_coretype(_cpu_flags())
        if core:
            env["OPENBLAS_CORETYPE"] = core


def needs_openblas() -> bool:
    return sys.platform.startswith("linux") and "OpenBLAS" not in loaded_blas()


# MLX's CPU allocator hands every buffer back to malloc, and glibc serves large blocks from fresh
# mmaps that it unmaps on free, so each big op output (a KV cache copy, a batch's activations) first
# page-faults its memory in, several times the cost of the copy itself. Blocks up to 32 MB (glibc's
# cap) come from the heap instead, and the heap keeps freed memory for the next op. The price:
# resident memory stays at its peak until the process ends. hugetlb=1 asks for transparent huge
# pages (glibc >= 2.35; older ones ignore it): 512x fewer faults. Measurements: BENCHMARKS.md.
_MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=68719476736:"
                    "glibc.malloc.hugetlb=1")


def maybe_reexec_with_openblas(argv: list[str] | None = None) -> None:
    """Re-run this process with OpenBLAS preloaded (Linux only, once). Returns if nothing to do."""
    if not sys.platform.startswith("linux") or os.environ.get(_REEXEC_FLAG):
        return
    if os.environ.get("RADIS_MLX_NO_OPENBLAS"):
        return
    lib = find_openblas()
    if not lib or "openblas" in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ)
    env[_REEXEC_FLAG] = "1"
    env["LD_PRELOAD"] = f"{lib} {env['LD_PRELOAD']}".strip() if env.get("LD_PRELOAD") else lib
    set_openblas_coretype(env)
    if "glibc.malloc" not in env.get("GLIBC_TUNABLES", ""):
        env["GLIBC_TUNABLES"] = ":".join(filter(None, [env.get("GLIBC_TUNABLES"), _MALLOC_TUNABLES]))
    # orig_argv keeps interpreter flags and `-m module`, so every way of starting us re-runs the same.
    argv = argv if argv is not None else sys.orig_argv[1:]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)


def preload_openblas() -> str | None:
    """Load the system OpenBLAS before mlx.core, so Python API users get the CLI's fast matmul (Linux).

    libmlx links the bundled reference BLAS, but the dynamic linker binds its BLAS calls to the first
    definition in the global scope, and a library loaded with RTLD_GLOBAL before mlx.core is one: the
    in-process equivalent of LD_PRELOAD. Once mlx.core is loaded its calls are bound and loading OpenBLAS
    changes nothing, so then this only warns, with the fix. Returns the library it loaded, or None.
    """
    if not sys.platform.startswith("linux") or os.environ.get("RADIS_MLX_NO_OPENBLAS"):
        return None
    lib = find_openblas()
    if not lib or not needs_openblas():
        return None
    if "mlx.core" in sys.modules:
        warnings.warn(f"mlx.core was imported before radis_mlx, too late to load OpenBLAS. {blas_hint()}",
                      RuntimeWarning, stacklevel=2)
        return None
    set_openblas_coretype(os.environ)  # OpenBLAS reads it once, while it loads
    try:
        ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
    except OSError as e:
        warnings.warn(f"{lib}: cannot load OpenBLAS ({e}); MLX keeps its bundled reference BLAS (slow)",
                      RuntimeWarning, stacklevel=2)
        return None
    return lib


def blas_hint() -> str | None:
    if not needs_openblas():
        return None
    if find_openblas():
        return ("MLX is using its bundled reference BLAS (20-60x slower matmul on CPU): import radis_mlx "
                f"before mlx, or start Python with LD_PRELOAD={find_openblas()}")
    return ("MLX is using its bundled reference BLAS (20-60x slower matmul on CPU): install OpenBLAS "
            "(Debian/Ubuntu: apt-get install libopenblas0-pthread)")


def resolve_dtype(dtype: str) -> str:
    """The one "auto" rule: float32 on the CPU (float16 arithmetic there is emulated), the stored
    precision on a GPU; every other choice is returned as given."""
    if dtype != "auto":
        return dtype
    import mlx.core as mx
    return "float32" if mx.default_device().type == mx.cpu else "keep"


def matmul_gflops(n: int = 1024, repeats: int = 5, dtype: str = "float32") -> float:
    import mlx.core as mx
    a = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    b = mx.random.normal((n, n)).astype(getattr(mx, dtype))
    mx.eval(a @ b)
    t = time.perf_counter()
    for _ in range(repeats):
        mx.eval(a @ b)
    return 2 * n ** 3 * repeats / (time.perf_counter() - t) / 1e9


def info(measure: bool = True) -> dict:
    import mlx.core as mx
    dev = mx.default_device()
    d = {
        "platform": f"{platform.system()} {platform.machine()} ({platform.platform()})",
        "python": platform.python_version(),
        "mlx": mx.__version__,
        "device": str(dev),
        "blas": loaded_blas() if dev.type == mx.cpu else "n/a (GPU)",
    }
    try:
        import mlx_lm
        d["mlx_lm"] = mlx_lm.__version__
    except Exception:
        pass
    if dev.type == mx.gpu and mx.metal.is_available():
        d["metal"] = mx.metal.device_info().get("device_name", "yes")
    if measure:
        d["matmul_float32_1024_gflops"] = round(matmul_gflops(), 1)
    hint = blas_hint()
    if hint and dev.type == mx.cpu:
        d["hint"] = hint
    return d
