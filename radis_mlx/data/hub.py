"""Data files on the Hugging Face hub, read through the hub cache (huggingface_hub), so a second
run needs no network and ``HF_HUB_OFFLINE=1`` works once the files are cached.

Why not ``datasets.load_dataset``: offline, it reads only its own prepared copies in
HF_DATASETS_CACHE, never the files in the hub cache, so it cannot tell "cached" from "missing"
before a run, and a dataset shipped through a loading script (AlpacaEval) needs remote code. Here
huggingface_hub fetches the exact files a source names (pinned by revision), and the readers in
this package read them like local files (JSON, JSON Lines, CSV; parquet through pyarrow, the
library ``datasets`` itself reads parquet with).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from ..fileio import UserError


@dataclass(frozen=True)
class HubFiles:
    """Files of one hub repository at one revision.

    ``files``: exact paths in the repository; or, with ``files=()``, ``patterns`` (globs, e.g.
    ``de-en/train-*``) for a dataset whose file names carry a hash. ``revision``: a commit SHA
    where one is known (reproducible, and cached files are used without asking the hub), else a
    branch name."""
    repo: str
    revision: str
    files: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    repo_type: str = "dataset"

    @property
    def label(self) -> str:
        rev = self.revision[:12] if _is_sha(self.revision) else self.revision
        return f"{self.repo}@{rev}"

    def fetch_command(self) -> str:
        what = " ".join(self.files) or " ".join(f"--include '{p}'" for p in self.patterns)
        return f"hf download {self.repo} {what} --repo-type {self.repo_type} --revision {self.revision}"


def _is_sha(rev: str) -> bool:
    return len(rev) == 40 and all(c in "0123456789abcdef" for c in rev)


def _offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _cache_dir() -> str:
    from huggingface_hub import constants
    return str(constants.HF_HUB_CACHE)


def _missing(src: HubFiles, what: str) -> UserError:
    return UserError(f"{src.label}: {what} is not in the Hugging Face cache ({_cache_dir()}) and the hub is "
                     f"offline; fetch it once online with: {src.fetch_command()} (or point "
                     "--data-root / --test-data at a local copy)")


def _hub_error(src: HubFiles, e: Exception, what: str) -> UserError:
    """One line for every way the hub can refuse: offline and not cached, no such repo/revision/file,
    or no network."""
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) and (_offline() or "offline" in str(e).lower()):
        return _missing(src, what)
    if isinstance(e, RepositoryNotFoundError):
        return UserError(f"{src.repo}: no such {src.repo_type} on the Hugging Face hub (or it is gated: log in with "
                         "`hf auth login`)")
    if isinstance(e, RevisionNotFoundError):
        return UserError(f"{src.repo}: no revision {src.revision!r} on the Hugging Face hub")
    if isinstance(e, EntryNotFoundError):
        return UserError(f"{src.label}: no file {what} in the repository")
    first = " ".join(str(e).split())[:160]
    return UserError(f"{src.label}: could not fetch {what} from the Hugging Face hub ({type(e).__name__}: {first}); "
                     f"check the network, or fetch it with: {src.fetch_command()}")


def download(src: HubFiles) -> Path:
    """The snapshot folder holding ``src``'s files, fetched into the hub cache when not there yet."""
    from huggingface_hub import hf_hub_download, snapshot_download

    if src.files:
        path = None
        for f in src.files:
            try:
                path = hf_hub_download(src.repo, f, repo_type=src.repo_type, revision=src.revision)
            except Exception as e:  # noqa: BLE001 - every hub failure is the user's to fix: one line
                raise _hub_error(src, e, f) from None
        return Path(path).parents[len(Path(src.files[-1]).parts) - 1]
    try:
        root = Path(snapshot_download(src.repo, repo_type=src.repo_type, revision=src.revision,
                                      allow_patterns=list(src.patterns)))
    except Exception as e:  # noqa: BLE001
        raise _hub_error(src, e, " ".join(src.patterns)) from None
    if not matching(root, src.patterns):
        raise (_missing(src, " ".join(src.patterns)) if _offline() else
               UserError(f"{src.label}: no file matches {', '.join(src.patterns)} in the repository"))
    return root


