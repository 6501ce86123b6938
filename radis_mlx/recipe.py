"""A recipe, read: the YAML, --set overrides and --data-root resolved into one checked mapping.

Data paths in a recipe are either plain (a path or a Hugging Face id), ``demo:FILE`` (the small
de-en set shipped with radis-mlx), or ``{hub: ID, local: REL}``: the hub id, or REL under
``--data-root`` when one is given (e.g. ``--data-root ../shared/data`` for local copies).
Replay and mix data may add ``limit: N``: the pipeline then samples them, leaving the eval items out.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from . import methods, settings
from .data.pairs import looks_like_hub_id
from .evals.harness import EvalConfig
from .generate.config import GenerateConfig
from .fileio import UserError, load_yaml_text, read_yaml, safe_join
from .report import DEFAULT_BASELINES, method_of
from .tuner.config import FinetuneConfig

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"
# Shipped inside the package, so a wheel install finds them too (pip always installs a real directory).
RECIPES = resources.files(__package__) / "recipes"
GENERAL_KEYS = ("replay_data", "mix_data")  # general instructions that methods train on
_TOP_KEYS = {"name", "model", "seed", "train_data", "pairs", "limit", "generate", "finetune", "eval",
             "methods", "replay_data", "mix_data", "description", "translate_suites", "report"}


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


def _apply_overrides(r: dict, overrides: list[str]) -> list[str]:
    """--set key.sub=value (the value read as YAML) beats the YAML; returns the keys set."""
    import yaml

    if isinstance(r.get("methods"), list) and all(isinstance(m, str) for m in r["methods"]):
        r["methods"] = {m: {} for m in r["methods"]}  # so --set methods.radis.finetune.x=... works
    keys = []
    for o in overrides:
        k, eq, v = o.partition("=")
        if not eq or not k.strip():
            raise UserError(f"--set {o!r}: expected key=value")
        try:
            value = load_yaml_text(v)
        except (yaml.YAMLError, RecursionError):
            raise UserError(f"--set {o!r}: the value is not valid YAML") from None
        _set(r, k.strip(), value)
        keys.append(k.strip())
    return keys


def load_recipe(path, overrides: list[str] = (), data_root: str | None = None) -> dict:
    path = find_recipe(str(path))
    r = read_yaml(path) or {}
    if not isinstance(r, dict):
        raise UserError(f"{path}: a recipe is a mapping of settings")
    unknown = sorted(set(map(str, r)) - _TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown recipe key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    set_keys = _apply_overrides(r, overrides)
    unknown = sorted(set(map(str, r)) - _TOP_KEYS)
    if unknown:
        raise UserError(f"--set {unknown[0]}: unknown recipe key (known: {', '.join(sorted(_TOP_KEYS))})")
    r["_path"], r["_data_root"] = str(path), data_root
    r["_set"] = set_keys  # which keys --set gave, so errors name their source
    where = lambda key: _where(r, key)  # noqa: E731
    for key in ("generate", "finetune", "eval"):
        r[key] = dict(_mapping(r.get(key), where(key)))
    if "seed" in r and r["seed"] is None:  # `seed: null` is the default, as for every setting
        r["seed"] = 0
    for key in ("seed", "limit"):
        v = r.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise UserError(f"{where(key)}: expected a whole number >= 0, got {v!r:.60}")
    for key in ("name", "model", "pairs"):
        if r.get(key) is not None and not isinstance(r[key], str):
            raise UserError(f"{where(key)}: expected a string, got {r[key]!r:.60}")
    r["methods"] = _methods(r, where)
    _check_sections(r, "", r, where)
    for m, spec in r["methods"].items():
        _check_sections(r, f"methods.{m}.", spec, where)
    _check_translate_suites(r, where)
    r["report"] = _report_settings(r, where("report"))
    r["_subset"] = {}
    for key in GENERAL_KEYS:  # {hub, local, limit}: a seeded subset, the eval items left out
        v = r.get(key)
        if isinstance(v, dict) and "limit" in v:
            lim = v["limit"]
            if not isinstance(lim, int) or isinstance(lim, bool) or lim < 1:
                raise UserError(f"{where(key + '.limit')}: expected a whole number >= 1, got {lim!r:.60}")
            r["_subset"][key] = lim
            r[key] = {k: x for k, x in v.items() if k != "limit"}
    for key in ("train_data", *GENERAL_KEYS):
        if r.get(key) is not None:
            r[key] = resolve_data(r[key], data_root, where(key))
    td = _mapping(r["eval"].get("test_data"), where("eval.test_data"))
    r["eval"]["test_data"] = {k: resolve_data(v, data_root, where(f"eval.test_data.{k}")) for k, v in td.items()}
    return r


def _scales(v, method, where: str) -> list[float]:
    """``scales: [0.25, 0.5, 0.75]``: the trained adapter also evaluated at these scales (run NAME@A each)."""
    import math
    if not isinstance(v, list) or not v or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                                                   and math.isfinite(a) for a in v):
        raise UserError(f"{where}: expected a list of adapter scales (numbers, e.g. [0.25, 0.5]), got {v!r:.60}")
    if not method.trains:
        raise UserError(f"{where}: method {method.name} trains no adapter to scale")
    if len(set(v)) != len(v) or 1 in v:
        raise UserError(f"{where}: each scale once, and not 1 (the trained adapter is its own run already)")
    return [float(a) for a in v]


_METHOD_KEYS = ("method", "scales", "generate", "finetune", "eval")
_TRANSLATE_KEYS = ("lang", "translator", "suites")


def _methods(r: dict, where) -> dict:
    """``methods``: a list of names or a mapping name -> {method, scales, generate, finetune, eval}; a recipe
    without methods runs nothing, so it is refused here rather than when it runs."""
    listed = r.get("methods")
    if not listed:
        raise UserError(f"{where('methods')}: a recipe lists at least one method (e.g. methods: [base, sft, radis])")
    if isinstance(listed, list) and all(isinstance(m, str) for m in listed):
        listed = {m: {} for m in listed}
    if not isinstance(listed, dict):
        raise UserError(f"{where('methods')}: expected a list of method names or a mapping name -> settings")
    out = {}
    for m, spec in listed.items():
        spec = dict(_mapping(spec, where(f"methods.{m}")))
        extra = sorted(set(map(str, spec)) - set(_METHOD_KEYS))
        if extra:
            raise UserError(f"{where(f'methods.{m}.{extra[0]}')}: unknown key (known: {', '.join(_METHOD_KEYS)})")
        picked = methods.get(spec.get("method", m), where(f"methods.{m}"))
        if "scales" in spec:
            spec["scales"] = _scales(spec["scales"], picked, where(f"methods.{m}.scales"))
        out[str(m)] = spec
    return out


def _check_sections(r: dict, prefix: str, holder: dict, where) -> None:
    """Every key of a generate/finetune/eval section is a setting of its stage, of the right type, even
    where no stage of this recipe uses the section (a typo there would otherwise pass unseen)."""
    for key, cls in (("generate", GenerateConfig), ("finetune", FinetuneConfig), ("eval", EvalConfig)):
        section = dict(_mapping(holder.get(key), where(prefix + key)))
        settings.merge(cls, section_layers(r, prefix + key, section))
        if prefix and key in holder:
            holder[key] = section


def section_layers(recipe: dict, section: str, mapping: dict) -> list[tuple[str, dict]]:
    """A recipe section as two settings layers, the YAML's and --set's, each naming its source."""
    given = {k: _from_set(recipe, f"{section}.{k}") for k in mapping}
    return [(f"{recipe['_path']}: {section}", {k: v for k, v in mapping.items() if not given[k]}),
            (f"--set {section}", {k: v for k, v in mapping.items() if given[k]})]


def _check_translate_suites(r: dict, where) -> None:
    t = r.get("translate_suites")
    if t is None:
        return
    t = _mapping(t, where("translate_suites"))
    extra = sorted(set(map(str, t)) - set(_TRANSLATE_KEYS))
    if extra:
        raise UserError(f"{where('translate_suites.' + extra[0])}: unknown key (known: {', '.join(_TRANSLATE_KEYS)})")
    s = t.get("suites") or []
    if not isinstance(s, list) or not all(isinstance(x, str) for x in s):
        raise UserError(f"{where('translate_suites.suites')}: expected a list of suite names, got {s!r:.60}")
    for k in ("lang", "translator"):
        if t.get(k) is not None and not isinstance(t[k], str):
            raise UserError(f"{where('translate_suites.' + k)}: expected a string, got {t[k]!r:.60}")


def only_methods(recipe: dict, patterns: str) -> dict:
    """The recipe with only the methods that match ``patterns`` ("base,*-s0"), in the recipe's order:
    a long study runs its first seeds first, and the full run later reuses every finished stage."""
    from fnmatch import fnmatchcase
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    for p in pats:
        if not any(fnmatchcase(m, p) for m in recipe["methods"]):
            raise UserError(f"--only {p}: matches none of the recipe's methods ({', '.join(recipe['methods'])})")
    keep = {m: spec for m, spec in recipe["methods"].items() if any(fnmatchcase(m, p) for p in pats)}
    return {**recipe, "methods": keep, "_only": patterns, "_all_methods": recipe["methods"]}


def record(recipe: dict) -> dict:
    """What OUT/recipe.json keeps: the whole study, even when this call ran only some methods (a
    dev rule reading it mid-study must find every method), and which ones this call ran."""
    out = {k: v for k, v in recipe.items() if not k.startswith("_")}
    if "_only" in recipe:
        out.update(methods=recipe["_all_methods"], only=recipe["_only"])
    return out


def resolve_data(v, data_root: str | None, where: str) -> str:
    if isinstance(v, dict):
        extra = sorted(set(map(str, v)) - {"hub", "local"})
        if extra:
            raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (known: hub, local"
                            + (", limit)" if where.endswith(GENERAL_KEYS) else ")"))
        if not all(isinstance(v.get(k), (str, type(None))) for k in ("hub", "local")):
            raise UserError(f"{where}: hub and local are strings")
        if data_root and v.get("local"):
            return _existing(_inside(data_root, v["local"], where), where)
        if v.get("hub"):
            return str(v["hub"])
        if v.get("local"):
            raise UserError(f"{where}: only a local copy is named ({v['local']}); pass --data-root")
        raise UserError(f"{where}: expected a path, an id, or {{hub: ID, local: PATH}}")
    if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip():
        raise UserError(f"{where}: expected a path or a dataset id, got {v!r:.60}")
    v = str(v)
    if v.startswith("demo:"):
        return _existing(_inside(DEMO_DATA, v[len("demo:"):], where), where)
    return v if looks_like_hub_id(v.split(":")[0]) else _existing(v, where)


def _existing(path: str, where: str) -> str:
    """A local data path that exists: a missing file fails --check, not the stage that reads it."""
    if not Path(path).exists():
        raise UserError(f"{where}: {path}: no such file or directory")
    return path


def _inside(root, rel: str, where: str) -> str:
    """``rel`` under ``root``: a recipe's local path may not climb out of --data-root (or the demo
    data) with ``..``, a link or an absolute path. The error names the path, never what is in it."""
    try:
        safe_join(root, rel)
        return str(Path(root) / rel)  # as given: generate's settings fingerprint holds the path
    except UserError:
        raise UserError(f"{where}: {rel!r:.80} points outside {root}; local paths stay inside it") from None


def _from_set(recipe: dict, dotted: str) -> bool:
    return any(dotted == s or dotted.startswith(s + ".") for s in recipe.get("_set") or [])


def _where(recipe: dict, dotted: str) -> str:
    """Where a recipe key's value came from: '--set KEY' or 'RECIPE.yaml: KEY'."""
    return f"--set {dotted}" if _from_set(recipe, dotted) else f"{recipe['_path']}: {dotted}"


def _report_settings(r: dict, where: str) -> dict:
    """``report: {baselines: [METHOD, ...]}``: the methods the paired tests compare every other method
    with (default sft and radis); each is a method of the recipe (runs METHOD or METHOD-sN)."""
    rep = dict(_mapping(r.get("report"), where))
    extra = sorted(set(rep) - {"baselines"})
    if extra:
        raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (known: baselines)")
    b = rep.get("baselines", list(DEFAULT_BASELINES))
    if not isinstance(b, list) or not all(isinstance(x, str) for x in b):
        raise UserError(f"{where}.baselines: expected a list of method names, got {b!r:.60}")
    known = {method_of(m) for m in r["methods"]}
    if rep.get("baselines") is not None and set(b) - known:
        raise UserError(f"{where}.baselines: {', '.join(sorted(set(b) - known))} is not a method of this recipe "
                        f"(its methods: {', '.join(sorted(known))})")
    return {"baselines": b}
