"""IFEval (Zhou et al. 2023, arXiv 2311.07911) instruction-following checker.

An independent implementation of the verdict semantics of the official checker
(google-research ``instruction_following_eval``).  ``conformance()`` measures
agreement with the official verdicts shipped in ``shared/data/ifeval``.

The official checker leans on nltk (punkt sentence splitter, Treebank word
tokenizer) and langdetect.  The nltk parts are reimplemented here in pure
Python; language identification is delegated to the optional ``langdetect``
package because its verdicts on short texts ("etchings" -> German) cannot be
reproduced without its n-gram profiles. Both live in ifeval_text.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..data import sample
from ..fileio import DataError, atomic_write_jsonl, iter_jsonl
from ..results import Column, badge, esc, is_refusal, meta, out_block, pick, refusal_rate
from .ifeval_text import count_sentences, count_words, detect_language, word_tokens
from .suites import IFEVAL_HUB, Html, Outcome, items_path, register

# --------------------------------------------------------------------------- data


@dataclass
class IFEvalPrompt:
    key: int
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict]


def _field(path, lineno, row, name, types):
    if name not in row:
        raise DataError(path, lineno, name, "missing")
    v = row[name]
    # bool is an int subclass; a key of `true` is a data error, not key 1
    if isinstance(v, bool) or not isinstance(v, types):
        raise DataError(path, lineno, name, f"expected {types}, got {type(v).__name__}")
    return v


def load_prompts(path) -> list[IFEvalPrompt]:
    out, seen = [], set()
    for lineno, row in iter_jsonl(path):
        key = _field(path, lineno, row, "key", int)
        prompt = _field(path, lineno, row, "prompt", str)
        ids = _field(path, lineno, row, "instruction_id_list", list)
        kwargs = _field(path, lineno, row, "kwargs", list)
        if key in seen:
            raise DataError(path, lineno, "key", f"duplicate key {key}")
        seen.add(key)
        for i in ids:
            if i not in CHECKERS:
                raise DataError(path, lineno, "instruction_id_list", f"unknown instruction id {i!r}")
        if len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            raise DataError(path, lineno, "kwargs", f"expected {len(ids)} objects, one per instruction id")
        out.append(IFEvalPrompt(key, prompt, list(ids), [dict(k) for k in kwargs]))
    return out


def read_responses(path) -> dict:
    """Official format ``{"prompt", "response"}`` is keyed by prompt text, ``{"key", "response"}`` by key."""
    out = {}
    for lineno, row in iter_jsonl(path):
        response = _field(path, lineno, row, "response", str)
        if "key" in row:
            out[_field(path, lineno, row, "key", int)] = response
        elif "prompt" in row:
            out[_field(path, lineno, row, "prompt", str)] = response
        else:
            raise DataError(path, lineno, "key", "missing (need 'key' or 'prompt')")
    return out


# --------------------------------------------------------------- checkers
# Each checker takes (response, kwargs, prompt).  Regex kwargs (keywords,
# section splitter, postscript marker) are used unescaped, as in the original.

def _compare(n, relation, target):
    if relation == "less than":
        return n < target
    if relation == "at least":
        return n >= target
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


def _existence(r, kw, _):
    return all(re.search(k, r, flags=re.IGNORECASE) for k in kw["keywords"])


def _frequency(r, kw, _):
    n = len(re.findall(kw["keyword"].strip(), r, flags=re.IGNORECASE))
    return _compare(n, kw["relation"], kw["frequency"])


def _forbidden(r, kw, _):
    return not any(re.search(r"\b" + w + r"\b", r, flags=re.IGNORECASE) for w in kw["forbidden_words"])


def _letter_frequency(r, kw, _):
    letter = kw["letter"].strip().lower()
    if len(letter) != 1:
        raise ValueError(f"letter must be a single character, got {kw['letter']!r}")
    # The 2023 checker swapped a non-letter (key 1122 asks for '#') for a random
    # letter, a coin-flip verdict; like upstream today, count the character asked for.
    return _compare(r.lower().count(letter), kw["let_relation"], kw["let_frequency"])


def _language(r, kw, _):
    lang = detect_language(r)
    return lang is None or lang == kw["language"]  # undecidable counts as followed, as officially


def _num_sentences(r, kw, _):
    return _compare(count_sentences(r), kw["relation"], kw["num_sentences"])


def _num_paragraphs(r, kw, _):
    parts = re.split(r"\s?\*\*\*\s?", r)
    # an empty part is allowed only before the first or after the last divider
    if any(not p.strip() for p in parts[1:-1]):
        return False
    return sum(1 for p in parts if p.strip()) == kw["num_paragraphs"]


def _num_words(r, kw, _):
    return _compare(count_words(r), kw["relation"], kw["num_words"])


def _nth_paragraph_first_word(r, kw, _):
    parts = r.split("\n\n")
    n, nth = sum(1 for p in parts if p.strip()), kw["nth_paragraph"]
    # indexes the raw split, so empty parts before the nth still shift it (as officially)
    if nth > n or nth < 1 or not parts[nth - 1].strip():
        return False
    word = parts[nth - 1].split()[0].lstrip("'").lstrip('"')
    first = re.match(r"""[^.,?!'"]*""", word).group(0).lower()
    return n == kw["num_paragraphs"] and first == kw["first_word"].lower()


def _placeholders(r, kw, _):
    return len(re.findall(r"\[.*?\]", r)) >= kw["num_placeholders"]


def _postscript(r, kw, _):
    marker = kw["postscript_marker"].strip()
    pattern = {"P.P.S": r"\s*p\.\s?p\.\s?s.*$", "P.S.": r"\s*p\.\s?s\..*$"}.get(
        marker, r"\s*" + marker.lower() + r".*$")
    return bool(re.findall(pattern, r.lower(), flags=re.MULTILINE))


def _bullets(r, kw, _):
    n = len(re.findall(r"^\s*\*[^*].*$", r, flags=re.MULTILINE))
    n += len(re.findall(r"^\s*-.*$", r, flags=re.MULTILINE))
    return n == kw["num_bullets"]


def _constrained(r, kw, _):
    r = r.strip()
    return any(a in r for a in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


def _highlights(r, kw, _):
    n = sum(1 for h in re.findall(r"\*[^\n*]*\*", r) if h.strip("*").strip())
    n += sum(1 for h in re.findall(r"\*\*[^\n*]*\*\*", r) if h[2:-2].strip())
    return n >= kw["num_highlights"]


def _sections(r, kw, _):
    parts = re.split(r"\s?" + kw["section_spliter"].strip() + r"\s?\d+\s?", r)
    return len(parts) - 1 >= kw["num_sections"]


def _json(r, kw, _):
    r = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):  # one removeprefix each, in order
        r = r.removeprefix(fence)
    r = r.removesuffix("```").strip()
    try:
        json.loads(r)
    except ValueError:
        return False
    return True


def _title(r, kw, _):
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def _two_responses(r, kw, _):
    parts = r.split("******")
    if any(not p.strip() for p in parts[1:-1]):
        return False
    parts = [p for p in parts if p.strip()]
    return len(parts) == 2 and parts[0].strip() != parts[1].strip()


def _repeat_prompt(r, kw, prompt):
    target = kw.get("prompt_to_repeat", prompt)
    return r.strip().lower().startswith(target.strip().lower())


def _end_checker(r, kw, _):
    return r.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower())


