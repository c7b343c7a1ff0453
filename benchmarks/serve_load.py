"""Load and abuse on `gptclassify serve`: N concurrent clients on 127.0.0.1 for a bounded time, each
sending one real SMS message per request; with `--abuse F`, a fraction F of the requests are
instead malformed, oversized, unauthenticated, or cut off by a client that goes away (a quarter
each). Reports requests/s and p50/p99 latency of the well-formed requests, every status seen per
kind, and checks every well-formed answer against `Classifier.predict`.

    python benchmarks/serve_load.py [--run RUN] [--clients 16] [--seconds 30] [--abuse 0 0.3]

Each value of --abuse is its own phase on a fresh server, in one run, so the figures sit side by
side. The server runs with an API key; well-formed requests send it.
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request

from common import benchmark_run, run_clients, save, serving, sms_messages

KEY = "benchmark-key-0123456789abcdef"
KINDS = ("malformed", "oversized", "unauthenticated", "disconnecting")
MALFORMED = [b"", b"{", b"null", b'{"texts": [1, 2]}', b'{"texts": "x"}', b"\xff\xfe", b"[" * 2000,
             b'{"texts": ["a"], "more": true}']


def post(url: str, raw: bytes, key: str | None = KEY) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=raw, headers=headers), timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def disconnect(base: str, raw: bytes, rng: random.Random) -> int:
    """Send part of a request (or all of it) and go away without reading the answer."""
    host, port = base.removeprefix("http://").split(":")
    head = (f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nContent-Length: {len(raw)}\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + raw[: rng.randint(0, len(raw))])
    return 0  # no status: the client left


def phase(run, clients: int, seconds: float, abuse: float, messages: list[str]) -> dict:
    with serving(run, "--max-body-bytes", "20000", env={"GPTCLASSIFY_API_KEY": KEY}) as base:
        url = base + "/v1/classify"
        latencies, statuses, answers = [], collections.defaultdict(collections.Counter), []
        lock = threading.Lock()
        deadline = time.perf_counter() + seconds

        def client(seed):
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                text = rng.choice(messages)
                good = json.dumps({"texts": [text]}).encode()
                kind = rng.choice(KINDS) if rng.random() < abuse else "well-formed"
                started = time.perf_counter()
                try:
                    if kind == "well-formed":
                        status, body = post(url, good)
                    elif kind == "malformed":
                        status, body = post(url, rng.choice(MALFORMED))
                    elif kind == "oversized":
                        status, body = post(url, json.dumps({"texts": [text * (20_000 // len(text) + 1)]}).encode())
                    elif kind == "unauthenticated":
                        status, body = post(url, good, key=rng.choice([None, "wrong-key"]))
                    else:
                        status, body = disconnect(base, good, rng), b""
                except OSError as e:
                    status, body = f"connection error: {type(e).__name__}", b""
                with lock:
                    statuses[kind][status] += 1
                    if kind == "well-formed" and status == 200:
                        latencies.append(time.perf_counter() - started)
                        answers.append((text, json.loads(body)["predictions"][0]))

        elapsed = run_clients(client, clients)
        req = urllib.request.Request(base + "/v1/model", headers={"Authorization": f"Bearer {KEY}"})
        batches = json.loads(urllib.request.urlopen(req).read())["batches_run"]

    from gptclassify import Classifier

    unique = sorted({text for text, _ in answers})
    expected = dict(zip(unique, Classifier.load(run, "cpu").predict(unique)))
    mismatched = sum(p["label"] != expected[t]["label"] or abs(p["score"] - expected[t]["score"]) > 1e-4
                     for t, p in answers)
    q = statistics.quantiles(latencies, n=100)
    return {"abuse": abuse, "clients": clients, "seconds": round(elapsed, 1), "well_formed_answered": len(latencies),
            "requests_per_s": round(len(latencies) / elapsed, 2), "p50_ms": round(q[49] * 1000),
            "p99_ms": round(q[98] * 1000), "forward_batches": batches,
            "statuses": {kind: {str(k): v for k, v in c.items()} for kind, c in statuses.items()},
            "status_500": sum(c.get(500, 0) for c in statuses.values()),
            "answers_checked": len(answers), "answers_differing_from_classifier_predict": mismatched}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--abuse", type=float, nargs="+", default=[0.0, 0.3])
    parser.add_argument("--save-as", default="serve_load")
    args = parser.parse_args()

    run = args.run or benchmark_run()
    messages = sms_messages()
    phases = []
    for abuse in args.abuse:
        print(f"phase: abuse {abuse:.0%} ...", flush=True)
        phases.append(phase(run, args.clients, args.seconds, abuse, messages))
        print(json.dumps(phases[-1], indent=2))
    print(f"wrote {save(args.save_as, {'phases': phases})}")


if __name__ == "__main__":
    main()
