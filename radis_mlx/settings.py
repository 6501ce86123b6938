"""One rule for the settings of every stage and recipe: defaults < YAML < flags.

A stage's settings are a dataclass (GenerateConfig, FinetuneConfig, EvalConfig, TranslateConfig,
TranslateSuiteConfig); ``build`` fills one from layers of plain mappings, lowest precedence first, as
mlx-lm's ``lora.py`` does with CONFIG_DEFAULTS, the YAML file and the flags. Each layer names where
it came from (a file and section, or ``--set``), so an unknown key or a wrong type is one line naming
the key and its source, raised before any stage does work.

Each field carries its own help, ``field(default=..., metadata={"help": ...})`` as mlx-lm's
TrainingArgs does, and the commands' flags are made from the fields (cli_options.py): a flag is the
field's name with dashes, its default the field's. Other metadata keys: ``choices`` (the fixed set
of values, shown in --help), ``flag`` (the flag's own spelling, e.g. "--stop-decoding/--no-stop"),
``text`` (multi-line text: ``\n``, ``\t`` and ``\\`` in a flag are the characters) and ``cli``
(False: not a flag, e.g. a secret that comes from the environment).

Names: one name per concept in every config, recipe section and flag.

- ``translate_template``: the translation instruction ({src_name}, {tgt_name}, {src}) in generate,
  finetune, eval and translate. Finetune's key and generate's and finetune's flag were ``template``:
  still accepted, with a note (a class's ``OLD_NAMES``).
- ``stop_decoding``: whether decoding stops at a translation's cut (eval, translate; flag
  ``--no-stop``); ``stop`` is only ever eval's cut string. translate's key was ``stop``.
- ``pairs``: translation directions as text ("de-en,en-de"), in every config and at a recipe's top;
  kept, as the key every recipe and output file already records (the rows read are ``data.Pair``s,
  never a setting).
- ``max_tokens``: new tokens one decode may make (mlx-lm's name); ``max_seq_len``: tokens of one
  training row, prompt and target (mlx-lm's max_seq_length); ``max_len`` and ``min_tokens``:
  generate's filter of an output's length (kept: generate's output files record the name).
- ``quiet`` (finetune, run) and ``progress`` (eval, translate, translate-suite) are one switch:
  the flag is ``--quiet`` (translate-suite has none).
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, field, fields
from pathlib import Path

from .fileio import UserError, read_yaml

FLAGS = "--"  # the source name of a layer of command-line flags

MODEL_HELP = ("Hugging Face id, mlx-lm directory, .gguf file or an offline model's short name (radis-mlx "
              "models; default: smollm2-135m)")

def setting(default=MISSING, help: str = "", *, factory=None, **cli):
    """A config field with its --help text: ``field(default=..., metadata={"help": ...})``; ``factory``
    for a mutable default; ``cli``: the other metadata keys (choices, flag, text, cli)."""
    kw = {"default_factory": factory} if factory is not None else {"default": default}
    return field(**kw, metadata={"help": help, **cli})


_said: set = set()  # the deprecation notes printed by this process (each once)


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


def file_layer(path) -> tuple[str, dict]:
    """A YAML file of settings as a layer: (its source name, its mapping)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: config file not found")
    y = read_yaml(p) or {}
    if not isinstance(y, dict):
        raise UserError(f"{p}: expected a mapping of settings")
    return f"{p}:", y


def _renamed(cls, where: str, k: str, mapping: dict, notes: list | None) -> str:
    """``k``, or the new name of a renamed setting (``cls.OLD_NAMES``), with a deprecation note."""
    new = getattr(cls, "OLD_NAMES", {}).get(k)
    if new is None:
        return k
    now = _key(where, new) if where == FLAGS else new
    if new in mapping or new.replace("_", "-") in mapping:
        raise UserError(f"{_key(where, k)}: the old name of {now}, which is given too; drop one")
    if notes is not None:
        notes.append(f"{_key(where, k)} is deprecated: use {now}")
    return new


def say_notes(notes: list) -> None:
    """Print each deprecation note once per process, on stderr (stdout may be the output)."""
    for n in notes:
        if n not in _said:
            _said.add(n)
            print(f"note: {n}", file=sys.stderr)


def merge(cls, layers: list[tuple[str, dict]], skip: tuple = (), notes: list | None = None) -> tuple[dict, dict]:
    """The settings of ``layers`` (lowest precedence first) checked against ``cls``'s fields, and
    where each came from. ``key: null`` means "the default" unless the setting is optional (then
    it means "none"); keys in ``skip`` are set by the caller and may not be given. A setting's old
    name (``cls.OLD_NAMES``) stands for its new one, with a note added to ``notes``."""
    types = {f.name: str(f.type) for f in fields(cls) if f.name not in skip}
    out, origin = {}, {}
    for where, mapping in layers:
        for k, v in (mapping or {}).items():
            key = _key(where, str(k).replace("-", "_"))  # as given (an old name too)
            k = _renamed(cls, where, str(k).replace("-", "_"), mapping or {}, notes)
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
    message that starts with a setting's name gets that setting's source in front. The notes on
    old names are printed once the settings are good (a refusal stays one line)."""
    notes: list = []
    values, origin = merge(cls, layers, skip, notes)
    obj = cls(**{**values, **(fixed or {})})
    if hasattr(obj, "validate"):
        try:
            obj = obj.validate()
        except UserError as e:
            name, colon, rest = str(e).partition(":")
            if colon and name in origin and origin[name] != name:
                raise UserError(f"{origin[name]}:{rest}") from None
            raise
    say_notes(notes)
    return obj
