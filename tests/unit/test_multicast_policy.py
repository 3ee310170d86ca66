"""Multicast decisions without a network: which batches get a session, which nodes get
an offer (and when they are late for it), what udp-sender's output says, and the
settings that are refused."""

import dataclasses

import pytest

from provisioner.boot.udpcast import BLOCK, SenderReport, SenderState, sender_command, SessionAddress, SenderOptions
from provisioner.config import Settings, validate
from provisioner.errors import ConfigError
from provisioner.images.catalog import Image
from provisioner.workflows import multicast as mc

SHA = "ab" * 32
IMAGE = Image(id=1, name="host", version="1", sha256=SHA, format="qcow2", virtual_size=1 << 30, size=200 << 20)


def make_nodes(store, count, **fields):
    nodes = []
    for i in range(1, count + 1):
        node = store.create_node(name=f"n{i}", mac=f"52:54:00:00:00:{i:02x}", rack="rack-1",
                                 bmc_address="10.0.0.1", bmc_port=623, bmc_username="admin",
                                 bmc_password_sealed="sealed", cipher_suite=3)
        nodes.append(dataclasses.replace(node, deploy_sha256=SHA, **fields))
    return nodes


class FakeSender:
    def __init__(self):
        self.report = SenderReport()
        self.stopped = False

    def stop(self):
        self.stopped = True


@pytest.fixture
def service(store, tmp_path, monkeypatch):
    settings = Settings(server_data_dir=tmp_path, dhcp_interface="br0")
    svc = mc.MulticastService(settings, store, catalog=None)
    svc._interface, svc._networks = "br0", [mc.ipaddress.IPv4Network("10.99.0.0/24")]
    started = []

    def start(session):
        sender = FakeSender()
        started.append(sender)
        return sender

    monkeypatch.setattr(svc, "_start_sender", start)
    svc.started = started
    return svc


def test_a_batch_gets_a_session_only_for_the_nodes_that_need_the_image(service, store):
    nodes = make_nodes(store, 3)
    nodes[2] = dataclasses.replace(nodes[2], previous_image_sha256=SHA)  # already on its disk
    note = service.open_batch(1, 0, IMAGE, nodes)
    assert note.startswith("multicast session 239.255.60.2:9000 for 2 node(s)")
    offer, said = service.offer(nodes[0], "10.99.0.101")
    assert offer["rendezvous"] == "239.255.60.1" and offer["portbase"] == 9000 and "joins session" in said
    assert service.offer(nodes[2], "10.99.0.103") == (None, None)
    assert len(service.started) == 1, "one sender per session, started by the first offer"


def test_one_node_needing_the_image_is_not_a_session(service, store):
    nodes = make_nodes(store, 2)
    nodes[1] = dataclasses.replace(nodes[1], image_sha256=SHA)
    assert "1 node(s) of the batch need the image" in service.open_batch(1, 0, IMAGE, nodes)
    assert service.offer(nodes[0], "10.99.0.101") == (None, None)


def test_a_node_that_asks_once_the_data_flows_is_late_and_uses_http(service, store):
    nodes = make_nodes(store, 3)
    service.open_batch(1, 0, IMAGE, nodes)
    assert service.offer(nodes[0], "10.99.0.101")[0] is not None
    service.started[0].report.state = SenderState.SENDING
    offer, said = service.offer(nodes[1], "10.99.0.102")
    assert offer is None and "late for it, HTTP" in said


def test_a_node_off_the_multicast_network_uses_http(service, store):
    nodes = make_nodes(store, 2)
    service.open_batch(1, 0, IMAGE, nodes)
    offer, said = service.offer(nodes[0], "10.1.2.3")
    assert offer is None and "not on a multicast network" in said


def test_sessions_take_distinct_groups_and_ports_and_give_them_back(service, store):
    nodes = make_nodes(store, 4)
    service.open_batch(1, 0, IMAGE, nodes[:2])
    service.open_batch(2, 0, IMAGE, nodes[2:])
    a, _ = service.offer(nodes[0], "10.99.0.101")
    b, _ = service.offer(nodes[2], "10.99.0.103")
    assert (a["rendezvous"], a["portbase"]) != (b["rendezvous"], b["portbase"])
    stats = service.close_batch(1, 0)
    assert service.started[0].stopped and stats["offered"] == 1 and stats["expected"] == 2
    assert service.offer(nodes[0], "10.99.0.101") == (None, None), "a closed session offers nothing"


