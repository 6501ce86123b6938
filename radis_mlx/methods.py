"""The method registry: every training method and every generate mode, each declared once.

A generate mode (``Mode``) says what prompt the generate stage shows the model, how its output
is cleaned, and how one generated row becomes a training target (prompt + segmented answer):
one small class per mode, as mlx-lm's ``tuner/datasets.py`` has one class per data format.

A method (``Method``) says which mode(s) make its data, which files finetune accepts as its
data, and what extra data it mixes in at what share of each epoch. ``generate``, ``finetune``,
``run`` and the CLI help all read these tables, so adding a method is one ``register`` call
(plus a ``register_mode`` when it needs a new kind of generated text).

The registry only declares: it stands on the ground floor (prompts, data, targets, cuts, fileio)
and names no stage's code. The stages read it: generate its prompts and filters (and runs a
composite mode by its name), finetune its rules (tuner/datasets.py reads rows and files into
targets by them). A mode registered at
run time (in a notebook or a test) is known to this process only: generate's worker processes
(on the CPU, 64+ rows) import this module afresh, so there pass ``workers=1``, or register it in
a module they import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import prompts
from .cuts import make_cut
from .data import Pair
from .fileio import UserError, read_json
from .targets import EOT, PROMPT, RAT, REF


# ---------------------------------------------------------------- generate modes

class Mode:
    """A kind of generated text. Subclasses set ``name`` and override what differs."""
    name = ""
    help = ""
    reads = "pairs"  # the input rows: "pairs" (translation) or "instructions"
    rationale = False  # the text explains the reference (kept after it), not a new answer
    # Made from other generate runs, not one decode: by the generate stage's runner of the mode's name
    # (generate/stage.py COMPOSITE), which the stage looks up, so this table names no stage's code.
    composite = False
    trims_unfinished = True  # apply --unfinished to outputs that hit max_tokens
    # A mode that picks another per model: it tries ``tries`` on the first rows and falls back to
    # ``fallback`` where that yields too little (generate/auto.py); its rows carry the mode it chose.
    tries: str | None = None
    fallback: str | None = None
    own_settings: tuple = ()  # GenerateConfig fields only this mode reads (in its outputs' fingerprint)

    def prompt(self, tokenizer, pair: Pair, t: prompts.Templates) -> str:
        return prompts.translation_prompt(tokenizer, pair, t)

    def clean(self, text: str) -> str:
        return text

    def rejected(self, text: str) -> str | None:
        """A mode's own filter: the reason to reject ``text``, or None."""
        return None

    def pieces(self, text: str, ref: str, separator: str) -> list[tuple[str, int]]:
        """The answer of a kept row with non-empty text, as (text, segment) pieces."""
        return [(text.strip(), REF)]


class RationaleContinue(Mode):
    name, rationale = "rationale-continue", True
    help = "the turn is prefilled with the reference; the model's continuation is the rationale"

    def prompt(self, tokenizer, pair, t):
        return prompts.translation_prompt(tokenizer, pair, t, prefill=pair.ref)

    def pieces(self, text, ref, separator):
        return [(ref, REF), (text, RAT)]  # stored verbatim after the prefilled reference


class RationaleExplain(Mode):
    name, rationale = "rationale-explain", True
    help = "a user turn shows source + reference and asks for an explanation"

    def prompt(self, tokenizer, pair, t):
        return prompts.explain_prompt(tokenizer, pair, t)

    def pieces(self, text, ref, separator):
        return [(ref, REF), (separator + text.strip(), RAT)]


class RationaleAuto(Mode):
    name, rationale = "rationale-auto", True
    tries, fallback = "rationale-continue", "rationale-explain"
    own_settings = ("auto_probe_rows", "auto_min_yield")
    help = ("rationale-continue where it yields rationales on the first rows (auto_probe_rows), else "
            "rationale-explain; the choice is kept in the output's meta")


class SeqKD(Mode):
    name, trims_unfinished = "seqkd", False  # a cut translation is cut at its end anyway
    help = "the model's own translation replaces the reference (self-SeqKD)"

    def clean(self, text):
        return prompts.cut_translation(text)[0]


