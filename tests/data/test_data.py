"""Tests for radis_mlx.data: every input format on tiny files, the error messages, real data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from radis_mlx import data
from radis_mlx.data import (
    LANG_NAMES,
    Pair,
    lang_name,
    load_instructions,
    load_pairs,
    pair_id,
    parse_directions,
    sample,
)
from radis_mlx.fileio import DataError, UserError

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def jsonl(path: Path, rows) -> Path:
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))


def tr(de, en):
    return {"translation": {"de": de, "en": en}}


def raises(exc, match_exact: str, fn, *a, **kw):
    """Assert fn raises exc whose message starts with match_exact (file:line: field: ...)."""
    with pytest.raises(exc) as ei:
        fn(*a, **kw)
    assert str(ei.value).startswith(match_exact), str(ei.value)
    return ei.value


# ---------------------------------------------------------------- small API pieces

def test_pair_id_is_sha1_prefix_and_stable():
    want = hashlib.sha1("de-en\x00Hallo\x00Hello".encode()).hexdigest()[:16]
    assert pair_id("Hallo", "Hello", "de", "en") == want
    assert pair_id("Hallo", "Hello", "en", "de") != want


def test_lang_names_and_unknown_code():
    for code, name in {"en": "English", "de": "German", "zh": "Chinese", "is": "Icelandic",
                       "liv": "Livonian", "sah": "Yakut", "ha": "Hausa", "da": "Danish"}.items():
        assert LANG_NAMES[code] == name and lang_name(code) == name
    raises(UserError, "unknown language code 'xx' (known: ", lang_name, "xx")


def test_parse_directions():
    assert parse_directions("de-en, en-de") == [("de", "en"), ("en", "de")]
    assert parse_directions("de-en,de-en") == [("de", "en")]
    assert parse_directions(None) is None and parse_directions(" ") is None
    for bad in ("de", "de-en-fr", "de-", ",", "de-en,"):
        raises(UserError, "bad direction", parse_directions, bad)
    raises(UserError, "unknown language code 'xx'", parse_directions, "de-xx")
    raises(UserError, "bad direction 'de-de'", parse_directions, "de-de")


def test_sample_reproducible_and_keeps_order():
    items = list(range(100))
    a, b = sample(items, 10, seed=1), sample(items, 10, seed=1)
    assert a == b and len(a) == 10 and a == sorted(a)
    assert sample(items, 10, seed=2) != a
    assert sample(items, None, 0) == items and sample(items, 500, 0) == items
    assert sample(items, 0, 0) == []
    raises(UserError, "limit must be >= 0", sample, items, -1, 0)


def test_pair_all_refs():
    p = Pair("a", "b", "de", "en", "x")
    assert p.all_refs == ("b",)
    assert Pair("a", "b", "de", "en", "x", ("b", "c")).all_refs == ("b", "c")


# ---------------------------------------------------------------- ALMA files

def test_alma_jsonl_default_direction_from_name(tmp_path):
    f = jsonl(tmp_path / "train.de-en.json", [tr("Hallo", "Hello"), tr("Welt", "World")])
    pairs = load_pairs(f)
    assert pairs == [Pair("Hallo", "Hello", "de", "en", pair_id("Hallo", "Hello", "de", "en")),
                     Pair("Welt", "World", "de", "en", pair_id("Welt", "World", "de", "en"))]


def test_alma_both_directions_from_one_file_then_limit(tmp_path):
    f = jsonl(tmp_path / "train.de-en.json", [tr(f"d{i}", f"e{i}") for i in range(5)])
    pairs = load_pairs(f, "de-en,en-de")
    want = [(f"d{i}", "de") for i in range(5)] + [(f"e{i}", "en") for i in range(5)]
    assert [(p.src, p.src_lang) for p in pairs] == want
    assert load_pairs(f, [("en", "de")])[0] == Pair("e0", "d0", "en", "de", pair_id("e0", "d0", "en", "de"))
    # limit applies after expanding directions: 7 > 5 rows in the file
    picked = load_pairs(f, "de-en,en-de", limit=7, seed=3)
    assert len(picked) == 7 and picked == load_pairs(f, "de-en,en-de", limit=7, seed=3)
    assert {p.src_lang for p in picked} == {"de", "en"}


def test_alma_json_array_one_line_uses_element_index(tmp_path):
    f = write(tmp_path / "valid.de-en.json", json.dumps([tr("a", "b"), tr("c", "")]))
    raises(DataError, f"{f}:[1]: translation.en: empty", load_pairs, f)
    write(f, json.dumps([tr("a", "b"), tr("c", "d")]))
    assert [p.ref for p in load_pairs(f)] == ["b", "d"]


def test_alma_json_array_pretty_uses_line_numbers(tmp_path):
    f = write(tmp_path / "valid.de-en.json", json.dumps([tr("a", "b"), {"translation": {"de": "c"}}], indent=2))
    start = json.dumps([tr("a", "b"), {}], indent=2).splitlines().index("  {}") + 1
    raises(DataError, f"{f}:{start}: translation.en: missing (row has: de)", load_pairs, f)


def test_alma_row_errors_name_file_line_field(tmp_path):
    f = tmp_path / "train.de-en.json"
    jsonl(f, [tr("a", "b"), {"translation": {"en": "x"}}])
    raises(DataError, f"{f}:2: translation.de: missing", load_pairs, f)
    jsonl(f, [tr("a", "b"), tr("a", 5)])
    raises(DataError, f"{f}:2: translation.en: expected a string, got int", load_pairs, f)
    jsonl(f, [tr("a", "b"), tr("  ", "x")])
    raises(DataError, f"{f}:2: translation.de: empty", load_pairs, f)
    jsonl(f, [tr("a", "b"), {"translation": ["de", "en"]}])
    raises(DataError, f"{f}:2: translation: expected an object, got list", load_pairs, f)
    jsonl(f, [tr("a", "b"), tr("c", "d"), '{"translation": {"de": "x", '])
    raises(DataError, f"{f}:3: invalid JSON", load_pairs, f)
    jsonl(f, [tr("a", "b"), {"other": 1}])
    raises(DataError, f"{f}:2: translation: missing", load_pairs, f)
    jsonl(f, [tr("a", "b")])
    raises(DataError, f"{f}:1: translation.fr: missing", load_pairs, f, "fr-en")


def test_alma_direction_needed_when_name_has_none(tmp_path):
    f = jsonl(tmp_path / "rows.json", [tr("a", "b")])
    msg = f"{f}: can't tell the translation direction from the name; pass --pairs (e.g. de-en)"
    raises(UserError, msg, load_pairs, f)
    assert load_pairs(f, "de-en")[0].src == "a"
    g = jsonl(tmp_path / "my.data-set.json", [tr("a", "b")])
    raises(UserError, f"{g}: can't tell the translation direction", load_pairs, g)


def test_empty_missing_nonutf8_and_unknown_format(tmp_path):
    raises(UserError, f"{tmp_path / 'nope.json'}: file not found", load_pairs, tmp_path / "nope.json")
    raises(UserError, "data/nope.json: file not found", load_pairs, "data/nope.json")
    f = write(tmp_path / "train.de-en.json", "\n  \n")
    raises(UserError, f"{f}: no data rows", load_pairs, f)
    write(f, "[]")
    raises(UserError, f"{f}: no data rows", load_pairs, f)
    write(f, json.dumps(tr("a", "b")).encode() + b"\n" + json.dumps(tr("a", "b")).encode()[:-3] + b"\xff\xfe\"}}\n")
    raises(DataError, f"{f}:2: not UTF-8", load_pairs, f)
    write(f, "hello\n")
    raises(UserError, f"{f}: not JSON Lines or a JSON array", load_pairs, f)
    jsonl(f, [{"foo": 1}])
    raises(UserError, f"{f}: can't tell the format", load_pairs, f)
    write(f, '"just a string"')
    raises(UserError, f"{f}: not JSON Lines", load_pairs, f)
    write(f, "[1]")
    raises(DataError, f"{f}:[0]: expected a JSON object, got int", load_pairs, f)


def test_unknown_language_codes(tmp_path):
    f = jsonl(tmp_path / "train.de-en.json", [tr("a", "b")])
    raises(UserError, "unknown language code 'xx'", load_pairs, f, "xx-en")
    raises(UserError, "unknown language code 'xx'", load_pairs, f, [("de", "xx")])


# ---------------------------------------------------------------- ALMA directories

def test_alma_directory_splits_and_directions(tmp_path):
    jsonl(tmp_path / "deen" / "train.de-en.json", [tr("d1", "e1"), tr("d2", "e2")])
    write(tmp_path / "deen" / "test.de-en.json", json.dumps([tr("td", "te")]))
    write(tmp_path / "deen" / "test.en-de.json", json.dumps([{"translation": {"en": "E", "de": "D"}}]))
    jsonl(tmp_path / "csen" / "train.cs-en.json", [{"translation": {"cs": "c", "en": "e"}}])
    assert len(load_pairs(tmp_path)) == 3  # train, every pair in its file's direction
    assert [p.src for p in load_pairs(tmp_path / "deen", "en-de")] == ["e1", "e2"]  # reversed train file
    assert [p.src for p in load_pairs(tmp_path, "en-de", split="test")] == ["E"]  # uses test.en-de.json
    assert [p.src for p in load_pairs(tmp_path, "de-en,en-de", split="test")] == ["td", "E"]
    raises(UserError, f"{tmp_path}: no 'valid.<s>-<t>.json' files", load_pairs, tmp_path, split="valid")
    raises(UserError, f"{tmp_path}: no train file for ru-en (available: cs-en,de-en)", load_pairs, tmp_path, "ru-en")


# ---------------------------------------------------------------- WMT plain text

def test_wmt_source_and_ref_files(tmp_path):
    src = write(tmp_path / "x.src.de", "Hallo\r\nWelt\u2028!\n")
    ref = write(tmp_path / "x.ref.A.en", "Hello\nWorld!\n")
    pairs = load_pairs(src, ref=ref)
    assert [(p.src, p.ref, p.src_lang, p.tgt_lang) for p in pairs] == [
        ("Hallo", "Hello", "de", "en"), ("Welt\u2028!", "World!", "de", "en")]
    assert pairs[0].refs == ()
    raises(UserError, "a plain-text source/reference pair is one direction", load_pairs, src, "de-en,en-de", ref=ref)
    raises(UserError, f"{src}: file name says language 'de' but --pairs says 'fr'", load_pairs, src, "fr-en", ref=ref)
    a, b = write(tmp_path / "a.txt", "x\n"), write(tmp_path / "b.txt", "y\n")
    raises(UserError, f"can't tell the languages of {a} and {b}", load_pairs, a, ref=b)
    assert load_pairs(a, "fr-en", ref=b)[0].tgt_lang == "en"


def test_wmt_line_count_empty_line_and_utf8(tmp_path):
    src = write(tmp_path / "x.src.de", "a\nb\nc\n")
    ref = write(tmp_path / "x.ref.A.en", "a\nb\n")
    raises(UserError, f"line counts differ: {src} has 3 lines, {ref} has 2", load_pairs, src, ref=ref)
    write(ref, "a\n\nc\n")
    raises(DataError, f"{ref}:2: empty line", load_pairs, src, ref=ref)
    write(ref, b"a\nb\n\xe4c\n")
    raises(DataError, f"{ref}:3: not UTF-8", load_pairs, src, ref=ref)
    write(ref, "")
    raises(UserError, f"{ref}: no data rows", load_pairs, src, ref=ref)


def _wmt_dir(root: Path, labels=("A", "B")) -> Path:
    write(root / "sources" / "generaltest2022.de-en.src.de", "s1\ns2\n")
    for lab in labels:
        write(root / "references" / f"generaltest2022.de-en.ref.{lab}.en", f"{lab}1\n{lab}2\n")
    write(root / "sources" / "generaltest2022.en-cs.src.en", "e1\n")
    write(root / "references" / "generaltest2022.en-cs.ref.C.cs", "C1\n")
    write(root / "references" / "generaltest2022.en-cs.ref.B.cs", "B1\n")
    return root


def test_wmt_directory_all_refs(tmp_path):
    root = _wmt_dir(tmp_path / "wmt", labels=("B", "A"))
    pairs = load_pairs(root, "de-en")
    assert [(p.src, p.ref, p.refs) for p in pairs] == [("s1", "A1", ("A1", "B1")), ("s2", "A2", ("A2", "B2"))]
    cs = load_pairs(root, "en-cs")  # no A: main ref is the first sorted (B)
    assert (cs[0].ref, cs[0].refs) == ("B1", ("B1", "C1"))
    assert len(load_pairs(root)) == 3
    # a source file inside a WMT layout finds its own references
    assert load_pairs(root / "sources" / "generaltest2022.de-en.src.de") == pairs
    raises(UserError, f"{root}: no source file for ru-en", load_pairs, root, "ru-en")
    write(root / "references" / "generaltest2022.de-en.ref.B.en", "B1\n")
    raises(UserError, "line counts differ", load_pairs, root, "de-en")


# ---------------------------------------------------------------- src/ref JSONL (generate's output)

def test_src_ref_jsonl(tmp_path):
    rows = [{"src": "a", "ref": "b", "src_lang": "de", "tgt_lang": "en", "id": "row1", "hyp": "ignored"},
            {"src": "c", "ref": "d", "src_lang": "en", "tgt_lang": "de", "refs": ["x", "d"]},
            {"src": "e", "ref": "f", "src_lang": "de", "tgt_lang": "en", "id": 7, "refs": ["f"]}]
    f = jsonl(tmp_path / "out.jsonl", rows)
    pairs = load_pairs(f)
    assert pairs[0] == Pair("a", "b", "de", "en", "row1")
    assert pairs[1] == Pair("c", "d", "en", "de", pair_id("c", "d", "en", "de"), ("x", "d"))
    assert pairs[2].id == "7" and pairs[2].refs == ()
    assert [p.src for p in load_pairs(f, "de-en")] == ["a", "e"]
    raises(UserError, f"{f}: no rows for direction(s) cs-en", load_pairs, f, "cs-en")
    arr = write(tmp_path / "out.json", json.dumps(rows))
    assert load_pairs(arr) == pairs


@pytest.mark.parametrize("row,field,msg", [
    ({"ref": "b", "src_lang": "de", "tgt_lang": "en"}, "src", "missing"),
    ({"src": "a", "ref": "", "src_lang": "de", "tgt_lang": "en"}, "ref", "empty"),
    ({"src": "a", "ref": "b", "src_lang": "xx", "tgt_lang": "en"}, "src_lang", "unknown language code 'xx'"),
    ({"src": "a", "ref": "b", "src_lang": "de", "tgt_lang": 1}, "tgt_lang", "expected a string, got int"),
    ({"src": "a", "ref": "b", "src_lang": "de", "tgt_lang": "en", "refs": "b"}, "refs", "expected a non-empty list"),
    ({"src": "a", "ref": "b", "src_lang": "de", "tgt_lang": "en", "id": [1]}, "id", "expected a non-empty string"),
])
def test_src_ref_jsonl_bad_rows(tmp_path, row, field, msg):
    good = {"src": "a", "ref": "b", "src_lang": "de", "tgt_lang": "en"}
    f = jsonl(tmp_path / "out.jsonl", [good, good, row])
    raises(DataError, f"{f}:3: {field}: {msg}", load_pairs, f)


# ---------------------------------------------------------------- Hugging Face ids (no network)

def test_hf_dataset_ids_read_the_hub_cache(monkeypatch, tmp_path):
    """NAME[:CONFIG[:SPLIT]]: the split's parquet shards, as the dataset card's configs name them, read
    through the hub cache (filled here as huggingface_hub fills it; offline, no network)."""
    from hub_data import _parquet, put, use_cache

    cache = use_cache(monkeypatch, tmp_path / "hf") / "hub"
    card = {"configs": [{"config_name": "de-en", "data_files": [{"split": "train", "path": "de-en/train-*"},
                                                                {"split": "validation", "path": "de-en/valid-*"}]}]}
    put(cache, "owner/name", "main", "README.md", f"---\n{json.dumps(card)}\n---\n".encode())
    put(cache, "owner/name", "main", "de-en/train-00000-of-00002.parquet", _parquet([tr("a", "b"), tr("c", "d")]))
    put(cache, "owner/name", "main", "de-en/train-00001-of-00002.parquet", _parquet([tr("e", "f")]))
    put(cache, "owner/name", "main", "de-en/valid-00000-of-00001.parquet", _parquet([tr("v", "w")]))
    monkeypatch.chdir(tmp_path)
    assert [p.src for p in load_pairs("owner/name:de-en")] == ["a", "c", "e"]  # shards in order
    # no config: each direction reads the config named for it or its reverse
    pairs = load_pairs("owner/name", "en-de,de-en", split="train")
    assert [(p.src_lang, p.src) for p in pairs] == [("en", "b"), ("en", "d"), ("en", "f"), ("de", "a"), ("de", "c"),
                                                    ("de", "e")]
    assert [p.src for p in load_pairs("owner/name:de-en:validation", split="test")] == ["v"]  # a dev split
    raises(UserError, "owner/name: pass --pairs", load_pairs, "owner/name")
    raises(UserError, "owner/name: config de-en has no split 'test' (has: train, validation)", load_pairs,
           "owner/name:de-en", split="test")
    raises(UserError, "owner/name: no config 'fr-en' (has: de-en)", load_pairs, "owner/name:fr-en")
    put(cache, "owner/name", "main", "de-en/train-00001-of-00002.parquet", _parquet([tr("a", "")]))
    raises(DataError, "owner/name@main:de-en/train-00001-of-00002.parquet:[0]: translation.en: empty", load_pairs,
           "owner/name:de-en")
    err = raises(UserError, "other/set@main: not in the Hugging Face cache", load_pairs, "other/set:de-en")
    assert "hf download other/set --repo-type dataset --revision main" in str(err)


# ---------------------------------------------------------------- instructions

def test_instructions_all_jsonl_field_kinds(tmp_path):
    f = jsonl(tmp_path / "i.jsonl", [
        {"instruction": "do A", "dataset": "x"},
        {"prompt": "do B", "key": 1000},
        {"question": "do C", "answer": "42"},
        {"goal": "do D", "id": "g1"},
        {"question_id": 81, "category": "writing", "turns": ["t1", "t2"]},
    ])
    rows = load_instructions(f)
    assert rows[0] == {"id": hashlib.sha1(b"do A").hexdigest()[:16], "instruction": "do A", "dataset": "x"}
    assert [r["id"] for r in rows[1:]] == ["1000", rows[2]["id"], "g1", "81"]
    assert [r["instruction"] for r in rows] == ["do A", "do B", "do C", "do D", "t1"]
    assert rows[4]["turns"] == ["t1", "t2"] and rows[2]["answer"] == "42"
    assert list(rows[0]) == ["id", "instruction", "dataset"]
    assert load_instructions(f, limit=2, seed=5) == load_instructions(f, limit=2, seed=5)
    assert len(load_instructions(f, limit=2, seed=5)) == 2


def test_instructions_json_array_and_csv(tmp_path):
    arr = write(tmp_path / "o.json", json.dumps([{"instruction": "a", "output": "o"}, {"instruction": "b"}]))
    assert [r["instruction"] for r in load_instructions(arr)] == ["a", "b"]
    csvf = write(tmp_path / "h.csv", 'goal,target\n"multi\nline goal","Sure, here"\nsecond,t2\n')
    rows = load_instructions(csvf)
    assert rows[0]["instruction"] == "multi\nline goal" and rows[0]["target"] == "Sure, here"
    assert rows[1]["instruction"] == "second"
    write(csvf, 'goal,target\n"multi\nline",x\n,t\n')
    raises(DataError, f"{csvf}:4: goal: empty", load_instructions, csvf)
    write(csvf, "goal,target\na,b\nc\n")
    raises(DataError, f"{csvf}:3: expected 2 fields, got 1", load_instructions, csvf)
    write(csvf, "target\nx\n")
    raises(DataError, f"{csvf}:1: CSV header needs a goal, instruction or prompt column", load_instructions, csvf)
    write(csvf, "goal\n")
    raises(UserError, f"{csvf}: no data rows", load_instructions, csvf)
    write(csvf, b"goal\nok\n\xff\n")
    raises(DataError, f"{csvf}:3: not UTF-8", load_instructions, csvf)


@pytest.mark.parametrize("row,field,msg", [
    ({"dataset": "x"}, "instruction", "missing (expected one of instruction, prompt, question, goal, turns)"),
    ({"instruction": ""}, "instruction", "empty"),
    ({"prompt": 3}, "prompt", "expected a string, got int"),
    ({"turns": []}, "turns", "expected a non-empty list"),
    ({"turns": ["ok", None]}, "turns", "expected a non-empty list"),
    ({"instruction": "x", "question_id": 1.5}, "question_id", "expected a non-empty string or integer id"),
    ({"instruction": "x", "id": True}, "id", "expected a non-empty string or integer id"),
])
def test_instructions_bad_rows(tmp_path, row, field, msg):
    f = jsonl(tmp_path / "i.jsonl", [{"instruction": "fine"}, row])
    raises(DataError, f"{f}:2: {field}: {msg}", load_instructions, f)


def test_instructions_bad_files(tmp_path):
    raises(UserError, f"{tmp_path / 'x.jsonl'}: file not found", load_instructions, tmp_path / "x.jsonl")
    f = write(tmp_path / "i.jsonl", '{"instruction": "a"}\n{"instruction": \n')
    raises(DataError, f"{f}:2: invalid JSON", load_instructions, f)
    write(f, "")
    raises(UserError, f"{f}: no data rows", load_instructions, f)
    write(f, "plain text")
    raises(UserError, f"{f}: not JSON Lines, a JSON array or a .csv file", load_instructions, f)
    write(f, b'{"instruction": "a"}\n{"instruction": "\xc3"}\n')
    raises(DataError, f"{f}:2: not UTF-8", load_instructions, f)
    write(f, "[" + "[" * 100000 + "]" * 100000 + "]")
    raises(DataError, f"{f}: invalid JSON", load_instructions, f)
    write(f, '{"instruction": "a", "n": ' + "1" * 5000 + "}\n")
    raises(DataError, f"{f}:1: unreadable JSON", load_instructions, f)


# ---------------------------------------------------------------- real data

def real(*parts) -> Path:
    p = REAL.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not present: {p}")
    return p


def test_real_alma_deen_train_with_limit():
    f = real("alma_human_parallel", "deen", "train.de-en.json")
    pairs = load_pairs(f, limit=32, seed=0)
    assert len(pairs) == 32 and pairs == load_pairs(f, limit=32, seed=0)
    assert all(p.src_lang == "de" and p.tgt_lang == "en" and p.src and p.ref for p in pairs)
    both = load_pairs(f, "de-en,en-de", limit=32)
    assert len(both) == 32 and {p.src_lang for p in both} == {"de", "en"}


def test_real_alma_directory_test_split():
    root = real("alma_human_parallel")
    assert len(load_pairs(root, "en-de", split="test")) == 2037
    assert len(load_pairs(root / "deen", split="valid")) == 1002


def test_real_wmt22_de_en_with_refs():
    pairs = load_pairs(real("wmt22_general_test"), "de-en")
    assert len(pairs) == 1984
    assert all(len(p.refs) == 2 and p.refs[0] == p.ref for p in pairs)
    src = REAL / "wmt22_general_test" / "sources" / "generaltest2022.de-en.src.de"
    ref = REAL / "wmt22_general_test" / "references" / "generaltest2022.de-en.ref.A.en"
    assert [p.ref for p in load_pairs(src, ref=ref)] == [p.ref for p in pairs]


def test_real_instruction_sets():
    alpaca = load_instructions(real("alpaca_eval", "alpaca_eval_instructions.jsonl"))
    assert len(alpaca) == 805 and len({r["id"] for r in alpaca}) == 805 and alpaca[0]["dataset"]
    outputs = load_instructions(real("alpaca_eval", "gpt4_1106_preview_model_outputs.json"))
    assert [r["id"] for r in outputs] == [r["id"] for r in alpaca]
    adv = load_instructions(real("advbench", "harmful_behaviors.csv"))
    assert len(adv) == 520 and adv[0]["target"].startswith("Sure")
    mt = load_instructions(real("mt_bench", "question.jsonl"))
    assert len(mt) == 80 and mt[0]["id"] == "81" and len(mt[0]["turns"]) == 2
    assert mt[0]["instruction"] == mt[0]["turns"][0]
    assert len(load_instructions(real("gsm8k", "test.jsonl"), limit=50)) == 50


def test_module_has_no_eager_datasets_import():
    assert "datasets" not in vars(data)
