"""Tests for the IFEval checker (radis_mlx.evals.ifeval)."""

import json
from pathlib import Path

import pytest

from radis_mlx.evals import ifeval as F
from radis_mlx.evals import ifeval_text
from radis_mlx.evals.ifeval_conformance import conformance
from radis_mlx.fileio import UserError

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IFEVAL = DATA / "ifeval"

try:
    import langdetect  # noqa: F401  (optional extra: the official checker's language id)
    HAVE_LANGDETECT = True
except ImportError:
    HAVE_LANGDETECT = False
needs_langdetect = pytest.mark.skipif(not HAVE_LANGDETECT, reason="optional dependency langdetect not installed")


def _lang(*args):
    return pytest.param(*args, marks=needs_langdetect)


# (instruction id, kwargs, response, expected strict verdict): a pass and a fail per type
CASES = [
    ("keywords:existence", {"keywords": ["apple", "banana"]}, "I like Apple and BANANA.", True),
    ("keywords:existence", {"keywords": ["apple", "banana"]}, "I like apple pie.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "A cat, a Cat.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "One cat.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "One cat.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "cat CAT", False),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A badge is fine.", True),  # \b boundaries
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "This is Bad.", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "Zz z", True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "zz", False),
    ("keywords:letter_frequency", {"letter": "Z", "let_frequency": 2, "let_relation": "less than"}, "z", True),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 2, "let_relation": "at least"}, "#a #b", True),
    _lang("language:response_language", {"language": "de"},
          "Das ist ein kurzer deutscher Satz über das Wetter in Berlin.", True),
    _lang("language:response_language", {"language": "de"},
          "This is a short English sentence about the weather in London.", False),
    _lang("language:response_language", {"language": "fr"}, "12345 !!!", True),  # undecidable counts as followed
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, "One. Two! Three?", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"},
     "Mr. Smith came. He sat.", False),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "less than"}, "Just one.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\nSecond.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nFirst.\n***\nSecond.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "A\n***\n\n***\nB", False),  # empty middle
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "Only one.", False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two three", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"},
     "it's a well-known fact", False),  # \w+ gives 6 words
    ("length_constraints:number_words", {"num_words": 3, "relation": "at least"}, "one two three", True),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Then"}, "First.\n\n\"Then, more.\"", True),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "First.\n\nAfter that.", False),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"}, "A.\n\nThen b.\n\nC.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] lives at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] lives here.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. Bye.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi. PS bye.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\np. p. s. later", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro\n* one\n- two\n**bold**", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two\n- three", False),
    ("detectable_format:constrained_response", {}, "Well... My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "My answer is Yes.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** **", False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nA\nSection 2\nB", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nA only", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, 'Here: {"a": 1}', False),
    ("detectable_format:title", {}, "<<My Title>>\nText.", True),
    ("detectable_format:title", {}, "<< >> and <<a\nb>>", False),
    ("combination:two_responses", {}, "Answer A.\n******\nAnswer B.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "A\n******\n\n******\nB", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "say hi. Hi!", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."}, "Hi! Say hi.", False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, '"Done. Any other questions?"', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    ("startend:quotation", {}, '  "wrapped"  ', True),
    ("startend:quotation", {}, '"', False),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
     "I DON'T know.", True),  # I, DO, N'T
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
     "NASA and ESA. Don't.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "less than"},
     "Only ONE here, i'm sure.", True),
    _lang("change_case:english_capital", {}, "THIS IS AN ENGLISH SENTENCE WRITTEN IN CAPITAL LETTERS.", True),
    _lang("change_case:english_capital", {}, "THIS IS mostly CAPITALS.", False),
    _lang("change_case:english_capital", {}, "DAS IST EIN DEUTSCHER SATZ UND NICHT ENGLISCH.", False),
    _lang("change_case:english_lowercase", {}, "this is an english sentence written in lowercase letters.", True),
    _lang("change_case:english_lowercase", {}, "This is not all lower case.", False),
    _lang("change_case:english_lowercase", {}, "etchings", False),  # langdetect: German
    ("punctuation:no_comma", {}, "No commas here.", True),
    ("punctuation:no_comma", {}, "One, two.", False),
]


def _values(case):
    return case.values if hasattr(case, "values") else case


@pytest.mark.parametrize("iid,kwargs,response,expected", CASES)
def test_instruction(iid, kwargs, response, expected):
    assert F.check(iid, kwargs, "", response) is expected


def test_cases_cover_every_instruction_both_ways():
    seen = {(_values(c)[0], _values(c)[3]) for c in CASES}
    assert len(F.CHECKERS) == 25
    for iid in F.CHECKERS:
        assert (iid, True) in seen and (iid, False) in seen, iid


