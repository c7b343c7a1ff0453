"""The service under abuse, as real server processes on 127.0.0.1: malformed and hostile requests
get a JSON 4xx (never a 500), bodies over the limit are refused before parsing, a full queue
answers 503 with Retry-After, slow answers time out, an API key is required where set, a client
that goes away breaks nothing, and SIGTERM answers what was accepted before the process exits."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gptclassify.inference.predict import Classifier
from gptclassify.inference.serve import is_loopback
from test_predict import trained_run  # noqa: F401  (the session fixture)
from test_serve import free_port, request

KEY = "k3y-for-tests-0123456789"


def start(run: Path, *args, env=None) -> tuple[str, subprocess.Popen]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gptclassify", "serve", str(run), "--port", str(port),
                             "--device", "cpu", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if request(url + "/healthz")[0] == 200:
                return url, proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("server did not start: " + proc.stdout.read().decode())


def stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=60)
    return out.decode()


@pytest.fixture(scope="module")
def server(trained_run):  # noqa: F811
    url, proc = start(trained_run[0], "--max-texts", "8", "--max-chars", "500", "--max-body-bytes", "4000")
    yield url
    log = stop(proc)
    assert "Traceback" not in log, log[-3000:]  # nothing went wrong inside, whatever came in


def send(url: str, raw: bytes, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=raw, method="POST", headers=headers or {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


MALFORMED = [
    b"", b"null", b"[]", b"42", b'"texts"', b"{", b'{"texts": null}', b'{"texts": [null]}', b'{"texts": [["a"]]}',
    b'{"texts": ["a"], "extra": 1}', b'{"texts": {"a": 1}}', b'{"texts": ["\xff\xfe broken utf-8"]}',
b'{"texts": [1e999]}', b"[" * 3000 + b"]" * 3000,
    b'{"texts": ["a"]}garbage', b"\x00\x01\x02",
]


@pytest.mark.parametrize("raw", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_get_a_json_4xx(server, raw):
    status, _, body = send(server + "/v1/classify", raw)
    assert 400 <= status < 500 and isinstance(body["error"], str), (status, body)


def test_a_byte_order_mark_before_the_json_is_read_as_meant(server):
    status, _, body = send(server + "/v1/classify", b"\xef\xbb\xbf" + b'{"texts": ["a BOM first"]}')
    assert status == 200 and len(body["predictions"]) == 1


def test_wrong_content_type_and_methods_get_json_4xx(server):
    status, _, body = send(server + "/v1/classify", b'{"texts": ["hi"]}', {"Content-Type": "text/plain"})
    assert 400 <= status < 500 or status == 200, (status, body)
    status, body = request(server + "/v1/classify", method="DELETE")
    assert status == 405 and "error" in json.loads(body)
    status, body = request(server + "/nowhere")
    assert status == 404 and "error" in json.loads(body)


def test_hostile_texts_are_classified_like_the_library_does(server, trained_run):  # noqa: F811
    texts = ["\ud800 lone surrogate", "nul\x00 and \x07 bell", "", "\u202e right-to-left \ufeff", "é" * 500]
    raw = json.dumps({"texts": texts}).encode()  # \ud800 travels as the JSON escape, as browsers send it
    status, _, body = send(server + "/v1/classify", raw)
    assert status == 200, body
    expected = Classifier.load(trained_run[0], device="cpu").predict(texts)
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected]
    assert max(abs(a["score"] - b["score"]) for a, b in zip(body["predictions"], expected)) < 1e-5


def test_a_body_over_the_limit_is_refused_before_parsing(server):
    status, _, body = send(server + "/v1/classify", json.dumps({"texts": ["x" * 400] * 20}).encode())
    assert status == 413 and "over 4000 bytes" in body["error"]
    # without Content-Length (chunked), the count of what arrives decides
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1]))) as s:
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b'{"texts": ["' + b"y" * 5000
        s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        s.settimeout(10)
        reply = b""
        while b"}" not in reply:  # the head and the JSON body may come in separate packets
            part = s.recv(65536)
            if not part:
                break
            reply += part
        reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "over 4000 bytes" in reply
    assert request(server + "/v1/classify", {"texts": ["still fine"]})[0] == 200


def test_clients_that_go_away_break_nothing(server):
    port = int(server.rsplit(":", 1)[1])
    body = json.dumps({"texts": ["hello there"] * 8}).encode()
    for cut in (len(body) // 2, len(body)):  # mid-body, and right after the whole request
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:cut])
    time.sleep(0.5)
    status, answer = request(server + "/v1/classify", {"texts": ["and the next one is answered"]})
    assert status == 200 and json.loads(answer)["predictions"][0]["label"] in ("ham", "spam")


def test_api_key(trained_run):  # noqa: F811
    import os

    url, proc = start(trained_run[0], env={**os.environ, "GPTCLASSIFY_API_KEY": KEY})
    try:
        good = json.dumps({"texts": ["hi"]}).encode()
        status, headers, body = send(url + "/v1/classify", good)
        assert status == 401 and headers.get("www-authenticate") == "Bearer" and "API key" in body["error"]
        for wrong in ("Bearer nope", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"):
            status, _, _ = send(url + "/v1/classify", good, {"Content-Type": "application/json", "Authorization": wrong})
            assert status == 401, wrong
        status, _, body = send(url + "/v1/classify", good,
                               {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        assert status == 200 and len(body["predictions"]) == 1
        assert request(url + "/healthz")[0] == 200  # health checks need no key
        assert request(url + "/v1/model")[0] == 401
    finally:
        stop(proc)


def test_refuses_to_listen_beyond_loopback_without_a_key(trained_run, tmp_path):  # noqa: F811
    done = subprocess.run([sys.executable, "-m", "gptclassify", "serve", str(trained_run[0]), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "gptclassify: error: --host 0.0.0.0 listens beyond this machine: give an API key (--api-key-file or "
        "GPTCLASSIFY_API_KEY), or --no-auth to serve without one"]
    short = tmp_path / "key"
    short.write_text("short\n")
    done = subprocess.run([sys.executable, "-m", "gptclassify", "serve", str(trained_run[0]), "--api-key-file",
                           str(short)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "at least 16 characters" in done.stderr
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.org")


def test_a_full_queue_answers_503_with_retry_after(trained_run):  # noqa: F811
    url, proc = start(trained_run[0], "--max-queue", "8")
    try:
        texts = ["a message of some length to keep the model busy " * 8] * 8

        def one(_):
            return send(url + "/v1/classify", json.dumps({"texts": texts}).encode())

        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(one, range(96)))
        statuses = [a[0] for a in answers]
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
        busy = next(a for a in answers if a[0] == 503)
        assert busy[1].get("retry-after") == "1" and "busy" in busy[2]["error"]
    finally:
        stop(proc)


def test_a_request_not_answered_in_time_gets_503(trained_run):  # noqa: F811
    url, proc = start(trained_run[0], "--timeout", "0.000001")
    try:
        status, headers, body = send(url + "/v1/classify", json.dumps({"texts": ["hello"] * 8}).encode())
        assert status == 503 and "not answered within" in body["error"] and headers.get("retry-after")
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    """GPT-2 124M's shape (random weights): slow enough on 2 cores that requests are still in flight."""
    from gptclassify.training.run import train_run
    from gptclassify.config import make_config
    from helpers import sms_slice_dir

    tmp = tmp_path_factory.mktemp("slow")
    data = sms_slice_dir(tmp, n_ham=20, n_spam=20)
    train_run("gpt2", "random", data, make_config(None, epochs=1, max_steps=1, trainable="head"), tmp / "run",
            log=lambda *a: None)
    return tmp / "run"