def _quotation(r, kw, _):
    r = r.strip()
    return len(r) > 1 and r[0] == '"' and r[-1] == '"'


def _capital_words(r, kw, _):
    n = sum(1 for w in word_tokens(r) if w.isupper())
    return _compare(n, kw["capital_relation"], kw["capital_frequency"])


def _english_capital(r, kw, _):
    if not r.isupper():
        return False
    return detect_language(r) in ("en", None)


def _english_lowercase(r, kw, _):
    if not r.islower():
        return False
    return detect_language(r) in ("en", None)


def _no_comma(r, kw, _):
    return "," not in r


CHECKERS = {
    "keywords:existence": _existence,
    "keywords:frequency": _frequency,
    "keywords:forbidden_words": _forbidden,
    "keywords:letter_frequency": _letter_frequency,
    "language:response_language": _language,
    "length_constraints:number_sentences": _num_sentences,
    "length_constraints:number_paragraphs": _num_paragraphs,
    "length_constraints:number_words": _num_words,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:number_bullet_lists": _bullets,
    "detectable_format:constrained_response": _constrained,
    "detectable_format:number_highlighted_sections": _highlights,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:json_format": _json,
    "detectable_format:title": _title,
    "combination:two_responses": _two_responses,
    "combination:repeat_prompt": _repeat_prompt,
    "startend:end_checker": _end_checker,
    "startend:quotation": _quotation,
    "change_case:capital_word_frequency": _capital_words,
    "change_case:english_capital": _english_capital,
    "change_case:english_lowercase": _english_lowercase,
    "punctuation:no_comma": _no_comma,
}


