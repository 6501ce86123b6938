"""What `run --check` verifies besides the stages' settings: that every data source and every model
resolve, and that each stage fits in memory, before any stage runs (an eval's missing test set must
not surface after an hour of training). Nothing is downloaded: a source is local, cached, or
(online) on the hub.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import memory
from .data import hub
from .data.pairs import hub_sources as pairs_hub_sources
from .evals import suites
from .evals.suites import DEFAULT_MAX_TOKENS
from .fileio import UserError
from .evals.context import parse_model_spec
from .models import offline, resolve
from .models.loader import check_model
from .recipe import _where


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


def data_sources(recipe: dict, eval_cfgs: list, used: dict[str, str]) -> list[tuple[str, str]]:
    """(what, where it comes from) for the training pairs, the replay/mix data in ``used`` (key ->
    where the recipe sets it) and the test set of every suite of the eval configs (the recipe's,
    then each method's own); one that cannot resolve raises."""
    out = []
    train = recipe.get("train_data")
    if train:
        srcs = pairs_hub_sources(train, recipe.get("pairs"))
        if not srcs and not Path(train).exists():
            raise UserError(f"{recipe['_path']}: train_data: {train}: file not found")
        out.append(("train_data", "; ".join(hub.status(s) for s in srcs) or f"local {train}"))
    for key, where in used.items():
        out.append((key, _status(general_source(recipe[key], where))))
    seen = set()
    for eval_cfg, suite in ((c, s) for c in eval_cfgs for s in c.suites):
        if suite in seen:
            continue
        seen.add(suite)
        try:
            out.append((f"eval {suite}", suites.data_status(eval_cfg, suite)))
        except UserError as e:
            raise UserError(f"{recipe['_path']}: eval.test_data.{suite}: {e}") from None
    return out


def format_sources(model_line: str, sources: list[tuple[str, str]]) -> str:
    return "\n".join([f"  {'model':22s} {model_line}", *(f"  {k:22s} {v}" for k, v in sources)])


# ---------------------------------------------------------------- the planned stages

def check_models(recipe: dict, stages: list) -> None:
    """Every model the stages name exists (a directory, a .gguf, an installed offline model, or a hub
    id's form), checked without loading or converting: a typo fails --check, not a stage hours in."""
    named = [("model", recipe.get("model"))]
    for st in stages:
        c = st.config
        if st.kind == "generate":
            named += [(f"generate.{k} (method {st.name})", getattr(c, k)) for k in ("teacher", "translator")
                      if getattr(c, k)]
        elif st.kind == "translate":
            named += [("translate_suites.translator", c.translator)] if c.translator else []
        elif st.kind == "eval":
            named += [(f"eval.{k}", getattr(c, k)) for k in ("base_model", "judge_model") if getattr(c, k)]
    for key, spec in named:
        model = parse_model_spec(spec).model if isinstance(spec, str) and "," in spec else spec
        try:
            check_model(model)
        except UserError as e:
            raise UserError(f"{_where(recipe, key) if key == 'model' else key}: {e}") from None


def _knob(recipe: dict, st) -> str:
    """Where the setting that shrinks a stage's memory is set: the method's own section or the recipe's."""
    knob, section = st.memory.knob, st.kind  # a stage kind is its recipe section's name
    own = (recipe["methods"].get(st.name) or {}).get(section) or {}
    return _where(recipe, f"methods.{st.name}.{section}.{knob}" if knob in own else f"{section}.{knob}")


def check_memory(recipe: dict, stages: list, fit_for: str | None = None):
    """Each generate, finetune and eval stage's estimated peak (``Stage.memory``), checked against the
    machine's memory (memory.parse_target); the first that cannot fit is refused, naming its setting.
    Returns the target, or None when the check is off."""
    target = memory.parse_target(fit_for)
    if target is None:
        return None
    for st in stages:
        if st.kind == "generate":
            st.memory = memory.estimate("generate", st.config, st.config.teacher or st.config.model, target)
        elif st.kind == "finetune":
            st.memory = memory.estimate("finetune", st.config, recipe.get("model"), target)
        elif st.kind == "eval":
            longest = max(st.config.max_tokens.get(s, DEFAULT_MAX_TOKENS[s]) for s in st.config.suites)
            st.memory = memory.estimate("eval", st.config, recipe.get("model"), target, longest=longest)
    memory.check_fits([(st.memory, _knob(recipe, st)) for st in stages if st.memory is not None], target)
    return target