# (instruction id, kwargs, response, strict, loose)
LOOSE_CASES = [
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Sure!\nThe end. Any other questions?\nHope this helps.", False, True),  # last line dropped
    ("startend:quotation", {}, 'Here you go:\n"quoted"', False, True),  # first line dropped
    ("detectable_format:json_format", {}, 'Here is the JSON:\n{"a": 1}\nEnjoy!', False, True),  # both dropped
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "summary"},
     "**Summary** of it\n\nsecond", False, True),  # asterisks removed
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "A bad intro line\nclean text", False, True),
    ("punctuation:no_comma", {}, "Hi, there\nbody, text\nbye, now", False, False),
    ("punctuation:no_comma", {}, "", False, False),  # empty never follows
    ("punctuation:no_comma", {}, "only\n\n", True, True),
]


@pytest.mark.parametrize("iid,kwargs,response,strict,loose", LOOSE_CASES)
def test_loose_vs_strict(iid, kwargs, response, strict, loose):
    assert F.check(iid, kwargs, "", response) is strict
    assert F.check(iid, kwargs, "", response, loose=True) is loose


def test_loose_variants_are_the_official_eight():
    v = F.loose_variants("a*\nb\nc*")
    assert v == ["a*\nb\nc*", "a\nb\nc", "b\nc*", "a*\nb", "b", "b\nc", "a\nb", "b"]


@pytest.mark.parametrize("text,sentences", [
    ("", []),
    ("Hello!!! World.", ["Hello!!!", "World."]),
    ('He said "Stop." Then left.', ['He said "Stop."', "Then left."]),  # closing quote stays put
    ("Mr. Smith went to Washington D.C. The end.", ["Mr. Smith went to Washington D.C.", "The end."]),
    ("J. Bach wrote it. Then he slept.", ["J. Bach wrote it.", "Then he slept."]),  # initial before a name
    ("I see o. Let's go.", ["I see o.", "Let's go."]),  # initial before a common word (key 1174)
    ("In 1990. the year ended.", ["In 1990. the year ended."]),  # number before lower case
    ("What?! Really?? Yes.", ["What?!", "Really??", "Yes."]),
    ("e.g. this one.", ["e.g.", "this one."]),  # the English model has no e.g. abbreviation
    ("List\n* one\n* two", ["List\n* one\n* two"]),  # line breaks alone never split
])
def test_sentence_splitter(text, sentences):
    assert ifeval_text.split_sentences(text) == sentences
    assert ifeval_text.count_sentences(text) == len(sentences)


def test_word_tokens_split_contractions_like_treebank():
    toks = ifeval_text.word_tokens("I DON'T know, I'm FINE. CANNOT WAIT")
    assert toks == ["I", "DO", "N'T", "know", ",", "I", "'m", "FINE", ".", "CAN", "NOT", "WAIT"]
    assert ifeval_text.count_words("it's a well-known fact") == 6


def test_check_errors():
    with pytest.raises(ValueError, match="keywords:nope"):
        F.check("keywords:nope", {}, "", "x")
    with pytest.raises(ValueError, match="missing kwarg 'num_words'"):
        F.check("length_constraints:number_words", {"relation": "at least"}, "", "x")
    with pytest.raises(ValueError, match="relation"):
        F.check("length_constraints:number_words", {"relation": "at most", "num_words": 1}, "", "x")


@pytest.mark.skipif(HAVE_LANGDETECT, reason="checks the message shown without langdetect")
def test_language_checks_say_what_to_install():
    with pytest.raises(ImportError, match="pip install langdetect"):
        F.check("language:response_language", {"language": "en"}, "", "Hello there.")


def test_null_kwargs_from_hf_copy_are_ignored():
    kw = {"num_words": 2, "relation": "at least", "keywords": None, "language": None}
    assert F.check("length_constraints:number_words", kw, "", "two words")


def test_repeat_prompt_falls_back_to_the_prompt():
    assert F.check("combination:repeat_prompt", {}, "Tell a joke.", "Tell a joke. Why did...")


# ------------------------------------------------------------------ loading / scoring

def _write(tmp_path, rows, name="x.jsonl"):
    p = tmp_path / name
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return p


GOOD = {"key": 1, "prompt": "P", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}


@pytest.mark.parametrize("bad,match", [
    ("{not json", r":2: invalid JSON:"),
    ("[1]", r":2: expected a JSON object"),
    ({**GOOD, "key": "1"}, r":2: key:"),
    ({"key": 2, "instruction_id_list": [], "kwargs": []}, r":2: prompt: missing"),
    ({**GOOD, "key": 2, "instruction_id_list": ["x:y"]}, r":2: instruction_id_list: unknown instruction id 'x:y'"),
    ({**GOOD, "key": 2, "kwargs": []}, r":2: kwargs:"),
    (GOOD, r":2: key: duplicate"),
])
def test_load_prompts_errors(tmp_path, bad, match):
    p = _write(tmp_path, [GOOD, bad])
    with pytest.raises(UserError, match=match) as e:
        F.load_prompts(p)
    assert str(e.value).startswith(str(p))


