"""`radis-mlx run RECIPE.yaml`: generate -> finetune -> eval -> report for every method a recipe lists.

Each stage writes into the run directory and is skipped when its output is complete (generate
and eval resume row by row, finetune resumes from its last checkpoint), so re-running a killed
recipe picks up where it stopped.

Data paths in a recipe are either plain (a path or a Hugging Face id), ``demo:FILE`` (the small
de-en set shipped with radis-mlx), or ``{hub: ID, local: REL}``: the hub id, or REL under
``--data-root`` when one is given (e.g. ``--data-root ../shared/data`` for local copies).
"""

from __future__ import annotations

import hashlib
import json
import time
from importlib import resources
from pathlib import Path

from .io import UserError, atomic_write_text, atomic_write_json, check_writable_dir, read_yaml, safe_join

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
# Shipped inside the package, so a wheel install finds them too (pip always installs a real directory).
RECIPES = resources.files(__package__) / "recipes"
# What each method trains on: the generate mode that makes its data (None: the parallel data itself).
METHOD_MODES = {"base": None, "sft": None, "mix": None, "radis": "rationale", "seqkd": "seqkd",
                "sdft": "sdft", "replay": "replay"}
_TOP_KEYS = {"name", "model", "seed", "train_data", "pairs", "limit", "generate", "finetune", "eval",
             "methods", "replay_data", "mix_data", "description"}


def find_recipe(name: str) -> Path:
    p = Path(name)
    if p.is_file():
        return p
    if p.parent == Path("recipes"):  # recipes/NAME.yaml: where the recipes lived before they shipped
        name = p.name
    for cand in (RECIPES / name, RECIPES / f"{name}.yaml"):
        if cand.is_file():
            return cand
    raise UserError(f"{name}: recipe not found (a YAML file, or one of: "
                    f"{', '.join(sorted(q.stem for q in RECIPES.glob('*.yaml')))})")


