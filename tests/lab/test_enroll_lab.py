"""End to end in the virtual lab: real libvirtd/qemu, virtualbmc, dnsmasq, TFTP, HTTP and
the agent in the maintenance image, network-booted. Each check reads a part's own record."""

import re
import signal
import os
import time


from provisioner.lab import hypervisor, system

ENROLLED = ("lab-r1-n1", "lab-r2-n1")  # two racks; lab-r1-n2 stays unenrolled
BIOS_IPMI, UEFI_REDFISH = ENROLLED  # the shared lab is mixed: rack-1 BIOS + IPMI, rack-2 UEFI + Redfish
STRANGER = "lab-r1-n2"


def test_enroll_two_machines_in_two_racks_by_mac(lab):
    started = time.monotonic()
    for name in ENROLLED:
        code, _, err = lab.cli(*lab.enroll_args(name), "--no-wait")
        assert code == 0, err
    nodes = {name: lab.wait(name, lambda d: d["state"] in ("ready", "inspect-failed")) for name in ENROLLED}
    print(f"\n2 lab nodes enrolled to ready in {time.monotonic() - started:.0f}s")
    conn = lab.connect()
    dnsmasq, tftp, http = lab.log("dnsmasq.log"), lab.log("tftp.log"), lab.log("http-access.log")
    for name, node in nodes.items():
        assert node["state"] == "ready", node["last_error"]
        mac = lab.inventory[name]["mac"]
        facts = hypervisor.domain_facts(conn, name)
        assert facts["state"] == "running"
        # DHCP came from our dnsmasq; the loader script from our TFTP; kernel and initramfs over HTTP.
        ack = re.search(rf"DHCPACK\({lab.lab.cfg.bridge}\) (\S+) {mac}", dnsmasq)
        assert ack, f"no DHCPACK for {mac}"
        ip = ack.group(1)
        assert f"{ip} RRQ boot.ipxe sent" in tftp
        assert re.search(rf" {re.escape(ip)} GET /boot/maintenance/vmlinuz 200 \d+", http)
        assert re.search(rf" {re.escape(ip)} GET /boot/maintenance/initrd.img 200 \d+", http)
        # The agent authenticated with its token (the daemon's history of the node).
        events = [e["message"] or "" for e in lab.client.get(f"/v1/nodes/{name}/events")["events"]]
        assert any("received its token" in m for m in events)
        # The inspection matches the domain definition.
        inv = node["inspection"]
        assert inv["memory"]["total_mib"] == facts["memory_mib"] == 2048
        assert inv["cpu"]["count"] == facts["vcpus"] == 2
        vda = next(d for d in inv["disks"] if d["name"] == "vda")
        assert vda["size_bytes"] == facts["disk_bytes"] == 20 * 1024 ** 3
        assert mac in [n["mac"] for n in inv["nics"]]
        assert inv["dmi"]["sys_vendor"] == "provisioner-lab"
        assert inv["firmware"] == ("uefi" if name == UEFI_REDFISH else "bios")
    conn.close()
    # Power-on and the one-time network boot came through IPMI to libvirt: vbmc's record.
    vbmc = (lab.lab.dir / "logs/vbmcd.log").read_text()
    assert re.search(rf"Power on called for domain {BIOS_IPMI}", vbmc)
    assert re.search(rf"Set boot device called for {BIOS_IPMI} with boot device \"network\"", vbmc)
    assert nodes[BIOS_IPMI]["bmc"]["driver"] == "ipmi"
    # ...and through Redfish (sushy-emulator over TLS, the system by its UUID) for the UEFI node.
    node = nodes[UEFI_REDFISH]
    assert node["bmc"]["driver"] == "redfish" and node["bmc"]["system"] == lab.inventory[UEFI_REDFISH]["bmc"]["system"]
    assert node["secure_boot"] is False and nodes[BIOS_IPMI]["secure_boot"] is False
    events = [e["message"] or "" for e in lab.client.get(f"/v1/nodes/{UEFI_REDFISH}/events")["events"]]
    assert any(f"one-time network boot set via Redfish {lab.lab.redfish.url}" in m for m in events), events
    assert any("powered on via Redfish" in m for m in events), events
    # The UEFI node has no iPXE ROM: OVMF's PXE client fetched the loader (asking its size
    # first, then the file), iPXE then the script, once (no chainload loop).
    ip = re.search(rf"DHCPACK\({lab.lab.cfg.bridge}\) (\S+) {lab.inventory[UEFI_REDFISH]['mac']}", dnsmasq).group(1)
    lines = [line.split(None, 1)[1] for line in tftp.splitlines()]
    loader = [i for i, line in enumerate(lines) if line == f"{ip} RRQ snponly.efi sent"]
    script = [i for i, line in enumerate(lines) if line == f"{ip} RRQ boot.ipxe sent"]
    assert 1 <= len(loader) <= 2 and len(script) == 1 and script[0] > loader[-1], (loader, script)
    code, out, _ = lab.cli("nodes")
    assert code == 0 and all(re.search(rf"{n}\s.*\sready\s", out) for n in ENROLLED)


