"""The HTTP service, as a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from gptclassify.inference.predict import Classifier
from test_predict import trained_run  # noqa: F401  (the session fixture)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, body=None, raw: bytes | None = None, method=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_until_up(url: str, proc: subprocess.Popen) -> None:
    """Until the service at `url` answers /healthz (30 s at most; then the test fails with its output)."""
    for _ in range(300):
        try:
            if request(url + "/healthz")[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("server did not start: " + proc.stdout.read().decode()[-2000:])


@pytest.fixture(scope="module")
def server(trained_run):  # noqa: F811
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gptclassify.cli", "serve", str(trained_run[0]), "--port", str(port),
                             "--device", "cpu", "--max-texts", "8", "--max-chars", "500"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, proc)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_good_request(server, trained_run):  # noqa: F811
    texts = ["WINNER!! Claim your free prize now", "ok see you later"]
    status, body = request(server + "/v1/classify", {"texts": texts})
    assert status == 200
    predictions = json.loads(body)["predictions"]
    expected = Classifier.load(trained_run[0], device="cpu").predict(texts)
    assert [p["label"] for p in predictions] == [p["label"] for p in expected]
    for got, want in zip(predictions, expected):
        assert abs(got["score"] - want["score"]) < 1e-5
        assert got["probabilities"].keys() == want["probabilities"].keys()


def test_empty_list(server):
    assert request(server + "/v1/classify", {"texts": []}) == (200, b'{"predictions":[]}')


@pytest.mark.parametrize("body,status,message", [
    ({"texts": ["ok", 3]}, 422, "texts.1"),
    ({"texts": "just a string"}, 422, "texts"),
    ({"text": ["wrong key"]}, 422, "texts"),
    ({"texts": ["x"] * 9}, 413, "at most 8 texts"),
    ({"texts": ["ok", "y" * 501]}, 413, "texts.1: at most 500 characters"),
])
def test_bad_requests(server, body, status, message):
    got_status, got_body = request(server + "/v1/classify", body)
    assert got_status == status
    assert message in json.loads(got_body)["error"]


def test_malformed_json_and_unknown_route(server):
    status, body = request(server + "/v1/classify", raw=b'{"texts": ["unterminated')
    assert status == 422 and "error" in json.loads(body)
    assert request(server + "/v2/nothing")[0] == 404
    assert request(server + "/v1/classify", method="GET")[0] == 405


def test_model_info_health_docs_and_page(server):
    status, body = request(server + "/v1/model")
    info = json.loads(body)
    assert status == 200 and info["labels"] == ["ham", "spam"] and info["max_length"] > 0
    assert info["metrics"]["test"]["accuracy"] >= 0
    assert json.loads(request(server + "/healthz")[1]) == {"status": "ok"}
    assert request(server + "/docs")[0] == 200
    assert "/v1/classify" in json.loads(request(server + "/openapi.json")[1])["paths"]
    status, page = request(server + "/")
    assert status == 200 and b"<textarea" in page and b"/v1/classify" in page


def test_concurrent_requests_are_answered_correctly_and_batched(server, sms):
    texts = sms[:64]
    before = json.loads(request(server + "/v1/model")[1])["batches_run"]

    def one(i):
        return i, json.loads(request(server + "/v1/classify", {"texts": [texts[i]]})[1])["predictions"][0]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = dict(pool.map(one, range(len(texts))))
    status, body = request(server + "/v1/classify", {"texts": texts[:8]})
    direct = json.loads(body)["predictions"]
    for i in range(8):
        assert answers[i]["label"] == direct[i]["label"]
        assert abs(answers[i]["score"] - direct[i]["score"]) < 1e-5
    after = json.loads(request(server + "/v1/model")[1])["batches_run"]
    print("forward batches for 65 requests:", after - before)
    assert after - before < 65  # concurrent single-text requests shared forward passes
