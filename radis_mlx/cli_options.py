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
from dataclasses import dataclass, field
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


def _kind(f: dataclasses.Field) -> tuple[str, bool]:
    """('int', optional?) from the annotation's text (the configs use ``from __future__ import annotations``)."""
    t = str(f.type)
    return t.split(" ")[0].split("[")[0], "None" in t


def _option(cls, f: dataclasses.Field, decls: tuple, required: bool, help: str | None, hidden=False):
    """(annotation, typer.Option) of the field's flag."""
    base, optional = _kind(f)
    if base not in _TYPES:
        raise TypeError(f"{cls.__name__}.{f.name}: no flag for a {base} setting; give the command a parameter of "
                        "that name, or skip it")
    text = help if help is not None else f.metadata.get("help", "")
    choices = f.metadata.get("choices")
    if base == "list":
        text += " (comma-separated)"
    if required:
        text += " [required]"
    show = None if required else shown_default(f)
    kw = dict(help=text, hidden=hidden, show_default=show is not None)
    if base == "bool":
        spelled = f.metadata.get("flag") or f"{flag_name(f.name)}/--no-{f.name.replace('_', '-')}"
        names = (spelled if not hidden else f"--{decls[0]}/--no-{decls[0]}",) + (decls if not hidden else ())
        return (Optional[bool] if show is None else bool), typer.Option(show, *names, **kw)
    if choices:
        kw["metavar"] = "|".join(map(str, choices))
    names = (flag_name(decls[0]),) if hidden else (f.metadata.get("flag") or flag_name(f.name), *decls)
    return Optional[_TYPES[base]], typer.Option(show, *names, **kw)


@dataclass
class Given:
    """What the command line said: the settings typed as flags, ``--config``, and every typed parameter."""
    cls: type
    flags: dict  # setting (or its old name) -> value, only those typed
    config: Path | None = None
    typed: set = field(default_factory=set)  # parameter names typed on the command line, own ones included
    required: tuple = ()
    _file: tuple | None = None

    def layers(self) -> list[tuple[str, dict]]:
        if self.config and self._file is None:
            self._file = settings.file_layer(self.config)
        return [*([self._file] if self._file else []), (settings.FLAGS, self.flags)]

    def has(self, key: str) -> bool:
        """Whether the flags or the --config file give ``key``."""
        return any(key in m or key.replace("_", "-") in m for _, m in self.layers())

    def build(self, fixed: dict | None = None):
        """The settings: defaults < --config < the typed flags (settings.build: its checks and messages)."""
        for key in self.required:
            if not self.has(key):
                raise UserError(f"{flag_name(key)}: required")
        return settings.build(self.cls, self.layers(), fixed)


def from_config(cls, *, aliases: dict | None = None, skip: tuple = (), required: tuple = (), old_flags: tuple = (),
                help: dict | None = None):
    """Decorate ``fn(given, **own)`` into a Typer command whose options are ``cls``'s fields.

    ``aliases``: more spellings of a field's flag ({"data": "-d"}); ``skip``: fields that are not flags
    of this command; ``required``: settings the command needs from a flag or --config (fields without
    a default always are); ``old_flags``: old names (``cls.OLD_NAMES``) that keep a hidden flag; ``help``:
    a field's help where the config does not state it."""
    aliases, help = aliases or {}, help or {}
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]
    by_name = {f.name: f for f in fields}
    old_names = getattr(cls, "OLD_NAMES", {})
    required = tuple(required) + tuple(f.name for f in fields if default_of(f) is dataclasses.MISSING)

    def decorate(fn):
        hints = typing.get_type_hints(fn)
        own = {p.name: p for p in inspect.signature(fn).parameters.values() if p.name != "given"}
        by_field = {n.rstrip("_"): n for n in own}
        params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
        derived = {}  # parameter -> field (or old name)

        def add(name, annotation, default):
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                                            default=default))

        for f in fields:
            if f.name in by_field:  # the command's own parameter: the field's help unless it has one
                p = own.pop(by_field[f.name])
                info = copy(p.default)
                if getattr(info, "help", "") is None:
                    info.help = help.get(f.name, f.metadata.get("help"))
                add(p.name, hints[p.name], info)
            elif f.metadata.get("cli", True):
                a = aliases.get(f.name, ())
                add(f.name, *_option(cls, f, (a,) if isinstance(a, str) else tuple(a), f.name in required,
                                     help.get(f.name)))
                derived[f.name] = f.name
        for p in own.values():
            add(p.name, hints[p.name], p.default)
        if "config" not in by_field:
            add("config", Optional[Path], typer.Option(None, "--config", "-c", help=CONFIG_HELP))
        for old in old_flags:
            add(old, *_option(cls, by_name[old_names[old]], (old.replace("_", "-"),), False, "", hidden=True))
            derived[old] = old
        text = {n for n in derived if by_name[old_names.get(n, n)].metadata.get("text")}

        def command(ctx: typer.Context, **kw):
            typed = {n for n in kw if getattr(ctx.get_parameter_source(n), "name", None) in _TYPED}
            flags = {}
            for name, key in derived.items():
                v = kw.pop(name)
                if name in typed:
                    flags[key] = unescape(v) if name in text and isinstance(v, str) else v
            config = kw.pop("config") if "config" not in by_field else kw.get("config")
            return fn(Given(cls, flags, config, typed, required), **kw)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__name__, command.__qualname__, command.__doc__ = fn.__name__, fn.__qualname__, fn.__doc__
        command.__module__ = fn.__module__
        command.fields = [f.name for f in fields]  # for the tests: what the options were made from
        return command

    return decorate
