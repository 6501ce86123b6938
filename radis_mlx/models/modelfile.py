"""Where an exported model stops: the Ollama ``Modelfile`` written beside a GGUF, and the stops
written into a fused model's ``generation_config.json``.

Both carry the stops the caller names (methods.runtime_stops: the end of turn, plus eval's cut for
a method whose answers carry a rationale), so ``ollama run`` and transformers' ``generate`` end an
answer where eval's decoding stops it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_write_text, read_json

_PROBE = "\x00RADIS-PROBE\x00"

# Ollama's own ChatML template (SmolLM2 and Qwen2.5 are ChatML), with the system turn the model's
# template adds when the prompt names none (Qwen2.5's "You are Qwen ...": eval's prompts carry it).
CHATML = ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
          '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
          '<|im_start|>assistant\n')


def default_system(tokenizer) -> str | None:
    """The system prompt the chat template writes when the conversation has none (Qwen2.5's)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE}], tokenize=False,
                                         add_generation_prompt=True)
    head = text[:text.index(_PROBE)]
    start = "<|im_start|>system\n"
    if start in head:
        return head[head.index(start) + len(start):].split("<|im_end|>", 1)[0]
    return None


def _quote(value: str) -> str:
    """A Modelfile value as Ollama's own writer quotes it: line breaks stay literal inside quotes
    (its parser reads a quoted value across lines and decodes no escapes)."""
    if '"' in value:
        return f'"""{value}"""'
    return f'"{value}"'


def modelfile_text(gguf_name: str, tokenizer, stops: list[str]) -> str:
    lines = ["# Written by radis-mlx export: eval's prompt format, greedy decoding, and eval's stops.",
             f"FROM ./{gguf_name}"]
    if "<|im_end|>" in stops:  # ChatML; for other templates Ollama derives one from the GGUF's own
        lines.append(f'TEMPLATE """{CHATML}"""')
        system = default_system(tokenizer)
        if system:
            lines.append(f"SYSTEM {_quote(system)}")
    lines.append("PARAMETER temperature 0")
    lines += [f"PARAMETER stop {_quote(s)}" for s in stops]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: Path, tokenizer, stops: list[str]) -> Path:
    path = Path(gguf).with_name("Modelfile")
    atomic_write_text(path, modelfile_text(Path(gguf).name, tokenizer, stops))
    return path


def write_generation_stops(model_dir: Path, tokenizer, stops: list[str]) -> None:
    """``eos_token_id`` (mlx-lm and transformers both stop at these token ids) and ``stop_strings``
    (transformers only, when generate() is given the tokenizer) in generation_config.json."""
    path = Path(model_dir) / "generation_config.json"
    conf = read_json(path) if path.is_file() else {}
    ids = []
    for s in stops:
        tid = tokenizer.convert_tokens_to_ids(s) if hasattr(tokenizer, "convert_tokens_to_ids") else None
        if isinstance(tid, int) and tid != getattr(tokenizer, "unk_token_id", None):
            ids.append(tid)
    eos = conf.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    conf["eos_token_id"] = list(dict.fromkeys([*eos, *ids]))
    strings = [s for s in stops if tokenizer.convert_tokens_to_ids(s) not in ids] if ids else list(stops)
    if strings:
        conf["stop_strings"] = strings
    atomic_write_text(path, json.dumps(conf, indent=2, ensure_ascii=False) + "\n")
