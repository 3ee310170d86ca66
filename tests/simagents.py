"""Simulated agents for benchmarks and tests of the control plane at scale: each node's
maintenance agent and host agent, played over the real agent and host APIs. They follow
the daemon's event feed, so a node "boots" when the daemon waits for its agent (a step
of wait-agent) and its host comes up when the daemon waits for the host (wait-host). The
lab tests run the real agents on real nodes; these stand in where there are thousands."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisioner.client import Client

INVENTORY = {"cpu": {"count": 8}, "memory": {"total_mib": 65536}, "disks": [{"name": "vda", "size_bytes": 1 << 40}],
             "nics": [{"name": "eth0"}], "dmi": {"sys_vendor": "sim", "product_name": "sim"}, "firmware": "bios"}


class SimAgents:
    """The nodes' agents: a node boots its maintenance agent when the feed says the
    daemon waits for it, and its host agent when the feed says the daemon waits for the
    host. Calls go over keep-alive connections, a few threads at a time."""

    def __init__(self, client: Client, port: int, macs: dict[str, str]) -> None:
        self.client = client
        self.port = port
        self.macs = macs
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=24)
        self.host_tokens: dict[str, tuple[str, str]] = {}
        self.reached: dict[str, int] = {}
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.hold: set[str] = set()  # nodes whose maintenance agent waits for release()
        self.download = False  # agents fetch the image (and check its sha256) before reporting
        self.downloaded: dict[str, bool] = {}  # node: whether the bytes hashed to the image's sha256
        self.held: list[tuple[str, str]] = []
        self.after = client.get("/v1/events?limit=1")["last"]  # from now on
        self.thread = threading.Thread(target=self._follow, daemon=True)
        self.thread.start()

    def _call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        conn = getattr(self.local, "conn", None)
        if conn is None or conn.port != self.port:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["X-Agent-Token"] = token
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(3):
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status == 503:  # busy: as a real agent, try again shortly
                    time.sleep(0.2 * (attempt + 1))
                    continue
                return resp.status, (json.loads(raw) if raw and raw[:1] in b"{[" else raw)
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        return 503, None

    def _follow(self) -> None:
        while not self.stopping.is_set():
            try:
                doc = self.client.get(f"/v1/events?after={self.after}&wait=2&limit=5000")
            except Exception as exc:  # noqa: BLE001
                if not self.stopping.is_set():
                    self.errors.append(f"feed: {exc}")
                time.sleep(0.2)
                continue
            self.after = doc["next"]
            for e in doc["events"]:
                if e["event"] == "step" and e["step"] == "wait-agent":
                    with self.cond:
                        if e["node"] in self.hold:
                            self.held.append((e["node"], e["to_state"]))
                            self.cond.notify_all()
                            continue
                    self.pool.submit(self._boot, e["node"], e["to_state"])
                elif e["event"] == "step" and e["step"] == "wait-host":
                    self.pool.submit(self._host, e["node"])
                elif e["event"] != "step" and e["to_state"] in ("ready", "active", "inspect-failed",
                                                                 "deploy-failed", "enroll-failed"):
                    with self.cond:
                        self.reached[e["to_state"]] = self.reached.get(e["to_state"], 0) + 1
                        self.cond.notify_all()

    def _boot(self, name: str, state: str) -> None:
        try:
            mac = self.macs[name]
            self._call("GET", f"/boot/{mac.replace(':', '-')}.ipxe")
            code, doc = self._call("POST", "/v1/agent/lookup", {"mac": mac, "boot": "sim"})
            if code != 200:
                raise RuntimeError(f"lookup {code}: {doc}")
            token = doc["token"]
            if state == "inspecting":
                code, doc = self._call("POST", "/v1/agent/inspection", {"inventory": INVENTORY}, token)
                if code != 200:
                    raise RuntimeError(f"inspection {code}: {doc}")
                return
            for _ in range(50):
                code, doc = self._call("POST", "/v1/agent/heartbeat", {}, token)
                deploy = next((c for c in doc.get("commands", []) if c["kind"] == "deploy"), None)
                if deploy is not None:
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError("no deploy command")
            args = deploy["args"]
            self.host_tokens[name] = (args["host_agent"]["token"], args["image"]["sha256"])
            if self.download:
                code, body = self._call("GET", args["image"]["url"], token=token)
                if code != 200:
                    raise RuntimeError(f"image download {code}: {body!r}")
                self.downloaded[name] = hashlib.sha256(body).hexdigest() == args["image"]["sha256"]
            code, doc = self._call("POST", f"/v1/agent/commands/{deploy['id']}",
                                   {"status": "done", "result": {"disk": "/dev/vda",
                                                                 "transferred_bytes": args["image"]["size"]}}, token)
            if code != 200:
                raise RuntimeError(f"command result {code}: {doc}")
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"{name}: {exc}")

    def _host(self, name: str) -> None:
        try:
            token, sha = self.host_tokens[name]
            code, doc = self._call("POST", "/v1/host/heartbeat",
                                   {"facts": {"base_sha256": sha, "cpu": {"count": 8},
                                              "memory": {"total_mib": 65536}}}, token)
            if code != 200:
                raise RuntimeError(f"host heartbeat {code}: {doc}")
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"{name}: {exc}")

    def wait(self, state: str, count: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            while self.reached.get(state, 0) < count:
                failed = sum(v for k, v in self.reached.items() if k.endswith("-failed"))
                if failed or time.monotonic() > end:
                    raise RuntimeError(f"{self.reached.get(state, 0)} of {count} {state}, {failed} failed; "
                                       f"errors: {self.errors[:5]}")
                self.cond.wait(1.0)
            self.reached[state] -= count

    def wait_held(self, count: int, timeout: float) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.held) < count:
                if time.monotonic() > end:
                    raise RuntimeError(f"{len(self.held)} of {count} held nodes waiting; errors: {self.errors[:5]}")
                self.cond.wait(0.5)

    def release(self) -> None:
        """The held nodes' agents boot now."""
        with self.cond:
            held, self.held, self.hold = self.held, [], set()
        for name, state in held:
            self.pool.submit(self._boot, name, state)

    def move_to(self, client: Client, port: int) -> None:
        """Talk to another controller from now on (as agents given several addresses do
        when theirs stops answering)."""
        self.client, self.port = client, port

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=10)
        self.pool.shutdown(wait=True)
