"""What `run --check` verifies besides the stages' settings: that every data source and the model
resolve, before any stage runs (an eval's missing test set must not surface after an hour of
training). Nothing is downloaded: a source is local, cached, or (online) on the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import hub
from .data.pairs import hub_sources as pairs_hub_sources
from .evals import suites
from .io import UserError
from .models import offline


def general_source(source: str, where: str) -> Path | hub.HubFiles:
    """Replay/mix instructions: a local file, or the suites' hub copy a hub id names
    ("tatsu-lab/alpaca_eval" -> AlpacaEval's JSON file)."""
    if Path(source).exists():
        return Path(source)
    src = suites.declared_hub(source)
    if src is None:
        known = ", ".join(sorted({s.hub.repo for s in suites.REGISTRY.values() if s.hub}))
        raise UserError(f"{where}: {source}: no such file, and not a hub dataset radis-mlx reads instructions "
                        f"from ({known})")
    return src


def general_path(source: str, where: str) -> Path:
    """The file replay/mix instructions are read from, fetched into the hub cache when needed."""
    src = general_source(source, where)
    return src if isinstance(src, Path) else hub.download(src) / src.files[0]


def _status(src) -> str:
    return f"local {src}" if isinstance(src, Path) else hub.status(src)


def model_status(model: str | None) -> str:
    """The model as a run will load it: an offline model (installed?), a local folder or GGUF, or a
    hub id of the form owner/name, its config read where the hub cache has it."""
    from huggingface_hub import constants, try_to_load_from_cache
    from .models import resolve

    if model is None or offline.offline_model(model) is not None:
        return f"offline model {offline.gguf_file(model)}"  # raises, saying how to install, when missing
    if model.endswith(".gguf"):
        if not Path(model).is_file():
            raise UserError(f"{model}: GGUF file not found")
        return f"local {model}"
    if Path(model).expanduser().exists():
        return f"local {resolve(model)}"  # raises when the folder has no config.json
    resolve(model)  # the form: owner/name
    cfg = try_to_load_from_cache(model, "config.json")
    if not isinstance(cfg, str):
        how = (f"not in the Hugging Face cache and the hub is offline: fetch it first with `hf download {model}`"
               if constants.HF_HUB_OFFLINE else "on the hub, downloaded on first use")
        return f"hub {model}: {how}"
    try:
        config = json.loads(Path(cfg).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{model}: its cached config.json ({cfg}) is unreadable ({e}); delete it and fetch "
                        "again") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise UserError(f"{model}: its cached config.json ({cfg}) names no model_type: not a model mlx-lm loads")
    return f"cached {model} ({config['model_type']})"


def data_sources(recipe: dict, eval_cfg, used: dict[str, str]) -> list[tuple[str, str]]:
    """(what, where it comes from) for the training pairs, the replay/mix data in ``used`` (key ->
    where the recipe sets it) and every eval suite's test set; one that cannot resolve raises."""
    out = []
    train = recipe.get("train_data")
    if train:
        srcs = pairs_hub_sources(train, recipe.get("pairs"))
        if not srcs and not Path(train).exists():
            raise UserError(f"{recipe['_path']}: train_data: {train}: file not found")
        out.append(("train_data", "; ".join(hub.status(s) for s in srcs) or f"local {train}"))
    for key, where in used.items():
        out.append((key, _status(general_source(recipe[key], where))))
    for suite in eval_cfg.suites:
        try:
            out.append((f"eval {suite}", suites.data_status(eval_cfg, suite)))
        except UserError as e:
            raise UserError(f"{recipe['_path']}: eval.test_data.{suite}: {e}") from None
    return out


def format_sources(model_line: str, sources: list[tuple[str, str]]) -> str:
    return "\n".join([f"  {'model':22s} {model_line}", *(f"  {k:22s} {v}" for k, v in sources)])
