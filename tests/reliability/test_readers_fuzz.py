"""Fuzz the data readers: any file content yields valid rows or a one-line UserError/DataError.

Files are assembled from menus of near-valid rows (right keys, wrong values), then damaged
(cut lines, stray or non-UTF-8 bytes, \\ud800 escapes, CRLF, raw noise): pure noise only ever
reaches the first parse error. Menus are prebuilt because hypothesis spends far more time
generating nested JSON than the readers spend reading it, and this file must stay under 30 s.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radis_mlx.data import LANG_NAMES, Pair, load_instructions, load_pairs, parse_directions
from radis_mlx.fileio import UserError

FUZZ = settings(max_examples=1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VALUES = ["Hallo", "", " ", "a\u2028b", "x\r\n", "\ud800", "\x00", 5, 1.5, True, None, [], ["t"], {"de": "x"}]
LANGS = ["de", "en", "cs", "xx", "", "DE", 3]


def _lines(rows) -> list[bytes]:
    return [json.dumps(r, ensure_ascii=a).encode("utf-8", "surrogatepass") for r in rows for a in (True, False)]


ALMA_ROWS = (
    [{"translation": {"de": a, "en": b}} for a, b in itertools.product(VALUES, VALUES)]
    + [{"translation": {a: "x", b: "y"}} for a, b in itertools.product(LANGS, LANGS)]
    + [{"translation": v} for v in VALUES] + [{}, {"x": 1}, {"translation": {"de": "a", "en": "b", "cs": "c"}}]
)
_GOOD = {"src": "Hallo", "ref": "Hello", "src_lang": "de", "tgt_lang": "en"}
SRC_REF_ROWS = (
    [_GOOD, {**_GOOD, "src_lang": "en", "tgt_lang": "de"}]
    + [{**_GOOD, k: v} for k in _GOOD for v in VALUES + LANGS]
    + [{k: v for k, v in _GOOD.items() if k != drop} for drop in _GOOD]
    + [{**_GOOD, "id": v} for v in VALUES + [0, 10**40, False]]
    + [{**_GOOD, "refs": v} for v in VALUES + [["Hello", "Hi"], ["Hi"], ["Hi", ""], ["\ud800"]]]
)
INSTRUCTION_ROWS = (
    [{k: v} for k in ("instruction", "prompt", "question", "goal", "turns", "x") for v in VALUES]
    + [{"turns": v} for v in (["a", "b"], ["a", ""], ["a", 3], [["a"]], ["\ud800"])]
    + [{"instruction": "ok", k: v} for k in ("id", "key", "question_id") for v in VALUES + [0, -1, 10**40]]
    + [{"instruction": "ok", "prompt": 3, "extra": {"deep": [1]}}]
)
DAMAGE = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"{", b"]", b'"', b",", b"\r", b"\\"]
ENDINGS = [b"", b"\n", b"\n\n", b"\r\n"]


class Entropy:
    """Turns one hypothesis byte string into choices: one draw per example instead of dozens.

    Hypothesis still mutates and shrinks the bytes (towards zeros: the first menu entry, no damage).
    """

    def __init__(self, data: bytes):
        self._it = iter(data)

    def int(self, n: int) -> int:
        return (next(self._it, 0) << 8 | next(self._it, 0)) % n if n > 1 else 0

    def pick(self, seq):
        return seq[self.int(len(seq))]

    def noise(self, n: int) -> bytes:
        return bytes(next(self._it, 0) for _ in range(self.int(n + 1)))


def jsonl_file(e: Entropy, lines: list[bytes]) -> bytes:
    out = []
    for _ in range(e.int(5)):
        line, how = e.pick(lines), e.int(12)
        if how == 0:
            line = line[: e.int(len(line) + 1)]
        elif how == 1:
            i = e.int(len(line) + 1)
            line = line[:i] + e.pick(DAMAGE) + line[i:]
        elif how == 2:
            line = b"  "
        elif how == 3:
            line = e.noise(6)
        out.append(line)
    return b"\n".join(out) + e.pick(ENDINGS)


def json_array_file(e: Entropy, rows: list) -> bytes:
    items = [e.pick(rows) for _ in range(e.int(5))]
    text = json.dumps(items, indent=e.pick([None, 2]), ensure_ascii=e.pick([True, False]))
    data = text.encode("utf-8", "surrogatepass")
    how = e.int(8)
    if how == 0:
        data = data[: e.int(len(data) + 1)]
    elif how == 1:
        i = e.int(len(data) + 1)
        data = data[:i] + e.pick(DAMAGE) + data[i:]
    elif how == 2:
        data = b"\n" + data + b"\n" + e.noise(3)
    return data


ALMA_LINES, SRC_REF_LINES, INSTRUCTION_LINES = _lines(ALMA_ROWS), _lines(SRC_REF_ROWS), _lines(INSTRUCTION_ROWS)
ENTROPY = st.binary(min_size=24, max_size=64)  # short strings would mostly mean "empty file"


@pytest.fixture(scope="module")
def tdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _call(fn, *a, **kw):
    """Run a reader: its result, or None after a UserError; any other exception fails the test."""
    try:
        return fn(*a, **kw)
    except UserError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
        return None


def _check_pairs(pairs, dirs=None):
    if pairs is None:
        return
    assert isinstance(pairs, list) and pairs
    for p in pairs:
        assert isinstance(p, Pair)
        for v in (p.src, p.ref, p.id):
            assert isinstance(v, str) and v.strip()
            v.encode("utf-8")
        assert p.src_lang in LANG_NAMES and p.tgt_lang in LANG_NAMES
        assert isinstance(p.refs, tuple) and all(isinstance(r, str) and r.strip() for r in p.refs)
        assert not p.refs or p.ref in p.refs
        if dirs:
            assert (p.src_lang, p.tgt_lang) in dirs


def _write(tdir: Path, name: str, data: bytes) -> Path:
    f = tdir / name
    f.write_bytes(data)
    return f


NAMES = st.sampled_from(["train.de-en.json", "test.en-de.json", "rows.json", "out.jsonl", "x.cs-en.json"])
DIRECTIONS = st.sampled_from([None, "de-en", "en-de", "de-en,en-de", "cs-en", [("de", "en")], "xx-en", "de-de", ""])


def _dirs(spec):
    return _call(parse_directions, spec) if isinstance(spec, str) else spec


@FUZZ
@given(ent=ENTROPY, name=NAMES, dirs=DIRECTIONS)
def test_fuzz_alma_jsonl(tdir, ent, name, dirs):
    data = jsonl_file(Entropy(ent), ALMA_LINES)
    _check_pairs(_call(load_pairs, _write(tdir, name, data), dirs), _dirs(dirs))


@FUZZ
@given(ent=ENTROPY, name=NAMES, dirs=DIRECTIONS)
def test_fuzz_json_array_pairs(tdir, ent, name, dirs):
    data = json_array_file(Entropy(ent), ALMA_ROWS + SRC_REF_ROWS)
    _check_pairs(_call(load_pairs, _write(tdir, name, data), dirs), _dirs(dirs))


@FUZZ
@given(ent=ENTROPY, dirs=DIRECTIONS, limit=st.sampled_from([None, 1, 3, 0]))
def test_fuzz_src_ref_jsonl(tdir, ent, dirs, limit):
    data = jsonl_file(Entropy(ent), SRC_REF_LINES)
    pairs = _call(load_pairs, _write(tdir, "gen.jsonl", data), dirs, limit=limit)
    if not (pairs == [] and limit == 0):
        _check_pairs(pairs, _dirs(dirs))


PLAIN = ["Hallo", "", " ", "a\r", "b\u2028c", "x\x00", "\x0bv", "\u00fc", "\t"]
PLAIN_NAMES = [("x.src.de", "x.ref.A.en"), ("a.txt", "b.txt"), ("x.src.de", "y.de")]


@FUZZ
@given(ent=ENTROPY, dirs=DIRECTIONS)
def test_fuzz_plain_text(tdir, ent, dirs):
    e = Entropy(ent)
    names = e.pick(PLAIN_NAMES)
    src = "\n".join(e.pick(PLAIN) for _ in range(e.int(5))).encode() + e.pick(ENDINGS)
    ref = "\n".join(e.pick(PLAIN) for _ in range(e.int(5))).encode() + e.pick([b""] + ENDINGS + DAMAGE)
    s, r = _write(tdir, names[0], src), _write(tdir, names[1], ref)
    _check_pairs(_call(load_pairs, s, dirs, ref=r), _dirs(dirs))


@FUZZ
@given(ent=ENTROPY, limit=st.sampled_from([None, 1, 3]))
def test_fuzz_instructions_json(tdir, ent, limit):
    e = Entropy(ent)
    data = jsonl_file(e, INSTRUCTION_LINES) if e.int(2) else json_array_file(e, INSTRUCTION_ROWS)
    rows = _call(load_instructions, _write(tdir, "inst.jsonl", data), limit=limit)
    if rows is not None:
        assert rows and all(isinstance(r["id"], str) and r["id"] and isinstance(r["instruction"], str)
                            and r["instruction"].strip() for r in rows)


CELLS = ["goal", "target", "instruction", "id", "x", "", '"', "a,b", '"q""q"', "l1\nl2", "\r", "\x00", " "]


@FUZZ
@given(ent=ENTROPY)
def test_fuzz_instructions_csv(tdir, ent):
    e = Entropy(ent)
    quote = e.int(2)

    def cell(c):
        return '"' + c.replace('"', '""') + '"' if quote else c

    header = e.pick([["goal", "target"], ["instruction"], ["id", "prompt"], None])
    rows = [[cell(e.pick(CELLS)) for _ in range(e.int(4))] for _ in range(e.int(5))]
    rows = [[cell(h) for h in header], *rows] if header else rows
    text = "\n".join(",".join(r) for r in rows).encode() + e.pick([b""] + ENDINGS + DAMAGE)
    out = _call(load_instructions, _write(tdir, "h.csv", text))
    if out is not None:
        assert all(isinstance(r["id"], str) and isinstance(r["instruction"], str) and r["instruction"].strip()
                   for r in out)


@FUZZ
@given(spec=st.text(alphabet="decnxs-, ", max_size=10) | st.text(max_size=6))
def test_fuzz_parse_directions(spec):
    out = _call(parse_directions, spec)
    if out is not None:
        assert all(s in LANG_NAMES and t in LANG_NAMES and s != t for s, t in out)


# ------------------------------------------------ generate's JSONL, recipes, configs, prompts

_GEN = {"id": "r1", "src": "Der Hund.", "ref": "The dog.", "src_lang": "de", "tgt_lang": "en",
        "mode": "rationale-explain", "text": "'Hund' is 'dog'.", "kept": True, "reason": None,
        "n_tokens": 5, "finish": "stop"}
GEN_ROWS = (
    [_GEN, {**_GEN, "id": "r2", "mode": "rationale-continue", "text": " Because."},
     {**_GEN, "id": "r3", "mode": "seqkd", "text": "The dog."}, {**_GEN, "id": "r4", "kept": False, "reason": "empty"}]
    + [{**_GEN, k: v} for k in _GEN for v in VALUES + ["sdft", "replay", "nope", -1]]
    + [{k: v for k, v in _GEN.items() if k != drop} for drop in _GEN]
    + [{"mode": "replay", "id": "q1", "instruction": v, "text": "An answer.", "kept": True} for v in VALUES]
)
GEN_LINES = _lines(GEN_ROWS)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from radis_mlx.models import load
    return load(str(tiny_model_dir)).tokenizer


@FUZZ
@given(ent=ENTROPY, method=st.sampled_from(["radis", "sft", "seqkd", "mix"]))
def test_fuzz_generate_jsonl_for_finetune(tdir, tokenizer, ent, method):
    """What finetune reads from generate's output: targets, or one clean error naming file:line."""
    from radis_mlx import methods, prompts
    from radis_mlx.tuner.datasets import load_targets

    f = _write(tdir, "rationales.jsonl", jsonl_file(Entropy(ent), GEN_LINES))
    targets = _call(load_targets, f, tokenizer, prompts.Templates(), methods.get(method).data)
    if targets is not None:
        for t in targets:
            assert isinstance(t.prompt, str) and t.prompt and t.pieces
            assert all(isinstance(text, str) for text, _ in t.pieces)


