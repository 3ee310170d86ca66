"""One image to a batch at once, in the lab: the shared lab's two BIOS nodes (IPMI) and
its Secure Boot node (UEFI, Redfish) in one upgrade domain, reimaged as one batch. The daemon sends
each new image once over multicast (udp-sender, its child), the maintenance agents
receive it (udp-receiver), and whatever a node misses it fetches over HTTP with range
requests. Each check reads a part's own record: the sender's report kept with the job,
our HTTP server's byte counter, the agents' reports, nftables' drop counter, the nodes'
events and console logs, the hosts' own disks over SSH, the process table.

In order, on one lab: a clean session with packet loss on one node's tap -> a node
powered off mid-session and one that comes late -> kill -9 of the daemon mid-session."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from provisioner.processes import pid_alive

from .conftest import enroll_missing, wait_until
from .variants import patched

REPO = Path(__file__).resolve().parents[2]
HOST_IMAGE = REPO / "build/images/host/host.qcow2"
N1, N2, SECURE = "lab-r1-n1", "lab-r1-n2", "lab-r2-n2"  # BIOS + IPMI twice; UEFI + Redfish + Secure Boot
TRIO = (N1, N2, SECURE)
TARGET = ("tag:mc", "--max-unavailable", "100%")
VARIANT = "/etc/provisioner-variant"


@pytest.fixture(scope="module")
def trio(shared_lab):
    """The three nodes in one upgrade domain, tagged: one batch."""
    lab = shared_lab
    enroll_missing(lab, list(TRIO))
    for name in TRIO:
        code, out, err = lab.cli("label", name, "--tag", "mc", "--upgrade-domain", "0")
        assert code == 0, out + err
    yield lab
    for name in TRIO:
        lab.cli("label", name, "--untag", "mc", "--upgrade-domain", "auto")


def new_variant(lab, tmp_path: Path, tag: str) -> tuple[str, int]:
    code, out, err = lab.cli("image", "import", str(patched(HOST_IMAGE, tmp_path / f"{tag}.qcow2", {VARIANT: tag})),
                             "--name", f"host-{tag}")
    assert code == 0, out + err
    doc = lab.client.get(f"/v1/images/host-{tag}")
    return doc["sha256"], doc["size"]


def senders() -> list[str]:
    """udp-sender processes running (a killed one waiting to be reaped is not)."""
    found = subprocess.run(["pgrep", "-a", "udp-sender"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if pid_alive(int(line.split()[0]))]


def member_bytes(job: dict, name: str) -> tuple[int, int]:
    """(multicast, HTTP) bytes the node's agent reported for its deploy in this job."""
    member = next(m for m in job["nodes"] if m["name"] == name)
    m = re.search(r"multicast (\d+) \+ HTTP (\d+) bytes", member["message"] or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, int(member["bytes"] or 0))


def assert_on_disk(lab, sha: str) -> None:
    """Every node of the trio runs the image, booted from its own disk, and the base on
    its disk has the image's sha256 (read on the host)."""
    for name in TRIO:
        doc = lab.client.get(f"/v1/nodes/{name}")
        assert doc["state"] == "active" and doc["image_sha256"] == sha, doc["last_error"]
        assert doc["host"]["facts"]["base_sha256"] == sha
        out = lab.ssh(name, f"sha256sum /var/lib/provisioner/disk/images/{sha}.qcow2")
        assert out.split()[0] == sha, out


def laid_down(lab, name: str, since: float) -> list[str]:
    return [e["message"] for e in lab.events(name, since) if "image laid down" in (e["message"] or "")]


def tap_of(lab, name: str) -> str:
    conn = lab.connect()
    try:
        xml = conn.lookupByName(name).XMLDesc(0)
    finally:
        conn.close()
    return re.search(r"<target dev='(vnet\d+)'", xml).group(1)


