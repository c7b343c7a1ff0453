"""Load on `gptclassify serve`: N concurrent clients on 127.0.0.1 for a bounded time, each sending
one real SMS message per request and waiting for the answer; requests/s, p50/p99 latency, errors.

    python benchmarks/serve_load.py [--run RUN] [--clients 16] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import threading
import time
import urllib.request

from common import benchmark_run, save, serving, sms_messages


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        json.loads(r.read())
        return r.status


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    run = args.run or benchmark_run()
    with serving(run) as base:
        messages = sms_messages()
        latencies, errors, lock = [], [0], threading.Lock()
        deadline = time.perf_counter() + args.seconds

        def client(seed):
            rng = random.Random(seed)
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    ok = post(base + "/v1/classify", {"texts": [rng.choice(messages)]}) == 200
                except OSError:
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors[0] += 1

        started = time.perf_counter()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        batches = json.loads(urllib.request.urlopen(base + "/v1/model").read())["batches_run"]
    q = statistics.quantiles(latencies, n=100)
    result = {"clients": args.clients, "seconds": elapsed, "requests": len(latencies), "errors": errors[0],
              "requests_per_s": len(latencies) / elapsed, "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000,
              "forward_batches": batches, "mean_texts_per_batch": len(latencies) / max(batches, 1)}
    print(result)
    print(f"wrote {save('serve_load', result)}")


if __name__ == "__main__":
    main()