RECIPE_VALUES = [None, 0, -3, 1.5, "x", "", [], ["base"], ["base", "nope"], {"a": 1}, {"hub": "h/x"},
                 {"local": "x"}, {"hub": "a/b", "local": "alma"}, "demo:train.de-en.jsonl", True]
RECIPE_KEYS = ["name", "model", "seed", "train_data", "pairs", "limit", "generate", "finetune", "eval",
               "methods", "replay_data", "bogus"]
METHOD_SPECS = [["base", "sft", "radis"], {"sft-s0": {"method": "sft", "finetune": {"seed": 1}}},
                {"x": {"method": "nope"}}, {"radis": None}, {"a": 3}, "radis", 5, {"b": {"method": 4}},
                {"radis": {"finetune": "x"}}]
EVAL_SPECS = [{"test_data": {"translation": {"hub": "a/b"}}}, {"test_data": 3}, {"test_data": {"x": {}}},
              {"suites": "translation"}, "eval", {"test_data": {"advbench": {"local": "a.csv"}}}]
OVERRIDES = [[], ["seed=3"], ["finetune.lr=1e-3"], ["nokey"], ["methods=[base]"], ["a.b.c=1"],
             ["seed.x=1"], ["eval.test_data=5"], ["name=[unclosed"]]


@FUZZ
@given(ent=ENTROPY, root=st.sampled_from([None, "/data"]))
def test_fuzz_recipes(tdir, ent, root):
    import yaml

    from radis_mlx.pipeline import load_recipe

    e = Entropy(ent)
    r = {e.pick(RECIPE_KEYS): e.pick(RECIPE_VALUES) for _ in range(e.int(5))}
    if e.int(2):
        r["methods"] = e.pick(METHOD_SPECS)
    if e.int(2):
        r["eval"] = e.pick(EVAL_SPECS)
    data = yaml.safe_dump(r, allow_unicode=True).encode()
    how = e.int(6)
    if how == 0:
        data = data[: e.int(len(data) + 1)]
    elif how == 1:
        i = e.int(len(data) + 1)
        data = data[:i] + e.pick(DAMAGE + [b": ", b"\n  - ", b"\t", b"{{"]) + data[i:]
    out = _call(load_recipe, _write(tdir, "r.yaml", data), e.pick(OVERRIDES), root)
    if out is not None:
        assert isinstance(out["methods"], dict)
        assert all(isinstance(v, str) for v in out["eval"]["test_data"].values())


