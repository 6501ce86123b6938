"""report.html: every item of every run on one self-contained page; filters checked in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import pytest
from sacrebleu import sentence_chrf

from radis_mlx.data import Pair
from radis_mlx.evals import translation
from radis_mlx.evals.harness import EvalConfig, evaluate
from radis_mlx.cli import main
from radis_mlx.fileio import atomic_write_jsonl
from radis_mlx.pipeline import DEMO_DATA
from radis_mlx.report import report

from conftest import build_tiny_model

LIMITS = {"translation": 5, "advbench": 4, "retention": 3, "ifeval": 2, "gsm8k": 2, "mtbench": 2, "alpacaeval": 2}


class Rows(HTMLParser):
    """The page's item rows as the DOM has them: suite, hidden or not, their text."""

    def __init__(self, page: str):
        super().__init__()
        self.rows: list[dict] = []
        self.depth = 0
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "ex" in (a.get("class") or "").split():
            self.rows.append({"suite": a["data-suite"], "hidden": "hidden" in a, "text": ""})
            self.depth = 1
        elif tag == "tr":
            self.depth = 0

    def handle_data(self, data):
        if self.depth and self.rows:
            self.rows[-1]["text"] += data

    def visible(self, suite: str | None = None) -> list[dict]:
        return [r for r in self.rows if not r["hidden"] and suite in (None, r["suite"])]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_eval(tmp_path_factory, tiny_model_dir) -> Path:
    """Two tiny models evaluated like the demo (its test pairs, harmful and general sets) plus IFEval and GSM8K."""
    d = tmp_path_factory.mktemp("html")
    other = build_tiny_model(d / "other", seed=1)
    atomic_write_jsonl(d / "ifeval.jsonl", [
        {"key": 1, "prompt": "Write a greeting without commas.", "instruction_id_list": ["punctuation:no_comma"],
         "kwargs": [{}]},
        {"key": 2, "prompt": "Say hello in lowercase, without commas.",
         "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]}])
    atomic_write_jsonl(d / "gsm8k.jsonl", [{"question": f"What is {i} + 1?", "answer": f"{i} + 1\n#### {i + 1}"}
                                           for i in range(3)])
    atomic_write_jsonl(d / "mtbench.jsonl", [{"question_id": 81 + i, "category": "writing",
                                             "turns": [f"Write a line about cats {i}.", "Now shorter."]}
                                            for i in range(2)])
    cfg = EvalConfig(models=[f"base={tiny_model_dir}", f"other={other}"], out=str(d / "eval"),
                     suites=list(LIMITS), pairs="de-en", limits=LIMITS, max_tokens={s: 8 for s in LIMITS},
                     test_data={"translation": str(DEMO_DATA / "test.de-en.jsonl"),
                                "advbench": str(DEMO_DATA / "harmful.jsonl"),
                                "retention": str(DEMO_DATA / "general.jsonl"),
                                "ifeval": str(d / "ifeval.jsonl"), "gsm8k": str(d / "gsm8k.jsonl"),
                                "mtbench": str(d / "mtbench.jsonl"), "alpacaeval": str(DEMO_DATA / "general.jsonl")},
                     batch_size=8, n_bootstrap=20, comet=False, progress=False)
    evaluate(cfg)
    report([d / "eval"], d / "report", n_resamples=50)
    return d


def test_every_item_of_every_run_is_on_the_page(demo_eval):
    page = (demo_eval / "report" / "report.html").read_text()
    rows = Rows(page)
    for suite, n in LIMITS.items():
        assert len(rows.visible(suite)) == n, suite
    base, other = (demo_eval / "eval" / name for name in ("base", "other"))
    for t in jsonl(base / "translation.jsonl") + jsonl(other / "translation.jsonl"):
        chrf = sentence_chrf(t["hyp"], t["refs"]).score
        row = next(r for r in rows.rows if r["suite"] == "translation" and t["src"] in r["text"])
        assert t["hyp"].strip() in row["text"] and f"chrF {chrf:.1f}" in row["text"]
    for a in jsonl(base / "advbench.jsonl") + jsonl(other / "advbench.jsonl"):
        row = next(r for r in rows.rows if r["suite"] == "advbench" and a["goal"] in r["text"])
        assert a["response"].strip() in row["text"]
    for m in jsonl(other / "mt_bench" / "model_answer" / "other.jsonl"):
        row = next(r for r in rows.rows if r["suite"] == "mtbench" and f"question {m['question_id']}" in r["text"])
        assert all(t in row["text"] for t in m["choices"][0]["turns"])
    verdicts = [v for r in jsonl(base / "ifeval" / "eval_results_strict.jsonl") for v in r["follow_instruction_list"]]
    assert len(re.findall(r'<li class="(?:ok|bad)">', page)) == 2 * len(verdicts) == 6  # per instruction, per run
    # self-contained: nothing to fetch, the plot inline
    assert not re.search(r'(src|href)="(?!data:|#)', page) and "<link" not in page
    assert 'src="data:image/png;base64,' in page
    assert "[report.html](report.html)" in (demo_eval / "report" / "report.md").read_text()


def test_cut_text_is_dimmed_with_its_tokens_and_model_text_is_escaped(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    pairs = [Pair("Der Hund schläft.", "The dog sleeps.", "de", "en", "p1"),
             Pair("Die Katze <b>trinkt</b>.", "The cat drinks.", "de", "en", "p2")]
    outs = [{"text": "The dog sleeps.\n\nExplanation: the verb moves.", "n_tokens": 12, "finish": "stop"},
            {"text": "<script>alert(1)</script> cat", "n_tokens": 9, "finish": "length"}]
    rows, summary = translation.score(pairs, outs, tok, n_bootstrap=0, use_comet=False)
    run = tmp_path / "eval" / "radis"
    atomic_write_jsonl(run / "translation.jsonl", rows)
    atomic_write_jsonl(run / "advbench.jsonl", [
        {"id": "0", "goal": "Do harm", "response": "I'm sorry, I can't.", "refusal": True},
        {"id": "1", "goal": "Do more harm", "response": "Sure: step 1", "refusal": False}])
    (run / "results.json").write_text(json.dumps({"name": "radis", "suites": {"translation": summary}}))
    report([run], tmp_path / "rep", n_resamples=10)
    page = (tmp_path / "rep" / "report.html").read_text()
    extra = rows[0]["extra_tokens"]
    assert extra == len(tok.encode("\n\nExplanation: the verb moves.", add_special_tokens=False)) > 0
    assert re.search(r'<div class="out">The dog sleeps\.<span class="cut" title="cut off by eval \('
                     + str(extra) + r' tokens\), not scored">\s*Explanation: the verb moves\.</span></div>', page)
    assert f"cut: {extra} tokens" in page
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; cat" in page
    assert "Die Katze &lt;b&gt;trinkt&lt;/b&gt;." in page
    assert page.count('class="badge ok">refused') == 1 and page.count('class="badge bad">answered') == 1


def test_a_broken_item_file_is_one_clear_error(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "results.json").write_text(json.dumps({"name": "r", "suites": {}}))
    (run / "advbench.jsonl").write_text(json.dumps({"id": "0", "goal": "x"}) + "\n")  # no verdict
    with pytest.raises(SystemExit) as e:
        main(["report", str(run), "--out", str(tmp_path / "rep")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert re.search(r"^error: .*/advbench.jsonl:1: report.html cannot read this AdvBench row "
                     r"\(no field 'refusal'\)$", err.strip())
    main(["report", str(run), "--out", str(tmp_path / "rep2"), "--no-html"])  # the table alone reads no items
    assert not (tmp_path / "rep2" / "report.html").exists() and (tmp_path / "rep2" / "report.md").exists()
    assert "report.html" not in (tmp_path / "rep2" / "report.md").read_text()


# ------------------------------------------------------------------ in a real browser

@pytest.fixture(scope="module")
def browser() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium; .ci/run installs it)")
    return exe


def chromium(exe: str, tmp_path: Path, *args: str) -> str:
    # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_the_page_filters_in_headless_chromium(browser, demo_eval, tmp_path):  # browser first: skip early
    url = (demo_eval / "report" / "report.html").resolve().as_uri()
    total = sum(LIMITS.values())
    dom = chromium(browser, tmp_path, "--dump-dom", url)
    assert len(Rows(dom).visible()) == len(Rows(dom).rows) == total
    assert f'id="count">{total} of {total} items' in dom  # the script ran

    src = jsonl(demo_eval / "eval" / "base" / "translation.jsonl")[1]["src"]  # one demo sentence, asked for by URL
    found = Rows(chromium(browser, tmp_path, "--dump-dom", url + "#q=" + quote(src)))
    assert [r["suite"] for r in found.visible()] == ["translation"] and src in found.visible()[0]["text"]

    advbench = Rows(chromium(browser, tmp_path, "--dump-dom", url + "?suite=advbench"))
    assert {r["suite"] for r in advbench.visible()} == {"advbench"} and len(advbench.visible()) == LIMITS["advbench"]

    nothing = chromium(browser, tmp_path, "--dump-dom", url + "#q=" + quote("no item says this"))
    assert not Rows(nothing).visible() and '<p id="none">No item matches these filters.</p>' in nothing

    one_run = chromium(browser, tmp_path, "--dump-dom", url + "#runs=other")
    assert '<style id="runstyle">.r0{display:none}</style>' in one_run

    shot = tmp_path / "report.png"
    chromium(browser, tmp_path, "--hide-scrollbars", "--window-size=1280,1400", f"--screenshot={shot}", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20000


def test_an_ifeval_answer_that_refuses_is_marked_refused():
    from radis_mlx.evals.ifeval import item_cell as _ifeval_cell  # the suite's own renderer

    row = {"instruction_id_list": ["punctuation:no_comma"], "follow_instruction_list": [True],
           "follow_all_instructions": True}
    refusing = _ifeval_cell({**row, "response": "I\u2019m sorry, but I can't assist with that."})
    answering = _ifeval_cell({**row, "response": "Hello friend"})
    assert '<span class="badge bad">refused</span>' in refusing and "refused" not in answering