def _set(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        if d.get(k) is None:
            d[k] = {}
        d = d[k]
        if not isinstance(d, dict):
            raise UserError(f"--set {dotted}: {k} is not a mapping")
    d[keys[-1]] = value


def _mapping(v, where: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise UserError(f"{where}: expected a mapping of settings, got {type(v).__name__}")
    return v


def load_recipe(path, overrides: list[str] = (), data_root: str | None = None) -> dict:
    import yaml

    path = find_recipe(str(path))
    r = read_yaml(path) or {}
    if not isinstance(r, dict):
        raise UserError(f"{path}: a recipe is a mapping of settings")
    unknown = sorted(set(map(str, r)) - _TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown recipe key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    for o in overrides:  # --set key.sub=value beats the YAML
        k, eq, v = o.partition("=")
        if not eq or not k.strip():
            raise UserError(f"--set {o!r}: expected key=value")
        try:
            value = yaml.safe_load(v)
        except yaml.YAMLError:
            raise UserError(f"--set {o!r}: the value is not valid YAML") from None
        _set(r, k.strip(), value)
    for key in ("generate", "finetune", "eval"):
        r[key] = dict(_mapping(r.get(key), f"{path}: {key}"))
    for key in ("seed", "limit"):
        v = r.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise UserError(f"{path}: {key}: expected a whole number >= 0, got {v!r:.60}")
    for key in ("name", "model", "pairs"):
        if r.get(key) is not None and not isinstance(r[key], str):
            raise UserError(f"{path}: {key}: expected a string, got {r[key]!r:.60}")
    methods = r.get("methods") or ["base"]
    if isinstance(methods, list) and all(isinstance(m, str) for m in methods):
        methods = {m: {} for m in methods}
    if not isinstance(methods, dict):
        raise UserError(f"{path}: methods: expected a list of method names or a mapping name -> settings")
    r["methods"] = {}
    for m, spec in methods.items():
        spec = dict(_mapping(spec, f"{path}: methods.{m}"))
        kind = spec.get("method", m)
        if not isinstance(kind, str) or kind not in METHOD_MODES:
            raise UserError(f"{path}: methods.{m}: unknown method {kind!r} ({', '.join(METHOD_MODES)})")
        for key in ("generate", "finetune"):
            _mapping(spec.get(key), f"{path}: methods.{m}.{key}")
        r["methods"][str(m)] = spec
    r["_path"] = str(path)
    r["_data_root"] = data_root
    for key in ("train_data", "replay_data", "mix_data"):
        if r.get(key) is not None:
            r[key] = resolve_data(r[key], data_root, f"{path}: {key}")
    td = _mapping(r["eval"].get("test_data"), f"{path}: eval.test_data")
    r["eval"]["test_data"] = {k: resolve_data(v, data_root, f"{path}: eval.test_data.{k}") for k, v in td.items()}
    return r


def resolve_data(v, data_root: str | None, where: str) -> str:
    if isinstance(v, dict):
        if not all(isinstance(v.get(k), (str, type(None))) for k in ("hub", "local")):
            raise UserError(f"{where}: hub and local are strings")
        if data_root and v.get("local"):
            return str(Path(data_root) / v["local"])
        if v.get("hub"):
            return str(v["hub"])
        if v.get("local"):
            raise UserError(f"{where}: only a local copy is named ({v['local']}); pass --data-root")
        raise UserError(f"{where}: expected a path, an id, or {{hub: ID, local: PATH}}")
    if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip():
        raise UserError(f"{where}: expected a path or a dataset id, got {v!r:.60}")
    v = str(v)
    if v.startswith("demo:"):
        return str(DEMO_DATA / v[len("demo:"):])
    return v


def _mode(recipe: dict, kind: str) -> str:
    mode = METHOD_MODES[kind]
    if mode == "rationale":
        return (recipe.get("generate") or {}).get("mode", "rationale-explain")
    return mode


def _sampled_pairs(recipe: dict, path: Path) -> str:
    from .data import load_pairs
    from .io import json_line

    if not path.exists():
        pairs = load_pairs(recipe["train_data"], recipe.get("pairs"), limit=int(recipe["limit"]),
                           seed=int(recipe.get("seed", 0)))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, "".join(json_line({"id": p.id, "src": p.src, "ref": p.ref, "src_lang": p.src_lang,
                                                   "tgt_lang": p.tgt_lang}) + "\n" for p in pairs))
    return str(path)


def run(recipe: dict, out, *, progress: bool = True) -> dict:
    from .evals.runner import EvalConfig, ModelSpec, evaluate
    from .rationale import GenerateConfig, format_summary, generate
    from .report import report
    from .train import finetune, load_config

    out = check_writable_dir(out)
    t0 = time.perf_counter()
    model, seed = recipe.get("model"), int(recipe.get("seed", 0))
    clean = {k: v for k, v in recipe.items() if not k.startswith("_")}
    atomic_write_json(out / "recipe.json", clean)
    log = lambda m: print(f"[run] {m}", flush=True)  # noqa: E731
    specs, timings = [], {}
    if recipe.get("train_data") and recipe.get("limit") and any(
            spec.get("method", m) != "base" for m, spec in recipe["methods"].items()):
        # Sample once, so every method (and every seed) trains on the very same pairs.
        recipe = {**recipe, "train_data": _sampled_pairs(recipe, out / "data" / "train.jsonl"), "limit": None}
    for name, spec in recipe["methods"].items():
        kind = spec.get("method", name)
        ts = time.perf_counter()
        if kind == "base":
            specs.append(ModelSpec(model=model, name=name))
            continue
        train_data = recipe.get("train_data")
        if not train_data:
            raise UserError(f"{recipe['_path']}: train_data is needed for method {name}")
        mode = _mode(recipe, kind)
        gen_file = None
        if mode:
            g = {**(recipe.get("generate") or {}), **(spec.get("generate") or {}), "mode": mode}
            data = recipe.get("replay_data") if mode == "replay" else train_data
            if not data:
                raise UserError(f"{recipe['_path']}: replay_data is needed for method {name}")
            # Methods that share generate settings share one file; one with its own (a --ratio, a
            # teacher) gets a file of its own, as generate refuses to mix settings in one file.
            own = g != {**(recipe.get("generate") or {}), "mode": mode}
            tag = "-" + hashlib.sha1(json.dumps(g, sort_keys=True, default=str).encode()).hexdigest()[:8] if own else ""
            gen_file = safe_join(out, f"generate/{mode}{tag}.jsonl")
            gcfg = GenerateConfig(data=data, out=str(gen_file), model=model, seed=seed,
                                  pairs=None if mode == "replay" else recipe.get("pairs"),
                                  limit=recipe.get("limit") if mode != "replay" else g.pop("limit", None),
                                  **{k: v for k, v in g.items() if k not in ("mode", "limit")}, mode=mode)
            log(f"{name}: generate {mode} -> {gen_file}")
            log(format_summary(generate(gcfg, progress=progress)))
        f = {**(recipe.get("finetune") or {}), **(spec.get("finetune") or {})}
        train_dir = safe_join(out, f"{name}/train")
        kw = dict(model=model, seed=seed, out=str(train_dir), method=kind, pairs=recipe.get("pairs"),
                  quiet=not progress)
        kw.update(f)  # a method's own finetune settings (e.g. its seed) beat the recipe's
        if kind == "replay":
            kw.update(data=train_data, replay_data=str(gen_file))
        elif kind == "mix":
            kw.update(data=train_data, mix_data=recipe.get("mix_data"))
        elif kind == "sft":
            kw.update(data=train_data)
        else:
            kw.update(data=str(gen_file))
        done = (train_dir / "adapters.safetensors").exists() and (train_dir / "summary.json").exists()
        if done:
            log(f"{name}: finetune already complete in {train_dir}")
        else:
            resume = (train_dir / "checkpoints").is_dir() and any((train_dir / "checkpoints").iterdir())
            if train_dir.exists() and not resume:
                kw["overwrite"] = True  # a run that died before its first checkpoint: start over
            cfg = load_config(None, resume=resume or None, **kw)
            log(f"{name}: finetune {kind} -> {train_dir}" + (" (resuming)" if resume else ""))
            finetune(cfg)
        specs.append(ModelSpec(model=model, adapter=str(train_dir), name=name))
        timings[name] = round(time.perf_counter() - ts, 1)
    e = dict(recipe.get("eval") or {})
    ecfg = EvalConfig(models=specs, out=str(out / "eval"), seed=seed, progress=progress,
                      **{k: v for k, v in e.items() if k not in ("models", "out", "progress")})
    if recipe.get("pairs") and not ecfg.pairs:
        ecfg.pairs = recipe["pairs"]
    log(f"eval: {', '.join(s.name for s in specs)} on {', '.join(ecfg.suites)}")
    results = evaluate(ecfg)
    rep = report([out / "eval" / s.name for s in specs], out / "report")
    summary = {"recipe": recipe["_path"], "out": str(out), "methods": list(recipe["methods"]),
               "stage_wall_s": timings, "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(out / "summary.json", summary)
    log(f"done in {summary['wall_s']} s: {out / 'report' / 'report.md'}, {out / 'report' / 'tradeoff.png'}")
    return {"results": results, "report": rep, "summary": summary}