CONFIG_KEYS = ["lr", "iters", "epochs", "batch_size", "lora_rank", "w_ref", "w_rat", "normalize", "method",
               "fine_tune_type", "lora_keys", "max_seq_len", "grad_accum", "seed", "warmup", "schedule",
               "optimizer", "separator", "resume", "bogus", "pad_multiple", "replay_ratio", "lora_dropout"]
CONFIG_VALUES = [None, 0, 1, -1, 2.5, 1e-4, float("nan"), float("inf"), "x", "", "1e-3", "true", True, [], ["q_proj"],
                 {"a": 1}, "lora", "radis", "tokens", "segments", "cosine", 10**30]


@FUZZ
@given(ent=ENTROPY)
def test_fuzz_finetune_configs(tdir, ent):
    import yaml

    from radis_mlx.tuner import FinetuneConfig, load_config

    e = Entropy(ent)
    cfg = {e.pick(CONFIG_KEYS): e.pick(CONFIG_VALUES) for _ in range(e.int(6))}
    data = yaml.safe_dump(cfg).encode() if e.int(6) else e.pick(DAMAGE) + e.noise(8)
    out = _call(load_config, _write(tdir, "c.yaml", data), data="rows.jsonl", out=str(tdir / "o"))
    if out is not None:
        assert isinstance(out, FinetuneConfig) and out.lr > 0 and out.batch_size >= 1


