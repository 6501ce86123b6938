"""MT-Bench and AlpacaEval judged end to end by a real OpenAI-compatible server: mlx_lm.server serving
the offline Qwen2.5-Coder-0.5B, called by `radis-mlx eval --judge-url` as a user would call LM Studio
or Ollama. The 0.5B judge often ignores the rating format: those replies must be counted, not crash.
Last, what servers send when things go wrong (a stand-in server: a real one will not misbehave on cue)."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from radis_mlx import backend
from radis_mlx.evals import judge
from radis_mlx.fileio import UserError

ROOT = Path(__file__).resolve().parents[2]
# BaseHTTPRequestHandler's access log line, one per request the server answered
CHAT_POST = re.compile(r'"POST /v1/chat/completions HTTP/1\.[01]" (\d{3})')
JUDGE_MAX_TOKENS = 24  # enough for a rating ("[[5]]" / "[Rating: 5]"), the 0.5B judge puts it first
ANSWER_TOKENS = 8


@dataclass
class Server:
    url: str
    port: int
    proc: subprocess.Popen
    log: Path

    def posts(self) -> list[str]:
        """The HTTP status of every chat completion the server answered so far."""
        return CHAT_POST.findall(self.log.read_text(errors="replace"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Nobody listens there and a new server could bind it (SO_REUSEADDR, as servers do: the closed
    server's connections may still sit in TIME_WAIT)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        pass
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    return True


def wait_ready(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    # /health, not /v1/models: the latter fails mid-response where no Hugging Face cache dir exists
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlx_lm.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"mlx_lm.server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


@contextmanager
def mlx_lm_server(model_dir: Path, log: Path, timeout: float = 300):
    port = free_port()
    # offline: a model name the server does not hold fails at once instead of trying the hub
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    lib = backend.find_openblas()
    if lib:  # as the CLI runs itself: MLX's bundled reference BLAS makes each judge call several times slower
        env["LD_PRELOAD"] = lib
        backend.set_openblas_coretype(env)
    cmd = [sys.executable, "-m", "mlx_lm", "server", "--model", str(model_dir), "--host", "127.0.0.1",
           "--port", str(port)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        wait_ready(proc, port, log, timeout)
        yield Server(f"http://127.0.0.1:{port}/v1", port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def judge_server(qwen_dir, tmp_path_factory):
    with mlx_lm_server(qwen_dir, tmp_path_factory.mktemp("judge-server") / "server.log") as srv:
        yield srv
    assert srv.proc.poll() is not None, "mlx_lm.server still running"
    assert port_free(srv.port), f"port {srv.port} still taken after mlx_lm.server stopped"


def run_eval(model: Path, data: Path, out: Path, suite: str, limit: int, url: str,
             api_model: str = "default_model") -> subprocess.CompletedProcess:
    args = ["eval", "--model", str(model), "--suites", suite, "--test-data", str(data), "--limit", str(limit),
            "--max-tokens", str(ANSWER_TOKENS), "--judge-url", url, "--judge-api-model", api_model,
            "--judge-max-tokens", str(JUDGE_MAX_TOKENS), "--out", str(out)]
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          timeout=600, cwd=out.parent)


def rating(text: str) -> float | None:
    """FastChat's rule, restated here so the test does not take judge.parse_rating at its word."""
    m = re.search(r"\[\[(\d+(?:\.\d*)?)\]\]", text) or re.search(r"\[(\d+(?:\.\d*)?)\]", text)
    return float(m.group(1)) if m and 1 <= float(m.group(1)) <= 10 else None


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_judged(summary: dict, rows: list[dict], cache: list[dict], url: str) -> None:
    """The summary counts what the replies say: every reply without a rating is one unparsed."""
    scores = [rating(r["judgment"]) for r in rows]
    assert [r["score"] for r in rows] == scores
    parsed = [s for s in scores if s is not None]
    assert summary["judged"] and url in summary["judge"]
    assert summary["n_judged"] == len(parsed) and summary["n_unparsed"] == len(rows) - len(parsed)
    assert summary["score"] == (pytest.approx(sum(parsed) / len(parsed)) if parsed else None)
    # the judgments are the server's replies as cached, each a real generation
    assert sorted(r["judgment"] for r in rows) == sorted(c["text"] for c in cache)
    assert all(r["judgment"].strip() for r in rows)