class SDFT(Mode):
    name = "sdft"
    help = "the model rewrites the reference in its own words (SDFT); rejected rewrites keep it"

    def prompt(self, tokenizer, pair, t):
        return prompts.sdft_prompt(tokenizer, pair, t)

    def rejected(self, text):
        return "sdft-banned" if prompts.sdft_rejected(text) else None


class Replay(Mode):
    name, reads = "replay", "instructions"
    help = "the model's own answers to general instructions (TransLLM's recovery KD)"


class TCoTRows(Mode):
    name, reads, composite = "tcot", "instructions", True
    own_settings = ("tcot_lang", "translator")
    help = "TransLLM's TCoT rows (target-language query -> <EN> .. <RESPONSE> .. <DE> ..) and recovery-KD rows"


MODES: dict[str, Mode] = {}


def register_mode(mode: Mode) -> Mode:
    MODES[mode.name] = mode
    return mode


for _m in (RationaleContinue(), RationaleExplain(), RationaleAuto(), SeqKD(), SDFT(), Replay(), TCoTRows()):
    register_mode(_m)


# ---------------------------------------------------------------- methods

def rationale_turn(tokenizer, pair: Pair, t: prompts.Templates, pieces: list) -> list:
    """radis-turn's answer: the reference ends its own turn (its end-of-turn token trained as the
    reference's), a short user follow-up (masked) asks for the explanation, and the rationale is the
    next assistant turn (build_examples ends it with the end of turn)."""
    ref = [p for p in pieces if p[1] == REF]
    rat = "".join(x for x, seg in pieces if seg == RAT).strip()
    if not rat:
        return pieces
    return [*ref, (prompts.end_of_turn(tokenizer), EOT), (prompts.follow_up_turn(tokenizer, pair, t), PROMPT),
            (rat, RAT)]


@dataclass(frozen=True)
class Rule:
    """The files a finetune input accepts: generate rows of ``modes`` (None: any mode), or plain
    files of the kinds in ``plain`` ("pairs", "instructions"). ``ref_only`` trains translation
    rows on the reference alone; ``layout`` (tokenizer, pair, templates, pieces) -> pieces lays
    a generated row's answer out in turns (None: one assistant turn, as the mode gives it)."""
    modes: tuple | None = ()
    plain: tuple = ()
    ref_only: bool = False
    layout: object = None


@dataclass(frozen=True)
class Extra:
    """A second dataset mixed into every epoch: the finetune setting naming it, what it accepts,
    whether the method needs it, and its default share of each epoch."""
    setting: str = "replay_data"
    rule: Rule = Rule(modes=("replay",), plain=("instructions",))
    required: bool = False
    ratio: float = 0.25


GENERATED = "generated"  # in Method.inputs: the file the method's generate stage wrote


@dataclass(frozen=True)
class Method:
    name: str
    help: str
    data: Rule | None = None  # what finetune's `data` accepts; None: nothing is trained (base)
    generate: tuple = ()  # the modes `run` may generate for it; the first is the default
    generate_from: str = "train_data"  # the recipe's data the generate stage reads
    # Where `run` takes each finetune input from: a recipe key, or GENERATED.
    inputs: dict = field(default_factory=lambda: {"data": GENERATED})
    extra: Extra = Extra()
    explains: bool = False  # its answers carry a rationale after the translation, in the same turn

    @property
    def trains(self) -> bool:
        return self.data is not None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    for m in method.generate:
        get_mode(m)
    METHODS[method.name] = method
    return method


def _lookup(table: dict, kind: str, name, where: str):
    """Name -> entry, with one error message for every registry (as mlx-lm's _get_classes)."""
    if isinstance(name, str) and name in table:
        return table[name]
    prefix = f"{where}: " if where else ""
    raise UserError(f"{prefix}unknown {kind} {name!r} (choose from {', '.join(table)})")


def get(name, where: str = "") -> Method:
    return _lookup(METHODS, "method", name, where)


def get_mode(name, where: str = "") -> Mode:
    return _lookup(MODES, "mode", name, where)


def trained() -> list[str]:
    return [n for n, m in METHODS.items() if m.trains]


def modes_help() -> str:
    return " | ".join(MODES)


