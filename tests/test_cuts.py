"""The cut eval scores at and decoding stops at (cuts.py)."""

from __future__ import annotations

import pytest

from radis_mlx.cuts import ExplanationCut, StringCut, cut, make_cut
from radis_mlx.fileio import UserError

PARAGRAPH = ("After the meal, you should take a few steps.\n\nA short walk helps digestion, "
             "doctors say.\n\nThe German text is a piece of advice: \"nach dem Essen\" is carried over as ...")


def test_the_explanation_cut_keeps_blank_lines_inside_a_translation():
    hyp, was_cut = cut(PARAGRAPH, ExplanationCut())
    assert was_cut
    assert hyp == "After the meal, you should take a few steps.\n\nA short walk helps digestion, doctors say."
    assert cut(PARAGRAPH, StringCut("\n\n")) == ("After the meal, you should take a few steps.", True)


@pytest.mark.parametrize("opening", [
    "The German text is a statement about", "In this translation, the verb", "Explanation: the noun",
    "This sentence carries over", "The translation keeps the meaning", "In the German sentence, \"Regierung\"",
    "**Explanation**", "The word \"Essen\" means"])
def test_radis_explanations_are_recognised(opening):
    assert cut(f"The government wants lower prices.\n\n{opening} ...", ExplanationCut())[1]


@pytest.mark.parametrize("paragraph", [
    "The German government announced new measures on Monday.", "In Berlin, prices rose again.",
    "This is good news for consumers, the minister said.", "Energy prices are falling."])
def test_translation_paragraphs_are_kept(paragraph):
    text = f"Prices rose.\n\n{paragraph}"
    assert cut(text, ExplanationCut()) == (text, False)


def test_streaming_decisions_equal_the_final_cut():
    """Decoding stops at the first prefix where find(final=False) answers; that answer must be the
    cut of the whole text, and no earlier prefix may answer differently."""
    rule = ExplanationCut()
    want = rule.find(PARAGRAPH, final=True)
    got = next(rule.find(PARAGRAPH[:k], final=False) for k in range(len(PARAGRAPH) + 1)
               if rule.find(PARAGRAPH[:k], final=False) is not None)
    assert got == want == PARAGRAPH.index("\n\nThe German")
    # still undecided while the opening's first sentence is incomplete
    assert rule.find(PARAGRAPH[:want + 8], final=False) is None


def test_a_leading_blank_line_cuts_nothing_and_unknown_rules_are_refused():
    assert cut("\n\nHello.\n\nThe translation", StringCut()) == ("Hello.", True)
    assert cut("Hello.\n\n", StringCut()) == ("Hello.", False)
    with pytest.raises(UserError, match="unknown cut 'nope'"):
        make_cut("nope")


@pytest.mark.parametrize("rule", [ExplanationCut(), StringCut("\n\n")])
def test_the_first_streaming_answer_is_the_final_cut_on_random_texts(rule):
    """Decoding stops at the first prefix where find(final=False) answers: that must be the cut of
    the whole text, whatever follows (else a stopped run and a cut-afterwards run would differ)."""
    import random
    rng = random.Random(0)
    pieces = ["\n\n", "\n", " ", "The German text", " is", " translated", ".", "Prices rose", "In the",
              " long term", " sentence", "Explanation:", ",", " The", "This", " word", "x" * 30, ": ", "\u00fc"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        want = rule.find(text, final=True)
        first = next((rule.find(text[:k], final=False) for k in range(len(text) + 1)
                      if rule.find(text[:k], final=False) is not None), None)
        if first is not None:  # decoding stopped there: the scored text is the same as cutting afterwards
            assert cut(text[:first], rule) == (cut(text, rule)[0], False), (text, first, want)
            assert first == want or not text[first:].strip()  # (a stop in trailing whitespace cuts nothing)