@pytest.mark.slow
def test_mtbench_judged_by_mlx_lm_server(judge_server, tiny_model_dir, shared_data, tmp_path):
    out = tmp_path / "out"
    before = len(judge_server.posts())
    r = run_eval(tiny_model_dir, shared_data, out, "mtbench", 2, judge_server.url)
    assert r.returncode == 0, r.stderr
    assert judge_server.posts()[before:] == ["200"] * 4, "two questions, two turns: one judge call per turn"
    run = out / "model"
    rows, cache = jsonl(run / "mt_bench" / "judgments.jsonl"), jsonl(out / "_judge" / "cache" / "judge.jsonl")
    answers = jsonl(run / "mt_bench" / "model_answer" / "model.jsonl")
    assert [(x["question_id"], x["turn"]) for x in rows] == [(a["question_id"], t) for a in answers for t in (1, 2)]
    summary = json.loads((run / "results.json").read_text())["suites"]["mtbench"]
    check_judged(summary, rows, cache, judge_server.url)
    # the greedy judge rates 3 of these 4 "[5]" (with either BLAS): the parsed path is exercised too
    assert summary["n_judged"] >= 1
    for t in (1, 2):
        turn = [rating(x["judgment"]) for x in rows if x["turn"] == t]
        ok = [s for s in turn if s is not None]
        assert summary[f"score_turn{t}"] == (pytest.approx(sum(ok) / len(ok)) if ok else None)

    r = run_eval(tiny_model_dir, shared_data, out, "mtbench", 2, judge_server.url)
    assert r.returncode == 0, r.stderr
    assert len(judge_server.posts()) == before + 4, "the rerun asked the judge again instead of its cache"
    assert jsonl(out / "_judge" / "cache" / "judge.jsonl") == cache
    assert jsonl(run / "mt_bench" / "judgments.jsonl") == rows


@pytest.mark.slow
def test_alpacaeval_judged_and_a_wrong_model_name_is_one_line(judge_server, tiny_model_dir, shared_data,
                                                               tmp_path):
    out = tmp_path / "out"
    before = len(judge_server.posts())
    r = run_eval(tiny_model_dir, shared_data, out, "alpacaeval", 2, judge_server.url)
    assert r.returncode == 0, r.stderr
    assert judge_server.posts()[before:] == ["200"] * 2, "one judge call per instruction"
    run = out / "model"
    rows, cache = jsonl(run / "alpaca_eval" / "judgments.jsonl"), jsonl(out / "_judge" / "cache" / "judge.jsonl")
    outputs = json.loads((run / "alpaca_eval" / "model_outputs.json").read_text())
    assert [x["instruction"] for x in rows] == [o["instruction"] for o in outputs]
    check_judged(json.loads((run / "results.json").read_text())["suites"]["alpacaeval"], rows, cache,
                 judge_server.url)

    # Last: a name the server does not serve makes mlx_lm.server drop its loaded model.
    r = run_eval(tiny_model_dir, shared_data, out, "alpacaeval", 2, judge_server.url, api_model="gpt-4")
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("error: judge ") and "Traceback" not in r.stderr, r.stderr
    # the server's own reason follows the status (here: the hub is offline, so no model "gpt-4")
    assert re.search(r"HTTP 404 [^:]*: \S", err) and "--judge-api-model 'gpt-4'" in err, err
    assert judge_server.posts()[-1] == "404"


# ------------------------------------------------------------------ what servers send when things go wrong

class _Misbehaving(http.server.BaseHTTPRequestHandler):
    """Replies as configured per request path: (status, body, seconds to wait first)."""
    replies: dict = {}
    seen: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        _Misbehaving.seen.append(self.path)
        status, body, wait = _Misbehaving.replies[self.path]
        time.sleep(wait)
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting: the timeout case

    def log_message(self, *a):
        pass


def test_judge_http_errors_are_one_line_with_the_servers_reason():
    ollama_404 = json.dumps({"error": {"message": 'model "gpt-4" not found, try pulling it first',
                                       "type": "api_error"}})
    _Misbehaving.replies = {
        "/a/v1/chat/completions": (404, ollama_404, 0),
        "/b/v1/chat/completions": (400, "<html><body>Bad\n  Request</body></html>", 0),
        "/c/v1/chat/completions": (200, "<html>a proxy's login page</html>", 0),
        "/d/v1/chat/completions": (200, '{"choices": []}', 0),
        "/e/v1/chat/completions": (200, "{}", 2),
    }
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Misbehaving)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    def error(path: str) -> str:
        with pytest.raises(UserError) as e:
            judge.openai_chat(f"{base}/{path}/v1", "gpt-4", "s", "u", retries=2, timeout=0.5)
        assert "\n" not in str(e.value)
        return str(e.value)

    try:
        assert error("a").endswith(": HTTP 404 Not Found: model \"gpt-4\" not found, try pulling it first "
                                   "(is --judge-api-model 'gpt-4' a model this server serves?)")
        assert error("b").endswith(": HTTP 400 Bad Request: <html><body>Bad Request</body></html>")
        assert "unexpected response (JSONDecodeError" in error("c")
        assert "unexpected response (IndexError" in error("d")
        assert error("e").endswith("no reply within 0.5 s")
    finally:
        srv.shutdown()
        srv.server_close()
    # none of these is retried: a retry would get the same answer (or queue the same work again)
    assert _Misbehaving.seen == [f"/{p}/v1/chat/completions" for p in "abcde"]