def test_read_responses_both_formats(tmp_path):
    p = _write(tmp_path, [{"prompt": "P", "response": "a"}, {"key": 7, "response": "b"}])
    assert F.read_responses(p) == {"P": "a", 7: "b"}
    with pytest.raises(UserError, match=r":1: response: missing"):
        F.read_responses(_write(tmp_path, [{"prompt": "P"}], "y.jsonl"))
    with pytest.raises(UserError, match=r":1: key: missing"):
        F.read_responses(_write(tmp_path, [{"response": "a"}], "z.jsonl"))
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"key": 1, "response": "caf\xe9"}\n')  # io's one JSONL reader: a clean file:line error
    with pytest.raises(UserError, match=r"latin1.jsonl:1: not UTF-8"):
        F.read_responses(bad)


def test_score_summary():
    ps = [F.IFEvalPrompt(1, "P1", ["punctuation:no_comma", "startend:quotation"], [{}, {}]),
          F.IFEvalPrompt(2, "P2", ["punctuation:no_comma"], [{}]),
          F.IFEvalPrompt(3, "P3", ["punctuation:no_comma"], [{}])]
    rows, s = F.score(ps, {1: 'intro\n"no commas"', "P2": "a, b"})
    assert [r["key"] for r in rows] == [1, 2]
    assert rows[0]["follow_instruction_list"] == [True, False]
    assert rows[0]["loose_follow_instruction_list"] == [True, True]
    assert s == {"prompt_level_strict": 0.0, "instruction_level_strict": 1 / 3,
                 "prompt_level_loose": 0.5, "instruction_level_loose": 2 / 3, "n_prompts": 2, "n_missing": 1}


# ------------------------------------------------------------------ conformance on real data

# Every verdict we knowingly do not reproduce, with the reason.  The official
# checker of 2023 replaced a `letter` kwarg outside a-z by a random letter
# (upstream has since dropped that), so its verdict on these prompts was a coin
# flip: both official runs say strict False yet loose True, which no
# deterministic letter count can produce because every loose variant only
# removes characters.  We count the character the prompt asks for.
KNOWN_DISAGREEMENTS = {
    (1122, "keywords:letter_frequency", "strict"): "letter '#' (hashtags): official random letter",
    (1129, "keywords:letter_frequency", "strict"): "letter '!' (exclamation marks): official random letter",
}


@pytest.fixture(scope="module")
def conf():
    if not IFEVAL.is_dir():
        pytest.skip(f"IFEval data not found at {IFEVAL}")
    pytest.importorskip("langdetect")
    return conformance(DATA)


def test_real_prompts_load():
    if not IFEVAL.is_dir():
        pytest.skip(f"IFEval data not found at {IFEVAL}")
    ps = F.load_prompts(IFEVAL / "input_data.jsonl")
    assert len(ps) == 541
    assert {i for p in ps for i in p.instruction_id_list} == set(F.CHECKERS)


def test_conformance_agreement(conf):
    assert conf["n_prompts"] == 540 and conf["n_instructions"] == 832
    assert conf["instruction_agreement_strict"] >= 830 / 832
    assert conf["instruction_agreement_loose"] == 1.0
    assert conf["prompt_agreement_strict"] >= 538 / 540
    assert conf["prompt_agreement_loose"] == 1.0
    found = {(d["key"], d["instruction_id"], d["mode"]) for d in conf["disagreements"]}
    assert found == set(KNOWN_DISAGREEMENTS)
    assert conf["scores"]["ours"]["prompt_level_loose"] == conf["scores"]["official"]["prompt_level_loose"]


@pytest.mark.parametrize("key,iid,mode", sorted(KNOWN_DISAGREEMENTS))
def test_known_disagreement_is_the_random_letter(conf, key, iid, mode):
    p = next(p for p in F.load_prompts(IFEVAL / "input_data.jsonl") if p.key == key)
    kw = p.kwargs[p.instruction_id_list.index(iid)]
    assert not ("a" <= kw["letter"].lower() <= "z") and kw["let_relation"] == "at least"
    official = {}
    for m in ("strict", "loose"):
        for line in open(IFEVAL / "reference_results" / f"eval_results_{m}.jsonl", encoding="utf-8"):
            row = json.loads(line)
            if row["prompt"] == p.prompt:
                official[m] = row["follow_instruction_list"][p.instruction_id_list.index(iid)]
    assert official == {"strict": False, "loose": True}  # impossible for a deterministic count
    response = F.read_responses(next((IFEVAL / "reference_results").glob("input_response_data_*.jsonl")))[p.prompt]
    assert response.count(kw["letter"]) >= kw["let_frequency"]  # we say followed, as the prompt asks