def test_sigterm_answers_the_requests_already_accepted(slow_run):
    url, proc = start(slow_run, "--timeout", "120")
    texts = ["Please call our customer service representative on 0800 169 6031 between 10am-9pm " * 3] * 32
    answers = []

    def one():
        # as long as the server's own --timeout: on a busy machine six such batches take a while
        answers.append(send(url + "/v1/classify", json.dumps({"texts": texts}).encode(), timeout=120)[0])

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(3.0)  # every request is in (with room for a busy machine), and the model is working on them
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=120)
    out, _ = proc.communicate(timeout=60)
    assert answers == [200] * 6, (answers, out.decode()[-2000:])
    # uvicorn ends by re-raising the signal it handled, so a supervisor sees the usual status for SIGTERM
    assert proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in out.decode() and "Traceback" not in out.decode()


def test_a_failure_inside_the_model_is_a_json_503_and_the_worker_serves_on(trained_run, capsys):  # noqa: F811
    """The model raising on a batch (CUDA out of memory, say) answers that batch's requests 503 with
    Retry-After in JSON, logs the cause in one line, and the next request is served; a failure of the
    worker itself (here: the model returning nothing) does not end it either."""
    from fastapi.testclient import TestClient

    from gptclassify.inference.serve import Limits, create_app

    classifier = Classifier.load(trained_run[0], "cpu")
    real = classifier.predict

    def predict(texts, batch_size=None):
        if "boom" in texts:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return None if "nothing" in texts else real(texts, batch_size)

    classifier.predict = predict
    app = create_app(classifier, limits=Limits(timeout_s=2))
    with TestClient(app, raise_server_exceptions=False) as client:
        failed = client.post("/v1/classify", json={"texts": ["boom"]})
        assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
        assert failed.json()["error"].startswith("the model failed") and "RuntimeError" in failed.json()["error"]
        assert client.post("/v1/classify", json={"texts": ["nothing"]}).status_code == 503  # timed out, in JSON
        for text in ("see you at 5", "WINNER!! claim your prize"):
            served = client.post("/v1/classify", json={"texts": [text]})
            assert served.status_code == 200, served.text
            assert served.json()["predictions"][0] == real(text)
    err = capsys.readouterr().err
    assert "the model failed on a batch of 1 texts (RuntimeError: CUDA out of memory" in err
    assert "the batching worker failed (TypeError" in err and "Traceback" not in err
