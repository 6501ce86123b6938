"""Where a stage may write, and that only one process writes there at a time.

``check_out`` refuses an output inside the installed package or the source checkout: a run there
mixes results into code (and a `pip install` would ship them). ``claim`` holds an OS advisory lock
(``fcntl.flock``) on a lock file in the output for as long as a stage writes: a second process gets
one line naming the holder's pid, and a kill -9 frees the lock with the process (the file it leaves
is taken over by the next run and removed when that run ends). While it is held, Python's temporary files
(tracking libraries, anything using ``tempfile``) go into a folder inside the output,
emptied at the next claim, so nothing is written outside the output and what a killed run left there
is cleaned on rerun.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from .fileio import UserError

LOCK = ".radis-mlx.lock"
TMP = ".radis-mlx.tmp"
OWN = (LOCK, TMP)  # what claim leaves in a directory: not the user's, not a run's results

PACKAGE = Path(__file__).resolve().parent
# In a source checkout the package sits beside pyproject.toml; these hold its code, tests and history.
_CHECKOUT = PACKAGE.parent if (PACKAGE.parent / "pyproject.toml").is_file() else None
_SOURCE_DIRS = (".git", "tests", "scripts", "docs", "bench", "recipes")


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def check_out(out, what: str = "--out") -> Path:
    """``out`` (a directory or a file a stage writes) if it is outside the package and the source tree."""
    p = Path(out).expanduser().resolve()
    if _inside(p, PACKAGE):
        raise UserError(f"{what} {out}: inside the radis_mlx package ({PACKAGE}); choose a folder outside it")
    if _CHECKOUT and (p == _CHECKOUT or any(_inside(p, _CHECKOUT / d) for d in _SOURCE_DIRS)):
        raise UserError(f"{what} {out}: inside the source tree ({_CHECKOUT}); use e.g. runs/NAME instead")
    return Path(out)


def lock_path(out: Path, is_file: bool = False) -> Path:
    """The lock of an output directory (inside it), or of an output file (beside it: OUT.lock)."""
    return out.with_name(out.name + ".lock") if is_file else out / LOCK


def tmp_path(out: Path, is_file: bool = False) -> Path:
    return out.with_name(f".{out.name}.tmp") if is_file else out / TMP


def _lock(path: Path, out: Path) -> int:
    """An open descriptor holding the lock on ``path``. The holder removes the file when it is done,
    so a lock taken on a file that was removed (or replaced) meanwhile is let go and taken again on
    the file now at ``path``: two processes never hold locks on two different files of one name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held by another open file (another process, or this one)
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{out}: in use by another radis-mlx process (pid {holder}); wait for it to "
                            "finish, or pass another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)
    raise UserError(f"{out}: cannot take the lock {path}")


TMP_ENV = "RADIS_MLX_TMPDIR"  # a claim's temp folder, for the worker processes a stage starts


def adopt_tempdir() -> None:
    """In a worker process: Python's temporary files go where the parent's claim sends its own."""
    if os.environ.get(TMP_ENV) and Path(os.environ[TMP_ENV]).is_dir():
        tempfile.tempdir = os.environ[TMP_ENV]


_HELD: dict[str, int] = {}  # lock files this process holds -> how many claims hold each


@contextlib.contextmanager
def claim(out, is_file: bool = False):
    """Hold ``out`` for this process while the block runs (see the module docstring). A claim of an
    output this process already holds just nests (the CLI claims before it imports a stage, and the
    stage claims again for callers from Python)."""
    out = check_out(out)
    key = str(lock_path(out, is_file).resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield out
        finally:
            _HELD[key] -= 1
        return
    made = not lock_path(out, is_file).parent.exists()  # a run refused before any work leaves no folder
    fd = _lock(lock_path(out, is_file), out)
    _HELD[key] = 1
    tmp = tmp_path(out, is_file)
    before, old_tempdir = os.environ.get(TMP_ENV), tempfile.tempdir
    try:
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftovers: nobody else holds the lock
        tmp.mkdir(parents=True)
        # Python's temporary files only (tempfile.tempdir, and TMP_ENV for our worker processes), not
        # the TMPDIR variable: MLX keeps its compiled CPU kernels under TMPDIR, a cache across runs.
        os.environ[TMP_ENV] = tempfile.tempdir = str(tmp)
        yield out
    finally:
        tempfile.tempdir = old_tempdir
        if before is None:
            os.environ.pop(TMP_ENV, None)
        else:
            os.environ[TMP_ENV] = before
        shutil.rmtree(tmp, ignore_errors=True)
        Path(lock_path(out, is_file)).unlink(missing_ok=True)  # while still held: see _lock
        del _HELD[key]
        os.close(fd)
        if made:
            with contextlib.suppress(OSError):  # not empty: the run wrote something, which stays
                lock_path(out, is_file).parent.rmdir()


def is_empty(out: Path) -> bool:
    """A directory that holds nothing but what ``claim`` puts there."""
    return not any(p.name not in OWN for p in out.iterdir())


def main_process() -> bool:
    """Rank 0 of an mlx.launch group (or a process on its own): the one writer of a shared --out."""
    import mlx.core as mx
    try:
        return mx.distributed.init().rank() == 0
    except Exception:  # no distributed backend: a process on its own
        return True


def claim_if_main(out, is_file: bool = False):
    """``claim(out)`` on rank 0; other mlx.launch ranks write part files of their own and claim nothing."""
    return claim(out, is_file) if main_process() else contextlib.nullcontext(out)