def test_a_session_nobody_reached_turns_multicast_off_for_the_job(service, store):
    nodes = make_nodes(store, 4)
    service.open_batch(1, 0, IMAGE, nodes[:2])
    service.offer(nodes[0], "10.99.0.101")
    service.started[0].report.state = SenderState.FAILED
    stats = service.close_batch(1, 0)
    assert "multicast did not work on br0" in stats["note"]
    assert service.open_batch(1, 1, IMAGE, nodes[2:]) == "", "said once, when it was turned off"
    assert service.open_batch(2, 0, IMAGE, nodes[2:]).startswith("multicast session"), "only that job"


def test_a_stranger_joining_a_session_is_reported(service, store):
    nodes = make_nodes(store, 2)
    service.open_batch(1, 0, IMAGE, nodes)
    service.offer(nodes[0], "10.99.0.101")
    service.offer(nodes[1], "10.99.0.102")
    service.started[0].report.joined = ["10.99.0.101", "10.99.0.66", "10.99.0.102"]
    stats = service.close_batch(1, 0)
    assert stats["strangers"] == ["10.99.0.66"] and "joined by 10.99.0.66" in stats["note"]


def test_multicast_off_by_setting(store, tmp_path):
    svc = mc.MulticastService(Settings(server_data_dir=tmp_path, multicast_enabled=False), store, catalog=None)
    assert "multicast is off" in svc.open_batch(1, 0, IMAGE, make_nodes(store, 3))
    assert svc.open_batch(1, 1, IMAGE, []) == "", "said once per job"


def test_the_senders_report_is_read_from_its_output():
    report = SenderReport()
    for line in ["Udp-sender 20120424", "Broadcasting control to 239.255.60.1",
                 "New connection from 10.99.0.12  (#0) 00000009", "New connection from 10.99.0.11  (#1) 00000009",
                 "Starting transfer: 00000009", "bytes= 48 460 048  re-xmits=0000004 (  0.0%) slice=0129 -   1",
                 "Timeout notAnswered=[0] notReady=[0] nrAns=1 nrRead=1 nrPart=2 avg=9015",
                 "Dropping client #0 because of timeout", "bytes= 52 428 800  re-xmits=0000017 (  0.0%) slice=1024",
                 "Transfer complete."]:
        report.read(line, clock=lambda: 5.0)
    assert report.joined == ["10.99.0.12", "10.99.0.11"] and report.dropped == 1
    assert report.state == SenderState.DONE and report.started_at == 5.0
    assert report.payload_bytes == 52428800 and report.sent_bytes == 52428800 + 17 * BLOCK


def test_the_sender_dies_with_the_daemon_and_is_bounded():
    cmd = sender_command("udp-sender", __import__("pathlib").Path("/x/img"), SessionAddress("239.1.1.1", "239.1.1.2", 9000),
                         SenderOptions(interface="br0", ttl=1, min_receivers=3, max_wait=15, max_bitrate="600m",
                                       start_timeout=75))
    assert cmd[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]
    joined = " ".join(cmd)
    for part in ("--ttl 1", "--min-receivers 3", "--max-wait 15", "--max-bitrate 600m", "--start-timeout 75",
                 "--mcast-rdv-address 239.1.1.1", "--mcast-data-address 239.1.1.2", "--portbase 9000"):
        assert part in joined


@pytest.mark.parametrize("field,value,message", [
    ("multicast_ttl", 0, "multicast.ttl"),
    ("multicast_min_receivers", 1, "multicast.min_receivers"),
    ("multicast_max_wait", 0.0, "multicast.max_wait"),
    ("multicast_max_bitrate", "fast", "multicast.max_bitrate"),
    ("multicast_max_bitrate", "1g", "at most 2147m"),
    ("multicast_max_bitrate", "4000m", "at most 2147m"),
    ("multicast_networks", "10.0.0.0/33", "multicast.networks"),
])
def test_bad_multicast_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(Settings(**{field: value}))


@pytest.mark.parametrize("field,value,message", [
    ("multicast_group", "10.0.0.0/24", "not a multicast network"),
    ("multicast_ports", "9000", "at least two ports"),
    ("multicast_ports", "a-b", "a range like"),
])
def test_bad_groups_and_ports_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=message):
        validate(Settings(**{field: value}))
