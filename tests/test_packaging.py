"""Recipes ship inside the package: found by name, and from a wheel installed into a fresh venv."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest

from radis_mlx.pipeline import RECIPES, find_recipe

ROOT = Path(__file__).resolve().parents[1]


def test_recipes_are_found_by_name_and_by_their_old_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here: both resolve to the shipped file
    assert find_recipe("demo") == find_recipe("demo.yaml") == find_recipe("recipes/demo.yaml") == RECIPES / "demo.yaml"
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.yaml").write_text("model: x\n")
    assert find_recipe("recipes/demo.yaml") == Path("recipes/demo.yaml")  # a real file always wins


def _setuptools_builds_wheels() -> bool:
    # setuptools >= 77 builds wheels itself (older ones need the `wheel` package) and reads the SPDX
    # license string; `pip install -e ".[test]"` brings it, so the build needs no network.
    try:
        major = int(metadata.version("setuptools").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    return major >= 77


def _dependency_dirs() -> list[str]:
    """This interpreter's import path minus every directory holding a radis_mlx package (the checkout)."""
    return [p for p in sys.path if p and Path(p).is_dir() and not (Path(p) / "radis_mlx").exists()]


@pytest.mark.skipif(not _setuptools_builds_wheels(), reason="needs setuptools>=77: pip install -e '.[test]'")
def test_installed_wheel_finds_its_recipes(tmp_path):
    # Build from a copy holding only what the wheel is made of, so the checkout gets no build/ files.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "radis_mlx", src / "radis_mlx", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path / "dist", src],
                   check=True, cwd=tmp_path)
    wheel, = (tmp_path / "dist").glob("radis_mlx-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    subprocess.run([*pip, "--python", py, "install", "--no-deps", "--no-index", wheel], check=True, cwd=tmp_path)
    # Dependencies come from this environment (offline, and fast); the .pth goes in after the install so
    # pip saw a bare venv. The fresh venv's site-packages is searched first, so radis_mlx is the wheel's.
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text("\n".join(_dependency_dirs()) + "\n")
    assert (env_dir / "bin" / "radis-mlx").exists()

    # The installed command plans the shipped demo (its recipe and data from the wheel) and runs nothing.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([env_dir / "bin" / "radis-mlx", "run", "demo", "--check", "--out", tmp_path / "demo"],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    installed = site / "radis_mlx"
    assert f"plan for {installed / 'recipes' / 'demo.yaml'}" in out.stdout  # not the checkout's
    assert "finetune radis" in out.stdout and "[to do]" in out.stdout
    assert not (tmp_path / "demo").exists()
    check = ("import radis_mlx, radis_mlx.pipeline as p; print(radis_mlx.__file__); "
             "print(p.load_recipe('demo')['train_data'])")
    out = subprocess.run([py, "-c", check], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    package, train_data = (Path(line) for line in out.stdout.split("\n")[:2])
    assert package == installed / "__init__.py"
    assert Path(train_data).is_file() and installed in Path(train_data).parents


def _locked() -> dict[str, str]:
    """requirements.lock's pins that apply to this platform: {normalized name: version}."""
    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        req, _, marker = line.partition(";")
        if not req.strip() or req.startswith((" ", "#")):
            continue
        name, version = req.strip().split("==")
        if not marker.strip() or Marker(marker.strip()).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.skipif(sys.version_info < (3, 11), reason="requirements.lock is for Python >= 3.11 (setup.sh skips it)")
def test_installed_versions_match_the_lock():
    # setup.sh installs with `-c requirements.lock`: a fresh machine must get what the tests passed with.
    pins = _locked()
    assert {"mlx", "mlx-lm", "numpy", "gguf", "transformers", "datasets"} <= set(pins)
    wrong = {n: (v, _installed(n)) for n, v in pins.items() if _installed(n) != v}
    assert not wrong, f"installed versions differ from requirements.lock (pinned, installed): {wrong}; " \
                      "rerun scripts/setup.sh, or upgrade the lock as the README says"


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
