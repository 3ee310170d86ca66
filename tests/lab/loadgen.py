"""A load generator for role endpoints, bounded in count and time: GET a URL at a steady
rate (one new connection per request), until SIGTERM or a bound, and write what happened
as JSON: every request's outcome, and which member answered (the first word of the
guest image's page: "web-1 role=web image=guest:1").

    ip netns exec provlab python3 tests/lab/loadgen.py URL OUT.json [--rate 20] [--max-seconds 900]

Run by the lab tests inside the lab's namespace (where the VIPs are); `Load` starts and
stops it from a test."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    stop = False

    def on_term(signum, frame) -> None:  # noqa: ANN001
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    answers: list[tuple[float, str]] = []  # (seconds since start, page), in order
    failures: list[tuple[float, str]] = []
    n = 0
    while not stop and n < args.max_requests and time.monotonic() - started < args.max_seconds:
        due = started + n / args.rate
        time.sleep(max(0.0, due - time.monotonic()))
        n += 1
        at = round(time.monotonic() - started, 3)
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as reply:
                answers.append((at, reply.read(200).decode(errors="replace").strip()))
        except Exception as exc:  # noqa: BLE001 - every failure is the point
            failures.append((at, f"{type(exc).__name__}: {exc}"))
        if n == 1:
            Path(args.out + ".started").write_text("1")
    Path(args.out).write_text(json.dumps({"requests": n, "answers": answers, "failures": failures,
                                          "seconds": round(time.monotonic() - started, 1)}))
    return 0


class Load:
    """`with Load(netns, url, tmp) as load:` ... then load.result: requests, failures, and
    the members in the order they answered."""

    def __init__(self, netns: str, url: str, tmp: Path, rate: float = 20.0, max_seconds: float = 900) -> None:
        self.out = tmp / f"load-{time.monotonic_ns()}.json"
        self.cmd = ["ip", "netns", "exec", netns, sys.executable, __file__, url, str(self.out), "--rate", str(rate),
                    "--max-seconds", str(max_seconds)]
        self.result: dict = {}

    def __enter__(self) -> "Load":
        self.proc = subprocess.Popen(self.cmd)
        end = time.monotonic() + 30
        while not Path(str(self.out) + ".started").exists():
            assert self.proc.poll() is None and time.monotonic() < end, "the load generator did not start"
            time.sleep(0.1)
        self.started = time.monotonic()  # about the generator's time 0: its times + this = the test's clock
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        self.result = json.loads(self.out.read_text())

    @property
    def failures(self) -> list:
        return self.result["failures"]

    def first(self, text: str) -> float | None:
        """When a page holding `text` was first answered (seconds from the start)."""
        return next((t for t, page in self.result["answers"] if text in page), None)

    def gap(self, text: str) -> float:
        """The longest time without an answer holding `text` (seconds), from the load's start
        to its end: a member out from the start is missing from then on."""
        times = [0.0] + [t for t, page in self.result["answers"] if text in page] + [self.result["seconds"]]
        return max(b - a for a, b in zip(times, times[1:]))

    def last(self, text: str) -> float | None:
        return next((t for t, page in reversed(self.result["answers"]) if text in page), None)

    def failed_at(self) -> list[float]:
        """When each failed request was sent, on the test's clock (time.monotonic())."""
        return [self.started + t for t, _ in self.result["failures"]]

    def seen(self) -> set[str]:
        return {page for _, page in self.result["answers"]}

    def summary(self) -> str:
        r = self.result
        return (f"{r['requests']} requests in {r['seconds']}s, {len(r['failures'])} failed "
                f"{r['failures'][:3]}; pages: {sorted(self.seen())}")


if __name__ == "__main__":
    sys.exit(main())