def test_power_off_a_rack_shuts_its_domains_off(lab):
    code, out, err = lab.cli("power", "off", "rack-1")
    assert code == 0, err
    conn = lab.connect()
    assert hypervisor.domain_facts(conn, "lab-r1-n1")["state"] == "shut off"
    assert hypervisor.domain_facts(conn, "lab-r2-n1")["state"] == "running"  # rack-2 untouched
    conn.close()
    assert lab.client.get("/v1/nodes/lab-r1-n1")["power_state"] == "off"


def test_wrong_password_and_unreachable_bmc_against_virtualbmc(lab, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    code, _, err = lab.cli(*lab.enroll_args(STRANGER, password_file=str(wrong)))
    assert code == 1 and "refused the credentials" in err and len(err.strip().splitlines()) == 1
    code, _, err = lab.cli(*lab.enroll_args(STRANGER, port="127.0.0.1:6299"))
    assert code == 1 and "did not answer" in err
    assert STRANGER not in [n["name"] for n in lab.client.get("/v1/nodes")["nodes"]]


def test_wrong_password_and_unknown_system_against_the_redfish_emulator(lab, tmp_path):
    """The stranger's MAC behind the lab's Redfish BMC: each mistake is one line, and
    nothing is stored."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    redfish = lab.inventory[UEFI_REDFISH]["bmc"]
    base = [*lab.enroll_args(STRANGER)[:4], "--rack", "rack-1", "--bmc", redfish["address"],
            "--bmc-user", redfish["username"], "--bmc-driver", "redfish"]
    code, _, err = lab.cli(*base, "--bmc-password-file", str(wrong), "--bmc-system", redfish["system"])
    assert code == 1 and "refused the credentials" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = lab.cli(*base, "--bmc-password-file", redfish["password_file"],
                           "--bmc-system", "/redfish/v1/Systems/no-such-system")
    assert code == 1 and "no-such-system" in err and len(err.strip().splitlines()) == 1, err
    assert STRANGER not in [n["name"] for n in lab.client.get("/v1/nodes")["nodes"]]


def test_a_mac_that_pxe_boots_but_was_never_enrolled_gets_nothing(lab):
    mac = lab.inventory[STRANGER]["mac"]
    conn = lab.connect()
    dom = conn.lookupByName(STRANGER)
    dom.create()
    try:
        end = time.monotonic() + 180
        while not re.search(rf"DHCPDISCOVER\({lab.lab.cfg.bridge}\) {mac} ignored", lab.log("dnsmasq.log")):
            assert time.monotonic() < end, "the unenrolled machine never asked for DHCP"
            time.sleep(1)
    finally:
        dom.destroy()
        conn.close()
    assert not re.search(rf"DHCP(OFFER|ACK)\({lab.lab.cfg.bridge}\) \S+ {mac}", lab.log("dnsmasq.log"))
    assert mac not in [n["mac"] for n in lab.client.get("/v1/nodes")["nodes"]]
    # The lab runs with dhcp.unknown_macs = "discover": recorded, still not answered.
    end = time.monotonic() + 10  # the daemon follows dnsmasq's log a moment behind
    while mac not in [d["mac"] for d in lab.client.get("/v1/discovered")["discovered"]]:
        assert time.monotonic() < end, "the unknown MAC was not recorded as discovered"
        time.sleep(0.2)
    code, out, _ = lab.cli("discovered")
    assert code == 0 and mac in out


def test_dnsmasq_is_restarted_when_it_dies(lab):
    before = lab.client.get("/v1/stats")
    assert before["dhcp_pid"]
    os.kill(before["dhcp_pid"], signal.SIGKILL)
    end = time.monotonic() + 30
    while True:
        after = lab.client.get("/v1/stats")
        if after["dhcp_pid"] not in (None, before["dhcp_pid"]):
            break
        assert time.monotonic() < end, "dnsmasq was not restarted"
        time.sleep(0.2)
    assert after["dhcp_restarts"] == before["dhcp_restarts"] + 1
    # The next test network-boots a node through the restarted dnsmasq.


def test_kill9_the_daemon_while_a_node_inspects(lab):
    """The UEFI node behind Redfish: its one-time network boot and power go again after
    the daemon's restart."""
    code, _, err = lab.cli("inspect", "lab-r2-n1", "--no-wait")
    assert code == 0, err
    lab.wait("lab-r2-n1", lambda d: d["step"] in ("wait-agent", "wait-inspection") or d["state"] != "inspecting",
             timeout=120)
    os.kill(lab.lab.load().daemon_pid, signal.SIGKILL)
    time.sleep(1)
    lab.lab.restart_daemon()
    node = lab.wait("lab-r2-n1", lambda d: d["state"] != "inspecting")
    assert node["state"] == "ready", node["last_error"]
    events = lab.client.get("/v1/nodes/lab-r2-n1/events")["events"]
    assert any(e["event"] == "resume" for e in events)
    assert node["boot_count"] == 2
    mac = lab.inventory["lab-r2-n1"]["mac"]
    assert len(re.findall(rf"DHCPACK\({lab.lab.cfg.bridge}\) \S+ {mac}", lab.log("dnsmasq.log"))) >= 2
    code, out, _ = lab.cli("nodes")
    assert re.search(r"lab-r2-n1\s.*\sready\s", out)
    # The killed daemon's dnsmasq did not outlive it: one DHCP server on the network.
    assert len(system.netns_pids_named(lab.lab.cfg.netns, b"dnsmasq")) == 1
