"""One rule for the settings of every stage and recipe: defaults < YAML < flags.

A stage's settings are a dataclass (GenerateConfig, FinetuneConfig, EvalConfig); ``build``
fills one from layers of plain mappings, lowest precedence first, as mlx-lm's ``lora.py``
does with CONFIG_DEFAULTS, the YAML file and the flags. Each layer names where it came from
(a file and section, or ``--set``), so an unknown key or a wrong type is one line naming the
key and its source, raised before any stage does work.
"""

from __future__ import annotations

from dataclasses import fields

from .fileio import UserError

FLAGS = "--"  # the source name of a layer of command-line flags


def _key(where: str, key: str) -> str:
    """'recipe.yaml: generate' + 'bogus' -> 'recipe.yaml: generate.bogus'; '' + 'lr' -> 'lr';
    '--' (the command line) + 'max_tokens' -> '--max-tokens'."""
    if not where:
        return key
    if where == FLAGS:
        return "--" + key.replace("_", "-")
    return f"{where}.{key}" if not where.endswith(":") else f"{where} {key}"


def coerce(value, typ: str, key: str):
    """``value`` as the field type ``typ`` (the annotation as text); YAML and flags give strings
    for numbers like 3e-4, so those are converted, but a mapping never passes for a number."""
    if value is None:
        return None
    base = typ.split(" ")[0].split("[")[0]
    try:
        if base in ("float", "int") and isinstance(value, bool):
            raise ValueError
        if base == "float":
            return float(value)
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base == "bool":
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise ValueError
            return value
        if base == "list":
            if isinstance(value, dict):
                raise ValueError
            return [str(v) for v in (value.split(",") if isinstance(value, str) else value)]
        if base == "dict" and not isinstance(value, dict):
            raise ValueError
        if base == "str":
            if isinstance(value, (dict, list, bool)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}: expected {base}, got {value!r:.60}") from None
    return value


def merge(cls, layers: list[tuple[str, dict]], skip: tuple = ()) -> tuple[dict, dict]:
    """The settings of ``layers`` (lowest precedence first) checked against ``cls``'s fields, and
    where each came from. ``key: null`` means "the default" unless the setting is optional (then
    it means "none"); keys in ``skip`` are set by the caller and may not be given."""
    types = {f.name: str(f.type) for f in fields(cls) if f.name not in skip}
    out, origin = {}, {}
    for where, mapping in layers:
        for k, v in (mapping or {}).items():
            k = str(k).replace("-", "_")
            key = _key(where, k)
            if k in skip:
                raise UserError(f"{key}: not a setting here (run sets it from the recipe)")
            if k not in types:
                raise UserError(f"{key}: unknown setting (known: {', '.join(sorted(types))})")
            if v is None and "None" not in types[k]:
                continue
            out[k], origin[k] = coerce(v, types[k], key), key
    return out, origin


def build(cls, layers: list[tuple[str, dict]], fixed: dict | None = None, skip: tuple = ()):
    """``cls(**merged layers, **fixed)``, validated when ``cls`` has a ``validate``; a validation
    message that starts with a setting's name gets that setting's source in front."""
    values, origin = merge(cls, layers, skip)
    obj = cls(**{**values, **(fixed or {})})
    if not hasattr(obj, "validate"):
        return obj
    try:
        return obj.validate()
    except UserError as e:
        name, colon, rest = str(e).partition(":")
        if colon and name in origin and origin[name] != name:
            raise UserError(f"{origin[name]}:{rest}") from None
        raise