def describe() -> str:
    """The registry as text: what each method generates, trains on and mixes in (``radis-mlx methods``)."""
    lines = []
    for m in METHODS.values():
        lines.append(f"{m.name:10s} {m.help}")
        if not m.trains:
            continue
        rows = f"{', '.join(m.data.modes) if m.data.modes is not None else 'any'} rows"
        rows += " (their references)" if m.data.ref_only else ""
        reads = " or ".join([rows, *(f"plain {k}" for k in m.data.plain)])
        mix = f"{m.extra.setting}, {m.extra.ratio:.0%} of each epoch" + ("" if m.extra.required else " (optional)")
        lines.append(f"{'':10s} generate: {', '.join(m.generate) or '-'}; trains on: {reads}; mixes: {mix}")
    lines.append("")
    lines += [f"{name:19s} {mode.help}" for name, mode in MODES.items()]
    return "\n".join(lines)


# The modes rows are written in (a mode that picks another, rationale-auto, writes the one it picked).
TRANSLATION = tuple(n for n, m in MODES.items() if m.reads == "pairs" and m.tries is None)
RADIS = tuple(n for n, m in MODES.items() if m.rationale and m.tries is None)

for _method in (
    Method("base", "the model as it is (no training)", data=None, inputs={}),
    Method("sft", "fine-tune on the references alone", Rule(TRANSLATION, ("pairs",), ref_only=True),
           inputs={"data": "train_data"}),
    Method("seqkd", "fine-tune on the model's own translations", Rule(("seqkd",)), generate=("seqkd",)),
    Method("sdft", "fine-tune on the model's rewrites of the references", Rule(("sdft",)), generate=("sdft",)),
    Method("replay", "references + the model's own answers to general instructions",
           Rule(TRANSLATION, ("pairs",), ref_only=True), generate=("replay",), generate_from="replay_data",
           inputs={"data": "train_data", "replay_data": GENERATED}, extra=Extra(required=True)),
    Method("mix", "references + a second dataset (mix_data)", Rule(None, ("pairs", "instructions")),
           inputs={"data": "train_data", "mix_data": "mix_data"},
           extra=Extra("mix_data", Rule(None, ("pairs", "instructions")), required=True)),
    # TransLLM: TCoT + recovery-KD rows from the general instructions, translation pairs mixed in.
    Method("transllm", "TCoT rows + recovery KD from general instructions, translation pairs mixed in (TransLLM)",
           Rule(("tcot",)), generate=("tcot",), generate_from="replay_data",
           inputs={"data": GENERATED, "mix_data": "train_data"},
           extra=Extra("mix_data", Rule(None, ("pairs",)), required=False)),
    # rationale-explain first: the mode the recipes and the paper's main results use.
    Method("radis", "reference + the model's own rationale (RaDis)", Rule(RADIS),
           generate=("rationale-explain", "rationale-continue", "rationale-auto"), explains=True),
    # The same rows, in two exchanges: the translation ends its turn, so the model learns to stop
    # after it, and its own rationale still anchors it (trained in the follow-up turn).
    Method("radis-turn", "RaDis with the rationale in a second turn: the translation ends its own turn",
           Rule(RADIS, layout=rationale_turn),
           generate=("rationale-explain", "rationale-continue", "rationale-auto")),
):
    register(_method)

DEFAULT_METHOD = "radis"
DEFAULT_MODE = get(DEFAULT_METHOD).generate[0]


# ---------------------------------------------------------------- where a trained model's answer ends

def trained_method(adapter) -> str | None:
    """The method an adapter was trained with, from its own run files (adapter_config.json, which
    finetune writes with the run's settings); None for adapters from elsewhere."""
    f = Path(adapter) / "adapter_config.json"
    try:
        method = (read_json(f).get("radis") or {}).get("method") if f.is_file() else None
    except (ValueError, OSError, AttributeError):
        return None
    return method if method in METHODS else None


def runtime_stops(tokenizer, method: str | None) -> list[str]:
    """What a runtime (Ollama, llama.cpp, LM Studio, transformers) must stop at to answer as eval
    scores: the end of turn, and for a method whose answers carry a rationale, eval's default cut."""
    stops = [prompts.end_of_turn(tokenizer)]
    if method and get(method).explains:
        stops += [s for s in make_cut().stop_strings if s not in stops]
    return stops

