"""The chat suites (evals/chat.py, evals/judge.py): one chat rendering for one and many turns, MT-Bench's and
AlpacaEval's output formats, the URL judge and the local MLX judge."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

from radis_mlx import prompts
from radis_mlx.evals import judge
from radis_mlx.evals.harness import evaluate

from handmade import small_cfg


class _Judge(http.server.BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append(body)
        multi = "second user question" in body["messages"][0]["content"]
        reply = {"choices": [{"message": {"content": f"Fine. Rating: [[{4 if multi else 7}]]"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


class _NoTemplate:
    chat_template = None


def test_one_chat_rendering_for_one_and_many_turns(tiny_model_dir):
    """prompts.chat is chat_turns with one user turn, with and without a chat template."""
    from mlx_lm.utils import load_tokenizer

    plain = _NoTemplate()
    assert prompts.chat(plain, "hi", system="Be brief.", assistant_prefix="Hallo") == \
        "Be brief.\n\nUser: hi\nAssistant: Hallo"
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert prompts.chat_turns(plain, msgs) == "User: a\nAssistant: b\nUser: c\nAssistant:"
    tok = load_tokenizer(tiny_model_dir)
    assert prompts.chat(tok, "hi", "S", "x") == prompts.chat_turns(
        tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]) + "x"


def test_mtbench_alpacaeval_formats_and_url_judge(tmp_path, tiny_model_dir):
    cfg = small_cfg(tmp_path, tiny_model_dir, suites=["mtbench", "alpacaeval"])
    r = evaluate(cfg)["model"]["suites"]
    assert r["mtbench"]["score"] is None and "not judged" in r["mtbench"]["note"]
    run = Path(cfg.out) / "model"
    ans = [json.loads(l) for l in (run / "mt_bench" / "model_answer" / "model.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in ans] == [81, 82] and ans[0]["model_id"] == "model"
    assert set(ans[0]) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert ans[0]["choices"][0]["index"] == 0 and len(ans[0]["choices"][0]["turns"]) == 2
    out = json.loads((run / "alpaca_eval" / "model_outputs.json").read_text())
    assert len(out) == 4 and set(out[0]) == {"instruction", "output", "generator", "dataset"}
    assert out[0]["generator"] == "model" and out[0]["dataset"] == "test"

    srv = http.server.HTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg.judge_url = f"http://127.0.0.1:{srv.server_address[1]}"
        r = evaluate(cfg)["model"]["suites"]
        n_requests = len(_Judge.seen)
        evaluate(cfg)  # judgments are cached too
    finally:
        srv.shutdown()
    assert n_requests == 2 * 2 + 4 and len(_Judge.seen) == n_requests
    assert r["mtbench"]["score_turn1"] == 7 and r["mtbench"]["score_turn2"] == 4 and r["mtbench"]["score"] == 5.5
    assert r["alpacaeval"]["score"] == 7 and r["alpacaeval"]["judged"]
    for req in _Judge.seen:  # the endpoint gets the judge prompt (question + answer) and nothing else
        assert set(req) <= {"model", "messages", "max_tokens", "temperature"}, set(req)
        assert str(tmp_path) not in json.dumps(req) and str(tiny_model_dir) not in json.dumps(req)
        assert [m["role"] for m in req["messages"]] == ["system", "user"]
    first = _Judge.seen[0]["messages"]
    assert first[0]["content"] == judge.JUDGE_SINGLE_SYSTEM
    assert "[The Start of Assistant's Answer]" in first[1]["content"]
    assert judge.parse_rating("Rating: [[8.5]]") == 8.5 and judge.parse_rating("[3]") == 3
    # a local MLX judge (the random tiny model never writes a parsable rating)
    cfg.judge_url, cfg.judge_model, cfg.judge_max_tokens = None, str(tiny_model_dir), 4
    r = evaluate(cfg)["model"]["suites"]
    assert r["alpacaeval"]["judged"] and r["alpacaeval"]["n_unparsed"] == 4 and r["alpacaeval"]["score"] is None
    # the URL judge's 8 replies and the local judge's 8 share one cache, under different keys
    assert len((Path(cfg.out) / "_judge" / "cache" / "judge.jsonl").read_text().splitlines()) == 2 * (2 * 2 + 4)
    assert judge.parse_rating("no rating") is None and judge.parse_rating("[[42]]") is None
