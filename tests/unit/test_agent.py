from pathlib import Path

from provisioner.agent import inventory
from provisioner.agent.main import Agent, kernel_args


def fake_tree(root: Path) -> Path:
    (root / "proc").mkdir(parents=True)
    cpu = "processor\t: {i}\nmodel name\t: Test CPU\nphysical id\t: 0\ncore id\t: {i}\nflags\t: fpu vmx\n"
    (root / "proc/cpuinfo").write_text("\n".join(cpu.format(i=i) for i in range(4)))
    (root / "proc/meminfo").write_text("MemTotal:        4009148 kB\n")
    disk = root / "sys/block/vda"
    (disk / "device").mkdir(parents=True)
    (disk / "queue").mkdir()
    (disk / "size").write_text("41943040\n")
    (disk / "serial").write_text("DISK42\n")
    (disk / "queue/rotational").write_text("0\n")
    (root / "sys/block/loop0").mkdir()
    nic = root / "sys/class/net/eth0"
    (nic / "device").mkdir(parents=True)
    (nic / "address").write_text("52:54:00:00:00:01\n")
    (nic / "carrier").write_text("1\n")
    (nic / "speed").write_text("-1\n")
    (root / "sys/class/net/lo").mkdir()
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "sys_vendor").write_text("ACME\n")
    (dmi / "product_serial").write_text("SN1\n")
    return root


def test_inventory_from_a_recorded_tree(tmp_path):
    inv = inventory.collect(fake_tree(tmp_path), dmidecode=[])
    assert inv["cpu"]["count"] == 4 and inv["cpu"]["virtualization"] is True
    assert inv["memory"]["total_mib"] == 3915 and inv["memory"]["source"] == "kernel"
    assert inv["disks"] == [{"name": "vda", "size_bytes": 20 * 1024 ** 3, "model": None, "vendor": None,
                             "serial": "DISK42", "rotational": False, "removable": False}]
    assert [n["mac"] for n in inv["nics"]] == ["52:54:00:00:00:01"]
    assert inv["nics"][0]["carrier"] is True and inv["nics"][0]["speed_mbps"] is None
    assert inv["dmi"] == {"sys_vendor": "ACME", "product_serial": "SN1"}
    assert inv["firmware"] == "bios"


def test_kernel_command_line():
    args = kernel_args("console=ttyS0 provisioner.api=http://10.0.0.1:8080 provisioner.mac=aa quiet")
    assert args == {"api": "http://10.0.0.1:8080", "mac": "aa"}


class FakeApi:
    def __init__(self, commands):
        self.token = None
        self.calls = []
        self.commands = commands

    def call(self, path, body, max_wait=30.0):
        self.calls.append((path, body))
        if path == "/v1/agent/heartbeat":
            return {"commands": self.commands, "heartbeat_interval": 5}
        return {}


def test_commands_run_once_per_id_even_across_agent_restarts(tmp_path):
    acted = []
    cmds = [{"id": "c1", "kind": "reboot"}, {"id": "c1", "kind": "reboot"}, {"id": "c2", "kind": "format"}]
    agent = Agent(FakeApi(cmds), "aa", "1", tmp_path, collect=dict, act=acted.append)
    agent.heartbeat_once()
    again = Agent(FakeApi([{"id": "c1", "kind": "reboot"}]), "aa", "1", tmp_path, collect=dict, act=acted.append)
    again.heartbeat_once()
    assert acted == ["reboot"]
    results = [b["status"] for p, b in agent.api.calls if p.startswith("/v1/agent/commands/")]
    assert results == ["done", "done", "failed"]


def test_a_deploy_result_from_the_network_keeps_only_well_typed_fields():
    from provisioner.agent.protocol import deploy_result
    assert deploy_result({"disk": "/dev/vda", "transferred_bytes": 5, "reused": False, "base_sha256": "ab",
                          "error": "x", "extra": 1}) == \
        {"disk": "/dev/vda", "transferred_bytes": 5, "reused": False, "base_sha256": "ab", "error": "x"}
    assert deploy_result({"disk": 7, "transferred_bytes": True, "reused": "yes"}) == {}
    assert deploy_result(["not", "a", "dict"]) == {}


def test_a_deploy_result_keeps_the_transfer_paths_only_as_counts():
    from provisioner.agent.protocol import deploy_result
    assert deploy_result({"multicast_bytes": 7, "http_bytes": 3}) == {"multicast_bytes": 7, "http_bytes": 3}
    assert deploy_result({"multicast_bytes": -1, "http_bytes": "3", "transferred_bytes": False}) == {}


def test_the_receiver_joins_the_offered_session_on_the_boot_nic(tmp_path):
    from provisioner.agent import multicast
    for name, mac in (("lo", "00:00:00:00:00:00"), ("ens3", "52:54:00:99:01:01")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    assert multicast.interface_for("52:54:00:99:01:01", tmp_path) == "ens3"
    assert multicast.interface_for("52:54:00:99:09:09", tmp_path) is None
    offer = {"session": "s", "rendezvous": "239.255.60.1", "portbase": 9000, "start_timeout": 45.0,
             "receive_timeout": 10.0}
    cmd = " ".join(multicast.receiver_command(offer, "ens3"))
    assert "--interface ens3 --portbase 9000 --mcast-rdv-address 239.255.60.1" in cmd
    assert "--start-timeout 45 --receive-timeout 10" in cmd


def test_a_receiver_that_cannot_start_leaves_the_download_to_http(tmp_path):
    from provisioner.agent import multicast
    offer = {"session": "s", "rendezvous": "239.255.60.1", "portbase": 9000, "start_timeout": 1.0,
             "receive_timeout": 1.0}
    with (tmp_path / "part").open("ab") as out:
        got = multicast.receive(offer, "eth0", writer(out, 100),
                                command=[str(tmp_path / "no-such-udp-receiver")])
    assert got == 0


def test_a_session_that_sends_more_than_the_image_is_cut_at_its_size(tmp_path):
    from provisioner.agent import multicast
    with (tmp_path / "part").open("ab") as out:
        got = multicast.receive({"session": "s"}, "eth0", writer(out, 1000),
                                command=["head", "-c", "5000", "/dev/zero"])
    assert got == 1000 and (tmp_path / "part").stat().st_size == 1000


def writer(out, size):
    import hashlib

    from provisioner.agent.download import PartWriter
    return PartWriter(out, hashlib.sha256(), 0, size, lambda done, total, path: None, "multicast")


def test_a_receiver_waiting_for_its_session_says_so_until_data_comes(tmp_path, monkeypatch):
    from provisioner.agent import multicast
    monkeypatch.setattr(multicast, "WAIT_TICK", 0.05)
    ticks = []
    with (tmp_path / "part").open("ab") as out:
        got = multicast.receive({"session": "s"}, "eth0", writer(out, 3), waiting=lambda: ticks.append(1),
                                command=["sh", "-c", "sleep 0.5; printf abc"])
    assert got == 3 and len(ticks) >= 3
