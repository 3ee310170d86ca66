"""Concurrent HTTP GETs for a fixed time, one new connection per request, spread over the
given URLs in turn; prints JSON (requests, failures, requests/s, latency percentiles).
Run inside the lab's namespace by bench/endpoints.py:

    ip netns exec provlab python3 bench/httpload.py --threads 8 --seconds 10 URL [URL...]"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.request


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    lock = threading.Lock()
    latencies: list[float] = []
    failures = 0
    end = time.monotonic() + args.seconds

    def worker(offset: int) -> None:
        nonlocal failures
        n = offset
        mine: list[float] = []
        bad = 0
        while time.monotonic() < end:
            url = args.urls[n % len(args.urls)]
            n += 1
            start = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=5) as reply:
                    reply.read()
                mine.append(time.monotonic() - start)
            except Exception:  # noqa: BLE001
                bad += 1
        with lock:
            latencies.extend(mine)
            failures += bad

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(json.dumps({"requests": len(latencies), "failures": failures, "rps": round(len(latencies) / took, 1),
                      "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2)}))


if __name__ == "__main__":
    main()
