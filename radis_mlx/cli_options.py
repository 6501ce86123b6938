"""A command's flags made from its settings dataclass (settings.py): one option per field, with the
field's help, default and choices, so the flags cannot drift from the settings.

    @app.command()
    @from_config(GenerateConfig, aliases={"data": "-d", "out": "-o"})
    def generate(given: Given):
        cfg = given.build()

A field's flag is its name with dashes (``--max-tokens``; a bool field ``--x/--no-x``, or its
metadata's ``flag``); ``text`` fields unescape ``\\n``, ``\\t`` and ``\\\\``; ``list`` fields are
comma lists. The command's own parameters stay ordinary Typer parameters: extra switches (--lora),
and a parameter named as a field (``input_`` for ``input``), which replaces that field's option,
takes its help when it states none and is the command's to turn into settings (e.g. eval's
repeatable --test-data SUITE=PATH). Every command gets ``--config FILE`` (a YAML file of settings).

Only the flags typed on the command line form the flags layer, so defaults < --config < flags and
an option's shown default never hides a YAML value. A setting's old name (the config's
``OLD_NAMES``) named in ``old_flags`` keeps a hidden flag; settings.build prints the note.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from . import settings
from .evals.flags import unescape
from .fileio import UserError

_TYPES = {"str": str, "int": int, "float": float, "bool": bool, "list": str}
# How a value reached a parameter (click's ParameterSource, by name: typer vendors its own click).
_TYPED = ("COMMANDLINE", "ENVIRONMENT")
CONFIG_HELP = "YAML file of settings (its keys: the flags' names; flags override it)"


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def escape(text: str) -> str:
    """``unescape``'s inverse: a default as it would be typed."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def default_of(f: dataclasses.Field):
    """The field's default (MISSING: none, the setting is required)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def shown_default(f: dataclasses.Field):
    """The field's default as the flag takes it (what --help shows): a list as a comma list, text
    escaped; None when there is none to show."""
    v = default_of(f)
    if v is dataclasses.MISSING or v is None or v == {} or v == []:
        return None
    if isinstance(v, list):
        return ",".join(map(str, v))
    return escape(v) if f.metadata.get("text") and isinstance(v, str) else v


def _base(f: dataclasses.Field) -> str:
    """'int' for ``int | None``: the annotation's text (the configs use ``from __future__ import annotations``)."""
    return str(f.type).split(" ")[0].split("[")[0]


def _spelling(name: str, base: str) -> str:
    """A setting's flag by default: ``--max-tokens``; a bool setting ``--x/--no-x``."""
    return f"{flag_name(name)}/--no-{name.replace('_', '-')}" if base == "bool" else flag_name(name)


def _option(cls, f: dataclasses.Field, names: tuple, required: bool, help: str | None, hidden: bool = False):
    """(annotation, typer.Option) of the field's flag, spelled ``names``."""
    base = _base(f)
    if base not in _TYPES:
        raise TypeError(f"{cls.__name__}.{f.name}: no flag for a {base} setting; give the command a parameter of "
                        "that name, or skip it")
    text = help if help is not None else f.metadata.get("help", "")
    if base == "list":
        text += " (comma-separated)"
    if required:
        text += " (required)"
    show = None if required else shown_default(f)
    kw = dict(help=text, hidden=hidden, show_default=show is not None)
    if f.metadata.get("choices"):
        kw["metavar"] = "|".join(map(str, f.metadata["choices"]))
    typ = _TYPES[base] if base == "bool" and show is not None else Optional[_TYPES[base]]
    return typ, typer.Option(show, *names, **kw)


@dataclass
class Given:
    """What the command line said: the settings typed as flags, and the --config file."""
    cls: type
    flags: dict  # setting (or its old name) -> value, only those typed
    config: Path | None = None
    required: tuple = ()  # settings a flag or the --config file must give
    _file: tuple | None = None

    def layers(self) -> list[tuple[str, dict]]:
        if self.config and self._file is None:
            self._file = settings.file_layer(self.config)
        return [*([self._file] if self._file else []), (settings.FLAGS, self.flags)]

    def has(self, key: str) -> bool:
        """Whether the flags or the --config file give ``key``."""
        return any(key in m or key.replace("_", "-") in m for _, m in self.layers())

    def build(self, fixed: dict | None = None, required: bool = True):
        """The settings: defaults < --config < the typed flags (settings.build: its checks and messages);
        ``required``: refuse a missing required setting (False: the command checks what it needs)."""
        for key in self.required if required else ():
            if not self.has(key):
                raise UserError(f"{flag_name(key)}: required")
        return settings.build(self.cls, self.layers(), fixed)


def _parameters(cls, fn, fields, aliases, required, old_flags, help) -> tuple[list, list]:
    """The command's parameters, in the fields' order (the command's own ones in their field's place,
    then its others, --config and the hidden old names), and those that are settings' flags."""
    hints = typing.get_type_hints(fn)
    own = {p.name: p for p in inspect.signature(fn).parameters.values() if p.name != "given"}
    by_field = {n.rstrip("_"): n for n in own}
    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    flags = []

    def add(name, annotation, default):
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))

    for f in fields:
        if f.name in by_field:  # the command's own parameter: the field's help unless it states one
            p = own.pop(by_field[f.name])
            info = copy(p.default)
            if info.help is None:
                info.help = help.get(f.name, f.metadata.get("help"))
            add(p.name, hints[p.name], info)
        elif f.metadata.get("cli", True):
            more = aliases.get(f.name, ())
            names = (f.metadata.get("flag") or _spelling(f.name, _base(f)),
                     *((more,) if isinstance(more, str) else more))
            add(f.name, *_option(cls, f, names, f.name in required, help.get(f.name)))
            flags.append(f.name)
    for p in own.values():
        add(p.name, hints[p.name], p.default)
    add("config", Optional[Path], typer.Option(None, "--config", "-c", help=CONFIG_HELP))
    for old in old_flags:
        f = next(f for f in fields if f.name == cls.OLD_NAMES[old])
        add(old, *_option(cls, f, (_spelling(old, _base(f)),), False, "", hidden=True))
        flags.append(old)
    return params, flags


def from_config(cls, *, aliases: dict | None = None, skip: tuple = (), required: tuple = (), old_flags: tuple = (),
                help: dict | None = None):
    """Decorate ``fn(given, **own)`` into a Typer command whose options are ``cls``'s fields.

    ``aliases``: more spellings of a field's flag ({"data": "-d"}); ``skip``: fields that are not flags
    of this command; ``required``: settings the command needs from a flag or --config (fields without
    a default always are); ``old_flags``: old names (``cls.OLD_NAMES``) that keep a hidden flag; ``help``:
    a field's help where the config does not state it."""
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    required = tuple(required) + tuple(f.name for f in fields if default_of(f) is dataclasses.MISSING)
    old_names = getattr(cls, "OLD_NAMES", {})
    text = {f.name for f in fields if f.metadata.get("text")}

    def decorate(fn):
        params, flags = _parameters(cls, fn, fields, aliases or {}, required, old_flags, help or {})

        def command(ctx: typer.Context, **kw):
            typed = {n for n in flags if getattr(ctx.get_parameter_source(n), "name", None) in _TYPED}
            given = {n: kw.pop(n) for n in flags}
            given = {n: unescape(v) if old_names.get(n, n) in text and isinstance(v, str) else v
                     for n, v in given.items() if n in typed}
            return fn(Given(cls, given, kw.pop("config"), required), **kw)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
            setattr(command, attr, getattr(fn, attr))
        return command

    return decorate