def matching(root: Path, patterns) -> list[Path]:
    """Files under a snapshot folder that match any of the globs, sorted (shards in order)."""
    files = [p for p in root.rglob("*") if p.is_file() or p.is_symlink()]
    rel = {p: p.relative_to(root).as_posix() for p in files}
    return sorted(p for p in files if any(fnmatch.fnmatch(rel[p], pat) for pat in patterns))


def status(src: HubFiles) -> str:
    """Where ``src`` would come from, without downloading: "cached", or "on the hub" (online, and
    the repository has the files). Offline and not cached: a UserError saying how to fetch it."""
    if _cached(src):
        return f"cached ({src.label})"
    if _offline():
        raise _missing(src, " ".join(src.files or src.patterns))
    from huggingface_hub import HfApi
    try:
        info = HfApi().repo_info(src.repo, repo_type=src.repo_type, revision=src.revision, files_metadata=False)
    except Exception as e:  # noqa: BLE001
        raise _hub_error(src, e, "the repository") from None
    have = {s.rfilename for s in info.siblings or []}
    lost = [f for f in src.files if f not in have]
    lost += [p for p in src.patterns if not any(fnmatch.fnmatch(h, p) for h in have)]
    if lost:
        raise UserError(f"{src.label}: no file {lost[0]} in the repository")
    return f"on the hub, downloaded on first use ({src.label})"


def _cached(src: HubFiles) -> bool:
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    if src.files:
        return all(isinstance(try_to_load_from_cache(src.repo, f, revision=src.revision, repo_type=src.repo_type), str)
                   for f in src.files)
    try:
        root = snapshot_download(src.repo, repo_type=src.repo_type, revision=src.revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, whatever the reason
        return False
    return bool(matching(Path(root), src.patterns))


def parquet_rows(path: Path):
    """(``[i]``, row) of a parquet file, the format datasets' ``push_to_hub`` writes."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: name it
        raise UserError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"[{i}]", row


def split_files(repo: str, config: str | None, split: str, revision: str = "main") -> HubFiles:
    """The files of a dataset's config and split, as its card's ``configs`` metadata names them
    (push_to_hub writes it); a card without it: push_to_hub's own layout, ``<config>/<split>-*``."""
    from huggingface_hub import DatasetCard

    card = HubFiles(repo, revision, files=("README.md",))
    try:
        meta = DatasetCard.load(download(card) / "README.md").data.to_dict()
    except UserError as e:
        if "no file README.md" not in str(e):
            if _offline():  # the whole dataset is missing, not only its card: say how to get all of it
                raise UserError(f"{repo}@{revision}: not in the Hugging Face cache ({_cache_dir()}) and the hub is "
                                f"offline; fetch it once online with: hf download {repo} --repo-type dataset "
                                f"--revision {revision} (or point --data-root / --test-data at a local copy)") from None
            raise
        meta = {}
    for c in meta.get("configs") or []:
        if c.get("config_name", "default") != (config or "default"):
            continue
        files = c.get("data_files")
        entries = [files] if isinstance(files, (str, dict)) else files or []
        for d in entries:
            if isinstance(d, dict) and d.get("split") == split:
                paths = d.get("path")
                return HubFiles(repo, revision, patterns=tuple([paths] if isinstance(paths, str) else paths))
        have = [d.get("split") for d in entries if isinstance(d, dict)]
        raise UserError(f"{repo}: config {config or 'default'} has no split {split!r} (has: {', '.join(have)})")
    if meta.get("configs"):
        names = ", ".join(str(c.get("config_name", "default")) for c in meta["configs"])
        raise UserError(f"{repo}: no config {config!r} (has: {names})")
    prefix = f"{config}/" if config else "data/"
    return HubFiles(repo, revision, patterns=(f"{prefix}{split}-*", f"{prefix}{split}/*"))