@contextmanager
def packet_loss(lab, tap: str, percent: int) -> Iterator[dict]:
    """Drop `percent` % of the UDP packets going out to one node's tap (nftables on the
    lab bridge: this kernel has no netem); yields the drop count when the block ends."""
    rule = f'oifname "{tap}" ip protocol udp numgen random mod 100 < {percent} counter drop'
    ruleset = (f"table bridge provloss {{\n  chain egress {{ type filter hook output priority 0; {rule}; }}\n"
               f"  chain forward {{ type filter hook forward priority 0; {rule}; }}\n}}\n")
    nft = ["ip", "netns", "exec", lab.lab.cfg.netns, "nft"]
    subprocess.run([*nft, "-f", "-"], input=ruleset, text=True, check=True)
    seen: dict = {}
    try:
        yield seen
    finally:
        listing = json.loads(subprocess.run([*nft, "-j", "list", "table", "bridge", "provloss"],
                                            capture_output=True, text=True, check=True).stdout)
        seen["dropped"] = sum(expr["counter"]["packets"] for item in listing["nftables"] if "rule" in item
                              for expr in item["rule"]["expr"] if "counter" in expr)
        subprocess.run([*nft, "delete", "table", "bridge", "provloss"], check=True)


def start_job(lab, tag: str) -> int:
    code, out, err = lab.cli("reimage", *TARGET, "--image", f"host-{tag}", "--no-wait")
    assert code == 0, out + err
    return int(re.search(r"job (\d+) started", out).group(1))


def live_session(lab, job_id: int) -> dict | None:
    sessions = lab.client.get(f"/v1/jobs/{job_id}")["multicast_sessions"]
    return sessions[0] if sessions else None


def wait_for(what, predicate, timeout: float = 360):
    # A session with a late member starts when the lab's join window (90 s) ends: 103 s
    # measured from the job's start; three times that, and more.
    wait_until(what, predicate, timeout)


def joined(lab, name: str, since: float) -> bool:
    return any("multicast: joins session" in (e["message"] or "") for e in lab.events(name, since))


def test_one_session_reimages_three_nodes_and_a_lossy_node_repairs(trio, tmp_path):
    lab = trio
    sha, size = new_variant(lab, tmp_path, "mc1")
    before, started = lab.image_bytes(), time.time()
    job_id = start_job(lab, "mc1")
    # 2 % of the UDP packets to N2 lost, from when its agent joined (its tap is the one
    # its maintenance boot has) to the job's end.
    wait_for(f"{N2} joining the session", lambda: joined(lab, N2, started))
    with packet_loss(lab, tap_of(lab, N2), percent=2) as loss:
        job = lab.wait_job(job_id)
    assert job["status"] == "done", job
    [session] = job["stats"]["multicast"]
    assert (session["state"], session["joined"], session["expected"]) == ("done", 3, 3), session
    # The sender's own report: the image went out once, plus what it retransmitted.
    assert session["complete"] and session["payload_bytes"] == size, session
    assert session["sent_bytes"] <= 1.1 * size, session
    # HTTP carried only what repair needed: our server's counter, the agents' reports and
    # the job's record agree.
    http = {name: member_bytes(job, name)[1] for name in TRIO}
    assert lab.image_bytes() - before == sum(http.values()) == session["http_bytes"], (http, session)
    assert http[N1] == http[SECURE] == 0, http
    # The lossy node lost packets and repaired them: by the sender's retransmissions, or
    # (dropped from the session) over HTTP.
    assert loss["dropped"] > 0
    assert session["retransmitted_bytes"] > 0 or http[N2] > 0, session
    assert_on_disk(lab, sha)
    for name in TRIO:
        assert len(laid_down(lab, name, started)) == 1, f"{name} was reported done more than once"
    assert not senders(), "a sender outlived its session"
    code, out, _ = lab.cli("job", str(job_id))
    assert re.search(r"multicast .*: done, 3 of 3 joined", out), out
    assert "multicast session" in out and "HTTP repair" in out, out


