"""Every prompt the pipeline shows a model, and how it is wrapped in the model's chat template.

generate, finetune and eval all build translation prompts here, so a model is trained on
exactly the text it is later asked to translate with.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import cuts
from .data import Pair, lang_name
from .fileio import UserError

# ALMA's instruction (Xu et al., 2024), the RaDis paper's default.
TRANSLATE = "Translate this from {src_name} to {tgt_name}:\n{src_name}: {src}\n{tgt_name}:"

EXPLAIN = (
    "{instruction} {ref}\n\n"
    "Above is a translation task and its reference translation. Explain the translation: "
    "how the meaning, key words and grammar of the {src_name} text are carried over into {tgt_name}."
)

# radis-turn's second user turn: the translation has ended its turn; this asks for the rationale.
FOLLOW_UP = "Explain your translation: how are the meaning, key words and grammar of the {src_name} text carried over?"

SDFT_SYSTEM = ("Below are an instruction that describes a task along with a reference answer. "
               "Using the reference answer as a guide, write your own response.")
SDFT_USER = "### Instruction:\n{instruction}\n\n### Reference Answer:\n{reference}\n\n### Response:\n"
SDFT_BANNED = ("reference answer", "your response", "my response", "your own response", "now it's your turn")

_PROBE = "\x00RADIS-PROBE\x00"


@dataclass
class Templates:
    """The user-configurable prompt texts; saved with every output so runs are comparable."""
    translate: str = TRANSLATE
    explain: str = EXPLAIN
    follow_up: str = FOLLOW_UP
    sdft_system: str = SDFT_SYSTEM
    sdft_user: str = SDFT_USER
    system: str | None = None  # extra system prompt for translation prompts (None: template default)


def _fields(pair: Pair) -> dict:
    return {"src": pair.src, "ref": pair.ref, "src_lang": pair.src_lang, "tgt_lang": pair.tgt_lang,
            "src_name": lang_name(pair.src_lang), "tgt_name": lang_name(pair.tgt_lang)}


def instruction(pair: Pair, template: str = TRANSLATE) -> str:
    try:
        return template.format(**_fields(pair))
    except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"bad prompt template {template!r}: {e} (fields: src, ref, src_name, tgt_name, "
                        "src_lang, tgt_lang)") from None


def _messages(user: str, system: str | None):
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


_PLAIN_ROLES = {"user": "User", "assistant": "Assistant"}


def chat_turns(tokenizer, messages: list[dict], thinking: bool = False) -> str:
    """A conversation rendered to open the next assistant turn (MT-Bench's turn 2 has three messages).

    A model without a chat template gets plain ``User: ... / Assistant:`` lines, any system message
    first as a paragraph of its own.
    """
    if not getattr(tokenizer, "chat_template", None):
        system = "".join(f"{m['content']}\n\n" for m in messages if m["role"] == "system")
        turns = [f"{_PLAIN_ROLES[m['role']]}: {m['content']}" for m in messages if m["role"] != "system"]
        return system + "\n".join(turns) + "\nAssistant:"
    # enable_thinking is read by thinking-capable templates (Qwen3 and kin) and ignored elsewhere.
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                         enable_thinking=thinking)


def chat(tokenizer, user: str, system: str | None = None, assistant_prefix: str = "",
         thinking: bool = False) -> str:
    """The prompt text that opens an assistant turn (optionally prefilled) after ``user``."""
    text = chat_turns(tokenizer, _messages(user, system), thinking)
    plain = not getattr(tokenizer, "chat_template", None)
    return text + (" " if plain and assistant_prefix else "") + assistant_prefix


def end_of_turn(tokenizer) -> str:
    """The text the chat template puts after an assistant message (e.g. ``<|im_end|>``)."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer.eos_token or ""
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    full = tokenizer.apply_chat_template(msgs, tokenize=False, enable_thinking=False)
    tail = full[full.index(_PROBE) + len(_PROBE):]
    # Keep only the end-of-turn marker; the newline after it is never generated.
    return tail.rstrip("\n") or (tokenizer.eos_token or "")


def translation_prompt(tokenizer, pair: Pair, t: Templates = Templates(), prefill: str = "") -> str:
    return chat(tokenizer, instruction(pair, t.translate), t.system, prefill)


def follow_up_turn(tokenizer, pair: Pair, t: Templates = Templates()) -> str:
    """The text between the end of the translation's turn and the rationale (radis-turn): the
    template's newline after the end of turn, the follow-up user turn, the next assistant turn's
    opening. Rendered by the chat template itself, as the conversation of the two turns."""
    user = instruction(pair, t.translate)
    msgs = _messages(user, t.system) + [{"role": "assistant", "content": _PROBE},
                                        {"role": "user", "content": t.follow_up.format(**_fields(pair))}]
    if not getattr(tokenizer, "chat_template", None):
        return f"\nUser: {msgs[-1]['content']}\nAssistant:"
    full = chat_turns(tokenizer, msgs)
    after = full[full.index(_PROBE) + len(_PROBE):]
    eot = end_of_turn(tokenizer)
    if not after.startswith(eot):
        raise UserError(f"radis-turn: the chat template does not end an assistant turn with {eot!r}")
    return after[len(eot):]


def explain_prompt(tokenizer, pair: Pair, t: Templates = Templates()) -> str:
    user = t.explain.format(instruction=instruction(pair, t.translate), **_fields(pair))
    return chat(tokenizer, user, t.system)


def sdft_prompt(tokenizer, pair: Pair, t: Templates = Templates()) -> str:
    user = t.sdft_user.format(instruction=instruction(pair, t.translate), reference=pair.ref)
    return chat(tokenizer, user, t.sdft_system)


def sdft_rejected(text: str) -> bool:
    low = text.lower()
    return any(b in low for b in SDFT_BANNED) or low.lstrip().startswith("your turn")


def adds_special_tokens(tokenizer, text: str) -> bool:
    """Whether tokenising rendered chat text should add the tokenizer's specials: not when the chat
    template already wrote the BOS (a doubled BOS is input the model never saw)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


def encode(tokenizer, text: str) -> list[int]:
    """Tokenise rendered chat text (see adds_special_tokens)."""
    return tokenizer.encode(text, add_special_tokens=adds_special_tokens(tokenizer, text))


def cut_translation(text: str, stop: str = "\n\n") -> tuple[str, bool]:
    """Keep the translation and drop anything appended after it (a RaDis model may explain)."""
    return cuts.cut(text, cuts.StringCut(stop))