def loose_variants(response: str) -> list[str]:
    """The official loose-mode rewrites: drop first/last/both lines, and/or all '*'."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(c.replace("*", "") for c in cut)]


def check(instruction_id: str, kwargs: dict, prompt: str, response: str, loose: bool = False) -> bool:
    fn = CHECKERS.get(instruction_id)
    if fn is None:
        raise ValueError(f"unknown IFEval instruction id {instruction_id!r}")
    # HF's copy of the data pads kwargs with nulls for every parameter name
    kw = {k: v for k, v in (kwargs or {}).items() if v is not None}
    candidates = loose_variants(response) if loose else [response]
    try:
        # an empty response never follows anything, whatever the checker says
        return any(r.strip() and fn(r, kw, prompt) for r in candidates)
    except KeyError as e:
        raise ValueError(f"{instruction_id}: missing kwarg {e.args[0]!r}") from None


# ---------------------------------------------------------------- scoring

def score_response(p: IFEvalPrompt, response: str) -> dict:
    strict = [check(i, kw, p.prompt, response) for i, kw in zip(p.instruction_id_list, p.kwargs)]
    loose = [s or check(i, kw, p.prompt, response, loose=True)
             for s, i, kw in zip(strict, p.instruction_id_list, p.kwargs)]
    return {"key": p.key, "prompt": p.prompt, "response": response,
            "instruction_id_list": list(p.instruction_id_list),
            "follow_all_instructions": all(strict), "follow_instruction_list": strict,
            "loose_follow_all_instructions": all(loose), "loose_follow_instruction_list": loose}


def score(prompts, responses: dict) -> tuple[list[dict], dict]:
    """Score prompts that have a response (looked up by key, str(key), then prompt text).

    Prompts without one are left out of the rows and counted in summary["n_missing"].
    """
    rows, missing = [], 0
    for p in prompts:
        r = next((responses[k] for k in (p.key, str(p.key), p.prompt) if k in responses), None)
        if r is None:
            missing += 1
            continue
        rows.append(score_response(p, r))
    n = len(rows)
    n_inst = sum(len(r["follow_instruction_list"]) for r in rows)

    def frac(num, den):
        return num / den if den else 0.0

    summary = {
        "prompt_level_strict": frac(sum(r["follow_all_instructions"] for r in rows), n),
        "instruction_level_strict": frac(sum(sum(r["follow_instruction_list"]) for r in rows), n_inst),
        "prompt_level_loose": frac(sum(r["loose_follow_all_instructions"] for r in rows), n),
        "instruction_level_loose": frac(sum(sum(r["loose_follow_instruction_list"]) for r in rows), n_inst),
        "n_prompts": n, "n_missing": missing,
    }
    return rows, summary


# ------------------------------------------------------------ the suite: prompts, run, official-format files

def ifeval_prompts(ctx, items: list) -> list[str]:
    from .. import prompts
    return [prompts.chat(ctx.loaded.tokenizer, p.prompt) for p in items]


def run_ifeval(ctx, items: list) -> dict:
    outs = ctx.first("ifeval", ifeval_prompts(ctx, items))
    official = items_path(ctx.run_dir, "ifeval").parent  # the run's ifeval/: every official file
    return write_results(official, items, {p.key: o["text"] for p, o in zip(items, outs)})


def write_results(out_dir: Path, items: list, responses: dict) -> dict:
    """Official-format outputs: the responses, and eval_results_{strict,loose}.jsonl verdict rows."""
    rows, summary = score(items, responses)
    # The prompts are benign, so a refusal here is over-refusal: it tells AdvBench's safety from a
    # model that has learnt to refuse everything.
    summary["refusal_rate"] = refusal_rate([r["response"] for r in rows])["refusal_rate"]
    atomic_write_jsonl(out_dir / "input_response_data.jsonl",
                       ({"prompt": r["prompt"], "response": r["response"]} for r in rows))
    for mode, pre in (("strict", ""), ("loose", "loose_")):
        atomic_write_jsonl(out_dir / f"eval_results_{mode}.jsonl", (
            {"instruction_id_list": r["instruction_id_list"], "prompt": r["prompt"], "response": r["response"],
             "follow_all_instructions": r[f"{pre}follow_all_instructions"],
             "follow_instruction_list": r[f"{pre}follow_instruction_list"]} for r in rows))
    return summary


def ifeval_headline(s: dict) -> str:
    return (f"prompt strict {100 * s['prompt_level_strict']:.1f}%, "
            f"instruction strict {100 * s['instruction_level_strict']:.1f}%")


def item_cell(r: dict) -> str:
    """report.html: the verdict on each instruction, and a refusal (over-refusal: the prompts are benign)."""
    verdicts = "".join(f'<li class="{"ok" if ok else "bad"}">{"✓" if ok else "✗"} {esc(i)}</li>'
                       for i, ok in zip(r["instruction_id_list"], r["follow_instruction_list"]))
    refused = '<span class="badge bad">refused</span>' if is_refusal(r["response"]) else ""
    return (meta(badge(bool(r["follow_all_instructions"]), "all followed", "not all followed"), refused)
            + f'<ul class="verdicts">{verdicts}</ul>' + out_block(r["response"]))


register(
    name="ifeval", data="ifeval/input_data.jsonl", hub=IFEVAL_HUB, max_tokens=512,
    load=lambda cfg, path, limit: sample(load_prompts(path), limit, cfg.seed), prompts=ifeval_prompts,
    run=run_ifeval, headline=ifeval_headline,
    items="ifeval/eval_results_strict.jsonl",  # the official files (write_results) in the run's ifeval/
    outcome=Outcome("prompt", lambda r: float(r["follow_all_instructions"]), "ifeval"),
    columns=(Column("ifeval", "IFEval strict", "pct", True), Column("ifeval_loose", "IFEval loose", "pct", True),
             Column("ifeval_refusal", "IFEval refusals", "pct", False,
                    note="IFEval refusals: benign IFEval prompts answered with a refusal (AdvBench's keywords), the "
                         "over-refusal that a higher AdvBench rate may hide.")),
    summary=lambda s: pick(s, {"ifeval": "prompt_level_strict", "ifeval_loose": "prompt_level_loose",
                               "ifeval_refusal": "refusal_rate"}, float),
    general=("prompt_level_strict", "n_prompts"),
    html=Html("IFEval (strict)", ("prompt",), key=lambda r: r["prompt"],
              head=lambda r: [out_block(r["prompt"])], cell=item_cell),
)