def test_a_node_powered_off_mid_session_and_a_late_one_finish_over_http(trio, tmp_path):
    """The Secure Boot node is held (its domain paused) until the session's data flows:
    it asks late and is sent to HTTP. N1 loses power mid-session, past its first sync,
    and is powered on again: the sender drops it, N2 finishes on multicast, and N1's new
    boot resumes over HTTP from what its disk holds."""
    lab = trio
    sha, size = new_variant(lab, tmp_path, "mc2")
    started = time.time()
    job_id = start_job(lab, "mc2")
    conn = lab.connect()
    try:
        lab.wait(SECURE, lambda d: d["step"] == "wait-agent", timeout=120)
        late = conn.lookupByName(SECURE)
        late.suspend()
        try:
            wait_for("the session to start", lambda: (live_session(lab, job_id) or {}).get("state") == "sending")
        finally:
            late.resume()
        lab.wait(N1, lambda d: (d.get("progress") or {}).get("path") == "multicast"
                 and (64 << 20) < (d["progress"].get("bytes") or 0) < size, timeout=180)
        victim = conn.lookupByName(N1)
        victim.destroy()  # the plug, pulled in libvirt
        victim.create()  # and put back
    finally:
        conn.close()
    job = lab.wait_job(job_id)
    assert job["status"] == "done", job
    assert_on_disk(lab, sha)
    [session] = job["stats"]["multicast"]
    assert (session["joined"], session["expected"], session["dropped"]) == (2, 3, 1), session
    assert session["complete"], "N2 stayed in the session to its end"
    assert member_bytes(job, N2) == (size, 0)
    assert member_bytes(job, SECURE) == (0, size)
    assert any("late for it, HTTP" in (e["message"] or "") for e in lab.events(SECURE, started))
    # N1's second boot took only the rest over HTTP, from what the first had synced.
    mc, http = member_bytes(job, N1)
    assert mc == 0 and 0 < http <= size - (64 << 20), (mc, http)
    assert re.search(r"resuming \S+ at byte (\d+) of", lab.lab.console_log(N1).read_text(errors="replace"))
    for name in TRIO:
        assert len(laid_down(lab, name, started)) == 1, f"{name} was reported done more than once"
    assert not senders()


def test_kill9_of_the_daemon_mid_session_each_node_finishes_over_http_once(trio, tmp_path):
    """The sender dies with the daemon; each receiver gives up after its receive timeout
    and fetches the rest over HTTP from the restarted daemon, from the byte the session
    reached: one source at a time, each node laid down once."""
    lab = trio
    sha, size = new_variant(lab, tmp_path, "mc3")
    started = time.time()
    job_id = start_job(lab, "mc3")
    wait_for("the session to start", lambda: (live_session(lab, job_id) or {}).get("state") == "sending")
    lab.wait(N1, lambda d: (d.get("progress") or {}).get("path") == "multicast"
             and 0 < (d["progress"].get("bytes") or 0) < size, timeout=300)
    assert len(senders()) == 1, senders()
    os.kill(lab.lab.load().daemon_pid, signal.SIGKILL)
    time.sleep(1)
    assert not senders(), "the sender outlived the daemon"
    lab.lab.restart_daemon()

    job = lab.wait_job(job_id)
    assert job["status"] == "done", job
    assert any("resumed: no multicast session" in n for n in job["stats"]["notes"]), job["stats"]
    assert_on_disk(lab, sha)
    for name in TRIO:
        assert len(laid_down(lab, name, started)) == 1, f"{name} was written more than once"
    # N1 was mid-session: its agent's log shows multicast stopping at a byte, and HTTP
    # going on from that very byte.
    console = lab.lab.console_log(N1).read_text(errors="replace")
    m = re.findall(r"multicast delivered (\d+) of (\d+) bytes; HTTP from byte (\d+)", console)
    assert m and m[-1][0] == m[-1][2] and 0 < int(m[-1][0]) < size, console[-3000:]
    assert any(e["event"] == "resume" for e in lab.events(N1, started))
    assert not senders()