TEMPLATES = [None, "Translate {src_name} to {tgt_name}: {src}", "{src}", "{nope}", "{", "{src", "{0}",
             "{src!z}", "%s {src}", "{{src}} {src}"]
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["{{ 7*7 }}", "{% for x in range(3) %}x{% endfor %}", "{src}", "<|im_end|>", "\x00", "{{ ''.__class__ }}"])


@FUZZ
@given(src=TEXT, ref=TEXT, langs=st.sampled_from([("de", "en"), ("zh", "en"), ("en", "ja"), ("cs", "uk")]),
       template=st.sampled_from(TEMPLATES), system=st.sampled_from([None, "", "Be brief.", "{{ 1+1 }}"]))
def test_fuzz_prompt_builder(tokenizer, src, ref, langs, template, system):
    """Any text and template: the prompt holds the text verbatim (nothing in it is evaluated) or the
    template is refused with a clean error."""
    from radis_mlx import prompts

    p = Pair(src, ref, langs[0], langs[1], "id")
    t = prompts.Templates(translate=template or prompts.TRANSLATE, system=system)
    for build in (prompts.translation_prompt, prompts.explain_prompt, prompts.sdft_prompt):
        text = _call(build, tokenizer, p, t)
        if text is None:
            assert template in ("{nope}", "{", "{src", "{0}", "{src!z}")
            continue
        assert isinstance(text, str)
        if "{src}" in t.translate:
            assert src in text
        if build is not prompts.translation_prompt:
            assert ref in text
