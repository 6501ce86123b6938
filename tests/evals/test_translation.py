"""Translation metrics on hand-made cases (evals/translation.py): BLEU, chrF, the BLEU tokenizer, bootstrap
CIs, the cut's statistics."""

from __future__ import annotations

import pytest

from radis_mlx.data import Pair
from radis_mlx.evals import translation


# ------------------------------------------------------------------ translation metrics

def test_bleu_identical_empty_and_multi_reference():
    refs = [("The cat sat on the mat.",), ("It is raining today.",), ("We go home now.",)]
    hyps = [r[0] for r in refs]
    m = translation.corpus_metrics(hyps, refs, "en", n_bootstrap=0)
    assert m["bleu"] == pytest.approx(100) and m["chrf"] == pytest.approx(100)
    assert m["tokenize"] == "13a" and "tok:13a" in m["bleu_signature"] and "nrefs:1" in m["bleu_signature"]
    e = translation.corpus_metrics(["", "", ""], refs, "en", n_bootstrap=0)
    assert e["bleu"] == 0 and e["chrf"] == 0
    # hypotheses match only the second reference; a pair with one reference is padded with None
    two = [("A dog barks loudly in the yard.", "The cat sat on the mat."),
           ("Snow falls in winter time.", "It is raining today."), ("We go home now.",)]
    m2 = translation.corpus_metrics(hyps, two, "en", n_bootstrap=0)
    only_first = translation.corpus_metrics(hyps, [(r[0],) for r in two], "en", n_bootstrap=0)
    assert m2["bleu"] == pytest.approx(100) and only_first["bleu"] < 50 and "nrefs:var" in m2["bleu_signature"]
    full = translation.corpus_metrics(hyps, [(r[0], r[0]) for r in refs], "en", n_bootstrap=0)
    assert "nrefs:2" in full["bleu_signature"] and full["n_refs"] == 2


def test_target_language_picks_the_bleu_tokenizer():
    assert translation.bleu_tokenizer("zh") == ("zh", None)
    assert translation.bleu_tokenizer("de") == ("13a", None)
    tok, note = translation.bleu_tokenizer("ja")
    assert tok == "ja-mecab" or (tok == "char" and "ja-mecab" in note)
    # unsegmented Chinese is one "word" to 13a: a near-miss scores 0 there, high with the zh tokenizer
    ref, hyp = [("我今天很高兴见到你们大家",)], ["我今天很高兴见到你们"]
    zh = translation.corpus_metrics(hyp, ref, "zh", n_bootstrap=0)
    assert zh["tokenize"] == "zh" and "tok:zh" in zh["bleu_signature"] and zh["bleu"] > 50
    from sacrebleu.metrics import BLEU
    assert BLEU(tokenize="13a").corpus_score(hyp, [[ref[0][0]]]).score == 0


def test_bootstrap_ci_is_seeded_and_brackets_the_score():
    refs = [(f"the quick brown fox number {i} jumps over the dog",) for i in range(20)]
    hyps = [f"the quick fox number {i} jumps over a dog" if i % 3 else r[0] for i, r in enumerate(refs)]
    a = translation.corpus_metrics(hyps, refs, "en", n_bootstrap=1000, seed=1)
    b = translation.corpus_metrics(hyps, refs, "en", n_bootstrap=1000, seed=1)
    assert a["bleu_ci"] == b["bleu_ci"] and a["n_bootstrap"] == 1000
    for k in ("bleu", "chrf"):
        lo, hi = a[f"{k}_ci"]
        assert lo <= a[k] <= hi and lo < hi


def test_cut_statistics_and_comet_note(tiny_model_dir):
    from mlx_lm import load
    _, tok = load(str(tiny_model_dir))
    ref = "the big dog is sleeping in the garden {}"
    pairs = [Pair(f"Hund {i}", ref.format(i), "de", "en", str(i)) for i in range(4)]
    tail = "\n\nExplain the translation: the verb moves."
    texts = [ref.format(0) + tail, ref.format(1), " " + ref.format(2) + "\n", ref.format(3) + tail]
    outs = [{"text": t, "n_tokens": n, "finish": f}
            for t, n, f in zip(texts, (20, 3, 4, 20), ("stop", "stop", "length", "stop"))]
    rows, s = translation.score(pairs, outs, tok, stop="\n\n", n_bootstrap=0)
    n_tail = len(tok.encode(tail, add_special_tokens=False))
    assert [r["hyp"] for r in rows] == [ref.format(i) for i in range(4)] and s["bleu"] == pytest.approx(100)
    assert [r["extra_tokens"] for r in rows] == [n_tail, 0, 0, n_tail]
    d = s["directions"]["de-en"]
    assert s["cut_share"] == 0.5 and d["extra_tokens"] == 2 * n_tail and d["generated_tokens"] == 47
    assert d["unfinished_share"] == 0.25 and s["extra_tokens_mean"] == pytest.approx(n_tail / 2)
    _, nocut = translation.score(pairs, outs, tok, stop="", n_bootstrap=0, use_comet=False)
    assert nocut["cut_share"] == 0 and nocut["bleu"] < 100
    try:
        import comet  # noqa: F401
    except ImportError:
        assert s["comet"] is None and any("COMET skipped" in n for n in s["notes"])
